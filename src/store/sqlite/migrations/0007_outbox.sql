-- tapd schema version 7: the onboarding outbox.
--
-- Each row is one message carrying a TAP's code to a mailbox. The code is kept only sealed
-- (sealed_code, under the store's secrets key, bound to the row's id) and only while the
-- message is queued: the CHECK makes a sent or failed row without a code the only possibility.
-- A worker claims a due row (claimed_by, claim_until) before sending it, so a second worker
-- skips it until the claim lapses. onboarding_grants records which rule gave which user a
-- pass, so a rule gives each user at most one.

CREATE TABLE outbox (
    id            TEXT PRIMARY KEY NOT NULL,
    tap_id        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    upn           TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    tap_start     INTEGER NOT NULL,
    tap_expires   INTEGER NOT NULL,
    one_time      INTEGER NOT NULL CHECK (one_time IN (0, 1)),
    origin        TEXT NOT NULL,
    created       INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt  INTEGER NOT NULL,
    last_error    TEXT,
    finished      INTEGER,
    sealed_code   TEXT,
    claimed_by    TEXT,
    claim_until   INTEGER,
    CHECK ((state = 'queued') = (sealed_code IS NOT NULL))
);

CREATE INDEX outbox_due ON outbox (next_attempt) WHERE state = 'queued';
CREATE INDEX outbox_user ON outbox (user_id) WHERE state = 'queued';
CREATE INDEX outbox_created ON outbox (created);

CREATE TABLE onboarding_grants (
    rule     TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    granted  INTEGER NOT NULL,
    PRIMARY KEY (rule, user_id)
);
