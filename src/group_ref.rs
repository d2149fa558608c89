//! Group references: how a name written in `[admin.roles]`, the TAP policy's include and
//! exclude targets, `registration_interrupt_groups` or a RADIUS reply rule picks out a synced
//! group. A reference names a group
//!
//! - **by id**: it equals the group's stable id (entryUUID, nsUniqueId, objectGUID), exactly;
//! - **by DN**, when it has the syntax of a DN ([`crate::dn::canonical_dn`]): the canonical
//!   forms are equal (types and values case-insensitive, escapes decoded, multi-valued RDNs in
//!   any order). A DN-looking reference is never compared with a cn: a group whose cn is the
//!   text `cn=tap-admins,ou=groups,dc=example,dc=org` is not that group;
//! - **by cn** otherwise, case-insensitively, and only when exactly one synced group has that
//!   cn. A cn that two or more groups share names none of them (the role is not granted, the
//!   target does not apply); the sync and `tapd check-config` report it as an [`Ambiguity`].
//!
//! Whether a cn is unique depends on every group, not just the user's, so a [`GroupIndex`] of
//! every synced group is built from the store at start and after each sync and handed to the
//! services in a [`SharedGroupIndex`]: a sign-in needs no extra store read. A cn reference
//! resolves to the one group id the index knows for it, so a group synced since the index was
//! built (by another node, say) is never named by cn until the index knows it.
//!
//! May depend on: `dn`, `model`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::dn::canonical_dn;
use crate::model::{Group, GroupRef};

/// Every synced group's cn and canonical DN, for resolving references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupIndex {
    /// Folded cn → (id, DN as the directory spells it) of every group that has it.
    by_cn: HashMap<String, Vec<(String, String)>>,
    /// Group id → what the index knows of it.
    by_id: HashMap<String, Indexed>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Indexed {
    dn: String,
    cn: String,
    /// `dn`'s canonical form (`None` when it did not parse).
    canonical: Option<String>,
}

/// A reference as resolved against a [`GroupIndex`]; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    reference: &'a str,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A DN, in canonical form.
    Dn(String),
    /// A cn held by exactly one group: that group's id.
    UniqueCn(String),
    /// A cn held by no group, or by several (then it names none of them).
    NoUniqueCn,
}

/// A cn reference that two or more synced groups share, so it names none of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ambiguity {
    /// Where the reference is written (`admin.roles.global_administrator`,
    /// `policy.includeTargets`, …).
    pub place: String,
    /// The reference as written.
    pub reference: String,
    /// The DNs of the groups that share the cn, sorted.
    pub group_dns: Vec<String>,
}

impl std::fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: group reference {:?} is ambiguous and names no group: {} groups have that cn ({}); name the group by DN",
            self.place,
            self.reference,
            self.group_dns.len(),
            self.group_dns.join("; ")
        )
    }
}

fn fold(cn: &str) -> String {
    cn.to_lowercase()
}

impl GroupIndex {
    /// The index of `groups` (every synced group).
    pub fn new<'a>(groups: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut index = GroupIndex::default();
        for (id, dn, cn) in groups {
            index
                .by_cn
                .entry(fold(cn))
                .or_default()
                .push((id.to_owned(), dn.to_owned()));
            let indexed = Indexed {
                dn: dn.to_owned(),
                cn: cn.to_owned(),
                canonical: canonical_dn(dn),
            };
            index.by_id.insert(id.to_owned(), indexed);
        }
        for holders in index.by_cn.values_mut() {
            holders.sort_by(|a, b| a.1.cmp(&b.1));
        }
        index
    }

    /// The index of these groups.
    pub fn of_groups(groups: &[Group]) -> Self {
        GroupIndex::new(
            groups
                .iter()
                .map(|g| (g.id.as_str(), g.dn.as_str(), g.display_name.as_str())),
        )
    }

    /// This index with `upserts` added or replaced and `deleted` ids removed (what an
    /// incremental sync changes).
    pub fn with_changes(&self, upserts: &[Group], deleted: &[String]) -> Self {
        let mut groups: HashMap<&str, (&str, &str)> = self
            .by_id
            .iter()
            .map(|(id, g)| (id.as_str(), (g.dn.as_str(), g.cn.as_str())))
            .collect();
        for id in deleted {
            groups.remove(id.as_str());
        }
        for g in upserts {
            groups.insert(&g.id, (&g.dn, &g.display_name));
        }
        GroupIndex::new(groups.into_iter().map(|(id, (dn, cn))| (id, dn, cn)))
    }

    /// How many groups the index knows.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the index knows no group.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The groups with these ids as the index knows them (no member lists); ids it does not
    /// know are left out.
    pub fn groups(&self, ids: &[String]) -> Vec<Group> {
        ids.iter()
            .filter_map(|id| {
                let g = self.by_id.get(id)?;
                Some(Group {
                    id: id.clone(),
                    dn: g.dn.clone(),
                    display_name: g.cn.clone(),
                    member_user_ids: Vec::new(),
                })
            })
            .collect()
    }

    /// The cn of the group with this id, if the index knows it.
    pub fn cn(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(|g| g.cn.as_str())
    }

    /// What `reference` names, resolved once for matching against many groups.
    pub fn resolve<'a>(&self, reference: &'a str) -> Resolved<'a> {
        let kind = match canonical_dn(reference) {
            Some(dn) => Kind::Dn(dn),
            None => match self.by_cn.get(&fold(reference)).map(Vec::as_slice) {
                Some([(id, _)]) => Kind::UniqueCn(id.clone()),
                _ => Kind::NoUniqueCn,
            },
        };
        Resolved { reference, kind }
    }

    /// Whether `reference` names the group with this id and DN.
    pub fn names(&self, reference: &str, id: &str, dn: &str) -> bool {
        self.resolve(reference).names(self, id, dn)
    }

    /// The ambiguities among `references` (place, reference): cn references that two or more
    /// synced groups share. Blank references and DNs are never ambiguous.
    pub fn ambiguities<'a>(
        &self,
        references: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Ambiguity> {
        references
            .into_iter()
            .filter(|(_, reference)| {
                !reference.trim().is_empty() && canonical_dn(reference).is_none()
            })
            .filter_map(|(place, reference)| {
                let holders = self.by_cn.get(&fold(reference))?;
                (holders.len() > 1).then(|| Ambiguity {
                    place: place.to_owned(),
                    reference: reference.to_owned(),
                    group_dns: holders.iter().map(|(_, dn)| dn.clone()).collect(),
                })
            })
            .collect()
    }
}

