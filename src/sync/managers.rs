//! Resolving each user's `manager` DN to the synced user at exactly that DN, after a sync.
//!
//! The directory hands over the normalised DN its entry names (`User::manager_dn`); which user
//! that is can only be known once every user is stored (the manager may come in a later page,
//! or in an earlier incremental read), so the store's `manager_id` is brought in line after each
//! successful sync. The match is exact on the normalised DN: a DN no synced user has (the
//! manager is outside the synced base or filter, or gone) resolves to none, and so does one
//! that two stored users share (it names no one for sure). Nothing is guessed from names.
//!
//! May depend on: `model`, `store` (trait), `dn`.

use std::collections::HashMap;

use crate::dn::normalize_dn;
use crate::model::ManagerLink;
use crate::store::{Store, StoreError};

/// What one resolution found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagerResolution {
    /// Users whose manager link changed (set, moved or cleared).
    pub changed: usize,
    /// Users whose `manager` DN is no synced user's: (userPrincipalName, manager DN).
    pub outside: Vec<(String, String)>,
    /// Users whose `manager` DN several stored users have: (userPrincipalName, manager DN).
    pub ambiguous: Vec<(String, String)>,
}

/// The manager id each link should have, and the links whose stored id differs.
pub fn resolve(links: &[ManagerLink]) -> (Vec<(String, Option<String>)>, ManagerResolution) {
    let mut by_dn: HashMap<String, Vec<&str>> = HashMap::with_capacity(links.len());
    for link in links {
        by_dn
            .entry(normalize_dn(&link.dn))
            .or_default()
            .push(link.id.as_str());
    }
    let mut report = ManagerResolution::default();
    let mut changes = Vec::new();
    for link in links {
        let resolved = match &link.manager_dn {
            None => None,
            Some(manager_dn) => match by_dn.get(&normalize_dn(manager_dn)).map(Vec::as_slice) {
                Some([one]) if *one != link.id => Some((*one).to_owned()),
                // Naming oneself as manager names no one else to mail.
                Some([_]) => None,
                Some(_) => {
                    report
                        .ambiguous
                        .push((link.user_principal_name.clone(), manager_dn.clone()));
                    None
                }
                None => {
                    report
                        .outside
                        .push((link.user_principal_name.clone(), manager_dn.clone()));
                    None
                }
            },
        };
        if resolved != link.manager_id {
            changes.push((link.id.clone(), resolved));
        }
    }
    report.changed = changes.len();
    (changes, report)
}

/// Reads every user's link, resolves it and stores what changed.
pub async fn resolve_in(store: &dyn Store) -> Result<ManagerResolution, StoreError> {
    let links = store.manager_links().await?;
    let (changes, report) = resolve(&links);
    store.set_manager_ids(&changes).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn link(id: &str, dn: &str, manager_dn: Option<&str>, manager_id: Option<&str>) -> ManagerLink {
        ManagerLink {
            id: id.to_owned(),
            dn: dn.to_owned(),
            user_principal_name: format!("{id}@example.org"),
            manager_dn: manager_dn.map(str::to_owned),
            manager_id: manager_id.map(str::to_owned),
        }
    }

    #[test]
    fn a_manager_dn_resolves_to_the_one_user_at_exactly_that_dn() {
        let links = [
            // Same first RDN value under another branch, listed first: not the manager.
            link(
                "boss2",
                "uid=boss,ou=contractors,dc=example,dc=org",
                None,
                None,
            ),
            link("boss", "UID=Boss, ou=People,dc=example,dc=org", None, None),
            link(
                "new",
                "uid=new,ou=people,dc=example,dc=org",
                Some("uid=boss,ou=people,dc=example,dc=org"),
                None,
            ),
            link(
                "old",
                "uid=old,ou=people,dc=example,dc=org",
                Some("uid=boss,ou=people,dc=example,dc=org"),
                Some("boss"),
            ),
        ];
        let (changes, report) = resolve(&links);
        assert_eq!(changes, [("new".to_owned(), Some("boss".to_owned()))]);
        assert_eq!(report.changed, 1);
        assert!(report.outside.is_empty() && report.ambiguous.is_empty());
    }

    #[test]
    fn unknown_shared_and_own_dns_resolve_to_none() {
        let links = [
            link("a", "uid=twin,dc=example,dc=org", None, None),
            link("b", "uid=twin,dc=example,dc=org", None, None),
            link(
                "c",
                "uid=c,dc=example,dc=org",
                Some("uid=twin,dc=example,dc=org"),
                Some("a"),
            ),
            link(
                "d",
                "uid=d,dc=example,dc=org",
                Some("uid=gone,dc=example,dc=org"),
                None,
            ),
            link(
                "e",
                "uid=e,dc=example,dc=org",
                Some("uid=e,dc=example,dc=org"),
                None,
            ),
            // A name alone (the first RDN value of a synced user) is no DN of anyone.
            link("f", "uid=f,dc=example,dc=org", Some("a"), None),
        ];
        let (changes, report) = resolve(&links);
        assert_eq!(changes, [("c".to_owned(), None)]);
        assert_eq!(
            report.ambiguous,
            [(
                "c@example.org".to_owned(),
                "uid=twin,dc=example,dc=org".to_owned()
            )]
        );
        assert_eq!(report.outside.len(), 2);
    }
}
