//! How directory entries become tapd users and groups under each schema preset.
//!
//! The preset (`openldap`, `389ds`, `active_directory`) and the `[directory.attributes]`
//! overrides say which attribute holds what; this module asks for exactly those attributes and
//! turns each returned entry into a [`User`] (without memberships) or a [`RawGroup`], the
//! same shapes the LDIF source builds, so the nested-group resolution and the sync plan are
//! shared. Stable ids are lower-cased exactly as the LDIF source does; a binary `objectGUID`
//! becomes its GUID string. An account is disabled when `pwdAccountLockedTime` is present,
//! `nsAccountLock` is `true`, or `userAccountControl` has the ACCOUNTDISABLE bit (2).
//!
//! May depend on: `config` (preset, attribute names), `model`, `directory::groups`,
//! `directory::user_extras`.

use super::entry::{format_object_guid, LdapEntry};
use crate::config::{DirectoryAttributes, DirectoryPreset};
use crate::directory::groups::RawGroup;
use crate::directory::user_extras::{manager_dn, DateReader};
use crate::dn::{dc_domain, first_rdn_value, strip_optional_uid};
use crate::model::User;

/// Longest name value (username, userPrincipalName, display name, mail) tapd takes from a
/// user entry, in bytes; an entry with a longer one is not decoded (and the sync skips it).
pub const MAX_NAME_VALUE_BYTES: usize = 2048;

/// `userAccountControl` bit meaning the account is disabled (ACCOUNTDISABLE).
const ACCOUNTDISABLE: u32 = 0x2;

/// What marks an entry as changed, for incremental syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeMarker {
    /// `modifyTimestamp` (OpenLDAP, 389-DS): GeneralizedTime, one-second resolution.
    ModifyTimestamp,
    /// `uSNChanged` (Active Directory): a per-server update sequence number.
    UsnChanged,
}

impl ChangeMarker {
    /// The attribute carrying the marker.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::ModifyTimestamp => "modifyTimestamp",
            Self::UsnChanged => "uSNChanged",
        }
    }
}

/// The attribute mapping in force.
#[derive(Clone, Debug)]
pub struct Schema {
    attributes: DirectoryAttributes,
    /// Attribute names requested in user searches.
    pub user_attributes: Vec<String>,
    /// Attribute names requested in group searches.
    pub group_attributes: Vec<String>,
    /// How changes are found between full syncs.
    pub change_marker: ChangeMarker,
    /// Domain for generated userPrincipalNames (`example.org` from the base DN).
    upn_domain: String,
    /// The date attributes onboarding rules match on.
    dates: std::sync::Arc<DateReader>,
}

/// A group entry turned into membership input plus its display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// Membership input for [`crate::directory::groups::resolve`].
    pub raw: RawGroup,
    /// What the group is called in listings.
    pub display_name: String,
}

impl Schema {
    /// The mapping for `preset` with `attributes` (preset defaults with overrides applied),
    /// under `base_dn`.
    pub fn new(preset: DirectoryPreset, attributes: DirectoryAttributes, base_dn: &str) -> Self {
        let change_marker = match preset {
            DirectoryPreset::ActiveDirectory => ChangeMarker::UsnChanged,
            DirectoryPreset::OpenLdap | DirectoryPreset::Ds389 => ChangeMarker::ModifyTimestamp,
        };
        let mut user_attributes = vec![
            attributes.id.clone(),
            attributes.username.clone(),
            attributes.upn.clone(),
            attributes.display_name.clone(),
            attributes.mail.clone(),
            attributes.manager.clone(),
            "cn".to_owned(),
            "pwdAccountLockedTime".to_owned(),
            "nsAccountLock".to_owned(),
            change_marker.attribute().to_owned(),
        ];
        if preset == DirectoryPreset::ActiveDirectory {
            user_attributes.push("userAccountControl".to_owned());
        }
        let dates = std::sync::Arc::new(DateReader::new(&attributes.dates));
        user_attributes.extend(dates.attributes().iter().cloned());
        let mut group_attributes = vec![
            attributes.group_id.clone(),
            attributes.group_name.clone(),
            attributes.member.clone(),
            change_marker.attribute().to_owned(),
        ];
        if preset != DirectoryPreset::ActiveDirectory {
            group_attributes.push("uniqueMember".to_owned());
            group_attributes.push("memberUid".to_owned());
        }
        dedup_case_insensitive(&mut user_attributes);
        dedup_case_insensitive(&mut group_attributes);
        Schema {
            attributes,
            user_attributes,
            group_attributes,
            change_marker,
            upn_domain: dc_domain(base_dn),
            dates,
        }
    }

