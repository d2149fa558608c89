//! Sign-in names as keys: which user a name stands for, and which users are quarantined
//! because a name they claim is another user's too. Both backends run the same rules, here,
//! over the rows they read; only the queries are theirs.
//!
//! Every user claims two names, its username and its userPrincipalName, folded with
//! [`name_key`]. Each claim carries the store's *claim epoch* at which the user started to
//! claim it (a counter bumped once per applied sync, kept while the name stays the same). For
//! a name claimed by several users:
//! - the user whose claim is strictly the oldest **holds** it: a lookup of the name finds that
//!   user, and the name does not quarantine it;
//! - every other claimant is **quarantined** ([`IdentityConflict`]);
//! - when the oldest claims tie (they appeared in the same sync, or were all there before this
//!   rule existed), nobody holds the name: a lookup finds no user, and all are quarantined.
//!
//! So a user who edits their own `mail` to a colleague's username gets quarantined, and the
//! colleague keeps signing in; nothing is ever decided by row order.
//!
//! May depend on: `model`, `clock`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use crate::clock::Clock;
use crate::model::{
    name_key, AuditResult, Channel, IdentityConflict, NameClaimant, NameConflict, NewAuditEvent,
    User,
};

/// Activity names of the audit events a conflict check records.
pub mod activity {
    /// A user was quarantined, or its conflict changed.
    pub const IDENTITY_CONFLICT: &str = "Directory sync: identity conflict";
    /// A quarantined user's names are its own again.
    pub const IDENTITY_CONFLICT_RESOLVED: &str = "Directory sync: identity conflict resolved";
}

/// The reason code of a quarantined user's audit events and refused sign-ins.
pub const IDENTITY_CONFLICT_REASON: &str = "identity_conflict";

/// One row a name lookup or a conflict check reads: the user and its two claims.
#[derive(Clone, Debug)]
pub(crate) struct Claims {
    /// Stable id.
    pub id: String,
    /// DN.
    pub dn: String,
    /// Username as the directory spells it.
    pub username: String,
    /// Folded username.
    pub username_key: String,
    /// Folded userPrincipalName ("" when the user has none).
    pub upn_key: String,
    /// Claim epoch of the username.
    pub username_since: i64,
    /// Claim epoch of the userPrincipalName.
    pub upn_since: i64,
}

impl Claims {
    /// When this user started to claim `name`, and through which attribute; `None` when it
    /// doesn't claim it.
    fn claim_on(&self, name: &str) -> Option<(i64, &'static str)> {
        let by_username = (self.username_key == name).then_some((self.username_since, "username"));
        let by_upn = (!self.upn_key.is_empty() && self.upn_key == name)
            .then_some((self.upn_since, "userPrincipalName"));
        match (by_username, by_upn) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn claimant(&self) -> NameClaimant {
        NameClaimant {
            id: self.id.clone(),
            dn: self.dn.clone(),
            username: self.username.clone(),
        }
    }
}

/// The keys under which a user is stored: folded username and userPrincipalName.
pub(crate) fn keys_of(user: &User) -> (String, String) {
    (
        name_key(&user.username),
        name_key(&user.user_principal_name),
    )
}

/// What a lookup of `key` (an id or a sign-in name) means, given every row whose id equals it
/// or that claims its folded form: the one user it names, or none.
///
/// An exact id match wins (ids are the directory's and can't be chosen by a user; a user who
/// names themself after another's id only makes their own name unusable). Otherwise the one
/// claimant, or the holder of a contested name; a contested name nobody holds finds nobody.
pub(crate) fn choose<T>(key: &str, candidates: Vec<(T, Claims)>) -> Option<T> {
    if let Some(index) = candidates.iter().position(|(_, claims)| claims.id == key) {
        return candidates.into_iter().nth(index).map(|(user, _)| user);
    }
    let name = name_key(key);
    let mut claiming: Vec<(i64, T)> = candidates
        .into_iter()
        .filter_map(|(user, claims)| claims.claim_on(&name).map(|(since, _)| (since, user)))
        .collect();
    if claiming.len() <= 1 {
        return claiming.pop().map(|(_, user)| user);
    }
    claiming.sort_by_key(|(since, _)| *since);
    if claiming[0].0 == claiming[1].0 {
        return None;
    }
    Some(claiming.swap_remove(0).1)
}

/// The conflicts of every user that claims one of the checked names: `claimants` holds, for
/// each checked name, every user that claims it. Users absent from the answer have none
/// (as far as these names go).
pub(crate) fn conflicts(
    claimants: &BTreeMap<String, Vec<Claims>>,
) -> HashMap<String, IdentityConflict> {
    let mut found: HashMap<String, Vec<NameConflict>> = HashMap::new();
    for (name, users) in claimants {
        let mut claims: Vec<(i64, &'static str, &Claims)> = users
            .iter()
            .filter_map(|c| c.claim_on(name).map(|(since, attr)| (since, attr, c)))
            .collect();
        claims.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.id.cmp(&b.2.id)));
        claims.dedup_by(|a, b| a.2.id == b.2.id);
        if claims.len() < 2 {
            continue;
        }
        let holder = (claims[0].0 != claims[1].0).then(|| claims[0].2);
        for (_, attribute, claim) in &claims {
            if holder.is_some_and(|h| h.id == claim.id) {
                continue;
            }
            let also_claimed_by = claims
                .iter()
                .map(|(_, _, other)| *other)
                .filter(|other| other.id != claim.id && holder.is_none_or(|h| h.id != other.id))
                .map(Claims::claimant)
                .collect();
            found
                .entry(claim.id.clone())
                .or_default()
                .push(NameConflict {
                    name: name.clone(),
                    attribute: (*attribute).to_owned(),
                    held_by: holder.map(Claims::claimant),
                    also_claimed_by,
                });
        }
    }
    found
        .into_iter()
        .map(|(id, mut names)| {
            names.sort_by(|a, b| a.name.cmp(&b.name).then(a.attribute.cmp(&b.attribute)));
            (id, IdentityConflict { names })
        })
        .collect()
}

