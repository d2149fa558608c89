//! Who the TAP policy applies to. A user is **in scope** when the policy is enabled, the
//! directory account is enabled, some include target names the user (directly, through one of
//! the user's transitive groups, or through the pseudo-group `all_users`) and no exclude target
//! does: exclusion always wins.
//!
//! Pure: depends on `crate::model` and `crate::group_ref`. The caller resolves the user's
//! effective groups and passes the index of every synced group (which cns are unique).

use crate::group_ref::GroupIndex;
use crate::model::{Group, PolicyState, TapPolicy, TargetType, User, ALL_USERS};

/// Why a user is out of the policy's scope; the first failing condition, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutOfScope {
    /// The policy's `state` is `disabled`.
    PolicyDisabled,
    /// The directory account is disabled or locked.
    AccountDisabled,
    /// No include target names the user or one of their groups.
    NotIncluded,
    /// An exclude target names the user or one of their groups.
    Excluded,
}

impl OutOfScope {
    /// A short, stable explanation for logs and audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            OutOfScope::PolicyDisabled => "policy_disabled",
            OutOfScope::AccountDisabled => "account_disabled",
            OutOfScope::NotIncluded => "not_included",
            OutOfScope::Excluded => "excluded",
        }
    }
}

/// Whether a single policy target names `user`.
///
/// - group target `all_users` (exact id): everyone;
/// - group target: one of `groups` is named by it (id, DN, or a cn only one synced group has;
///   see [`crate::group_ref`]);
/// - user target: the user's id, username or userPrincipalName, case-insensitively.
///
/// A blank id never matches.
pub fn target_matches(
    id: &str,
    target_type: TargetType,
    user: &User,
    groups: &[Group],
    index: &GroupIndex,
) -> bool {
    if id.trim().is_empty() {
        return false;
    }
    match target_type {
        TargetType::Group => {
            if id == ALL_USERS {
                return true;
            }
            let reference = index.resolve(id);
            groups.iter().any(|g| reference.names(index, &g.id, &g.dn))
        }
        TargetType::User => {
            user.id.eq_ignore_ascii_case(id)
                || user.username.eq_ignore_ascii_case(id)
                || user.user_principal_name.eq_ignore_ascii_case(id)
        }
    }
}

/// Decides scope and says why not. `groups` must be the user's effective (transitive) groups,
/// as the store returns them for `user.group_ids`; `index` knows every synced group.
pub fn scope_check(
    policy: &TapPolicy,
    user: &User,
    groups: &[Group],
    index: &GroupIndex,
) -> Result<(), OutOfScope> {
    if policy.state != PolicyState::Enabled {
        return Err(OutOfScope::PolicyDisabled);
    }
    if !user.account_enabled {
        return Err(OutOfScope::AccountDisabled);
    }
    let included = policy
        .include_targets
        .iter()
        .any(|t| target_matches(&t.id, t.target_type, user, groups, index));
    if !included {
        return Err(OutOfScope::NotIncluded);
    }
    let excluded = policy
        .exclude_targets
        .iter()
        .any(|t| target_matches(&t.id, t.target_type, user, groups, index));
    if excluded {
        return Err(OutOfScope::Excluded);
    }
    Ok(())
}

