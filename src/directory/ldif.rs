//! A directory kept in an LDIF file: the embedded demo default, and a way to run tapd offline
//! from an export.
//!
//! The reader is written here by hand: no maintained crate on crates.io parses LDIF (the LDAP
//! crates speak the wire protocol only), and the subset tapd needs is small. It follows
//! RFC 2849 for *content* records: `version: 1`, `dn:` first, `attr: value` lines, base64
//! values after `::`, lines folded by a leading space, `#` comments (folded too), blank lines
//! between records. Change records (`changetype:`, `control:`) are refused with a clear error
//! and so are `:<` URL values: tapd never fetches files named inside data. Attribute options
//! (`;lang-de`, `;binary`) are folded into the base attribute, and spaces at the end of a plain
//! value are dropped (an editor leaves them, nobody means them; base64 keeps them exactly).
//!
//! [`LdifDirectory`] re-reads the file on every call, so editing the file and syncing picks the
//! change up. Entries are classified by `objectClass`: users are `inetOrgPerson`, `person`,
//! `organizationalPerson` or `posixAccount`; groups are `groupOfNames`, `groupOfUniqueNames`,
//! `posixGroup` or `group`. The stable id is `entryUUID`, else `nsUniqueId`, else a UUIDv5 of
//! the normalised DN: an LDIF file without `entryUUID` therefore cannot survive a rename (the
//! renamed entry looks like a new user, and the old one is deleted with its TAP and methods).
//! Passwords are verified locally from `userPassword` (see [`super::password`]).
//!
//! May depend on: `directory` (trait, groups, password), `model`, `base64`, `uuid`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::groups::{normalize_dn, resolve, RawGroup, RawUser};
use super::password::verify_user_password;
use super::user_extras::{manager_dn, DateReader};
use super::{
    password_is_unusable, DirectoryContents, DirectoryError, DirectorySource, PasswordCheck,
};
use crate::dn::{dc_domain, first_rdn_value, strip_optional_uid};
use crate::model::{Group, User};

/// Errors of the LDIF reader; each names the (1-based) line of the file where it was found.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LdifError {
    /// The text breaks LDIF syntax (no colon, bad attribute name, record without `dn:`…).
    #[error("line {line}: {message}")]
    Syntax {
        /// Line of the offending (logical) line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `changetype:` or `control:` line: this is a change file, not a content file.
    #[error("line {line}: change records (changetype/control) are not supported; give a content LDIF as written by slapcat or ldapsearch")]
    ChangeRecord {
        /// Line of the `changetype:` / `control:`.
        line: usize,
    },
    /// A `::` value that is not valid base64.
    #[error("line {line}: value after '::' is not valid base64")]
    Base64 {
        /// Line of the attribute.
        line: usize,
    },
    /// A `:<` URL value; tapd does not fetch referenced files.
    #[error("line {line}: URL values (':<') are not supported")]
    UrlValue {
        /// Line of the attribute.
        line: usize,
    },
}

/// One attribute value of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdifAttribute {
    /// Attribute type, lower case, options removed (`cn;lang-de` → `cn`).
    pub name: String,
    /// The value's octets (decoded when it was base64).
    pub value: Vec<u8>,
    /// Line where the attribute starts.
    pub line: usize,
}

/// One content record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdifEntry {
    /// The entry's DN as written (decoded when it was base64).
    pub dn: String,
    /// Line of the `dn:`.
    pub line: usize,
    /// Attribute values in file order.
    pub attributes: Vec<LdifAttribute>,
}

impl LdifEntry {
    /// Every value of attribute `name` (case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a LdifAttribute> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.name.eq_ignore_ascii_case(name))
    }

    /// Whether the entry has attribute `name`.
    pub fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }
}

