-- tapd schema version 4 (SQLite): the sync lease and its fencing token, as on PostgreSQL. One
-- node uses a SQLite file, so every request is granted, but the epoch and the expiry (in
-- milliseconds since 1970 by SQLite's clock) are kept, and a sync's writes are refused when they
-- no longer carry the current, unexpired epoch.
CREATE TABLE sync_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
