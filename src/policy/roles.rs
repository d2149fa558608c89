//! Who may do what on the admin API. Roles come from directory group membership mapped in
//! config (`[admin.roles]`); the matrix is DESIGN §2's, mirroring Entra's built-in roles:
//!
//! | action | global_administrator | privileged_authentication_administrator | authentication_administrator | authentication_policy_administrator | global_reader |
//! | --- | --- | --- | --- | --- | --- |
//! | ReadPolicy | ✓ | – | – | ✓ | ✓ |
//! | EditPolicy | ✓ | – | – | ✓ | – |
//! | CreateTap, DeleteTap | anyone but self | admins and members but self | members but self | – | – |
//! | ReadTap | anyone but self | admins and members but self | members but self | – | anyone |
//! | ReadMethods | anyone but self | admins and members but self | members but self | – | anyone |
//! | DeleteMethod | anyone but self | – | – | – | – |
//! | ReadDirectory | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | RunSync | ✓ | – | – | – | – |
//! | ReadSyncStatus | ✓ | – | – | – | ✓ |
//! | ReadAudit | ✓ | – | – | – | ✓ |
//!
//! Decisions beyond the DESIGN table, each deliberate:
//! - reading a user's registered methods goes with managing their TAPs (the methods list shows
//!   the TAP too), so the privileged and plain authentication administrators may read methods of
//!   the users whose TAPs they manage; only global administrators delete methods;
//! - the self rule covers reads as well as writes for the three TAP-managing roles ("create,
//!   view, delete … except themselves"); a global reader reads everything, self included
//!   (users see their own TAP on the web page anyway);
//! - reading the directory (users, groups) is open to every role, since every role needs to
//!   find users; running a sync is for global administrators only; the audit log and sync
//!   status are read by global administrators and global readers, nobody else;
//! - a target is an *admin* when it holds any role (global_reader included), a *member* otherwise;
//! - an actor holding several roles may do what any of them allows;
//! - the break-glass root account (local uid 0) is a global administrator with no directory
//!   identity, hence no "self": it may do everything.
//!
//! Pure: depends on `crate::model` (groups), `crate::group_ref` (which reference names which
//! group) and serde.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::group_ref::GroupIndex;
use crate::model::Group;

/// An administrator role; serialized as the `[admin.roles]` config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// TAPs and methods of any user except themselves; edits the policy; reads everything;
    /// runs a sync.
    GlobalAdministrator,
    /// TAPs (and reading methods) of admins and members, except themselves.
    PrivilegedAuthenticationAdministrator,
    /// TAPs (and reading methods) of members only, except themselves.
    AuthenticationAdministrator,
    /// Reads and edits the policy only.
    AuthenticationPolicyAdministrator,
    /// Reads everything (never a code), writes nothing.
    GlobalReader,
}

impl AdminRole {
    /// Every role, in matrix order.
    pub const ALL: [AdminRole; 5] = [
        AdminRole::GlobalAdministrator,
        AdminRole::PrivilegedAuthenticationAdministrator,
        AdminRole::AuthenticationAdministrator,
        AdminRole::AuthenticationPolicyAdministrator,
        AdminRole::GlobalReader,
    ];

    /// The config key / serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::GlobalAdministrator => "global_administrator",
            AdminRole::PrivilegedAuthenticationAdministrator => {
                "privileged_authentication_administrator"
            }
            AdminRole::AuthenticationAdministrator => "authentication_administrator",
            AdminRole::AuthenticationPolicyAdministrator => "authentication_policy_administrator",
            AdminRole::GlobalReader => "global_reader",
        }
    }

    /// Parses what [`AdminRole::as_str`] produced.
    pub fn parse(s: &str) -> Option<AdminRole> {
        AdminRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Role → directory groups holding it (each named by id, DN or a unique cn; see
/// [`crate::group_ref`]).
/// Deserializes straight from `[admin.roles]`; an unknown role key is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleMapping(pub BTreeMap<AdminRole, Vec<String>>);

impl RoleMapping {
    /// The roles conferred by membership in any of `groups` (the user's effective groups);
    /// `index` knows every synced group.
    pub fn roles_of(&self, groups: &[Group], index: &GroupIndex) -> BTreeSet<AdminRole> {
        self.0
            .iter()
            .filter(|(role, _)| self.granting_group(**role, groups, index).is_some())
            .map(|(role, _)| *role)
            .collect()
    }

    /// The first of `groups` through which `role` is held, if any.
    pub fn granting_group<'g>(
        &self,
        role: AdminRole,
        groups: &'g [Group],
        index: &GroupIndex,
    ) -> Option<&'g Group> {
        self.0.get(&role)?.iter().find_map(|reference| {
            let resolved = index.resolve(reference);
            groups.iter().find(|g| resolved.names(index, &g.id, &g.dn))
        })
    }

    /// Every reference with where it is written (`admin.roles.global_administrator`).
    pub fn references(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .flat_map(|(role, refs)| {
                refs.iter()
                    .map(move |r| (format!("admin.roles.{role}"), r.clone()))
            })
            .collect()
    }
}