impl Resolved<'_> {
    /// Whether the reference names the group with this id and DN. `index` supplies the
    /// group's canonical DN when it knows the group (else it is computed here).
    pub fn names(&self, index: &GroupIndex, id: &str, dn: &str) -> bool {
        if self.reference.trim().is_empty() {
            return false;
        }
        if id == self.reference {
            return true;
        }
        match &self.kind {
            Kind::Dn(wanted) => match index.by_id.get(id) {
                Some(known) if known.dn == dn => known.canonical.as_ref() == Some(wanted),
                // A DN newer than the index's: normalised here.
                _ => canonical_dn(dn).as_ref() == Some(wanted),
            },
            Kind::UniqueCn(only) => id == only,
            Kind::NoUniqueCn => false,
        }
    }
}

impl Group {
    /// Whether `reference` names this group (id, canonical DN, or a cn only this group has;
    /// see [`crate::group_ref`]). Resolves the reference each time: a loop over groups should
    /// [`GroupIndex::resolve`] it once.
    pub fn is_named_by(&self, reference: &str, index: &GroupIndex) -> bool {
        index.names(reference, &self.id, &self.dn)
    }
}

impl GroupRef {
    /// Whether `reference` names this group, as [`Group::is_named_by`].
    pub fn is_named_by(&self, reference: &str, index: &GroupIndex) -> bool {
        index.names(reference, &self.id, &self.dn)
    }
}

/// The current [`GroupIndex`], shared by the services and replaced whole after each sync.
#[derive(Clone, Debug, Default)]
pub struct SharedGroupIndex(Arc<RwLock<Arc<GroupIndex>>>);

impl SharedGroupIndex {
    /// The index now (cheap: one `Arc` clone).
    pub fn current(&self) -> Arc<GroupIndex> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the index.
    pub fn replace(&self, index: GroupIndex) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMINS_DN: &str = "cn=tap-global-admins,ou=groups,dc=example,dc=org";

    fn group(id: &str, dn: &str, cn: &str) -> Group {
        Group {
            id: id.into(),
            dn: dn.into(),
            display_name: cn.into(),
            member_user_ids: vec![],
        }
    }

    fn admins() -> Group {
        group("g-admins", ADMINS_DN, "tap-global-admins")
    }

    /// A group elsewhere whose cn is the admin group's DN, written as a cn.
    fn spoof() -> Group {
        group(
            "g-spoof",
            "cn=cn\\=tap-global-admins\\,ou\\=groups\\,dc\\=example\\,dc\\=org,ou=people,dc=example,dc=org",
            ADMINS_DN,
        )
    }

    #[test]
    fn a_dn_reference_never_matches_a_cn() {
        let index = GroupIndex::of_groups(&[admins(), spoof()]);
        assert!(admins().is_named_by(ADMINS_DN, &index));
        assert!(!spoof().is_named_by(ADMINS_DN, &index));
        // Also in any other spelling of the DN, and without an index.
        let spelled = "CN=TAP-Global-Admins, OU=Groups, DC=example, DC=org";
        assert!(!spoof().is_named_by(spelled, &index));
        assert!(!spoof().is_named_by(spelled, &GroupIndex::default()));
        assert!(admins().is_named_by(spelled, &GroupIndex::default()));
    }

