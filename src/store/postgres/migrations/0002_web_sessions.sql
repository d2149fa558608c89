-- tapd schema version 2: web sessions and server-side ceremony state (issue 7), as in the
-- SQLite backend. A session row is keyed by the SHA-256 (hex) of the random id in the
-- browser's cookie, never the id itself. Sessions and ceremonies go with their user (sync
-- deletes) and ceremonies with their session (sign-out). Shared by every node, so a user can
-- start on one node and finish on another.

CREATE TABLE web_sessions (
    id_hash               TEXT COLLATE "C" PRIMARY KEY,
    user_id               TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created               TIMESTAMPTZ NOT NULL,
    expires               TIMESTAMPTZ NOT NULL,
    auth_method           TEXT COLLATE "C" NOT NULL,
    tap_id                TEXT COLLATE "C",
    tap_expires           TIMESTAMPTZ,
    registration_deadline TIMESTAMPTZ,
    interrupt_mode        BOOLEAN NOT NULL,
    csrf_token            TEXT COLLATE "C" NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

CREATE TABLE web_ceremonies (
    id              TEXT COLLATE "C" PRIMARY KEY,
    kind            TEXT COLLATE "C" NOT NULL,
    session_id_hash TEXT COLLATE "C" REFERENCES web_sessions (id_hash) ON DELETE CASCADE,
    state           TEXT COLLATE "C" NOT NULL,
    created         TIMESTAMPTZ NOT NULL,
    expires         TIMESTAMPTZ NOT NULL
);
CREATE INDEX web_ceremonies_expires ON web_ceremonies (expires);
CREATE INDEX web_ceremonies_session ON web_ceremonies (session_id_hash);
