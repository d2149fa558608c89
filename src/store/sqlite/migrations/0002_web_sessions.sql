-- tapd schema version 2: web sessions and server-side ceremony state (issue 7).
--
-- A session row is keyed by the SHA-256 (hex) of the random id in the browser's cookie, never
-- the id itself. Sessions and ceremonies go with their user (sync deletes) and ceremonies with
-- their session (sign-out).

CREATE TABLE web_sessions (
    id_hash               TEXT PRIMARY KEY NOT NULL,
    user_id               TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created               INTEGER NOT NULL,
    expires               INTEGER NOT NULL,
    auth_method           TEXT NOT NULL,
    tap_id                TEXT,
    tap_expires           INTEGER,
    registration_deadline INTEGER,
    interrupt_mode        INTEGER NOT NULL CHECK (interrupt_mode IN (0, 1)),
    csrf_token            TEXT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

CREATE TABLE web_ceremonies (
    id              TEXT PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL,
    session_id_hash TEXT REFERENCES web_sessions (id_hash) ON DELETE CASCADE,
    state           TEXT NOT NULL,
    created         INTEGER NOT NULL,
    expires         INTEGER NOT NULL
);
CREATE INDEX web_ceremonies_expires ON web_ceremonies (expires);
CREATE INDEX web_ceremonies_session ON web_ceremonies (session_id_hash);
