//! Search result entries as plain data, decoded without panicking.
//!
//! `ldap3`'s own `SearchEntry::construct` panics on a malformed entry and sorts values into
//! text and binary maps by guesswork; a directory server must not be able to crash tapd, and
//! `objectGUID` must stay binary. So the BER structure of a `SearchResultEntry` (RFC 4511
//! §4.5.2) is walked here: a malformed entry is an error, values stay octets, and attribute
//! options are kept apart from the base name (Active Directory's `member;range=0-1499`).
//!
//! May depend on: `ldap3::asn1` (the BER tree).

use ldap3::asn1::{StructureTag, TagClass, PL};

/// One attribute of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryAttribute {
    /// Base attribute name, lower case (`member` for `member;range=0-1499`).
    pub name: String,
    /// Options after the name, lower case (`range=0-1499`), in order.
    pub options: Vec<String>,
    /// The values' octets.
    pub values: Vec<Vec<u8>>,
}

/// A decoded search result entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapEntry {
    /// The entry's DN as the server spelled it.
    pub dn: String,
    /// Its attributes in server order.
    pub attributes: Vec<EntryAttribute>,
}

impl LdapEntry {
    /// Every value of `name` (case-insensitive), from every attribute description carrying
    /// that base name except ranged ones (those are fetched separately).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.name.eq_ignore_ascii_case(name) && a.range().is_none())
            .flat_map(|a| a.values.iter().map(Vec::as_slice))
    }

    /// Whether the entry has at least one value of `name`.
    pub fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// The first non-empty value of `name`, trimmed, if it is UTF-8 text.
    pub fn first_text(&self, name: &str) -> Result<Option<String>, String> {
        for value in self.values(name) {
            let text = std::str::from_utf8(value)
                .map_err(|_| format!("{}: value of {name} is not valid UTF-8", self.dn))?
                .trim();
            if !text.is_empty() {
                return Ok(Some(text.to_owned()));
            }
        }
        Ok(None)
    }

    /// Every value of `name` as text; a value that is not UTF-8 is an error.
    pub fn texts(&self, name: &str) -> Result<Vec<String>, String> {
        self.values(name)
            .map(|value| {
                std::str::from_utf8(value)
                    .map(str::to_owned)
                    .map_err(|_| format!("{}: value of {name} is not valid UTF-8", self.dn))
            })
            .collect()
    }
}

impl EntryAttribute {
    /// For an Active Directory ranged attribute (`member;range=0-1499`): the range's start and
    /// its end (`None` for `*`, the last chunk).
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        self.options.iter().find_map(|option| {
            let (low, high) = option.strip_prefix("range=")?.split_once('-')?;
            let low = low.parse().ok()?;
            let high = if high == "*" {
                None
            } else {
                Some(high.parse().ok()?)
            };
            Some((low, high))
        })
    }
}

/// Decodes a `SearchResultEntry` (`[APPLICATION 4] SEQUENCE { objectName, attributes }`).
pub fn decode_entry(tag: StructureTag) -> Result<LdapEntry, String> {
    if tag.class != TagClass::Application || tag.id != 4 {
        return Err(format!(
            "expected a search result entry, got tag {:?}/{}",
            tag.class, tag.id
        ));
    }
    let mut parts = constructed(tag, "entry")?.into_iter();
    let dn = parts
        .next()
        .ok_or_else(|| "search result entry without a DN".to_owned())
        .and_then(|t| primitive(t, "DN"))?;
    let dn = String::from_utf8(dn).map_err(|_| "entry DN is not valid UTF-8".to_owned())?;
    let mut attributes = Vec::new();
    if let Some(list) = parts.next() {
        for partial in constructed(list, "attribute list")? {
            let mut fields = constructed(partial, "attribute")?.into_iter();
            let description = fields
                .next()
                .ok_or_else(|| format!("{dn}: attribute without a type"))
                .and_then(|t| primitive(t, "attribute type"))?;
            let description = String::from_utf8(description)
                .map_err(|_| format!("{dn}: attribute type is not valid UTF-8"))?;
            let values = match fields.next() {
                Some(set) => constructed(set, "value set")?
                    .into_iter()
                    .map(|value| primitive(value, "value"))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            // Lower-cased in place: one allocation fewer per attribute of every entry.
            let mut name = description;
            name.make_ascii_lowercase();
            let options = match name.find(';') {
                Some(at) => {
                    let options = name[at + 1..].split(';').map(str::to_owned).collect();
                    name.truncate(at);
                    options
                }
                None => Vec::new(),
            };
            attributes.push(EntryAttribute {
                name,
                options,
                values,
            });
        }
    }
    Ok(LdapEntry { dn, attributes })
}

fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    match tag.payload {
        PL::C(inner) => Ok(inner),
        PL::P(_) => Err(format!(
            "malformed search result entry: {what} is not constructed"
        )),
    }
}