/// Parses LDIF content records.
pub fn parse(text: &str) -> Result<Vec<LdifEntry>, LdifError> {
    let mut entries = Vec::new();
    let mut first = true;
    for record in logical_records(text)? {
        let mut lines = record.into_iter().peekable();
        if first {
            first = false;
            if let Some((line, text)) = lines.peek() {
                let (name, value) = attribute_line(text, *line)?;
                if name == "version" {
                    if value != b"1" {
                        return Err(LdifError::Syntax {
                            line: *line,
                            message: "only LDIF version 1 is supported".to_owned(),
                        });
                    }
                    lines.next();
                }
            }
        }
        let Some((dn_line, dn_text)) = lines.next() else {
            continue;
        };
        let (name, dn) = attribute_line(&dn_text, dn_line)?;
        if name != "dn" {
            return Err(LdifError::Syntax {
                line: dn_line,
                message: format!("a record must start with 'dn:', found '{name}:'"),
            });
        }
        let dn = String::from_utf8(dn).map_err(|_| LdifError::Syntax {
            line: dn_line,
            message: "dn is not valid UTF-8".to_owned(),
        })?;
        let mut attributes = Vec::new();
        for (line, text) in lines {
            let (name, value) = attribute_line(&text, line)?;
            match name.as_str() {
                "changetype" | "control" => return Err(LdifError::ChangeRecord { line }),
                "dn" => {
                    return Err(LdifError::Syntax {
                        line,
                        message: "second 'dn:' in one record; separate records by a blank line"
                            .to_owned(),
                    })
                }
                _ => attributes.push(LdifAttribute { name, value, line }),
            }
        }
        entries.push(LdifEntry {
            dn,
            line: dn_line,
            attributes,
        });
    }
    Ok(entries)
}

/// Unfolds lines, drops comments and splits at blank lines: records of (line, logical line).
fn logical_records(text: &str) -> Result<Vec<Vec<(usize, String)>>, LdifError> {
    let mut records = Vec::new();
    let mut current: Vec<(usize, String)> = Vec::new();
    let mut in_comment = false;
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(continued) = raw.strip_prefix(' ') {
            if in_comment {
                continue;
            }
            match current.last_mut() {
                Some((_, logical)) => logical.push_str(continued),
                None if continued.trim().is_empty() => {}
                None => {
                    return Err(LdifError::Syntax {
                        line,
                        message: "continuation line (leading space) with no line to continue"
                            .to_owned(),
                    })
                }
            }
            continue;
        }
        if raw.trim().is_empty() {
            in_comment = false;
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            continue;
        }
        if raw.starts_with('#') {
            in_comment = true;
            continue;
        }
        in_comment = false;
        current.push((line, raw.to_owned()));
    }
    if !current.is_empty() {
        records.push(current);
    }
    Ok(records)
}

/// Splits `name: value`, `name:: base64` or `name:< url` into the lower-case base attribute
/// name and the value octets.
fn attribute_line(text: &str, line: usize) -> Result<(String, Vec<u8>), LdifError> {
    let Some((description, rest)) = text.split_once(':') else {
        return Err(LdifError::Syntax {
            line,
            message: "expected 'attribute: value'".to_owned(),
        });
    };
    if !valid_description(description) {
        return Err(LdifError::Syntax {
            line,
            message: format!("invalid attribute description '{description}'"),
        });
    }
    let name = description
        .split(';')
        .next()
        .unwrap_or(description)
        .to_ascii_lowercase();
    let value = if let Some(encoded) = rest.strip_prefix(':') {
        STANDARD
            .decode(encoded.trim())
            .map_err(|_| LdifError::Base64 { line })?
    } else if rest.starts_with('<') {
        return Err(LdifError::UrlValue { line });
    } else {
        rest.trim_start_matches(' ')
            .trim_end_matches(' ')
            .as_bytes()
            .to_vec()
    };
    Ok((name, value))
}

