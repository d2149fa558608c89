//! What the last reads of an LDAP directory returned, kept between syncs so that an
//! incremental read can return only what differs: the raw users and groups by id, where the
//! next incremental read starts, and whether content sync is in use. [`Snapshot::merge`]
//! folds a changed batch into it and resolves memberships again. Pure: no I/O.
//!
//! May depend on: `directory::groups` (resolution), `directory` (trait types), `model`.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;

use super::incremental::Watermark;
use super::schema::GroupRecord;
use crate::directory::groups::{resolve, RawGroup, RawUser, Resolved};
use crate::directory::{DirectoryChanges, DirectoryContents, SkippedUser};
use crate::model::{Group, User};

/// What the last reads returned, kept for incremental reads.
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshot {
    /// Users by id, without memberships.
    pub(super) users: HashMap<String, User>,
    /// Groups by id.
    pub(super) groups: HashMap<String, GroupRecord>,
    /// Entries changed at or after this point have not been seen yet.
    pub(super) watermark: Option<Watermark>,
    /// Whether incremental reads use RFC 4533 content sync, and where they resume.
    pub(super) content_sync: ContentSync,
}

/// Whether incremental reads use RFC 4533 content sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum ContentSync {
    /// Not known yet: the next incremental read asks the root DSE.
    #[default]
    Untried,
    /// The server offers it; where each search resumes.
    Offered(Cookies),
    /// Not offered, or it failed; timestamps until the next full read tries again.
    Unusable,
}

impl ContentSync {
    /// What a full read leaves: cookies stay valid (a refresh from an older cookie only repeats
    /// changes the full read already saw), and a failure is tried again.
    pub(super) fn after_full_read(previous: Option<&Snapshot>) -> ContentSync {
        match previous.map(|snapshot| &snapshot.content_sync) {
            Some(ContentSync::Offered(cookies)) => ContentSync::Offered(cookies.clone()),
            _ => ContentSync::Untried,
        }
    }
}

/// The content-sync cookies of the user and the group search; `None` before the first refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Cookies {
    pub(super) users: Option<Vec<u8>>,
    pub(super) groups: Option<Vec<u8>>,
}

/// Ids of users and groups an incremental read found deleted (or no longer matching).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Removed {
    pub(super) users: Vec<String>,
    pub(super) groups: Vec<String>,
}

/// Entries read by one pass (full or incremental), before they are merged.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) users: Vec<User>,
    pub(super) groups: Vec<GroupRecord>,
    pub(super) newest_timestamp: Option<NaiveDateTime>,
    /// User entries that could not be decoded.
    pub(super) skipped_users: Vec<SkippedUser>,
}

/// A snapshot holding `users` and `groups` by id.
pub(super) fn snapshot_of(
    users: Vec<User>,
    groups: Vec<GroupRecord>,
    watermark: Option<Watermark>,
) -> Snapshot {
    Snapshot {
        users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
        groups: groups.into_iter().map(|g| (g.raw.id.clone(), g)).collect(),
        watermark,
        content_sync: ContentSync::Untried,
    }
}

impl Snapshot {
    /// Users sorted by id, and their memberships resolved.
    pub(super) fn resolve(&self) -> (Vec<&User>, Vec<&GroupRecord>, Resolved) {
        let mut users: Vec<&User> = self.users.values().collect();
        users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut records: Vec<&GroupRecord> = self.groups.values().collect();
        records.sort_unstable_by(|a, b| a.raw.id.cmp(&b.raw.id));
        let raw_users: Vec<RawUser> = users
            .iter()
            .map(|u| RawUser {
                dn: u.dn.clone(),
                id: u.id.clone(),
                username: u.username.clone(),
            })
            .collect();
        let raw_groups: Vec<RawGroup> = records.iter().map(|g| g.raw.clone()).collect();
        let resolved = resolve(&raw_users, &raw_groups);
        (users, records, resolved)
    }

