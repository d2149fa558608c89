//! What a sync changes in who holds an admin role or the TAP scope, for the audit: the roles
//! (`[admin.roles]`) and the scope (the policy's include and exclude targets) of a user before
//! and after the plan, each with the chain of groups it holds through, compared.
//!
//! A user the store held before and after gets an event for every role gained or lost and for
//! moving into or out of the scope. A user new to the store gets one for every role it arrives
//! with (arriving in the scope is not a move: the sync summary counts new users), and a
//! deleted user one for every role it held. Group references resolve as everywhere else
//! ([`crate::group_ref`]), against the index of the groups before and after the sync.
//!
//! Pure. May depend on: `model`, `policy`, `group_ref`, `directory::groups` (nesting).

use std::collections::BTreeMap;

use crate::directory::groups::GroupNesting;
use crate::group_ref::GroupIndex;
use crate::model::{Group, TapPolicy, TargetType, User, ALL_USERS};
use crate::policy::roles::{AdminRole, RoleMapping};
use crate::policy::{scope_check, OutOfScope};

/// What the event is about: an admin role, or the TAP policy's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// An admin role.
    Role(AdminRole),
    /// The TAP policy's scope.
    TapScope,
}

impl Access {
    /// The name the audit uses: the role's config key, or "TAP scope".
    pub fn name(self) -> &'static str {
        match self {
            Access::Role(role) => role.as_str(),
            Access::TapScope => "TAP scope",
        }
    }
}

/// One change of one user's access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessChange {
    /// The user's stable id.
    pub user_id: String,
    /// Their userPrincipalName (the audit target).
    pub user_principal_name: String,
    /// The role, or the scope.
    pub access: Access,
    /// Granted (into scope) or revoked (out of scope).
    pub granted: bool,
    /// The user and the groups it holds (held) through, as names: `erin → engineering → staff
    /// → tap-users`; for a user or `all_users` target, the user or `all_users`.
    pub path: Vec<String>,
    /// Why a user left the scope (`excluded`, `not_included`, `account_disabled`, …).
    pub reason: Option<&'static str>,
}

/// The rules access is judged by, the same before and after the sync.
#[derive(Clone, Copy, Debug)]
pub struct AccessRules<'a> {
    /// `[admin.roles]`.
    pub roles: &'a RoleMapping,
    /// The TAP policy now.
    pub policy: &'a TapPolicy,
}

/// A user as seen on one side of the sync, with what resolves its group references.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// The user.
    pub user: &'a User,
    /// Every synced group on this side.
    pub index: &'a GroupIndex,
    /// The nesting on this side, when known.
    pub nesting: Option<&'a GroupNesting>,
}

/// What a user holds on one side: each role and the scope, with its path.
type Holdings = BTreeMap<Access, Vec<String>>;

fn holdings(rules: AccessRules<'_>, side: Side<'_>) -> (Holdings, Result<(), OutOfScope>) {
    let groups = side.index.groups(&side.user.group_ids);
    let mut held = Holdings::new();
    for role in rules.roles.0.keys() {
        if let Some(group) = rules.roles.granting_group(*role, &groups, side.index) {
            held.insert(Access::Role(*role), path(side, group));
        }
    }
    let scope = scope_check(rules.policy, side.user, &groups, side.index);
    if scope.is_ok() {
        held.insert(Access::TapScope, scope_path(rules.policy, side, &groups));
    }
    (held, scope)
}

/// The user's name, then the chain of groups from one the user is directly in to `group`
/// (`erin → engineering → staff → tap-users`); just the group when the nesting is unknown.
pub fn membership_path(side: Side<'_>, group: &Group) -> Vec<String> {
    path(side, group)
}

fn path(side: Side<'_>, group: &Group) -> Vec<String> {
    let ids = match side.nesting {
        Some(nesting) => nesting.path(&side.user.group_ids, &group.id),
        None => vec![group.id.clone()],
    };
    std::iter::once(side.user.username.clone())
        .chain(
            ids.iter()
                .map(|id| side.index.cn(id).unwrap_or(id).to_owned()),
        )
        .collect()
}

/// The path of the first include target that holds the user in scope.
fn scope_path(policy: &TapPolicy, side: Side<'_>, groups: &[Group]) -> Vec<String> {
    for target in &policy.include_targets {
        match target.target_type {
            TargetType::Group if target.id == ALL_USERS => {
                return vec![side.user.username.clone(), ALL_USERS.to_owned()];
            }
            TargetType::Group => {
                let resolved = side.index.resolve(&target.id);
                if let Some(g) = groups
                    .iter()
                    .find(|g| resolved.names(side.index, &g.id, &g.dn))
                {
                    return path(side, g);
                }
            }
            TargetType::User => {
                if crate::policy::target_matches(
                    &target.id,
                    TargetType::User,
                    side.user,
                    groups,
                    side.index,
                ) {
                    return vec![side.user.username.clone()];
                }
            }
        }
    }
    vec![side.user.username.clone()]
}