/// True iff the policy is enabled, the account is enabled, the user is included and not
/// excluded. See [`scope_check`] for the reason when false.
pub fn in_scope(policy: &TapPolicy, user: &User, groups: &[Group], index: &GroupIndex) -> bool {
    scope_check(policy, user, groups, index).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExcludeTarget, IncludeTarget};

    fn user() -> User {
        User {
            id: "u-1111".into(),
            dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            username: "alice".into(),
            user_principal_name: "alice@example.org".into(),
            display_name: "Alice".into(),
            mail: None,
            account_enabled: true,
            group_ids: vec!["g-staff".into()],
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    fn staff() -> Group {
        Group {
            id: "g-staff".into(),
            dn: "cn=staff,ou=groups,dc=example,dc=org".into(),
            display_name: "staff".into(),
            member_user_ids: vec!["u-1111".into()],
        }
    }

    fn inc(id: &str, t: TargetType) -> IncludeTarget {
        IncludeTarget {
            id: id.into(),
            target_type: t,
            is_registration_required: false,
        }
    }

    fn exc(id: &str, t: TargetType) -> ExcludeTarget {
        ExcludeTarget {
            id: id.into(),
            target_type: t,
        }
    }

    fn enabled(include: Vec<IncludeTarget>, exclude: Vec<ExcludeTarget>) -> TapPolicy {
        TapPolicy {
            state: PolicyState::Enabled,
            include_targets: include,
            exclude_targets: exclude,
            ..TapPolicy::default()
        }
    }

    use TargetType::{Group as G, User as U};

    #[test]
    fn scope_table() {
        let all = || vec![inc(ALL_USERS, G)];
        #[rustfmt::skip]
        let cases: Vec<(&str, TapPolicy, bool, Result<(), OutOfScope>)> = vec![
            ("default policy is disabled", TapPolicy::default(), true, Err(OutOfScope::PolicyDisabled)),
            ("enabled, all_users", enabled(all(), vec![]), true, Ok(())),
            ("account disabled", enabled(all(), vec![]), false, Err(OutOfScope::AccountDisabled)),
            ("group by id", enabled(vec![inc("g-staff", G)], vec![]), true, Ok(())),
            ("group by dn, other case", enabled(vec![inc("CN=Staff,OU=Groups,DC=example,DC=org", G)], vec![]), true, Ok(())),
            ("group by cn, other case", enabled(vec![inc("STAFF", G)], vec![]), true, Ok(())),
            ("group id is case-sensitive", enabled(vec![inc("G-STAFF", G)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("other group", enabled(vec![inc("admins", G)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("user by id", enabled(vec![inc("U-1111", U)], vec![]), true, Ok(())),
            ("user by username", enabled(vec![inc("ALICE", U)], vec![]), true, Ok(())),
            ("user by upn", enabled(vec![inc("Alice@Example.org", U)], vec![]), true, Ok(())),
            ("user target does not name groups", enabled(vec![inc("staff", U)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("group target does not name users", enabled(vec![inc("alice", G)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("other user", enabled(vec![inc("bob", U)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("all_users as a user target is just a name", enabled(vec![inc(ALL_USERS, U)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("blank id never matches", enabled(vec![inc(" ", U)], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("empty include list", enabled(vec![], vec![]), true, Err(OutOfScope::NotIncluded)),
            ("excluded by group beats all_users", enabled(all(), vec![exc("staff", G)]), true, Err(OutOfScope::Excluded)),
            ("excluded by user beats direct include", enabled(vec![inc("alice", U)], vec![exc("alice@example.org", U)]), true, Err(OutOfScope::Excluded)),
            ("exclude all_users excludes everyone", enabled(all(), vec![exc(ALL_USERS, G)]), true, Err(OutOfScope::Excluded)),
            ("exclusion of someone else", enabled(all(), vec![exc("bob", U), exc("admins", G)]), true, Ok(())),
            ("disabled policy wins over everything", TapPolicy { state: PolicyState::Disabled, ..enabled(all(), vec![]) }, false, Err(OutOfScope::PolicyDisabled)),
        ];
        for (name, policy, account_enabled, want) in cases {
            let u = User {
                account_enabled,
                ..user()
            };
            let groups = [staff()];
            let index = GroupIndex::of_groups(&groups);
            assert_eq!(scope_check(&policy, &u, &groups, &index), want, "{name}");
            assert_eq!(
                in_scope(&policy, &u, &groups, &index),
                want.is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn groups_come_from_the_parameter_only() {
        // The caller passes the transitive groups; a nested parent group counts like any other.
        let parent = Group {
            id: "g-parent".into(),
            dn: "cn=parent,ou=groups,dc=example,dc=org".into(),
            display_name: "parent".into(),
            member_user_ids: vec!["u-1111".into()],
        };
        let policy = enabled(vec![inc("parent", G)], vec![]);
        let index = GroupIndex::of_groups(&[staff(), parent.clone()]);
        assert!(in_scope(&policy, &user(), &[staff(), parent], &index));
        assert!(!in_scope(&policy, &user(), &[staff()], &index));
        assert!(!in_scope(&policy, &user(), &[], &index));
    }

    #[test]
    fn spoofed_and_ambiguous_groups_are_not_targets() {
        // A group whose cn is the text of the staff group's DN is not the staff group.
        let spoof = Group {
            id: "g-spoof".into(),
            dn: "cn=cn\\=staff\\,ou\\=groups\\,dc\\=example\\,dc\\=org,ou=people,dc=example,dc=org"
                .into(),
            display_name: "cn=staff,ou=groups,dc=example,dc=org".into(),
            member_user_ids: vec!["u-1111".into()],
        };
        let index = GroupIndex::of_groups(&[staff(), spoof.clone()]);
        let by_dn = enabled(vec![inc("cn=staff,ou=groups,dc=example,dc=org", G)], vec![]);
        assert!(!in_scope(
            &by_dn,
            &user(),
            std::slice::from_ref(&spoof),
            &index
        ));
        assert!(in_scope(&by_dn, &user(), &[staff()], &index));
        // A cn two groups share includes nobody and excludes nobody.
        let twin = Group {
            id: "g-staff-2".into(),
            dn: "cn=staff,ou=people,dc=example,dc=org".into(),
            ..staff()
        };
        let index = GroupIndex::of_groups(&[staff(), twin.clone()]);
        let by_cn = enabled(vec![inc("staff", G)], vec![]);
        assert_eq!(
            scope_check(&by_cn, &user(), &[staff()], &index),
            Err(OutOfScope::NotIncluded)
        );
        let excluded_by_cn = enabled(vec![inc(ALL_USERS, G)], vec![exc("staff", G)]);
        assert!(in_scope(&excluded_by_cn, &user(), &[twin], &index));
    }

    #[test]
    fn reasons_have_stable_names() {
        let names: Vec<_> = [
            OutOfScope::PolicyDisabled,
            OutOfScope::AccountDisabled,
            OutOfScope::NotIncluded,
            OutOfScope::Excluded,
        ]
        .iter()
        .map(|r| r.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "policy_disabled",
                "account_disabled",
                "not_included",
                "excluded"
            ]
        );
    }
}