    /// The attribute holding users' stable ids.
    pub fn user_id_attribute(&self) -> &str {
        &self.attributes.id
    }

    /// The entry's stable user id.
    pub fn user_id(&self, entry: &LdapEntry) -> Result<String, String> {
        stable_id(entry, &self.attributes.id)
    }

    /// The entry's stable group id.
    pub fn group_id(&self, entry: &LdapEntry) -> Result<String, String> {
        stable_id(entry, &self.attributes.group_id)
    }

    /// A user entry as a [`User`] without memberships; `Ok(None)` (logged) when it has no
    /// username and so can't sign in anywhere. `Err` names what can't be decoded: no stable
    /// id, a value that is not UTF-8, a name longer than [`MAX_NAME_VALUE_BYTES`].
    pub fn user(&self, entry: &LdapEntry) -> Result<Option<User>, String> {
        let id = self.user_id(entry)?;
        let Some(username) = name(entry, &self.attributes.username)? else {
            log::warn!(
                "directory user {} has no {} and is skipped",
                entry.dn,
                self.attributes.username
            );
            return Ok(None);
        };
        let mail = name(entry, &self.attributes.mail)?;
        let user_principal_name = match name(entry, &self.attributes.upn)? {
            Some(upn) => upn,
            None => match &mail {
                Some(mail) => mail.clone(),
                None if self.upn_domain.is_empty() => username.clone(),
                None => format!("{username}@{}", self.upn_domain),
            },
        };
        let display_name = match name(entry, &self.attributes.display_name)? {
            Some(name) => name,
            None => name(entry, "cn")?.unwrap_or_else(|| username.clone()),
        };
        Ok(Some(User {
            id,
            dn: entry.dn.clone(),
            username,
            user_principal_name,
            display_name,
            mail,
            account_enabled: account_enabled(entry)?,
            group_ids: Vec::new(),
            identity_conflict: None,
            manager_dn: manager_dn(name(entry, &self.attributes.manager)?.as_deref()),
            manager_id: None,
            dates: self.dates.read(&entry.dn, |attribute| {
                entry.first_text(attribute).ok().flatten()
            }),
        }))
    }

    /// A group entry as membership input.
    pub fn group(&self, entry: &LdapEntry) -> Result<GroupRecord, String> {
        let id = self.group_id(entry)?;
        let cn = match entry.first_text(&self.attributes.group_name)? {
            Some(cn) => cn,
            None => first_rdn_value(&entry.dn),
        };
        let mut member_dns = entry.texts(&self.attributes.member)?;
        if !self.attributes.member.eq_ignore_ascii_case("uniqueMember") {
            for value in entry.texts("uniqueMember")? {
                member_dns.push(strip_optional_uid(&value).to_owned());
            }
        }
        let member_uids = entry.texts("memberUid")?;
        Ok(GroupRecord {
            raw: RawGroup {
                dn: entry.dn.clone(),
                id,
                cn: cn.clone(),
                member_dns,
                member_uids,
            },
            display_name: cn,
        })
    }

    /// The membership attribute, for Active Directory range retrieval.
    pub fn member_attribute(&self) -> &str {
        &self.attributes.member
    }
}

