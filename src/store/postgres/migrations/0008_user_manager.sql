-- tapd schema version 8 (PostgreSQL): a user's manager and the dates onboarding rules match on.
--
-- manager_dn is the normalised DN in the entry's `manager` attribute, as the directory wrote
-- it. manager_id is the stable id of the synced user at exactly that DN, resolved by the store
-- after each sync (no foreign key: the manager may leave, and the next resolution clears it).
-- dates is a JSON object {attribute in lower case: "YYYY-MM-DD"}, NULL when there are none.
-- Rows written before this version have NULL in all three until the directory next writes
-- them (a sync rewrites every user whose manager or dates differ from what is stored).

ALTER TABLE users ADD COLUMN manager_dn TEXT;
ALTER TABLE users ADD COLUMN manager_id TEXT;
ALTER TABLE users ADD COLUMN dates TEXT;
