-- tapd schema version 6: the onboarding outbox (as SQLite's version 7).
--
-- Each row is one message carrying a TAP's code to a mailbox. The code is kept only sealed
-- (sealed_code, under the store's secrets key, bound to the row's id) and only while the
-- message is queued (the CHECK). Nodes claim a due row with FOR UPDATE SKIP LOCKED and a
-- lease (claimed_by, claim_until): exactly one node sends it, and a crashed node's claim is
-- taken over once it lapses. onboarding_grants: at most one pass per rule and user.

CREATE TABLE outbox (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tap_id        TEXT COLLATE "C" NOT NULL,
    user_id       TEXT COLLATE "C" NOT NULL,
    upn           TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    tap_start     TIMESTAMPTZ NOT NULL,
    tap_expires   TIMESTAMPTZ NOT NULL,
    one_time      BOOLEAN NOT NULL,
    origin        TEXT NOT NULL,
    created       TIMESTAMPTZ NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
    attempts      BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt  TIMESTAMPTZ NOT NULL,
    last_error    TEXT,
    finished      TIMESTAMPTZ,
    sealed_code   TEXT,
    claimed_by    TEXT,
    claim_until   TIMESTAMPTZ,
    CHECK ((state = 'queued') = (sealed_code IS NOT NULL))
);

CREATE INDEX outbox_due ON outbox (next_attempt) WHERE state = 'queued';
CREATE INDEX outbox_user ON outbox (user_id) WHERE state = 'queued';
CREATE INDEX outbox_created ON outbox (created);

CREATE TABLE onboarding_grants (
    rule     TEXT COLLATE "C" NOT NULL,
    user_id  TEXT COLLATE "C" NOT NULL,
    granted  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (rule, user_id)
);