/// The stable id held in `attribute`: an `objectGUID` as its GUID string, anything else as
/// lower-cased text (as the LDIF source does, so ids match across sources).
fn stable_id(entry: &LdapEntry, attribute: &str) -> Result<String, String> {
    let Some(value) = entry.values(attribute).next() else {
        return Err(format!(
            "{} has no {attribute}; check directory.attributes and that the service account may read it",
            entry.dn
        ));
    };
    if attribute.eq_ignore_ascii_case("objectGUID") {
        if let Some(guid) = format_object_guid(value) {
            return Ok(guid);
        }
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| format!("{}: {attribute} is neither text nor a GUID", entry.dn))?
        .trim();
    if text.is_empty() {
        return Err(format!("{}: {attribute} is empty", entry.dn));
    }
    Ok(text.to_ascii_lowercase())
}

/// The first value of a name attribute ([`LdapEntry::first_text`]), refused when longer than
/// [`MAX_NAME_VALUE_BYTES`].
fn name(entry: &LdapEntry, attribute: &str) -> Result<Option<String>, String> {
    let value = entry.first_text(attribute)?;
    match value {
        Some(text) if text.len() > MAX_NAME_VALUE_BYTES => Err(format!(
            "{}: {attribute} is {} bytes long, more than the {MAX_NAME_VALUE_BYTES} tapd accepts",
            entry.dn,
            text.len()
        )),
        other => Ok(other),
    }
}

