//! The sync plan: what must change in the store to match what the directory returned, as a
//! pure function of both, and the guard that stops a sync from deleting too much at once.
//!
//! Users and groups are matched by stable id, never by DN, so a rename or move is an update
//! that keeps the user's TAP and registered methods. A user that disappears is deleted; one
//! whose account goes from enabled to disabled has its TAP revoked. Because an empty or
//! truncated answer from a misconfigured directory would otherwise wipe every user (with their
//! passkeys), [`DeletionGuard`] refuses plans that delete more than a fixed number or share of
//! the users until an administrator confirms with `tapctl sync run --allow-deletes`.
//!
//! May depend on: `model`, `store::SyncPlan`, `directory::DirectoryContents`. No I/O, no clock.

use std::collections::{HashMap, HashSet};

use crate::directory::groups::normalize_dn;
use crate::directory::{DirectoryContents, SkippedUser};
use crate::model::{Group, User};
use crate::store::SyncPlan;

/// Computes the changes that bring the store (`current_*`) in line with `fresh`.
///
/// Upserts hold only new or changed users and groups; deletes hold ids no longer in the
/// directory; `revoke_tap_user_ids` holds users that were enabled and are now disabled. Every
/// list is sorted by id, so equal inputs give equal plans.
pub fn plan_sync(
    current_users: &[User],
    current_groups: &[Group],
    fresh: &DirectoryContents,
) -> SyncPlan {
    plan_sync_owned(current_users, current_groups, fresh.clone())
}

/// [`plan_sync`] taking the directory's answer by value, so that the users and groups of a
/// large directory move into the plan instead of being copied (a full sync of 100,000 users
/// into an empty store upserts every one of them).
pub fn plan_sync_owned(
    current_users: &[User],
    current_groups: &[Group],
    fresh: DirectoryContents,
) -> SyncPlan {
    let mut planner = UserPlanner::new(current_users);
    let mut upsert_users: Vec<User> = fresh
        .users
        .into_iter()
        .filter_map(|user| planner.plan(user))
        .collect();
    let (upsert_groups, delete_group_ids) = plan_groups(current_groups, fresh.groups);
    let users = planner.finish();
    upsert_users.sort_by(|a, b| a.id.cmp(&b.id));
    SyncPlan {
        upsert_users,
        delete_user_ids: users.delete_user_ids,
        upsert_groups,
        delete_group_ids,
        revoke_tap_user_ids: users.revoke_tap_user_ids,
    }
}

/// The user half of [`plan_sync`], one directory user at a time, so that a sync can plan (and
/// store) users while the directory is still being read. Each answer is a pure function of the
/// directory's user and the stored one; deletions are known only at the end
/// ([`UserPlanner::finish`]).
#[derive(Debug)]
pub struct UserPlanner<'a> {
    current_users: &'a [User],
    known: HashMap<&'a str, &'a User>,
    /// Ids seen so far, and whether each was upserted.
    seen: HashMap<String, bool>,
    revoke_tap_user_ids: Vec<String>,
    counts: SyncCounts,
}

/// What [`UserPlanner::finish`] adds up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPlanEnd {
    /// Stored users the directory no longer has, sorted.
    pub delete_user_ids: Vec<String>,
    /// Users that went from enabled to disabled, sorted.
    pub revoke_tap_user_ids: Vec<String>,
    /// Users added, updated and deleted.
    pub counts: SyncCounts,
    /// Distinct users the directory returned.
    pub users_seen: usize,
}

impl<'a> UserPlanner<'a> {
    /// A planner against the users the store holds now.
    pub fn new(current_users: &'a [User]) -> Self {
        UserPlanner {
            current_users,
            known: current_users.iter().map(|u| (u.id.as_str(), u)).collect(),
            seen: HashMap::new(),
            revoke_tap_user_ids: Vec::new(),
            counts: SyncCounts::default(),
        }
    }

    /// The upsert the directory's `user` calls for: `None` when the store already holds it as
    /// it is, or when an earlier user had the same id (the first one wins).
    pub fn plan(&mut self, user: User) -> Option<User> {
        if self.seen.contains_key(&user.id) {
            return None;
        }
        self.plan_seen(user)
    }

