-- tapd schema version 4: sign-in names are keys (as SQLite's version 5).
--
-- Every user claims its username and its userPrincipalName, folded to lower case by tapd
-- (ASCII letters only; computed by tapd: the keys of rows written before this version are NULL
-- until tapd fills them in when it connects). Each claim records the claim
-- epoch at which the user started to claim that name; identity_state.epoch is bumped once per
-- applied sync. When several users claim one name, the oldest claim holds it and every other
-- claimant is quarantined (identity_conflict, a JSON document); rows from before this version
-- all claim at epoch 0, so a collision that already existed quarantines every user in it.
-- identity_state.checked = false makes the next sync check every name once.

ALTER TABLE users ADD COLUMN username_key TEXT;
ALTER TABLE users ADD COLUMN upn_key TEXT;
ALTER TABLE users ADD COLUMN username_since BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN upn_since BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN identity_conflict TEXT;

CREATE INDEX users_username_key ON users (username_key);
CREATE INDEX users_upn_key ON users (upn_key);
CREATE INDEX users_quarantined ON users (id) WHERE identity_conflict IS NOT NULL;

CREATE TABLE identity_state (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   BIGINT NOT NULL,
    checked BOOLEAN NOT NULL
);
INSERT INTO identity_state (id, epoch, checked) VALUES (1, 0, false);