/// RFC 2849 `AttributeDescription`: a name (`ALPHA *(ALPHA / DIGIT / "-")`) or a numeric OID,
/// then `;option`s.
fn valid_description(description: &str) -> bool {
    let mut parts = description.split(';');
    let Some(attr) = parts.next() else {
        return false;
    };
    let name_ok = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid_ok = !attr.is_empty()
        && attr
            .split('.')
            .all(|arc| !arc.is_empty() && arc.chars().all(|c| c.is_ascii_digit()));
    (name_ok || oid_ok)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// A directory read from an LDIF file on every call.
#[derive(Clone, Debug)]
pub struct LdifDirectory {
    path: PathBuf,
    base_dn: Option<String>,
    /// The date attributes onboarding rules match on.
    dates: std::sync::Arc<DateReader>,
}

const USER_CLASSES: [&str; 4] = [
    "inetorgperson",
    "person",
    "organizationalperson",
    "posixaccount",
];
const GROUP_CLASSES: [&str; 4] = ["groupofnames", "groupofuniquenames", "posixgroup", "group"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    User,
    Group,
    Other,
}

impl LdifDirectory {
    /// Opens `path` and reads it once, so a missing or broken file is reported at start-up
    /// (and by `check-config`) rather than at the first sync.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DirectoryError> {
        let directory = LdifDirectory {
            path: path.into(),
            base_dn: None,
            dates: std::sync::Arc::default(),
        };
        directory.load()?;
        Ok(directory)
    }

    /// Limits the directory to entries at or below `base_dn`, and takes the domain of
    /// generated userPrincipalNames (`uid@domain`) from its `dc` components.
    pub fn with_base_dn(mut self, base_dn: &str) -> Self {
        self.base_dn = Some(base_dn.to_owned());
        self
    }

    /// Also reads these date attributes of each user (see [`super::user_extras`]).
    pub fn with_date_attributes(mut self, attributes: &[String]) -> Self {
        self.dates = std::sync::Arc::new(DateReader::new(attributes));
        self
    }

    /// The file this directory reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn location(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }

    /// Reads and parses the file, keeping only entries under the base DN.
    fn load(&self) -> Result<Vec<LdifEntry>, DirectoryError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                DirectoryError::invalid(format!(
                    "LDIF file {} is not valid UTF-8",
                    self.path.display()
                ))
            } else {
                DirectoryError::unavailable(format!(
                    "cannot read LDIF file {}: {e}",
                    self.path.display()
                ))
            }
        })?;
        let entries = parse(&text).map_err(|e| {
            DirectoryError::invalid_from(format!("LDIF file {}: {e}", self.path.display()), e)
        })?;
        Ok(match &self.base_dn {
            None => entries,
            Some(base) => {
                let base = normalize_dn(base);
                entries
                    .into_iter()
                    .filter(|e| is_at_or_below(&normalize_dn(&e.dn), &base))
                    .collect()
            }
        })
    }

    /// Turns parsed entries into users and groups with resolved memberships.
    fn contents(&self, entries: &[LdifEntry]) -> Result<DirectoryContents, DirectoryError> {
        let mut seen_ids: HashMap<String, usize> = HashMap::new();
        let mut raw_users = Vec::new();
        let mut users = Vec::new();
        let mut raw_groups = Vec::new();
        let mut group_names = Vec::new();
        for entry in entries {
            let kind = classify(entry, &self.location(entry.line))?;
            if kind == Kind::Other {
                continue;
            }
            let id = stable_id(entry, &self.location(entry.line))?;
            if let Some(other) = seen_ids.insert(id.clone(), entry.line) {
                return Err(DirectoryError::invalid(format!(
                    "{}: entry {} has the same id {id} as the entry at line {other}",
                    self.location(entry.line),
                    entry.dn
                )));
            }
            match kind {
                Kind::User => {
                    if let Some(user) = self.user(entry, id)? {
                        raw_users.push(RawUser {
                            dn: user.dn.clone(),
                            id: user.id.clone(),
                            username: user.username.clone(),
                        });
                        users.push(user);
                    }
                }
                Kind::Group => {
                    let (raw, name) = self.group(entry, id)?;
                    raw_groups.push(raw);
                    group_names.push(name);
                }
                Kind::Other => {}
            }
        }
        let resolved = resolve(&raw_users, &raw_groups);
        for (user, group_ids) in users.iter_mut().zip(resolved.user_group_ids) {
            user.group_ids = group_ids;
        }
        let groups = raw_groups
            .into_iter()
            .zip(group_names)
            .zip(resolved.group_member_user_ids)
            .map(|((raw, display_name), member_user_ids)| Group {
                id: raw.id,
                dn: raw.dn,
                display_name,
                member_user_ids,
            })
            .collect();
        Ok(DirectoryContents { users, groups })
    }

    /// Which groups of the file nest in which (read again: this source keeps nothing).
    fn nesting(&self) -> Option<super::groups::GroupNesting> {
        let mut groups = Vec::new();
        for entry in &self.load().ok()? {
            let location = self.location(entry.line);
            if classify(entry, &location).ok()? == Kind::Group {
                let id = stable_id(entry, &location).ok()?;
                groups.push(self.group(entry, id).ok()?.0);
            }
        }
        Some(super::groups::GroupNesting::of(&groups))
    }

    /// A user entry as a [`User`] without memberships; `None` (with a warning) when it has no
    /// `uid` and so can't sign in anywhere.
    fn user(&self, entry: &LdifEntry, id: String) -> Result<Option<User>, DirectoryError> {
        let location = self.location(entry.line);
        let Some(username) = first_text(entry, "uid", &location)? else {
            log::warn!(
                "{location}: user entry {} has no uid and is skipped",
                entry.dn
            );
            return Ok(None);
        };
        let mail = first_text(entry, "mail", &location)?;
        let user_principal_name = match first_text(entry, "userprincipalname", &location)? {
            Some(upn) => upn,
            None => match &mail {
                Some(mail) => mail.clone(),
                None => {
                    let domain = dc_domain(self.base_dn.as_deref().unwrap_or(&entry.dn));
                    if domain.is_empty() {
                        username.clone()
                    } else {
                        format!("{username}@{domain}")
                    }
                }
            },
        };
        let display_name = match first_text(entry, "displayname", &location)? {
            Some(name) => name,
            None => first_text(entry, "cn", &location)?.unwrap_or_else(|| username.clone()),
        };
        Ok(Some(User {
            id,
            dn: entry.dn.clone(),
            username,
            user_principal_name,
            display_name,
            mail,
            account_enabled: account_enabled(entry),
            group_ids: Vec::new(),
            identity_conflict: None,
            manager_dn: manager_dn(first_text(entry, "manager", &location)?.as_deref()),
            manager_id: None,
            dates: self.dates.read(&entry.dn, |name| {
                first_text(entry, name, &location).ok().flatten()
            }),
        }))
    }

    /// A group entry as raw membership input plus its display name.
    fn group(&self, entry: &LdifEntry, id: String) -> Result<(RawGroup, String), DirectoryError> {
        let location = self.location(entry.line);
        let cn = match first_text(entry, "cn", &location)? {
            Some(cn) => cn,
            None => first_rdn_value(&entry.dn),
        };
        let mut member_dns = Vec::new();
        for attribute in entry.values("member") {
            member_dns.push(text(attribute, &self.location(attribute.line))?.to_owned());
        }
        for attribute in entry.values("uniquemember") {
            let value = text(attribute, &self.location(attribute.line))?;
            member_dns.push(strip_optional_uid(value).to_owned());
        }
        let mut member_uids = Vec::new();
        for attribute in entry.values("memberuid") {
            member_uids.push(text(attribute, &self.location(attribute.line))?.to_owned());
        }
        Ok((
            RawGroup {
                dn: entry.dn.clone(),
                id,
                cn: cn.clone(),
                member_dns,
                member_uids,
            },
            cn,
        ))
    }

    fn check_password_blocking(
        &self,
        user: &User,
        password: &str,
    ) -> Result<PasswordCheck, DirectoryError> {
        let entries = self.load()?;
        for entry in &entries {
            let location = self.location(entry.line);
            if classify(entry, &location)? != Kind::User || stable_id(entry, &location)? != user.id
            {
                continue;
            }
            if !account_enabled(entry) {
                return Ok(PasswordCheck::Invalid);
            }
            for attribute in entry.values("userpassword") {
                match verify_user_password(&attribute.value, password) {
                    Ok(true) => return Ok(PasswordCheck::Valid),
                    Ok(false) => {}
                    Err(e) => log::warn!(
                        "{}: userPassword of {} can't be used: {e}",
                        self.location(attribute.line),
                        entry.dn
                    ),
                }
            }
            return Ok(PasswordCheck::Invalid);
        }
        Ok(PasswordCheck::Invalid)
    }
}