    /// Plans `user` again with its final value when a read found, after handing it over, that
    /// its memberships had been resolved too early: an upsert whenever it differs from the store
    /// or was upserted before (the earlier upsert must be overwritten).
    pub fn replan(&mut self, user: User) -> Option<User> {
        match self.seen.get(&user.id) {
            Some(true) => Some(user),
            Some(false) => {
                self.seen.remove(&user.id);
                self.plan_seen(user)
            }
            None => self.plan_seen(user),
        }
    }

    /// Plans a user whose id was not seen before.
    fn plan_seen(&mut self, user: User) -> Option<User> {
        let upsert = match self.known.get(user.id.as_str()) {
            None => {
                self.counts.added += 1;
                true
            }
            Some(known) => {
                // A replanned user may come twice; `finish` removes the duplicate.
                if known.account_enabled && !user.account_enabled {
                    self.revoke_tap_user_ids.push(user.id.clone());
                }
                let changed = !known.same_directory_entry(&user);
                if changed {
                    self.counts.updated += 1;
                }
                changed
            }
        };
        self.seen.insert(user.id.clone(), upsert);
        upsert.then_some(user)
    }

    /// Treats the stored user a skipped (undecodable) entry names as present and unchanged,
    /// so that it is neither deleted nor revoked: found by the entry's id, else by its DN.
    pub fn keep(&mut self, skipped: &SkippedUser) {
        let stored = match &skipped.id {
            Some(id) => self.known.get(id.as_str()).copied(),
            None => {
                let dn = normalize_dn(&skipped.dn);
                self.current_users
                    .iter()
                    .find(|u| normalize_dn(&u.dn) == dn)
            }
        };
        if let Some(user) = stored {
            self.seen.entry(user.id.clone()).or_insert(false);
        }
    }

    /// The deletions (stored users the directory did not return) and what was counted.
    pub fn finish(self) -> UserPlanEnd {
        let mut delete_user_ids: Vec<String> = self
            .current_users
            .iter()
            .filter(|u| !self.seen.contains_key(&u.id))
            .map(|u| u.id.clone())
            .collect();
        delete_user_ids.sort();
        delete_user_ids.dedup();
        let mut revoke_tap_user_ids = self.revoke_tap_user_ids;
        revoke_tap_user_ids.sort();
        revoke_tap_user_ids.dedup();
        UserPlanEnd {
            counts: SyncCounts {
                deleted: to_u64(delete_user_ids.len()),
                ..self.counts
            },
            delete_user_ids,
            revoke_tap_user_ids,
            users_seen: self.seen.len(),
        }
    }
}

/// The group half of [`plan_sync`]: groups to upsert (new, or with a different DN or name,
/// sorted by id; the first of a duplicated id wins) and ids of stored groups the directory no
/// longer has. Member lists are not compared: a group's members are the users whose effective
/// group ids name it, so a membership change is an update of those users, and the stores
/// write a group's row alone.
pub fn plan_groups(current_groups: &[Group], fresh: Vec<Group>) -> (Vec<Group>, Vec<String>) {
    let known_groups: HashMap<&str, &Group> =
        current_groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let mut fresh_group_ids: HashSet<String> = HashSet::with_capacity(fresh.len());
    let mut upsert_groups = Vec::new();
    for group in fresh {
        if fresh_group_ids.contains(&group.id) {
            continue;
        }
        fresh_group_ids.insert(group.id.clone());
        let unchanged = known_groups
            .get(group.id.as_str())
            .is_some_and(|known| known.dn == group.dn && known.display_name == group.display_name);
        if !unchanged {
            upsert_groups.push(group);
        }
    }
    let mut delete_group_ids: Vec<String> = current_groups
        .iter()
        .filter(|g| !fresh_group_ids.contains(&g.id))
        .map(|g| g.id.clone())
        .collect();
    upsert_groups.sort_by(|a, b| a.id.cmp(&b.id));
    delete_group_ids.sort();
    delete_group_ids.dedup();
    (upsert_groups, delete_group_ids)
}

/// How many users a plan adds, updates and deletes, for the sync status and the audit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Users new to the store.
    pub added: u64,
    /// Users already in the store whose attributes or memberships changed.
    pub updated: u64,
    /// Users removed from the store.
    pub deleted: u64,
}

