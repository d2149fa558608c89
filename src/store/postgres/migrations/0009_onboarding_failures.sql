-- tapd schema version 9 (PostgreSQL): the lasting failures of onboarding rules.
--
-- A rule that can't serve a user (no recipient for the code, an admin the rule skips, a policy
-- that refuses the pass) tries again at every sync, and the failure is audited once. The
-- failure last audited for a rule and user is kept here, so neither a restart nor another node
-- audits the same failure again, while a different one is audited. The row is deleted when the
-- rule serves the user.
--
-- outbox_unreadable finds the outbox rows in a state tapd never writes (the schema forbids
-- them; written anyway, they are claimed to be failed, their TAP deleted).

CREATE TABLE onboarding_failures (
    rule     TEXT COLLATE "C" NOT NULL,
    user_id  TEXT COLLATE "C" NOT NULL,
    reason   TEXT NOT NULL,
    noted    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (rule, user_id)
);

CREATE INDEX outbox_unreadable ON outbox (id) WHERE state NOT IN ('queued', 'sent', 'failed');