#[async_trait]
impl DirectorySource for LdifDirectory {
    async fn read_all(&self) -> Result<DirectoryContents, DirectoryError> {
        let directory = self.clone();
        tokio::task::spawn_blocking(move || {
            let entries = directory.load()?;
            directory.contents(&entries)
        })
        .await
        .map_err(|e| DirectoryError::unavailable_from(format!("LDIF reader task failed: {e}"), e))?
    }

    async fn group_nesting(&self) -> Option<super::groups::GroupNesting> {
        let directory = self.clone();
        tokio::task::spawn_blocking(move || directory.nesting())
            .await
            .ok()?
    }

    async fn check_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<PasswordCheck, DirectoryError> {
        if password_is_unusable(password) {
            return Ok(PasswordCheck::Invalid);
        }
        let directory = self.clone();
        let user = user.clone();
        let password = zeroize::Zeroizing::new(password.to_owned());
        tokio::task::spawn_blocking(move || directory.check_password_blocking(&user, &password))
            .await
            .map_err(|e| {
                DirectoryError::unavailable_from(format!("LDIF password check failed: {e}"), e)
            })?
    }

    fn describe(&self) -> String {
        match &self.base_dn {
            Some(base) => format!("LDIF file {} (base {base})", self.path.display()),
            None => format!("LDIF file {}", self.path.display()),
        }
    }
}