    #[test]
    fn ids_match_exactly() {
        let index = GroupIndex::of_groups(&[admins()]);
        assert!(admins().is_named_by("g-admins", &index));
        assert!(!admins().is_named_by("G-ADMINS", &index));
        assert!(!admins().is_named_by("", &index));
        assert!(!admins().is_named_by(" ", &index));
    }

    #[test]
    fn a_cn_matches_only_when_one_group_has_it() {
        let staff = group("g-staff", "cn=staff,ou=groups,dc=example,dc=org", "staff");
        let index = GroupIndex::of_groups(&[admins(), staff.clone()]);
        assert!(admins().is_named_by("TAP-Global-Admins", &index));
        assert!(staff.is_named_by("staff", &index));
        assert!(!staff.is_named_by("tap-global-admins", &index));

        let second = group(
            "g-second",
            "cn=tap-global-admins,ou=people,dc=example,dc=org",
            "TAP-global-admins",
        );
        let index = GroupIndex::of_groups(&[admins(), second.clone(), staff.clone()]);
        assert!(!admins().is_named_by("tap-global-admins", &index));
        assert!(!second.is_named_by("tap-global-admins", &index));
        // The DN still names the real group.
        assert!(admins().is_named_by(ADMINS_DN, &index));
        assert!(!second.is_named_by(ADMINS_DN, &index));
        let found = index.ambiguities([
            ("admin.roles.global_administrator", "tap-global-admins"),
            ("admin.roles.global_reader", ADMINS_DN),
            ("web.registration_interrupt_groups", "staff"),
        ]);
        assert_eq!(
            found,
            vec![Ambiguity {
                place: "admin.roles.global_administrator".into(),
                reference: "tap-global-admins".into(),
                group_dns: vec![
                    "cn=tap-global-admins,ou=groups,dc=example,dc=org".into(),
                    "cn=tap-global-admins,ou=people,dc=example,dc=org".into(),
                ],
            }]
        );
        assert!(found[0].to_string().contains("ambiguous"));
    }

    #[test]
    fn a_group_the_index_does_not_know_is_not_named_by_cn() {
        // Synced after the index was built: its cn may be a duplicate the index can't see.
        let index = GroupIndex::of_groups(&[admins()]);
        let newcomer = group(
            "g-new",
            "cn=tap-global-admins,ou=people,dc=example,dc=org",
            "tap-global-admins",
        );
        assert!(!newcomer.is_named_by("tap-global-admins", &index));
        assert!(!admins().is_named_by("tap-global-admins", &GroupIndex::default()));
        // By DN it is named, index or not.
        assert!(newcomer.is_named_by("cn=tap-global-admins,ou=people,dc=example,dc=org", &index));
    }

    #[test]
    fn a_renamed_group_is_named_by_its_new_dn() {
        let index = GroupIndex::of_groups(&[admins()]);
        let moved = group(
            "g-admins",
            "cn=tap-global-admins,ou=moved,dc=example,dc=org",
            "x",
        );
        assert!(moved.is_named_by("cn=tap-global-admins,ou=moved,dc=example,dc=org", &index));
        // The group's current DN counts, not the one the index saw.
        assert!(!moved.is_named_by(ADMINS_DN, &index));
    }

    #[test]
    fn group_refs_match_like_groups() {
        let index = GroupIndex::of_groups(&[admins(), spoof()]);
        let admins_ref = GroupRef::from(&admins());
        let spoof_ref = GroupRef::from(&spoof());
        assert!(admins_ref.is_named_by(ADMINS_DN, &index));
        assert!(!spoof_ref.is_named_by(ADMINS_DN, &index));
    }

    #[test]
    fn an_incremental_change_updates_the_index() {
        let staff = group("g-staff", "cn=staff,ou=groups,dc=example,dc=org", "staff");
        let index = GroupIndex::of_groups(&[admins(), staff.clone()]);
        let twin = group("g-twin", "cn=staff,ou=people,dc=example,dc=org", "Staff");
        let changed = index.with_changes(std::slice::from_ref(&twin), &[]);
        assert!(!staff.is_named_by("staff", &changed));
        let back = changed.with_changes(&[], &["g-twin".to_owned()]);
        assert!(staff.is_named_by("staff", &back));
        assert_eq!(back, index);
        assert_eq!(
            changed
                .groups(&["g-twin".to_owned(), "g-unknown".to_owned()])
                .len(),
            1
        );
        assert_eq!(changed.cn("g-twin"), Some("Staff"));
    }

    #[test]
    fn the_shared_index_is_replaced_whole() {
        let shared = SharedGroupIndex::default();
        assert!(shared.current().is_empty());
        shared.replace(GroupIndex::of_groups(&[admins()]));
        assert_eq!(shared.current().len(), 1);
    }
}
