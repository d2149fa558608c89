-- tapd PostgreSQL schema version 1: the same tables and meaning as the SQLite schema.
--
-- Text columns use the "C" collation: byte order for ORDER BY (as SQLite's BINARY) and an
-- ASCII-only lower(), so names compare case-insensitively exactly as on SQLite, whatever the
-- database's locale. Timestamps are timestamptz (microseconds, like SQLite's integers).
-- Singletons (policy, sync status) are one JSON text row, as on SQLite.

CREATE TABLE users (
    id              TEXT COLLATE "C" PRIMARY KEY,
    dn              TEXT COLLATE "C" NOT NULL,
    username        TEXT COLLATE "C" NOT NULL,
    upn             TEXT COLLATE "C" NOT NULL,
    display_name    TEXT COLLATE "C" NOT NULL,
    mail            TEXT COLLATE "C",
    account_enabled BOOLEAN NOT NULL
);
CREATE INDEX users_username_lower ON users (lower(username));
CREATE INDEX users_upn_lower ON users (lower(upn));

CREATE TABLE "groups" (
    id           TEXT COLLATE "C" PRIMARY KEY,
    dn           TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL
);

-- Effective (transitive) memberships, written from each user's group_ids; group_id has no
-- foreign key (a user may be in a group outside the synced scope).
CREATE TABLE user_groups (
    user_id  TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group ON user_groups (group_id);

CREATE TABLE policy (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL
);

CREATE TABLE taps (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    user_id             TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    code_hash           TEXT COLLATE "C" NOT NULL,
    created             TIMESTAMPTZ NOT NULL,
    start               TIMESTAMPTZ NOT NULL,
    lifetime_in_minutes BIGINT NOT NULL CHECK (lifetime_in_minutes >= 0),
    is_usable_once      BOOLEAN NOT NULL,
    used_at             TIMESTAMPTZ
);

CREATE TABLE methods (
    id           TEXT COLLATE "C" PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL,
    created      TIMESTAMPTZ NOT NULL,
    data         TEXT COLLATE "C" NOT NULL
);
CREATE INDEX methods_user ON methods (user_id, created, id);

CREATE TABLE audit (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time           TIMESTAMPTZ NOT NULL,
    actor          TEXT COLLATE "C" NOT NULL,
    activity       TEXT COLLATE "C" NOT NULL,
    target         TEXT COLLATE "C",
    result         TEXT COLLATE "C" NOT NULL,
    reason_code    TEXT COLLATE "C",
    channel        TEXT COLLATE "C" NOT NULL,
    source_address TEXT COLLATE "C",
    details        TEXT NOT NULL
);
CREATE INDEX audit_time ON audit (time, id);

CREATE TABLE sync_status (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL
);

-- Directory sync leadership: at most one row, the node allowed to sync until `expires`.
CREATE TABLE sync_lease (
    id       SMALLINT PRIMARY KEY CHECK (id = 1),
    holder   TEXT COLLATE "C" NOT NULL,
    acquired TIMESTAMPTZ NOT NULL,
    expires  TIMESTAMPTZ NOT NULL
);