/// The names a conflict check after a sync looks at: every name of the users the sync wrote
/// and of the users quarantined before it (so that a conflict resolved by a deletion or an
/// edit is lifted).
pub(crate) fn names_to_check<'a>(
    written: impl IntoIterator<Item = &'a str>,
    quarantined: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    written
        .into_iter()
        .chain(quarantined)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How a conflict check's result changes the stored state: for each user in `before` or
/// `after`, its new conflict when it differs from the old one.
pub(crate) fn changes(
    before: &HashMap<String, Option<IdentityConflict>>,
    after: &HashMap<String, IdentityConflict>,
) -> Vec<(String, Option<IdentityConflict>, Option<IdentityConflict>)> {
    let ids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    ids.into_iter()
        .filter_map(|id| {
            let old = before.get(id).cloned().flatten();
            let new = after.get(id).cloned();
            (old != new).then(|| (id.clone(), old, new))
        })
        .collect()
}

/// The audit event (and warning) for a user whose conflict state changed from `old` to `new`,
/// stamped with the time and actor of the sync's own event `template`.
pub(crate) fn conflict_event(
    template: &NewAuditEvent,
    id: &str,
    found: Option<(String, String)>,
    old: Option<IdentityConflict>,
    new: Option<IdentityConflict>,
) -> NewAuditEvent {
    let (upn, dn) = found.unzip();
    let who = format!(
        "{} ({})",
        upn.as_deref().unwrap_or(id),
        dn.as_deref().unwrap_or("?")
    );
    let (activity, result, reason, details) = match new {
        Some(conflict) => {
            log::warn!(
                "identity conflict: user {who} is quarantined (no sign-in, no new TAP) until \
                 the directory is fixed: {}",
                conflict.describe()
            );
            (
                activity::IDENTITY_CONFLICT,
                AuditResult::Failure,
                Some(IDENTITY_CONFLICT_REASON.to_owned()),
                json!({ "userId": id, "dn": dn, "conflict": conflict, "message": conflict.describe() }),
            )
        }
        None => {
            log::info!("identity conflict resolved: user {who} may sign in again");
            (
                activity::IDENTITY_CONFLICT_RESOLVED,
                AuditResult::Success,
                None,
                json!({ "userId": id, "dn": dn, "previousConflict": old }),
            )
        }
    };
    NewAuditEvent {
        time: template.time,
        actor: template.actor.clone(),
        activity: activity.to_owned(),
        target: upn,
        result,
        reason_code: reason,
        channel: Channel::Sync,
        source_address: None,
        details,
    }
}