impl SyncCounts {
    /// Counts `plan`'s user changes against the users the store holds now.
    pub fn of(current_users: &[User], plan: &SyncPlan) -> SyncCounts {
        let known: HashSet<&str> = current_users.iter().map(|u| u.id.as_str()).collect();
        let updated = plan
            .upsert_users
            .iter()
            .filter(|u| known.contains(u.id.as_str()))
            .count();
        SyncCounts {
            added: to_u64(plan.upsert_users.len() - updated),
            updated: to_u64(updated),
            deleted: to_u64(plan.delete_user_ids.len()),
        }
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Limits on how many users one sync may delete without an administrator's confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletionGuard {
    /// At most this many user deletions per run.
    pub max_deletes: u64,
    /// At most this share (percent) of the current users per run.
    pub max_share_percent: u8,
}

impl Default for DeletionGuard {
    /// 500 users and 20 %.
    fn default() -> Self {
        DeletionGuard {
            max_deletes: 500,
            max_share_percent: 20,
        }
    }
}

/// A plan the deletion guard refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "sync would delete {would_delete} of {current_users} users, more than the deletion guard \
     allows (at most {max_deletes} and at most {max_share_percent} % per run); nothing was \
     changed. If the directory really lost these users, confirm with \
     `tapctl sync run --allow-deletes`"
)]
pub struct GuardTripped {
    /// Users the plan would delete.
    pub would_delete: u64,
    /// Users the store holds now.
    pub current_users: u64,
    /// The guard's absolute limit.
    pub max_deletes: u64,
    /// The guard's share limit, percent.
    pub max_share_percent: u8,
}