fn account_enabled(entry: &LdapEntry) -> Result<bool, String> {
    if entry.has("pwdAccountLockedTime") {
        return Ok(false);
    }
    if entry
        .values("nsAccountLock")
        .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"true"))
    {
        return Ok(false);
    }
    if let Some(flags) = entry.first_text("userAccountControl")? {
        let flags: i64 = flags
            .parse()
            .map_err(|_| format!("{}: userAccountControl {flags:?} is not a number", entry.dn))?;
        // AD writes the 32-bit flags as a signed integer.
        if (flags as u32) & ACCOUNTDISABLE != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn dedup_case_insensitive(names: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::entry::EntryAttribute;
    use super::*;

    fn entry(dn: &str, attributes: &[(&str, &[&[u8]])]) -> LdapEntry {
        LdapEntry {
            dn: dn.to_owned(),
            attributes: attributes
                .iter()
                .map(|(name, values)| EntryAttribute {
                    name: name.to_ascii_lowercase(),
                    options: Vec::new(),
                    values: values.iter().map(|v| v.to_vec()).collect(),
                })
                .collect(),
        }
    }

    fn schema(preset: DirectoryPreset) -> Schema {
        Schema::new(preset, preset.attributes(), "dc=example,dc=org")
    }

    #[test]
    fn openldap_user_with_fallbacks_and_locks() {
        let s = schema(DirectoryPreset::OpenLdap);
        let e = entry(
            "uid=alice,ou=people,dc=example,dc=org",
            &[
                ("entryUUID", &[b"0A1B2C3D-0000-1111-2222-333344445555"]),
                ("uid", &[b"alice"]),
                ("cn", &[b"Alice Liddell"]),
            ],
        );
        let user = s.user(&e).unwrap().unwrap();
        assert_eq!(user.id, "0a1b2c3d-0000-1111-2222-333344445555");
        assert_eq!(user.user_principal_name, "alice@example.org");
        assert_eq!(user.display_name, "Alice Liddell");
        assert!(user.account_enabled);

        let locked = entry(
            "uid=carol,ou=people,dc=example,dc=org",
            &[
                ("entryUUID", &[b"c"]),
                ("uid", &[b"carol"]),
                ("mail", &[b"carol@example.net"]),
                ("pwdAccountLockedTime", &[b"000001010000Z"]),
            ],
        );
        let user = s.user(&locked).unwrap().unwrap();
        assert!(!user.account_enabled);
        assert_eq!(user.user_principal_name, "carol@example.net");
        let ns_locked = entry(
            "uid=dave,dc=example,dc=org",
            &[
                ("entryUUID", &[b"d"]),
                ("uid", &[b"dave"]),
                ("nsAccountLock", &[b"TRUE"]),
            ],
        );
        assert!(!s.user(&ns_locked).unwrap().unwrap().account_enabled);
        let no_uid = entry("cn=x,dc=example,dc=org", &[("entryUUID", &[b"x"])]);
        assert_eq!(s.user(&no_uid).unwrap(), None);
        let no_id = entry("uid=y,dc=example,dc=org", &[("uid", &[b"y"])]);
        assert!(s.user(&no_id).unwrap_err().contains("entryUUID"));
    }

    #[test]
    fn manager_and_configured_dates_are_read() {
        let mut attributes = DirectoryPreset::OpenLdap.attributes();
        attributes.dates = vec!["employeeHireDate".to_owned()];
        let s = Schema::new(DirectoryPreset::OpenLdap, attributes, "dc=example,dc=org");
        assert!(s.user_attributes.iter().any(|a| a == "manager"));
        assert!(s.user_attributes.iter().any(|a| a == "employeehiredate"));
        let e = entry(
            "uid=new,ou=people,dc=example,dc=org",
            &[
                ("entryUUID", &[b"n"]),
                ("uid", &[b"new"]),
                ("manager", &[b"UID=Boss,ou=People,dc=example,dc=org"]),
                ("employeeHireDate", &[b"20261209000000Z"]),
            ],
        );
        let user = s.user(&e).unwrap().unwrap();
        assert_eq!(
            user.manager_dn.as_deref(),
            Some("uid=boss,ou=people,dc=example,dc=org")
        );
        assert_eq!(user.manager_id, None);
        assert_eq!(
            user.dates.get("employeehiredate").copied(),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 9)
        );
    }

    #[test]
    fn active_directory_user_guid_upn_and_disabled_bit() {
        let s = schema(DirectoryPreset::ActiveDirectory);
        let guid: &[u8] = &[
            0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        let e = entry(
            "CN=Bob,OU=Users,DC=corp,DC=example",
            &[
                ("objectGUID", &[guid]),
                ("sAMAccountName", &[b"bob"]),
                ("userPrincipalName", &[b"bob@corp.example"]),
                ("userAccountControl", &[b"514"]),
            ],
        );
        let user = s.user(&e).unwrap().unwrap();
        assert_eq!(user.id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(user.user_principal_name, "bob@corp.example");
        assert!(!user.account_enabled);
        let enabled = entry(
            "CN=Eve,OU=Users,DC=corp,DC=example",
            &[
                ("objectGUID", &[guid]),
                ("sAMAccountName", &[b"eve"]),
                ("userAccountControl", &[b"512"]),
            ],
        );
        assert!(s.user(&enabled).unwrap().unwrap().account_enabled);
        assert!(s.user_attributes.iter().any(|a| a == "userAccountControl"));
        assert!(s.user_attributes.iter().any(|a| a == "uSNChanged"));
    }

    #[test]
    fn groups_collect_member_unique_member_and_member_uid() {
        let s = schema(DirectoryPreset::OpenLdap);
        let e = entry(
            "cn=staff,ou=groups,dc=example,dc=org",
            &[
                ("entryUUID", &[b"G1"]),
                ("cn", &[b"staff"]),
                ("member", &[b"uid=a,dc=example,dc=org"]),
                ("uniqueMember", &[b"uid=b,dc=example,dc=org#'0101'B"]),
                ("memberUid", &[b"c"]),
            ],
        );
        let group = s.group(&e).unwrap();
        assert_eq!(group.raw.id, "g1");
        assert_eq!(
            group.raw.member_dns,
            vec!["uid=a,dc=example,dc=org", "uid=b,dc=example,dc=org"]
        );
        assert_eq!(group.raw.member_uids, vec!["c"]);
        assert_eq!(group.display_name, "staff");
        let unnamed = entry("cn=ops,dc=example,dc=org", &[("entryUUID", &[b"g2"])]);
        assert_eq!(s.group(&unnamed).unwrap().display_name, "ops");
    }

    #[test]
    fn requested_attributes_are_unique() {
        let s = schema(DirectoryPreset::OpenLdap);
        // `mail` is both the upn and the mail attribute in the preset.
        let mails = s
            .user_attributes
            .iter()
            .filter(|a| a.eq_ignore_ascii_case("mail"))
            .count();
        assert_eq!(mails, 1);
        assert!(s.group_attributes.iter().any(|a| a == "memberUid"));
    }
}