/// The template [`conflict_event`] is stamped from: the last of a sync's own events, or (a
/// plan applied without any) the store's clock now.
pub(crate) fn event_template(audit: &[NewAuditEvent], clock: &dyn Clock) -> NewAuditEvent {
    audit.last().cloned().unwrap_or_else(|| NewAuditEvent {
        time: clock.now(),
        actor: "tapd".to_owned(),
        activity: String::new(),
        target: None,
        result: AuditResult::Success,
        reason_code: None,
        channel: Channel::Sync,
        source_address: None,
        details: serde_json::Value::Null,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims(id: &str, username: &str, upn: &str, username_since: i64, upn_since: i64) -> Claims {
        Claims {
            id: id.to_owned(),
            dn: format!("uid={username},ou=people"),
            username: username.to_owned(),
            username_key: name_key(username),
            upn_key: name_key(upn),
            username_since,
            upn_since,
        }
    }

    fn user(c: &Claims) -> User {
        User {
            id: c.id.clone(),
            dn: c.dn.clone(),
            username: c.username.clone(),
            user_principal_name: c.upn_key.clone(),
            display_name: c.username.clone(),
            mail: None,
            account_enabled: true,
            group_ids: Vec::new(),
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    fn by_name(rows: &[Claims]) -> BTreeMap<String, Vec<Claims>> {
        let mut map: BTreeMap<String, Vec<Claims>> = BTreeMap::new();
        for row in rows {
            for key in [&row.username_key, &row.upn_key] {
                if !key.is_empty() {
                    map.entry(key.clone()).or_default().push(row.clone());
                }
            }
        }
        map
    }

    #[test]
    fn the_older_claim_holds_a_name_and_the_newcomer_is_quarantined() {
        let alice = claims("a", "alice", "alice@example.org", 1, 1);
        let mallory = claims("m", "mallory", "ALICE", 1, 7);
        let found = conflicts(&by_name(&[alice.clone(), mallory.clone()]));
        assert!(!found.contains_key("a"));
        let conflict = &found["m"];
        assert_eq!(conflict.names.len(), 1);
        assert_eq!(conflict.names[0].name, "alice");
        assert_eq!(conflict.names[0].attribute, "userPrincipalName");
        assert_eq!(conflict.names[0].held_by.as_ref().unwrap().id, "a");
        let pick = |key: &str| {
            choose(
                key,
                vec![
                    (user(&alice), alice.clone()),
                    (user(&mallory), mallory.clone()),
                ],
            )
            .map(|u| u.id)
        };
        assert_eq!(pick("Alice").as_deref(), Some("a"));
        assert_eq!(pick("m").as_deref(), Some("m"), "an exact id wins");
    }

    #[test]
    fn claims_of_the_same_age_quarantine_everyone_and_find_nobody() {
        let one = claims("1", "bob", "bob@x", 3, 3);
        let two = claims("2", "robert", "BOB", 3, 3);
        let found = conflicts(&by_name(&[one.clone(), two.clone()]));
        assert!(found["1"].names[0].held_by.is_none());
        assert_eq!(found["1"].names[0].also_claimed_by[0].id, "2");
        assert!(found["2"].names[0].held_by.is_none());
        assert_eq!(
            choose("bob", vec![(user(&one), one), (user(&two), two)]),
            None
        );
    }

    #[test]
    fn a_user_may_claim_one_name_twice() {
        let solo = claims("s", "sam", "SAM", 2, 5);
        assert!(conflicts(&by_name(std::slice::from_ref(&solo))).is_empty());
        assert_eq!(
            choose("sam", vec![(user(&solo), solo)]).map(|u| u.id),
            Some("s".to_owned())
        );
    }

    #[test]
    fn lifting_and_setting_conflicts_are_both_changes() {
        let conflict = IdentityConflict {
            names: vec![NameConflict {
                name: "x".into(),
                attribute: "username".into(),
                held_by: None,
                also_claimed_by: Vec::new(),
            }],
        };
        let before = HashMap::from([
            ("lifted".to_owned(), Some(conflict.clone())),
            ("kept".to_owned(), Some(conflict.clone())),
            ("clean".to_owned(), None),
        ]);
        let after = HashMap::from([
            ("kept".to_owned(), conflict.clone()),
            ("new".to_owned(), conflict.clone()),
        ]);
        let changed: Vec<String> = changes(&before, &after)
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        assert_eq!(changed, vec!["lifted".to_owned(), "new".to_owned()]);
    }
}