/// The changes between `before` (`None`: new to the store) and `after` (`None`: deleted).
pub fn changes(
    rules: AccessRules<'_>,
    before: Option<Side<'_>>,
    after: Option<Side<'_>>,
) -> Vec<AccessChange> {
    let Some(user) = after.or(before).map(|side| side.user) else {
        return Vec::new();
    };
    let (held_before, _) = before
        .map(|side| holdings(rules, side))
        .unwrap_or((Holdings::new(), Ok(())));
    let (held_after, scope_after) = after
        .map(|side| holdings(rules, side))
        .unwrap_or((Holdings::new(), Ok(())));
    // Scope moves only for a user on both sides.
    let counts =
        |access: &Access| *access != Access::TapScope || (before.is_some() && after.is_some());
    let change = |access: Access, granted: bool, path: &Vec<String>| AccessChange {
        user_id: user.id.clone(),
        user_principal_name: user.user_principal_name.clone(),
        access,
        granted,
        path: path.clone(),
        reason: (access == Access::TapScope && !granted)
            .then(|| scope_after.err().map(OutOfScope::as_str))
            .flatten(),
    };
    let mut out = Vec::new();
    for (access, path) in &held_after {
        if !held_before.contains_key(access) && counts(access) {
            out.push(change(*access, true, path));
        }
    }
    for (access, path) in &held_before {
        if !held_after.contains_key(access) && counts(access) {
            out.push(change(*access, false, path));
        }
    }
    out.sort_by_key(|c| (c.access, !c.granted));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::directory::groups::RawGroup;
    use crate::model::{ExcludeTarget, IncludeTarget, PolicyState};

    fn group(cn: &str) -> Group {
        Group {
            id: format!("g-{cn}"),
            dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
            display_name: cn.to_owned(),
            member_user_ids: vec![],
        }
    }

    fn raw(cn: &str, nested: &[&str]) -> RawGroup {
        RawGroup {
            dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
            id: format!("g-{cn}"),
            cn: cn.to_owned(),
            member_dns: nested
                .iter()
                .map(|n| format!("cn={n},ou=groups,dc=example,dc=org"))
                .collect(),
            member_uids: vec![],
        }
    }

    fn erin(groups: &[&str]) -> User {
        User {
            id: "u-erin".into(),
            dn: "uid=erin,ou=people,dc=example,dc=org".into(),
            username: "erin".into(),
            user_principal_name: "erin@example.org".into(),
            display_name: "Erin".into(),
            mail: None,
            account_enabled: true,
            group_ids: groups.iter().map(|g| format!("g-{g}")).collect(),
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    fn policy() -> TapPolicy {
        TapPolicy {
            state: PolicyState::Enabled,
            include_targets: vec![IncludeTarget {
                id: "tap-users".into(),
                target_type: TargetType::Group,
                is_registration_required: false,
            }],
            exclude_targets: vec![ExcludeTarget {
                id: "cn=tap-excluded,ou=groups,dc=example,dc=org".into(),
                target_type: TargetType::Group,
            }],
            ..TapPolicy::default()
        }
    }

    #[test]
    fn a_nested_grant_names_its_path_and_a_removal_revokes() {
        let roles: RoleMapping = serde_json::from_value(serde_json::json!({
            "global_administrator": ["cn=tap-admins,ou=groups,dc=example,dc=org"],
        }))
        .unwrap();
        let policy = policy();
        let rules = AccessRules {
            roles: &roles,
            policy: &policy,
        };
        let index = GroupIndex::of_groups(&[
            group("engineering"),
            group("staff"),
            group("tap-admins"),
            group("tap-users"),
            group("tap-excluded"),
        ]);
        let nesting = GroupNesting::of(&[
            raw("staff", &["engineering"]),
            raw("tap-admins", &["staff"]),
            raw("tap-users", &["staff"]),
            raw("engineering", &[]),
        ]);
        let side = |user| Side {
            user,
            index: &index,
            nesting: Some(&nesting),
        };
        let before = erin(&[]);
        let after = erin(&["engineering", "staff", "tap-admins", "tap-users"]);
        let got = changes(rules, Some(side(&before)), Some(side(&after)));
        let summary: Vec<_> = got
            .iter()
            .map(|c| (c.access.name(), c.granted, c.path.join(" → ")))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "global_administrator",
                    true,
                    "erin → engineering → staff → tap-admins".to_owned()
                ),
                (
                    "TAP scope",
                    true,
                    "erin → engineering → staff → tap-users".to_owned()
                ),
            ]
        );
        // Back out: both revoked, with the path they held through.
        let got = changes(rules, Some(side(&after)), Some(side(&before)));
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|c| !c.granted));
        assert_eq!(got[1].reason, Some("not_included"));
        // Into the exclude group: out of scope, excluded; the role stays.
        let excluded = erin(&[
            "engineering",
            "staff",
            "tap-admins",
            "tap-users",
            "tap-excluded",
        ]);
        let got = changes(rules, Some(side(&after)), Some(side(&excluded)));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].access, got[0].granted, got[0].reason),
            (Access::TapScope, false, Some("excluded"))
        );
        // Nothing changes: nothing to say.
        assert!(changes(rules, Some(side(&after)), Some(side(&after))).is_empty());
        // New users report roles only; deleted ones lose theirs.
        let new = changes(rules, None, Some(side(&after)));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].access, Access::Role(AdminRole::GlobalAdministrator));
        let gone = changes(rules, Some(side(&after)), None);
        assert_eq!(gone.len(), 1);
        assert!(!gone[0].granted);
    }

    #[test]
    fn an_index_that_makes_a_cn_ambiguous_revokes_through_it() {
        let roles: RoleMapping = serde_json::from_value(serde_json::json!({
            "global_reader": ["auditors"],
        }))
        .unwrap();
        let policy = TapPolicy::default();
        let rules = AccessRules {
            roles: &roles,
            policy: &policy,
        };
        let before = GroupIndex::of_groups(&[group("auditors")]);
        let twin = Group {
            id: "g-twin".into(),
            dn: "cn=auditors,ou=people,dc=example,dc=org".into(),
            ..group("auditors")
        };
        let after = GroupIndex::of_groups(&[group("auditors"), twin]);
        let user = erin(&["auditors"]);
        let got = changes(
            rules,
            Some(Side {
                user: &user,
                index: &before,
                nesting: None,
            }),
            Some(Side {
                user: &user,
                index: &after,
                nesting: None,
            }),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, vec!["erin", "auditors"]);
        assert!(!got[0].granted);
    }
}
