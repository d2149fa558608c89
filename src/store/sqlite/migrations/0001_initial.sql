-- tapd schema version 1.
--
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC): total over chrono's range,
-- ordered correctly by plain integer comparison, and the same precision as PostgreSQL's
-- timestamptz. Booleans are INTEGER 0/1. Singletons (policy, sync status) are one JSON row.

CREATE TABLE users (
    id              TEXT PRIMARY KEY NOT NULL,
    dn              TEXT NOT NULL,
    username        TEXT NOT NULL,
    upn             TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    mail            TEXT,
    account_enabled INTEGER NOT NULL CHECK (account_enabled IN (0, 1))
);
CREATE INDEX users_username_lower ON users (lower(username));
CREATE INDEX users_upn_lower ON users (lower(upn));

CREATE TABLE "groups" (
    id           TEXT PRIMARY KEY NOT NULL,
    dn           TEXT NOT NULL,
    display_name TEXT NOT NULL
);

-- Effective (transitive) memberships, written from each user's group_ids. group_id carries no
-- foreign key: a user may be a member of a group outside the synced group scope, and that must
-- not make the whole sync fail. A group's member list is read back from here.
CREATE TABLE user_groups (
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id TEXT NOT NULL,
    PRIMARY KEY (user_id, group_id)
) WITHOUT ROWID;
CREATE INDEX user_groups_group ON user_groups (group_id);

CREATE TABLE policy (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL
);

CREATE TABLE taps (
    id                  TEXT PRIMARY KEY NOT NULL,
    user_id             TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    code_hash           TEXT NOT NULL,
    created             INTEGER NOT NULL,
    start               INTEGER NOT NULL,
    lifetime_in_minutes INTEGER NOT NULL CHECK (lifetime_in_minutes >= 0),
    is_usable_once      INTEGER NOT NULL CHECK (is_usable_once IN (0, 1)),
    used_at             INTEGER
);

CREATE TABLE methods (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    created      INTEGER NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX methods_user ON methods (user_id, created);

CREATE TABLE audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    time           INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    activity       TEXT NOT NULL,
    target         TEXT,
    result         TEXT NOT NULL,
    reason_code    TEXT,
    channel        TEXT NOT NULL,
    source_address TEXT,
    details        TEXT NOT NULL
);
-- The implicit rowid (= id) is the index's last column, so "ORDER BY time DESC, id DESC" walks it.
CREATE INDEX audit_time ON audit (time);

CREATE TABLE sync_status (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL
);