    /// Users and groups with memberships resolved, sorted by id.
    pub(super) fn contents(&self) -> DirectoryContents {
        let (users, records, resolved) = self.resolve();
        let users = users
            .into_iter()
            .zip(resolved.user_group_ids)
            .map(|(user, group_ids)| User {
                group_ids,
                ..user.clone()
            })
            .collect();
        let groups = records
            .into_iter()
            .zip(resolved.group_member_user_ids)
            .map(|(record, member_user_ids)| group_of(record, member_user_ids))
            .collect();
        DirectoryContents { users, groups }
    }

    /// Merges an incremental batch and the ids found gone, and returns what differs from
    /// before: changed, new or gone entries, and entries whose resolved memberships moved
    /// because of them.
    pub(super) fn merge(&mut self, batch: Batch, removed: Removed) -> DirectoryChanges {
        let removed_users: Vec<String> = removed
            .users
            .into_iter()
            .filter(|id| self.users.contains_key(id))
            .collect();
        let removed_groups: Vec<String> = removed
            .groups
            .into_iter()
            .filter(|id| self.groups.contains_key(id))
            .collect();
        let changed_users: Vec<User> = batch
            .users
            .into_iter()
            .filter(|user| self.users.get(&user.id) != Some(user))
            .collect();
        let changed_groups: Vec<GroupRecord> = batch
            .groups
            .into_iter()
            .filter(|group| self.groups.get(&group.raw.id) != Some(group))
            .collect();
        // Memberships can only move when a group changed or went, or a user appeared, went,
        // was renamed or changed username (member DNs and memberUid values point at those).
        // Otherwise one resolution after the merge gives the changed users their (unchanged)
        // groups.
        let memberships_may_move = !changed_groups.is_empty()
            || !removed_groups.is_empty()
            || !removed_users.is_empty()
            || changed_users
                .iter()
                .any(|user| match self.users.get(&user.id) {
                    None => true,
                    Some(old) => old.dn != user.dn || old.username != user.username,
                });
        let before = if memberships_may_move {
            Some(self.memberships())
        } else {
            None
        };
        let touched_users: HashSet<String> = changed_users.iter().map(|u| u.id.clone()).collect();
        let touched_groups: HashSet<String> =
            changed_groups.iter().map(|g| g.raw.id.clone()).collect();
        for id in &removed_users {
            self.users.remove(id);
        }
        for id in &removed_groups {
            self.groups.remove(id);
        }
        for user in changed_users {
            self.users.insert(user.id.clone(), user);
        }
        for group in changed_groups {
            self.groups.insert(group.raw.id.clone(), group);
        }
        let mut changes = DirectoryChanges {
            total_users: self.users.len(),
            total_groups: self.groups.len(),
            deleted_user_ids: removed_users,
            deleted_group_ids: removed_groups,
            ..DirectoryChanges::default()
        };
        if !memberships_may_move && touched_users.is_empty() && touched_groups.is_empty() {
            return changes;
        }
        let (users, records, resolved) = self.resolve();
        for (user, group_ids) in users.into_iter().zip(resolved.user_group_ids) {
            let moved = before
                .as_ref()
                .is_some_and(|(old, _)| old.get(&user.id) != Some(&group_ids));
            if moved || touched_users.contains(&user.id) {
                changes.users.push(User {
                    group_ids,
                    ..user.clone()
                });
            }
        }
        for (record, members) in records.into_iter().zip(resolved.group_member_user_ids) {
            let moved = before
                .as_ref()
                .is_some_and(|(_, old)| old.get(&record.raw.id) != Some(&members));
            if moved || touched_groups.contains(&record.raw.id) {
                changes.groups.push(group_of(record, members));
            }
        }
        changes
    }

    /// Each user's group ids and each group's member ids, by id.
    #[allow(clippy::type_complexity)]
    pub(super) fn memberships(
        &self,
    ) -> (HashMap<String, Vec<String>>, HashMap<String, Vec<String>>) {
        let (users, records, resolved) = self.resolve();
        let users = users
            .into_iter()
            .map(|u| u.id.clone())
            .zip(resolved.user_group_ids)
            .collect();
        let groups = records
            .into_iter()
            .map(|g| g.raw.id.clone())
            .zip(resolved.group_member_user_ids)
            .collect();
        (users, groups)
    }
}

