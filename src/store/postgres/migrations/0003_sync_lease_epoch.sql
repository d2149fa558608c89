-- tapd schema version 3 (PostgreSQL): the sync lease gains its fencing token. Every grant to a
-- new holder, or after a lapse or release, raises `epoch`; every write a sync makes carries the
-- epoch it was granted and is refused when the lease row no longer shows it unexpired (by the
-- database's clock). A released lease keeps its row (expired), so the epoch only grows.
ALTER TABLE sync_lease ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