/// Who is calling the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Local uid 0 while `root_is_global_administrator` is on: may do everything.
    BreakGlassRoot,
    /// A local account mapped to the directory user of the same username.
    DirectoryUser {
        /// The directory user's stable id (for the "not themselves" rule).
        user_id: String,
        /// The roles their groups confer (possibly none).
        roles: BTreeSet<AdminRole>,
    },
}

/// What the caller wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminAction {
    /// GET the policy.
    ReadPolicy,
    /// PATCH or reset the policy.
    EditPolicy,
    /// Create (or replace) a user's TAP.
    CreateTap,
    /// List / get a user's TAP (never the code).
    ReadTap,
    /// Delete a user's TAP.
    DeleteTap,
    /// List a user's registered methods.
    ReadMethods,
    /// Delete a user's registered method.
    DeleteMethod,
    /// List / get users and groups.
    ReadDirectory,
    /// Run a directory sync now.
    RunSync,
    /// Read the last sync status.
    ReadSyncStatus,
    /// Read audit events.
    ReadAudit,
}

impl AdminAction {
    /// Every action.
    pub const ALL: [AdminAction; 11] = [
        AdminAction::ReadPolicy,
        AdminAction::EditPolicy,
        AdminAction::CreateTap,
        AdminAction::ReadTap,
        AdminAction::DeleteTap,
        AdminAction::ReadMethods,
        AdminAction::DeleteMethod,
        AdminAction::ReadDirectory,
        AdminAction::RunSync,
        AdminAction::ReadSyncStatus,
        AdminAction::ReadAudit,
    ];

    /// Whether the action is about one target user (and [`authorize`] needs a [`TargetUser`]).
    pub fn has_target(self) -> bool {
        matches!(
            self,
            AdminAction::CreateTap
                | AdminAction::ReadTap
                | AdminAction::DeleteTap
                | AdminAction::ReadMethods
                | AdminAction::DeleteMethod
        )
    }

    /// What the action does, as the object of "may …" in messages.
    pub fn describe(self) -> &'static str {
        match self {
            AdminAction::ReadPolicy => "read the Temporary Access Pass policy",
            AdminAction::EditPolicy => "change the Temporary Access Pass policy",
            AdminAction::CreateTap => "create a Temporary Access Pass",
            AdminAction::ReadTap => "view a Temporary Access Pass",
            AdminAction::DeleteTap => "delete a Temporary Access Pass",
            AdminAction::ReadMethods => "view authentication methods",
            AdminAction::DeleteMethod => "delete an authentication method",
            AdminAction::ReadDirectory => "read users and groups",
            AdminAction::RunSync => "run a directory sync",
            AdminAction::ReadSyncStatus => "read the directory sync status",
            AdminAction::ReadAudit => "read the audit log",
        }
    }
}

/// The user an action is about, with the roles they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetUser<'a> {
    /// Stable directory id.
    pub user_id: &'a str,
    /// Roles the target holds; any role makes them an "admin", none a "member".
    pub roles: &'a BTreeSet<AdminRole>,
}

impl TargetUser<'_> {
    /// True when the target holds any admin role.
    pub fn is_admin(&self) -> bool {
        !self.roles.is_empty()
    }
}