fn primitive(tag: StructureTag, what: &str) -> Result<Vec<u8>, String> {
    match tag.payload {
        PL::P(bytes) => Ok(bytes),
        PL::C(_) => Err(format!(
            "malformed search result entry: {what} is not primitive"
        )),
    }
}

/// Formats a binary Active Directory `objectGUID` (16 octets, the first three fields little
/// endian) as the usual lower-case GUID string, `None` if it is not 16 octets long.
pub fn format_object_guid(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn seq(id: u64, class: TagClass, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    fn attribute(name: &str, values: &[&[u8]]) -> StructureTag {
        seq(
            16,
            TagClass::Universal,
            vec![
                octets(name.as_bytes()),
                seq(
                    17,
                    TagClass::Universal,
                    values.iter().map(|v| octets(v)).collect(),
                ),
            ],
        )
    }

    #[test]
    fn decodes_dn_attributes_options_and_binary_values() {
        let tag = seq(
            4,
            TagClass::Application,
            vec![
                octets(b"uid=alice,dc=example,dc=org"),
                seq(
                    16,
                    TagClass::Universal,
                    vec![
                        attribute("uid", &[b"alice"]),
                        attribute("objectGUID", &[&[0xff, 0x00]]),
                        attribute("member;range=0-1499", &[b"cn=a", b"cn=b"]),
                        attribute("member;range=1500-*", &[b"cn=c"]),
                    ],
                ),
            ],
        );
        let entry = decode_entry(tag).unwrap();
        assert_eq!(entry.dn, "uid=alice,dc=example,dc=org");
        assert_eq!(entry.first_text("UID").unwrap().as_deref(), Some("alice"));
        assert_eq!(entry.values("objectguid").next(), Some(&[0xff, 0x00][..]));
        assert!(entry.first_text("objectguid").is_err());
        // Ranged values are not returned as if they were the whole attribute.
        assert_eq!(entry.values("member").count(), 0);
        assert_eq!(entry.attributes[2].range(), Some((0, Some(1499))));
        assert_eq!(entry.attributes[3].range(), Some((1500, None)));
        assert_eq!(entry.attributes[0].range(), None);
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        assert!(decode_entry(octets(b"x")).is_err());
        assert!(decode_entry(seq(4, TagClass::Application, vec![])).is_err());
        let bad_attribute = seq(
            4,
            TagClass::Application,
            vec![
                octets(b"cn=x"),
                seq(16, TagClass::Universal, vec![octets(b"not a sequence")]),
            ],
        );
        assert!(decode_entry(bad_attribute).is_err());
        let bad_dn = seq(4, TagClass::Application, vec![octets(&[0xff, 0xfe])]);
        assert!(decode_entry(bad_dn).is_err());
        // An entry with no attributes at all is fine.
        let bare = decode_entry(seq(4, TagClass::Application, vec![octets(b"cn=x")])).unwrap();
        assert!(bare.attributes.is_empty());
    }

    #[test]
    fn object_guid_uses_the_mixed_endian_text_form() {
        // The GUID {01234567-89ab-cdef-0123-456789abcdef} as AD stores it.
        let bytes = [
            0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(
            format_object_guid(&bytes).unwrap(),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(format_object_guid(&bytes[..15]), None);
    }
}