pub(super) fn group_of(record: &GroupRecord, member_user_ids: Vec<String>) -> Group {
    Group {
        id: record.raw.id.clone(),
        dn: record.raw.dn.clone(),
        display_name: record.display_name.clone(),
        member_user_ids,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn user(id: &str, name: &str) -> User {
        User {
            id: id.to_owned(),
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            username: name.to_owned(),
            user_principal_name: format!("{name}@example.org"),
            display_name: name.to_owned(),
            mail: None,
            account_enabled: true,
            group_ids: Vec::new(),
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    #[test]
    fn snapshot_contents_resolve_nesting_and_sort_by_id() {
        let mut snapshot = Snapshot::default();
        for (id, name) in [("u2", "bob"), ("u1", "alice")] {
            snapshot.users.insert(id.to_owned(), user(id, name));
        }
        let group = |id: &str, cn: &str, dns: &[&str], uids: &[&str]| GroupRecord {
            raw: crate::directory::groups::RawGroup {
                dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
                id: id.to_owned(),
                cn: cn.to_owned(),
                member_dns: dns.iter().map(|s| (*s).to_owned()).collect(),
                member_uids: uids.iter().map(|s| (*s).to_owned()).collect(),
            },
            display_name: cn.to_owned(),
        };
        snapshot.groups.insert(
            "g1".to_owned(),
            group(
                "g1",
                "outer",
                &["cn=inner,ou=groups,dc=example,dc=org"],
                &[],
            ),
        );
        snapshot
            .groups
            .insert("g2".to_owned(), group("g2", "inner", &[], &["bob"]));
        let contents = snapshot.contents();
        assert_eq!(contents.users[0].id, "u1");
        assert_eq!(contents.users[1].group_ids, vec!["g1", "g2"]);
        assert_eq!(contents.groups[0].member_user_ids, vec!["u2"]);
    }

    #[test]
    fn merge_reports_changed_entries_and_moved_memberships() {
        let group = |id: &str, cn: &str, dns: &[String]| GroupRecord {
            raw: crate::directory::groups::RawGroup {
                dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
                id: id.to_owned(),
                cn: cn.to_owned(),
                member_dns: dns.to_vec(),
                member_uids: Vec::new(),
            },
            display_name: cn.to_owned(),
        };
        let mut snapshot = Snapshot::default();
        for (id, name) in [("u1", "alice"), ("u2", "bob"), ("u3", "carol")] {
            snapshot.users.insert(id.to_owned(), user(id, name));
        }
        let alice_dn = user("u1", "alice").dn;
        let bob_dn = user("u2", "bob").dn;
        snapshot.groups.insert(
            "g1".to_owned(),
            group("g1", "staff", std::slice::from_ref(&alice_dn)),
        );

        // Nothing new: nothing reported.
        let unchanged = snapshot.merge(
            Batch {
                users: vec![user("u3", "carol")],
                ..Batch::default()
            },
            Removed::default(),
        );
        assert!(unchanged.users.is_empty() && unchanged.groups.is_empty());
        assert_eq!(unchanged.total_users, 3);

        // An attribute change: just that user, with its groups.
        let mut renamed = user("u1", "alice");
        renamed.display_name = "Alice L.".to_owned();
        let changes = snapshot.merge(
            Batch {
                users: vec![renamed],
                ..Batch::default()
            },
            Removed::default(),
        );
        assert_eq!(changes.users.len(), 1);
        assert_eq!(changes.users[0].group_ids, vec!["g1"]);
        assert!(changes.groups.is_empty());

        // bob joins the group: the group and bob change, alice does not.
        let changes = snapshot.merge(
            Batch {
                groups: vec![group("g1", "staff", &[alice_dn, bob_dn])],
                ..Batch::default()
            },
            Removed::default(),
        );
        let ids: Vec<&str> = changes.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, vec!["u2"]);
        assert_eq!(changes.users[0].group_ids, vec!["g1"]);
        assert_eq!(changes.groups.len(), 1);
        assert_eq!(changes.groups[0].member_user_ids, vec!["u1", "u2"]);
    }
}