/// Why an admin action was refused (answered with 403, or 400 for `TargetRequired`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The caller maps to a directory user holding no admin role.
    #[error("you hold no tapd admin role; ask for membership in a group mapped in [admin.roles]")]
    NoAdminRole,
    /// TAPs and methods of one's own account can't be managed over the admin API.
    #[error(
        "administrators can't {} for themselves; ask another administrator (users manage their \
         own Temporary Access Pass on the web page)",
        .action.describe()
    )]
    OwnAccount {
        /// What was attempted.
        action: AdminAction,
    },
    /// An authentication administrator tried to act on a user holding an admin role.
    #[error(
        "an authentication administrator can manage Temporary Access Passes of members only; \
         {target_user_id} holds an admin role (needs privileged_authentication_administrator \
         or global_administrator)"
    )]
    TargetIsAdmin {
        /// The target's stable id.
        target_user_id: String,
    },
    /// None of the caller's roles allows the action.
    #[error("to {} you need one of: {}", .action.describe(), join_roles(.allowed))]
    NeedsRole {
        /// What was attempted.
        action: AdminAction,
        /// Roles that would allow it on this target.
        allowed: Vec<AdminRole>,
    },
    /// A per-user action was asked for without a target user (a caller bug).
    #[error("to {} a target user is needed", .action.describe())]
    TargetRequired {
        /// What was attempted.
        action: AdminAction,
    },
}

fn join_roles(roles: &[AdminRole]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One role's verdict on one action, before roles are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    OwnAccount,
    TargetIsAdmin,
    NotGranted,
}

/// Which targets a role may act on for a per-user action.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Not at all.
    Nobody,
    /// Members only, never themselves.
    MembersButSelf,
    /// Admins and members, never themselves.
    AnyoneButSelf,
    /// Anyone, themselves included (read-only roles).
    Anyone,
}

fn reach(role: AdminRole, action: AdminAction) -> Reach {
    use AdminAction as A;
    use AdminRole as R;
    match (role, action) {
        (R::GlobalAdministrator, A::CreateTap | A::ReadTap | A::DeleteTap)
        | (R::GlobalAdministrator, A::ReadMethods | A::DeleteMethod) => Reach::AnyoneButSelf,
        (
            R::PrivilegedAuthenticationAdministrator,
            A::CreateTap | A::ReadTap | A::DeleteTap | A::ReadMethods,
        ) => Reach::AnyoneButSelf,
        (
            R::AuthenticationAdministrator,
            A::CreateTap | A::ReadTap | A::DeleteTap | A::ReadMethods,
        ) => Reach::MembersButSelf,
        (R::GlobalReader, A::ReadTap | A::ReadMethods) => Reach::Anyone,
        _ => Reach::Nobody,
    }
}

/// Whether a role allows an action that has no target user.
fn grants(role: AdminRole, action: AdminAction) -> bool {
    use AdminAction as A;
    use AdminRole as R;
    match action {
        A::ReadDirectory => true,
        A::ReadPolicy => matches!(
            role,
            R::GlobalAdministrator | R::AuthenticationPolicyAdministrator | R::GlobalReader
        ),
        A::EditPolicy => matches!(
            role,
            R::GlobalAdministrator | R::AuthenticationPolicyAdministrator
        ),
        A::RunSync => role == R::GlobalAdministrator,
        A::ReadSyncStatus | A::ReadAudit => {
            matches!(role, R::GlobalAdministrator | R::GlobalReader)
        }
        A::CreateTap | A::ReadTap | A::DeleteTap | A::ReadMethods | A::DeleteMethod => false,
    }
}

fn verdict(role: AdminRole, action: AdminAction, target: Option<(bool, bool)>) -> Verdict {
    let Some((is_self, target_is_admin)) = target else {
        return if grants(role, action) {
            Verdict::Allowed
        } else {
            Verdict::NotGranted
        };
    };
    match reach(role, action) {
        Reach::Nobody => Verdict::NotGranted,
        Reach::Anyone => Verdict::Allowed,
        Reach::AnyoneButSelf | Reach::MembersButSelf if is_self => Verdict::OwnAccount,
        Reach::MembersButSelf if target_is_admin => Verdict::TargetIsAdmin,
        Reach::AnyoneButSelf | Reach::MembersButSelf => Verdict::Allowed,
    }
}