fn is_at_or_below(dn: &str, base: &str) -> bool {
    base.is_empty()
        || dn == base
        || (dn.len() > base.len()
            && dn.ends_with(base)
            && dn[..dn.len() - base.len()].ends_with(','))
}

fn classify(entry: &LdifEntry, location: &str) -> Result<Kind, DirectoryError> {
    let mut kind = Kind::Other;
    for attribute in entry.values("objectclass") {
        let class = text(attribute, location)?.to_ascii_lowercase();
        if USER_CLASSES.contains(&class.as_str()) {
            return Ok(Kind::User);
        }
        if GROUP_CLASSES.contains(&class.as_str()) {
            kind = Kind::Group;
        }
    }
    Ok(kind)
}

/// `entryUUID`, else `nsUniqueId` (both lower-cased), else a UUIDv5 of the normalised DN in
/// the X.500 namespace.
fn stable_id(entry: &LdifEntry, location: &str) -> Result<String, DirectoryError> {
    for name in ["entryuuid", "nsuniqueid"] {
        if let Some(id) = first_text(entry, name, location)? {
            return Ok(id.to_ascii_lowercase());
        }
    }
    Ok(uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_X500,
        normalize_dn(&entry.dn).as_bytes(),
    )
    .to_string())
}

fn account_enabled(entry: &LdifEntry) -> bool {
    let locked = entry.has("pwdaccountlockedtime")
        || entry
            .values("nsaccountlock")
            .any(|a| a.value.eq_ignore_ascii_case(b"true"));
    !locked
}

fn text<'a>(attribute: &'a LdifAttribute, location: &str) -> Result<&'a str, DirectoryError> {
    std::str::from_utf8(&attribute.value).map_err(|_| {
        DirectoryError::invalid(format!(
            "{location}: value of {} is not valid UTF-8",
            attribute.name
        ))
    })
}

/// The first non-empty value of `name`, trimmed, as text.
fn first_text(
    entry: &LdifEntry,
    name: &str,
    location: &str,
) -> Result<Option<String>, DirectoryError> {
    for attribute in entry.values(name) {
        let value = text(attribute, location)?.trim();
        if !value.is_empty() {
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
