-- tapd schema version 3: memberships as one JSON list per user plus a group -> member index.
--
-- Version 1 kept one user_groups row per (user, group) pair with a second index by group: a
-- full sync of 100,000 users in 5.5 groups each wrote 1.1 million b-tree entries of two
-- 36-character ids. Now each user row carries its effective group ids (a sorted JSON array
-- of strings, what the user read needs anyway) and group_members answers "who is in this
-- group" with one b-tree entry per membership. The sync keeps the two in line by the
-- difference between the stored and the new list (store::sqlite::upsert_user).
--
-- group_members has no foreign key to users: a cascade would need a second index by user_id,
-- the very cost this migration removes. The one path that deletes users (apply_sync) removes
-- a user's group_members rows first, from the user's own list.

ALTER TABLE users ADD COLUMN group_ids TEXT NOT NULL DEFAULT '[]';

UPDATE users SET group_ids = (
    SELECT json_group_array(group_id)
    FROM (SELECT ug.group_id FROM user_groups ug WHERE ug.user_id = users.id ORDER BY ug.group_id)
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;

INSERT INTO group_members (group_id, user_id) SELECT group_id, user_id FROM user_groups;

DROP TABLE user_groups;