impl DeletionGuard {
    /// Refuses `plan` when it deletes more than `max_deletes` users, or more than
    /// `max_share_percent` % of `current_user_count`.
    pub fn check(&self, current_user_count: usize, plan: &SyncPlan) -> Result<(), GuardTripped> {
        let deletes = to_u64(plan.delete_user_ids.len());
        if deletes == 0 {
            return Ok(());
        }
        let current = to_u64(current_user_count);
        let over_count = deletes > self.max_deletes;
        let over_share =
            u128::from(deletes) * 100 > u128::from(self.max_share_percent) * u128::from(current);
        if over_count || over_share {
            return Err(GuardTripped {
                would_delete: deletes,
                current_users: current,
                max_deletes: self.max_deletes,
                max_share_percent: self.max_share_percent,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn user(name: &str) -> User {
        User {
            id: format!("id-{name}"),
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            username: name.to_owned(),
            user_principal_name: format!("{name}@example.org"),
            display_name: name.to_owned(),
            mail: Some(format!("{name}@example.org")),
            account_enabled: true,
            group_ids: vec!["id-staff".to_owned()],
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    fn group(name: &str, members: &[&str]) -> Group {
        Group {
            id: format!("id-{name}"),
            dn: format!("cn={name},ou=groups,dc=example,dc=org"),
            display_name: name.to_owned(),
            member_user_ids: members.iter().map(|m| format!("id-{m}")).collect(),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| format!("id-{s}")).collect()
    }

    #[test]
    fn a_skipped_entry_keeps_its_stored_user_by_id_or_by_dn() {
        let current = vec![user("alice"), user("bob"), user("carol")];
        let mut planner = UserPlanner::new(&current);
        planner.keep(&SkippedUser {
            dn: "uid=whatever,dc=example,dc=org".to_owned(),
            id: Some("id-alice".to_owned()),
            reason: "uid is not valid UTF-8".to_owned(),
        });
        planner.keep(&SkippedUser {
            dn: "UID=bob, OU=People, DC=Example, DC=Org".to_owned(),
            id: None,
            reason: "no entryUUID".to_owned(),
        });
        let end = planner.finish();
        assert_eq!(end.delete_user_ids, vec!["id-carol"]);
        assert_eq!(end.counts.deleted, 1);
        assert!(end.revoke_tap_user_ids.is_empty());
    }

    #[test]
    fn unchanged_directory_gives_an_empty_plan() {
        let users = vec![user("alice"), user("bob")];
        let groups = vec![group("staff", &["alice", "bob"])];
        let fresh = DirectoryContents {
            users: users.clone(),
            groups: groups.clone(),
        };
        let plan = plan_sync(&users, &groups, &fresh);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(SyncCounts::of(&users, &plan), SyncCounts::default());
    }

    #[test]
    fn adds_changes_and_deletes() {
        let current_users = vec![user("alice"), user("bob"), user("carol")];
        let current_groups = vec![
            group("staff", &["alice", "bob", "carol"]),
            group("old", &[]),
        ];
        let mut bob = user("bob");
        bob.display_name = "Bob Builder".to_owned();
        let fresh = DirectoryContents {
            users: vec![user("alice"), bob.clone(), user("dave")],
            groups: vec![group("staff", &["alice", "bob", "dave"]), group("new", &[])],
        };
        let plan = plan_sync(&current_users, &current_groups, &fresh);
        assert_eq!(plan.upsert_users, vec![bob, user("dave")]);
        assert_eq!(plan.delete_user_ids, ids(&["carol"]));
        // staff's members changed, which the users' group ids carry; its row did not.
        assert_eq!(plan.upsert_groups, vec![group("new", &[])]);
        assert_eq!(plan.delete_group_ids, ids(&["old"]));
        assert!(plan.revoke_tap_user_ids.is_empty());
        assert_eq!(
            SyncCounts::of(&current_users, &plan),
            SyncCounts {
                added: 1,
                updated: 1,
                deleted: 1
            }
        );
    }

    #[test]
    fn a_group_row_is_upserted_when_its_dn_or_name_changes() {
        let current = vec![group("staff", &["alice"]), group("ops", &[])];
        let mut renamed = group("staff", &["alice"]);
        renamed.display_name = "Staff".to_owned();
        let mut moved = group("ops", &[]);
        moved.dn = "cn=ops,ou=teams,dc=example,dc=org".to_owned();
        let (upserts, deletes) = plan_groups(&current, vec![renamed.clone(), moved.clone()]);
        assert_eq!(upserts, vec![moved, renamed]);
        assert!(deletes.is_empty());
        let (upserts, _) = plan_groups(&current, vec![group("staff", &["bob"]), group("ops", &[])]);
        assert!(upserts.is_empty(), "{upserts:?}");
    }

    #[test]
    fn membership_change_is_an_update() {
        let current = vec![user("alice")];
        let mut moved = user("alice");
        moved.group_ids = vec!["id-engineering".to_owned(), "id-staff".to_owned()];
        let fresh = DirectoryContents {
            users: vec![moved.clone()],
            groups: vec![],
        };
        let plan = plan_sync(&current, &[], &fresh);
        assert_eq!(plan.upsert_users, vec![moved]);
        assert!(plan.delete_user_ids.is_empty());
    }

    #[test]
    fn rename_by_dn_keeps_the_id() {
        let current = vec![user("alice")];
        let mut renamed = user("alice");
        renamed.dn = "uid=alice.smith,ou=staff,dc=example,dc=org".to_owned();
        renamed.username = "alice.smith".to_owned();
        let fresh = DirectoryContents {
            users: vec![renamed.clone()],
            groups: vec![],
        };
        let plan = plan_sync(&current, &[], &fresh);
        assert_eq!(plan.upsert_users, vec![renamed]);
        assert!(plan.delete_user_ids.is_empty());
        assert!(plan.revoke_tap_user_ids.is_empty());
        assert_eq!(SyncCounts::of(&current, &plan).updated, 1);
    }

    #[test]
    fn disabling_revokes_the_tap_once() {
        let current = vec![user("alice"), user("bob")];
        let mut alice = user("alice");
        alice.account_enabled = false;
        let mut new_disabled = user("erin");
        new_disabled.account_enabled = false;
        let fresh = DirectoryContents {
            users: vec![alice.clone(), user("bob"), new_disabled.clone()],
            groups: vec![],
        };
        let plan = plan_sync(&current, &[], &fresh);
        assert_eq!(plan.revoke_tap_user_ids, ids(&["alice"]));
        assert_eq!(plan.upsert_users, vec![alice.clone(), new_disabled]);

        // Next run: still disabled, nothing to revoke again.
        let plan = plan_sync(
            &[alice.clone(), user("bob")],
            &[],
            &DirectoryContents {
                users: vec![alice.clone(), user("bob")],
                groups: vec![],
            },
        );
        assert!(plan.is_empty());

        // Re-enabled: an update, no revoke.
        let plan = plan_sync(
            &[alice],
            &[],
            &DirectoryContents {
                users: vec![user("alice")],
                groups: vec![],
            },
        );
        assert_eq!(plan.upsert_users, vec![user("alice")]);
        assert!(plan.revoke_tap_user_ids.is_empty());
    }

    #[test]
    fn planning_one_user_at_a_time_equals_the_whole_plan() {
        let current = vec![user("alice"), user("bob"), user("carol")];
        let mut bob = user("bob");
        bob.account_enabled = false;
        let fresh = vec![user("alice"), bob.clone(), user("dave"), user("dave")];
        let whole = plan_sync(
            &current,
            &[],
            &DirectoryContents {
                users: fresh.clone(),
                groups: vec![],
            },
        );
        let mut planner = UserPlanner::new(&current);
        let upserts: Vec<User> = fresh.into_iter().filter_map(|u| planner.plan(u)).collect();
        let end = planner.finish();
        assert_eq!(upserts, whole.upsert_users);
        assert_eq!(end.delete_user_ids, whole.delete_user_ids);
        assert_eq!(end.revoke_tap_user_ids, whole.revoke_tap_user_ids);
        assert_eq!(end.counts, SyncCounts::of(&current, &whole));
        assert_eq!(end.users_seen, 3);
    }

    #[test]
    fn replanning_overwrites_an_earlier_upsert_and_counts_once() {
        let current = vec![user("alice"), user("bob")];
        let mut planner = UserPlanner::new(&current);
        let mut early = user("alice");
        early.group_ids = vec!["id-wrong".to_owned()];
        assert_eq!(
            planner.plan(early),
            Some(user("alice")).map(|mut u| {
                u.group_ids = vec!["id-wrong".to_owned()];
                u
            })
        );
        assert_eq!(planner.plan(user("bob")), None);
        // The final alice equals the stored one, but the wrong upsert must be overwritten.
        assert_eq!(planner.replan(user("alice")), Some(user("alice")));
        // bob was never upserted: replanning him unchanged is nothing.
        assert_eq!(planner.replan(user("bob")), None);
        let end = planner.finish();
        assert_eq!(end.counts.updated, 1);
        assert!(end.delete_user_ids.is_empty());
    }

    fn plan_deleting(n: usize) -> SyncPlan {
        SyncPlan {
            delete_user_ids: (0..n).map(|i| format!("id-{i}")).collect(),
            ..SyncPlan::default()
        }
    }

    #[test]
    fn guard_absolute_limit_boundary() {
        let guard = DeletionGuard::default();
        assert_eq!(guard.max_deletes, 500);
        assert_eq!(guard.max_share_percent, 20);
        assert!(guard.check(100_000, &plan_deleting(500)).is_ok());
        let tripped = guard.check(100_000, &plan_deleting(501)).unwrap_err();
        assert_eq!(
            tripped,
            GuardTripped {
                would_delete: 501,
                current_users: 100_000,
                max_deletes: 500,
                max_share_percent: 20
            }
        );
        let message = tripped.to_string();
        assert!(message.contains("501 of 100000"), "{message}");
        assert!(
            message.contains("tapctl sync run --allow-deletes"),
            "{message}"
        );
    }

    #[test]
    fn guard_share_boundary() {
        let guard = DeletionGuard::default();
        // 20 % of 1000 is 200: allowed; 201 is just above.
        assert!(guard.check(1000, &plan_deleting(200)).is_ok());
        assert!(guard.check(1000, &plan_deleting(201)).is_err());
        // 20 % of 12 is 2.4: 2 allowed, 3 refused.
        assert!(guard.check(12, &plan_deleting(2)).is_ok());
        assert!(guard.check(12, &plan_deleting(3)).is_err());
        // Everything gone (an empty directory answer) is refused.
        assert!(guard.check(8, &plan_deleting(8)).is_err());
        // No deletions always pass, even with no users.
        assert!(guard.check(0, &plan_deleting(0)).is_ok());
    }

    #[test]
    fn guard_ignores_other_changes() {
        let guard = DeletionGuard {
            max_deletes: 0,
            max_share_percent: 0,
        };
        let plan = SyncPlan {
            upsert_users: vec![user("alice")],
            delete_group_ids: vec!["id-old".to_owned()],
            ..SyncPlan::default()
        };
        assert!(guard.check(1, &plan).is_ok());
        assert!(guard.check(1, &plan_deleting(1)).is_err());
    }
}