/// Decides whether `actor` may perform `action` on `target` (required exactly for actions with
/// [`AdminAction::has_target`]; ignored otherwise). Any one of the actor's roles suffices. When
/// all refuse, the most specific reason is given: own account, then admin target, then the
/// roles that would have allowed it.
pub fn authorize(
    actor: &Actor,
    action: AdminAction,
    target: Option<TargetUser<'_>>,
) -> Result<(), Denied> {
    if action.has_target() && target.is_none() {
        return Err(Denied::TargetRequired { action });
    }
    let (user_id, roles) = match actor {
        Actor::BreakGlassRoot => return Ok(()),
        Actor::DirectoryUser { user_id, roles } => (user_id, roles),
    };
    if roles.is_empty() {
        return Err(Denied::NoAdminRole);
    }
    let target_facts = target
        .filter(|_| action.has_target())
        .map(|t| (t.user_id == user_id.as_str(), t.is_admin()));
    let verdicts: Vec<Verdict> = roles
        .iter()
        .map(|r| verdict(*r, action, target_facts))
        .collect();
    if verdicts.contains(&Verdict::Allowed) {
        return Ok(());
    }
    if verdicts.contains(&Verdict::OwnAccount) {
        return Err(Denied::OwnAccount { action });
    }
    if let (true, Some(t)) = (verdicts.contains(&Verdict::TargetIsAdmin), target) {
        return Err(Denied::TargetIsAdmin {
            target_user_id: t.user_id.to_owned(),
        });
    }
    // Roles that would allow this on someone like the target who is not the caller.
    let others = target_facts.map(|(_, admin)| (false, admin));
    let allowed = AdminRole::ALL
        .into_iter()
        .filter(|r| verdict(*r, action, others) == Verdict::Allowed)
        .collect();
    Err(Denied::NeedsRole { action, allowed })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use AdminAction as A;
    use AdminRole as R;

    const ME: &str = "u-me";
    const OTHER: &str = "u-other";

    /// Cell codes: `Y` allowed, `S` own account refused, `A` admin target refused,
    /// `N` refused for lack of a role. Targeted actions have three cells (self, member, admin),
    /// the others one. Columns: GA, PAA, AA, APA, GR — the order of `AdminRole::ALL`.
    #[rustfmt::skip]
    const MATRIX: [(AdminAction, [&str; 5]); 11] = [
        (A::ReadPolicy,     ["Y",   "N",   "N",   "Y",   "Y"  ]),
        (A::EditPolicy,     ["Y",   "N",   "N",   "Y",   "N"  ]),
        (A::CreateTap,      ["SYY", "SYY", "SYA", "NNN", "NNN"]),
        (A::ReadTap,        ["SYY", "SYY", "SYA", "NNN", "YYY"]),
        (A::DeleteTap,      ["SYY", "SYY", "SYA", "NNN", "NNN"]),
        (A::ReadMethods,    ["SYY", "SYY", "SYA", "NNN", "YYY"]),
        (A::DeleteMethod,   ["SYY", "NNN", "NNN", "NNN", "NNN"]),
        (A::ReadDirectory,  ["Y",   "Y",   "Y",   "Y",   "Y"  ]),
        (A::RunSync,        ["Y",   "N",   "N",   "N",   "N"  ]),
        (A::ReadSyncStatus, ["Y",   "N",   "N",   "N",   "Y"  ]),
        (A::ReadAudit,      ["Y",   "N",   "N",   "N",   "Y"  ]),
    ];

    fn actor(roles: &[AdminRole]) -> Actor {
        Actor::DirectoryUser {
            user_id: ME.into(),
            roles: roles.iter().copied().collect(),
        }
    }

    fn cell(result: &Result<(), Denied>) -> char {
        match result {
            Ok(()) => 'Y',
            Err(Denied::OwnAccount { .. }) => 'S',
            Err(Denied::TargetIsAdmin { .. }) => 'A',
            Err(Denied::NeedsRole { .. }) => 'N',
            Err(other) => panic!("unexpected denial {other:?}"),
        }
    }

    #[test]
    fn matrix_is_complete() {
        let actions: Vec<_> = MATRIX.iter().map(|(a, _)| *a).collect();
        assert_eq!(actions, AdminAction::ALL);
        for (action, cells) in MATRIX {
            for c in cells {
                assert_eq!(c.len(), if action.has_target() { 3 } else { 1 });
            }
        }
    }

    #[test]
    fn every_cell_of_the_role_matrix() {
        let member = BTreeSet::new();
        for (action, cells) in MATRIX {
            for (role, want) in AdminRole::ALL.into_iter().zip(cells) {
                let a = actor(&[role]);
                let Actor::DirectoryUser { roles: own, .. } = &a else {
                    unreachable!()
                };
                if action.has_target() {
                    let myself = TargetUser {
                        user_id: ME,
                        roles: own,
                    };
                    let to_member = TargetUser {
                        user_id: OTHER,
                        roles: &member,
                    };
                    let got_self = cell(&authorize(&a, action, Some(myself)));
                    let got_member = cell(&authorize(&a, action, Some(to_member)));
                    // Any single role makes the target an admin.
                    let admin_cells: BTreeSet<char> = AdminRole::ALL
                        .into_iter()
                        .map(|target_role| {
                            let roles = BTreeSet::from([target_role]);
                            let t = TargetUser {
                                user_id: OTHER,
                                roles: &roles,
                            };
                            cell(&authorize(&a, action, Some(t)))
                        })
                        .collect();
                    assert_eq!(admin_cells.len(), 1, "{role} {action:?}: {admin_cells:?}");
                    let got_admin = admin_cells.into_iter().next().unwrap();
                    let got: String = [got_self, got_member, got_admin].into_iter().collect();
                    assert_eq!(&got, want, "{role} {action:?} (self, member, admin)");
                } else {
                    let got = cell(&authorize(&a, action, None)).to_string();
                    assert_eq!(&got, want, "{role} {action:?}");
                    // A target passed to an untargeted action changes nothing.
                    let t = TargetUser {
                        user_id: ME,
                        roles: own,
                    };
                    assert_eq!(cell(&authorize(&a, action, Some(t))).to_string(), got);
                }
            }
        }
    }

    #[test]
    fn break_glass_root_may_do_everything() {
        let member = BTreeSet::new();
        let admin = BTreeSet::from(AdminRole::ALL);
        for action in AdminAction::ALL {
            if action.has_target() {
                for roles in [&member, &admin] {
                    let t = TargetUser { user_id: ME, roles };
                    assert_eq!(authorize(&Actor::BreakGlassRoot, action, Some(t)), Ok(()));
                }
            } else {
                assert_eq!(authorize(&Actor::BreakGlassRoot, action, None), Ok(()));
            }
        }
    }

    #[test]
    fn a_user_without_roles_may_do_nothing() {
        let member = BTreeSet::new();
        for action in AdminAction::ALL {
            let t = action.has_target().then_some(TargetUser {
                user_id: OTHER,
                roles: &member,
            });
            assert_eq!(
                authorize(&actor(&[]), action, t),
                Err(Denied::NoAdminRole),
                "{action:?}"
            );
        }
    }

    #[test]
    fn targeted_actions_need_a_target() {
        for action in AdminAction::ALL.into_iter().filter(|a| a.has_target()) {
            for a in [Actor::BreakGlassRoot, actor(&AdminRole::ALL)] {
                assert_eq!(
                    authorize(&a, action, None),
                    Err(Denied::TargetRequired { action })
                );
            }
        }
    }

    #[test]
    fn roles_combine() {
        let member = BTreeSet::new();
        let reader = BTreeSet::from([R::GlobalReader]);
        let ga_gr = actor(&[R::GlobalAdministrator, R::GlobalReader]);
        let Actor::DirectoryUser { roles: own, .. } = &ga_gr else {
            unreachable!()
        };
        let myself = TargetUser {
            user_id: ME,
            roles: own,
        };
        // The reader role lets a global administrator view their own TAP, not create one.
        assert_eq!(authorize(&ga_gr, A::ReadTap, Some(myself)), Ok(()));
        assert_eq!(
            authorize(&ga_gr, A::CreateTap, Some(myself)),
            Err(Denied::OwnAccount {
                action: A::CreateTap
            })
        );
        // Authentication + privileged authentication administrator reaches admins.
        let aa_paa = actor(&[
            R::AuthenticationAdministrator,
            R::PrivilegedAuthenticationAdministrator,
        ]);
        let admin = TargetUser {
            user_id: OTHER,
            roles: &reader,
        };
        assert_eq!(authorize(&aa_paa, A::DeleteTap, Some(admin)), Ok(()));
        // Authentication administrator + global reader: the admin-target reason is the useful one.
        let aa_gr = actor(&[R::AuthenticationAdministrator, R::GlobalReader]);
        assert_eq!(
            authorize(&aa_gr, A::CreateTap, Some(admin)),
            Err(Denied::TargetIsAdmin {
                target_user_id: OTHER.into()
            })
        );
        assert_eq!(authorize(&aa_gr, A::ReadTap, Some(admin)), Ok(()));
        // Policy administrator + authentication administrator: both halves work.
        let apa_aa = actor(&[
            R::AuthenticationPolicyAdministrator,
            R::AuthenticationAdministrator,
        ]);
        assert_eq!(authorize(&apa_aa, A::EditPolicy, None), Ok(()));
        let to_member = TargetUser {
            user_id: OTHER,
            roles: &member,
        };
        assert_eq!(authorize(&apa_aa, A::CreateTap, Some(to_member)), Ok(()));
        assert!(authorize(&apa_aa, A::RunSync, None).is_err());
    }

    #[test]
    fn denials_name_the_roles_that_would_do() {
        let member = BTreeSet::new();
        let reader = BTreeSet::from([R::GlobalReader]);
        let m = TargetUser {
            user_id: OTHER,
            roles: &member,
        };
        let adm = TargetUser {
            user_id: OTHER,
            roles: &reader,
        };
        #[rustfmt::skip]
        let cases: Vec<(AdminRole, AdminAction, Option<TargetUser<'_>>, Vec<AdminRole>)> = vec![
            (R::GlobalReader, A::CreateTap, Some(m), vec![R::GlobalAdministrator, R::PrivilegedAuthenticationAdministrator, R::AuthenticationAdministrator]),
            (R::GlobalReader, A::CreateTap, Some(adm), vec![R::GlobalAdministrator, R::PrivilegedAuthenticationAdministrator]),
            (R::AuthenticationPolicyAdministrator, A::ReadTap, Some(m), vec![R::GlobalAdministrator, R::PrivilegedAuthenticationAdministrator, R::AuthenticationAdministrator, R::GlobalReader]),
            (R::PrivilegedAuthenticationAdministrator, A::DeleteMethod, Some(m), vec![R::GlobalAdministrator]),
            (R::AuthenticationPolicyAdministrator, A::ReadAudit, None, vec![R::GlobalAdministrator, R::GlobalReader]),
            (R::GlobalReader, A::RunSync, None, vec![R::GlobalAdministrator]),
            (R::GlobalReader, A::EditPolicy, None, vec![R::GlobalAdministrator, R::AuthenticationPolicyAdministrator]),
            (R::AuthenticationAdministrator, A::ReadPolicy, None, vec![R::GlobalAdministrator, R::AuthenticationPolicyAdministrator, R::GlobalReader]),
        ];
        for (role, action, target, allowed) in cases {
            assert_eq!(
                authorize(&actor(&[role]), action, target),
                Err(Denied::NeedsRole { action, allowed }),
                "{role} {action:?}"
            );
        }
    }

    #[test]
    fn denial_messages() {
        #[rustfmt::skip]
        let cases = [
            (Denied::NoAdminRole, "you hold no tapd admin role; ask for membership in a group mapped in [admin.roles]"),
            (Denied::OwnAccount { action: A::CreateTap }, "administrators can't create a Temporary Access Pass for themselves; ask another administrator (users manage their own Temporary Access Pass on the web page)"),
            (Denied::TargetIsAdmin { target_user_id: "bob".into() }, "an authentication administrator can manage Temporary Access Passes of members only; bob holds an admin role (needs privileged_authentication_administrator or global_administrator)"),
            (Denied::NeedsRole { action: A::RunSync, allowed: vec![R::GlobalAdministrator] }, "to run a directory sync you need one of: global_administrator"),
            (Denied::NeedsRole { action: A::ReadAudit, allowed: vec![R::GlobalAdministrator, R::GlobalReader] }, "to read the audit log you need one of: global_administrator, global_reader"),
            (Denied::TargetRequired { action: A::DeleteTap }, "to delete a Temporary Access Pass a target user is needed"),
        ];
        for (denied, message) in cases {
            assert_eq!(denied.to_string(), message);
        }
    }

    #[test]
    fn role_names_are_config_keys() {
        #[rustfmt::skip]
        let cases = [
            (R::GlobalAdministrator, "global_administrator"),
            (R::PrivilegedAuthenticationAdministrator, "privileged_authentication_administrator"),
            (R::AuthenticationAdministrator, "authentication_administrator"),
            (R::AuthenticationPolicyAdministrator, "authentication_policy_administrator"),
            (R::GlobalReader, "global_reader"),
        ];
        for (role, name) in cases {
            assert_eq!(role.as_str(), name);
            assert_eq!(role.to_string(), name);
            assert_eq!(AdminRole::parse(name), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<AdminRole>(serde_json::json!(name)).unwrap(),
                role
            );
        }
        assert_eq!(AdminRole::parse("GlobalAdministrator"), None);
    }

    fn group(id: &str, cn: &str) -> Group {
        Group {
            id: id.into(),
            dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
            display_name: cn.into(),
            member_user_ids: vec![],
        }
    }

    #[test]
    fn role_mapping_from_config_and_groups() {
        let mapping: RoleMapping = serde_json::from_value(serde_json::json!({
            "global_administrator": ["cn=tap-admins,ou=groups,dc=example,dc=org"],
            "authentication_administrator": ["helpdesk", "g-servicedesk"],
            "global_reader": ["auditors"],
            "authentication_policy_administrator": [],
        }))
        .unwrap();
        #[rustfmt::skip]
        let cases: Vec<(Vec<Group>, Vec<AdminRole>)> = vec![
            (vec![], vec![]),
            (vec![group("g-1", "staff")], vec![]),
            (vec![group("g-2", "TAP-Admins")], vec![R::GlobalAdministrator]),
            (vec![group("g-3", "HelpDesk")], vec![R::AuthenticationAdministrator]),
            (vec![group("g-servicedesk", "service desk")], vec![R::AuthenticationAdministrator]),
            (vec![group("g-2", "tap-admins"), group("g-4", "auditors"), group("g-3", "helpdesk")],
             vec![R::GlobalAdministrator, R::AuthenticationAdministrator, R::GlobalReader]),
        ];
        for (groups, want) in cases {
            let index = GroupIndex::of_groups(&groups);
            let got: Vec<_> = mapping.roles_of(&groups, &index).into_iter().collect();
            assert_eq!(got, want, "{groups:?}");
        }
        assert!(serde_json::from_value::<RoleMapping>(serde_json::json!({"root": ["x"]})).is_err());
        // Blank references never match (a group with an empty cn must not gain a role).
        let blank = RoleMapping(BTreeMap::from([(
            R::GlobalAdministrator,
            vec![String::new()],
        )]));
        let empty = [group("", "")];
        assert!(blank
            .roles_of(&empty, &GroupIndex::of_groups(&empty))
            .is_empty());
    }

    #[test]
    fn spoofed_and_ambiguous_groups_confer_no_role() {
        let mapping: RoleMapping = serde_json::from_value(serde_json::json!({
            "global_administrator": ["cn=tap-admins,ou=groups,dc=example,dc=org"],
            "global_reader": ["auditors"],
        }))
        .unwrap();
        // A group elsewhere whose cn is the admin group's DN.
        let spoof = Group {
            id: "g-spoof".into(),
            dn: "cn=cn\\=tap-admins\\,ou\\=groups\\,dc\\=example\\,dc\\=org,ou=people,dc=example,dc=org".into(),
            display_name: "cn=tap-admins,ou=groups,dc=example,dc=org".into(),
            member_user_ids: vec![],
        };
        let admins = group("g-admins", "tap-admins");
        let index = GroupIndex::of_groups(&[admins.clone(), spoof.clone()]);
        assert!(mapping
            .roles_of(std::slice::from_ref(&spoof), &index)
            .is_empty());
        assert_eq!(
            mapping.roles_of(std::slice::from_ref(&admins), &index),
            BTreeSet::from([R::GlobalAdministrator])
        );
        // Two groups named "auditors": the cn names neither.
        let auditors = group("g-auditors", "auditors");
        let second = Group {
            dn: "cn=auditors,ou=people,dc=example,dc=org".into(),
            ..group("g-auditors-2", "Auditors")
        };
        let index = GroupIndex::of_groups(&[auditors.clone(), second.clone()]);
        assert!(mapping
            .roles_of(std::slice::from_ref(&auditors), &index)
            .is_empty());
        assert!(mapping.roles_of(&[second], &index).is_empty());
        assert_eq!(
            mapping.granting_group(
                R::GlobalReader,
                std::slice::from_ref(&auditors),
                &GroupIndex::of_groups(std::slice::from_ref(&auditors))
            ),
            Some(&auditors)
        );
        assert_eq!(
            mapping.references(),
            vec![
                (
                    "admin.roles.global_administrator".to_owned(),
                    "cn=tap-admins,ou=groups,dc=example,dc=org".to_owned()
                ),
                (
                    "admin.roles.global_reader".to_owned(),
                    "auditors".to_owned()
                ),
            ]
        );
    }
}
