//! RFC 4533 content synchronisation in refreshOnly mode: the request control, the server's
//! Sync State and Sync Done controls and syncInfo messages, and what a finished refresh says
//! about the entries it did not send.
//!
//! `ldap3` 0.12 encodes the Sync Request control, which is used here, but its decoders for the
//! server's side `panic!` on anything unexpected (a short UUID, an unknown state, an extra
//! element). A directory server must not be able to crash tapd, so those are decoded here from
//! the BER tree, and anything malformed is an error that makes the caller fall back to
//! timestamp-based incremental reads.
//!
//! A refresh names entries by their 16-octet sync UUID. tapd keys entries by the text of their
//! id attribute; for OpenLDAP's `entryUUID` (`1750c342-7ef5-…`) and 389-DS's `nsUniqueId`
//! (`1750c342-7ef51041-…`) that text is the same 16 octets in hex, which [`uuid_of_id`] reads.
//! The caller checks every entry a refresh sends in full against it, so an id attribute that is
//! not the sync UUID is noticed rather than trusted.
//!
//! May depend on: `ldap3` (the control type and the BER tree).

use std::collections::HashSet;

use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use ldap3::controls::{RawControl, RefreshMode, SyncRequest};

/// The Sync Request control; a server listing it in the root DSE's `supportedControl` offers
/// content sync.
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// The Sync State control on every entry of a refresh.
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
/// The Sync Done control on the search result.
pub const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
/// The syncInfo intermediate response.
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";
/// Result code e-syncRefreshRequired: the cookie can't be refreshed from; start without one.
pub const E_SYNC_REFRESH_REQUIRED: u32 = 4096;

/// An entry's sync UUID.
pub type SyncUuid = [u8; 16];

/// A refreshOnly Sync Request, critical so that a server without content sync refuses the
/// search instead of answering it as a plain one.
pub fn request(cookie: Option<Vec<u8>>) -> RawControl {
    let mut control: RawControl = SyncRequest {
        mode: RefreshMode::RefreshOnly,
        cookie,
        reload_hint: false,
    }
    .into();
    control.crit = true;
    control
}

/// What a Sync State control says about its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Unchanged and still there (sent without attributes).
    Present,
    /// New since the cookie (or every entry, without a cookie).
    Add,
    /// Changed since the cookie.
    Modify,
    /// Deleted (sent without attributes).
    Delete,
}

/// A decoded Sync State control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateControl {
    /// The entry's state.
    pub state: EntryState,
    /// The entry's sync UUID.
    pub uuid: SyncUuid,
    /// A newer cookie, when the server sent one.
    pub cookie: Option<Vec<u8>>,
}

/// A decoded Sync Done control.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoneControl {
    /// The cookie to refresh from next time.
    pub cookie: Option<Vec<u8>>,
    /// True when the refresh ended in a delete phase (deletions were listed); false when it
    /// ended in a present phase (every entry not mentioned is gone).
    pub refresh_deletes: bool,
}

/// A decoded syncInfo message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncInfo {
    /// A newer cookie.
    NewCookie(Vec<u8>),
    /// The end of a delete phase.
    RefreshDelete {
        /// A newer cookie.
        cookie: Option<Vec<u8>>,
    },
    /// The end of a present phase.
    RefreshPresent {
        /// A newer cookie.
        cookie: Option<Vec<u8>>,
    },
    /// Many entries' UUIDs at once: deleted ones when `refresh_deletes`, else present ones.
    IdSet {
        /// A newer cookie.
        cookie: Option<Vec<u8>>,
        /// Whether the UUIDs are deletions (true) or present entries (false).
        refresh_deletes: bool,
        /// The entries.
        uuids: Vec<SyncUuid>,
    },
}

/// Decodes a Sync State control's value:
/// `SEQUENCE { state ENUMERATED, entryUUID OCTET STRING (16), cookie OCTET STRING OPTIONAL }`.
pub fn parse_state(value: &[u8]) -> Result<StateControl, String> {
    let mut parts = sequence(value, "Sync State control")?
        .into_iter()
        .peekable();
    let state = match parts.next() {
        Some(tag) if is_universal(&tag, Types::Enumerated) => {
            small_integer(tag, "Sync State control state")?
        }
        _ => return Err("Sync State control without a state".to_owned()),
    };
    let state = match state {
        0 => EntryState::Present,
        1 => EntryState::Add,
        2 => EntryState::Modify,
        3 => EntryState::Delete,
        other => return Err(format!("Sync State control with unknown state {other}")),
    };
    let uuid = match parts.next() {
        Some(tag) if is_universal(&tag, Types::OctetString) => sync_uuid(tag)?,
        _ => return Err("Sync State control without an entryUUID".to_owned()),
    };
    let cookie = optional_cookie(&mut parts, "Sync State control")?;
    if parts.next().is_some() {
        return Err("Sync State control with an unexpected element".to_owned());
    }
    Ok(StateControl {
        state,
        uuid,
        cookie,
    })
}

/// Decodes a Sync Done control's value:
/// `SEQUENCE { cookie OCTET STRING OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }`.
pub fn parse_done(value: &[u8]) -> Result<DoneControl, String> {
    let mut parts = sequence(value, "Sync Done control")?.into_iter().peekable();
    let cookie = optional_cookie(&mut parts, "Sync Done control")?;
    let refresh_deletes = match parts.next() {
        None => false,
        Some(tag) if is_universal(&tag, Types::Boolean) => boolean(tag, "refreshDeletes")?,
        Some(_) => return Err("Sync Done control with an unexpected element".to_owned()),
    };
    if parts.next().is_some() {
        return Err("Sync Done control with an unexpected element".to_owned());
    }
    Ok(DoneControl {
        cookie,
        refresh_deletes,
    })
}

/// Decodes an intermediate response (`[APPLICATION 25] SEQUENCE { [0] responseName OPTIONAL,
/// [1] responseValue OPTIONAL }`). `Ok(None)`: it is not a syncInfo message.
pub fn parse_intermediate(tag: StructureTag) -> Result<Option<SyncInfo>, String> {
    let parts = match tag.payload {
        PL::C(parts) => parts,
        PL::P(_) => return Err("intermediate response is not constructed".to_owned()),
    };
    let mut name = None;
    let mut value = None;
    for part in parts {
        match (part.class, part.id) {
            (TagClass::Context, 0) => name = Some(primitive(part, "responseName")?),
            (TagClass::Context, 1) => value = Some(primitive(part, "responseValue")?),
            _ => return Err("intermediate response with an unexpected element".to_owned()),
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
        return Ok(None);
    }
    let value = value.ok_or_else(|| "syncInfo message without a value".to_owned())?;
    parse_info_value(&value).map(Some)
}

/// Decodes a syncInfo value, a CHOICE of `[0] newcookie`, `[1] refreshDelete`,
/// `[2] refreshPresent` and `[3] syncIdSet`.
fn parse_info_value(value: &[u8]) -> Result<SyncInfo, String> {
    let tag = whole_tag(value, "syncInfo value")?;
    if tag.class != TagClass::Context {
        return Err("syncInfo value is not a context-specific choice".to_owned());
    }
    match tag.id {
        0 => Ok(SyncInfo::NewCookie(primitive(tag, "newcookie")?)),
        1 | 2 => {
            let id = tag.id;
            let mut parts = constructed(tag, "syncInfo refresh phase")?
                .into_iter()
                .peekable();
            let cookie = optional_cookie(&mut parts, "syncInfo")?;
            // refreshDone only says whether more phases follow; a refreshOnly search ends
            // with its result either way.
            match parts.next() {
                None => {}
                Some(tag) if is_universal(&tag, Types::Boolean) => {
                    boolean(tag, "refreshDone")?;
                }
                Some(_) => return Err("syncInfo with an unexpected element".to_owned()),
            }
            if parts.next().is_some() {
                return Err("syncInfo with an unexpected element".to_owned());
            }
            Ok(if id == 1 {
                SyncInfo::RefreshDelete { cookie }
            } else {
                SyncInfo::RefreshPresent { cookie }
            })
        }
        3 => {
            let mut parts = constructed(tag, "syncIdSet")?.into_iter().peekable();
            let cookie = optional_cookie(&mut parts, "syncIdSet")?;
            let refresh_deletes = match parts.peek() {
                Some(tag) if is_universal(tag, Types::Boolean) => match parts.next() {
                    Some(tag) => boolean(tag, "refreshDeletes")?,
                    None => false,
                },
                _ => false,
            };
            let uuids = match parts.next() {
                Some(tag) if is_universal(&tag, Types::Set) => constructed(tag, "syncUUIDs")?
                    .into_iter()
                    .map(sync_uuid)
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err("syncIdSet without syncUUIDs".to_owned()),
            };
            if parts.next().is_some() {
                return Err("syncIdSet with an unexpected element".to_owned());
            }
            Ok(SyncInfo::IdSet {
                cookie,
                refresh_deletes,
                uuids,
            })
        }
        other => Err(format!("syncInfo value with unknown choice {other}")),
    }
}

/// The 16 octets an id attribute's text stands for: 32 hex digits, with or without hyphens
/// anywhere (`entryUUID`, `nsUniqueId`); `None` for any other id.
pub fn uuid_of_id(id: &str) -> Option<SyncUuid> {
    let mut uuid = [0u8; 16];
    let mut digits = id.bytes().filter(|b| *b != b'-');
    for byte in &mut uuid {
        let high = hex_value(digits.next()?)?;
        let low = hex_value(digits.next()?)?;
        *byte = high << 4 | low;
    }
    digits.next().is_none().then_some(uuid)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

/// What one refresh search reported, gathered while its messages arrive.
#[derive(Clone, Debug, Default)]
pub struct Refresh {
    /// Entries sent in full (new or changed).
    pub changed: HashSet<SyncUuid>,
    /// Entries said to be unchanged and still there.
    pub present: HashSet<SyncUuid>,
    /// Entries said to be deleted.
    pub deleted: HashSet<SyncUuid>,
    /// The newest cookie seen.
    pub cookie: Option<Vec<u8>>,
    /// Whether entries not mentioned at all are gone: true after a present phase, and for a
    /// refresh without a cookie (it lists the whole content).
    pub unmentioned_are_gone: bool,
}

impl Refresh {
    /// A refresh from `cookie`; `None`: from nothing, so it lists every entry.
    pub fn new(cookie: Option<&[u8]>) -> Refresh {
        Refresh {
            unmentioned_are_gone: cookie.is_none(),
            ..Refresh::default()
        }
    }

    /// Takes in an entry's Sync State control.
    pub fn state(&mut self, control: StateControl) {
        match control.state {
            EntryState::Present => {
                self.unmentioned_are_gone = true;
                self.present.insert(control.uuid);
            }
            EntryState::Add | EntryState::Modify => {
                self.changed.insert(control.uuid);
            }
            EntryState::Delete => {
                self.deleted.insert(control.uuid);
            }
        }
        if control.cookie.is_some() {
            self.cookie = control.cookie;
        }
    }

    /// Takes in a syncInfo message.
    pub fn info(&mut self, info: SyncInfo) {
        let cookie = match info {
            SyncInfo::NewCookie(cookie) => Some(cookie),
            SyncInfo::RefreshDelete { cookie } => cookie,
            SyncInfo::RefreshPresent { cookie } => {
                self.unmentioned_are_gone = true;
                cookie
            }
            SyncInfo::IdSet {
                cookie,
                refresh_deletes,
                uuids,
            } => {
                if refresh_deletes {
                    self.deleted.extend(uuids);
                } else {
                    self.unmentioned_are_gone = true;
                    self.present.extend(uuids);
                }
                cookie
            }
        };
        if cookie.is_some() {
            self.cookie = cookie;
        }
    }

    /// Takes in the Sync Done control that ends the refresh.
    pub fn done(&mut self, done: DoneControl) {
        if !done.refresh_deletes {
            self.unmentioned_are_gone = true;
        }
        if done.cookie.is_some() {
            self.cookie = done.cookie;
        }
    }

    /// Whether the entry known before the refresh as `uuid` is gone after it.
    pub fn removes(&self, uuid: &SyncUuid) -> bool {
        self.deleted.contains(uuid)
            || (self.unmentioned_are_gone
                && !self.present.contains(uuid)
                && !self.changed.contains(uuid))
    }
}

fn whole_tag(bytes: &[u8], what: &str) -> Result<StructureTag, String> {
    match parse_tag(bytes) {
        Ok(([], tag)) => Ok(tag),
        Ok(_) => Err(format!("{what} has trailing octets")),
        Err(_) => Err(format!("{what} is not valid BER")),
    }
}

fn sequence(bytes: &[u8], what: &str) -> Result<Vec<StructureTag>, String> {
    let tag = whole_tag(bytes, what)?;
    if !is_universal(&tag, Types::Sequence) {
        return Err(format!("{what} is not a SEQUENCE"));
    }
    constructed(tag, what)
}

fn is_universal(tag: &StructureTag, kind: Types) -> bool {
    tag.class == TagClass::Universal && tag.id == kind as u64
}

fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    match tag.payload {
        PL::C(inner) => Ok(inner),
        PL::P(_) => Err(format!("{what} is not constructed")),
    }
}

fn primitive(tag: StructureTag, what: &str) -> Result<Vec<u8>, String> {
    match tag.payload {
        PL::P(bytes) => Ok(bytes),
        PL::C(_) => Err(format!("{what} is not primitive")),
    }
}

fn boolean(tag: StructureTag, what: &str) -> Result<bool, String> {
    match primitive(tag, what)?.as_slice() {
        [value] => Ok(*value != 0),
        _ => Err(format!("{what} is not a one-octet BOOLEAN")),
    }
}

/// A non-negative INTEGER or ENUMERATED of at most four octets.
fn small_integer(tag: StructureTag, what: &str) -> Result<u32, String> {
    let bytes = primitive(tag, what)?;
    match bytes.first() {
        None => Err(format!("{what} is empty")),
        Some(first) if first & 0x80 != 0 => Err(format!("{what} is negative")),
        Some(_) if bytes.len() > 4 => Err(format!("{what} is too large")),
        Some(_) => Ok(bytes.iter().fold(0, |n, b| n << 8 | u32::from(*b))),
    }
}

fn sync_uuid(tag: StructureTag) -> Result<SyncUuid, String> {
    let bytes = primitive(tag, "syncUUID")?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("syncUUID of {} octets, not 16", bytes.len()))
}

/// Consumes a leading cookie (`OCTET STRING`) if there is one.
fn optional_cookie(
    parts: &mut std::iter::Peekable<impl Iterator<Item = StructureTag>>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match parts.peek() {
        Some(tag) if is_universal(tag, Types::OctetString) => parts
            .next()
            .map(|tag| primitive(tag, &format!("{what} cookie")))
            .transpose(),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const UUID: [u8; 16] = [
        0x17, 0x50, 0xc3, 0x42, 0x7e, 0xf5, 0x10, 0x41, 0x94, 0xa3, 0x31, 0x28, 0x39, 0xf8, 0x26,
        0x0c,
    ];

    /// One BER element with a short-form length.
    fn ber(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, u8::try_from(content.len()).unwrap()];
        out.extend_from_slice(content);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn state_control_as_slapd_sends_it() {
        // From `ldapsearch -E sync=ro` against slapd 2.5: MBUKAQEEEBdQw0J+9RBBlKMxKDn4Jgw=
        let value = [
            0x30, 0x15, 0x0a, 0x01, 0x01, 0x04, 0x10, 0x17, 0x50, 0xc3, 0x42, 0x7e, 0xf5, 0x10,
            0x41, 0x94, 0xa3, 0x31, 0x28, 0x39, 0xf8, 0x26, 0x0c,
        ];
        assert_eq!(
            parse_state(&value).unwrap(),
            StateControl {
                state: EntryState::Add,
                uuid: UUID,
                cookie: None,
            }
        );
        let with_cookie = ber(
            0x30,
            &cat(&[ber(0x0a, &[3]), ber(0x04, &UUID), ber(0x04, b"csn=1")]),
        );
        let state = parse_state(&with_cookie).unwrap();
        assert_eq!(state.state, EntryState::Delete);
        assert_eq!(state.cookie.as_deref(), Some(&b"csn=1"[..]));
    }

    #[test]
    fn malformed_state_controls_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0x30],
            vec![0x30, 0x00],
            ber(0x30, &ber(0x0a, &[1])),
            ber(0x30, &cat(&[ber(0x0a, &[9]), ber(0x04, &UUID)])),
            ber(0x30, &cat(&[ber(0x0a, &[0x80]), ber(0x04, &UUID)])),
            ber(0x30, &cat(&[ber(0x0a, &[]), ber(0x04, &UUID)])),
            ber(0x30, &cat(&[ber(0x0a, &[1]), ber(0x04, &UUID[..15])])),
            ber(0x30, &cat(&[ber(0x04, &UUID), ber(0x0a, &[1])])),
            ber(
                0x30,
                &cat(&[ber(0x0a, &[1]), ber(0x04, &UUID), ber(0x01, &[0xff])]),
            ),
            cat(&[
                ber(0x30, &cat(&[ber(0x0a, &[1]), ber(0x04, &UUID)])),
                vec![0],
            ]),
            ber(0x31, &cat(&[ber(0x0a, &[1]), ber(0x04, &UUID)])),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(parse_state(case).is_err(), "case {i} was accepted");
        }
    }

    #[test]
    fn done_control_with_and_without_its_optional_parts() {
        assert_eq!(parse_done(&ber(0x30, &[])).unwrap(), DoneControl::default());
        let done = parse_done(&ber(
            0x30,
            &cat(&[ber(0x04, b"rid=000"), ber(0x01, &[0xff])]),
        ))
        .unwrap();
        assert_eq!(done.cookie.as_deref(), Some(&b"rid=000"[..]));
        assert!(done.refresh_deletes);
        assert!(parse_done(&ber(0x30, &ber(0x01, &[0]))).is_ok());
        for bad in [
            ber(0x30, &ber(0x02, &[1])),
            ber(0x30, &cat(&[ber(0x01, &[1]), ber(0x04, b"x")])),
            ber(0x30, &ber(0x01, &[1, 1])),
            ber(0x04, b"x"),
        ] {
            assert!(parse_done(&bad).is_err());
        }
    }

    fn intermediate(name: &[u8], value: Option<Vec<u8>>) -> StructureTag {
        let mut parts = vec![StructureTag {
            class: TagClass::Context,
            id: 0,
            payload: PL::P(name.to_vec()),
        }];
        if let Some(value) = value {
            parts.push(StructureTag {
                class: TagClass::Context,
                id: 1,
                payload: PL::P(value),
            });
        }
        StructureTag {
            class: TagClass::Application,
            id: 25,
            payload: PL::C(parts),
        }
    }

    #[test]
    fn sync_info_messages() {
        let info = |value: Vec<u8>| {
            parse_intermediate(intermediate(SYNC_INFO_OID.as_bytes(), Some(value)))
                .unwrap()
                .unwrap()
        };
        assert_eq!(info(ber(0x80, b"c1")), SyncInfo::NewCookie(b"c1".to_vec()));
        assert_eq!(
            info(ber(0xa1, &ber(0x04, b"c2"))),
            SyncInfo::RefreshDelete {
                cookie: Some(b"c2".to_vec())
            }
        );
        assert_eq!(
            info(ber(0xa2, &ber(0x01, &[0]))),
            SyncInfo::RefreshPresent { cookie: None }
        );
        let other = [0x11; 16];
        assert_eq!(
            info(ber(
                0xa3,
                &cat(&[
                    ber(0x01, &[0xff]),
                    ber(0x31, &cat(&[ber(0x04, &UUID), ber(0x04, &other)])),
                ]),
            )),
            SyncInfo::IdSet {
                cookie: None,
                refresh_deletes: true,
                uuids: vec![UUID, other],
            }
        );
        // Some other intermediate response is not ours to read.
        assert_eq!(
            parse_intermediate(intermediate(b"1.2.3", Some(vec![1, 2]))).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_sync_info_messages_are_errors_not_panics() {
        let cases = vec![
            Some(Vec::new()),
            None,
            Some(ber(0xa4, &[])),
            Some(ber(0x04, b"c")),
            Some(ber(0xa3, &ber(0x01, &[0xff]))),
            Some(ber(0xa3, &ber(0x31, &ber(0x04, &[1, 2, 3])))),
            Some(ber(0xa3, &ber(0x31, &ber(0x30, &[])))),
            Some(ber(
                0xa1,
                &cat(&[ber(0x04, b"c"), ber(0x01, &[1]), ber(0x01, &[1])]),
            )),
            Some(ber(0xa2, &ber(0x02, &[1]))),
            Some(cat(&[ber(0x80, b"c"), vec![0]])),
        ];
        for (i, value) in cases.into_iter().enumerate() {
            assert!(
                parse_intermediate(intermediate(SYNC_INFO_OID.as_bytes(), value)).is_err(),
                "case {i} was accepted"
            );
        }
        let primitive_message = StructureTag {
            class: TagClass::Application,
            id: 25,
            payload: PL::P(Vec::new()),
        };
        assert!(parse_intermediate(primitive_message).is_err());
    }

    #[test]
    fn ids_read_as_sync_uuids() {
        assert_eq!(
            uuid_of_id("1750c342-7ef5-1041-94a3-312839f8260c"),
            Some(UUID)
        );
        assert_eq!(
            uuid_of_id("1750C342-7EF51041-94A33128-39F8260C"),
            Some(UUID)
        );
        assert_eq!(uuid_of_id("1750c342-7ef5-1041-94a3-312839f8260"), None);
        assert_eq!(uuid_of_id("1750c342-7ef5-1041-94a3-312839f8260c0"), None);
        assert_eq!(uuid_of_id("alice"), None);
        assert_eq!(uuid_of_id(""), None);
    }

    #[test]
    fn what_a_refresh_removes() {
        let (a, b, c, d) = ([1; 16], [2; 16], [3; 16], [4; 16]);
        let state = |state, uuid| StateControl {
            state,
            uuid,
            cookie: None,
        };

        // Delete phase: only what is listed as deleted is gone.
        let mut deletes = Refresh::new(Some(b"old"));
        deletes.state(state(EntryState::Modify, a));
        deletes.info(SyncInfo::IdSet {
            cookie: None,
            refresh_deletes: true,
            uuids: vec![b],
        });
        deletes.done(DoneControl {
            cookie: Some(b"new".to_vec()),
            refresh_deletes: true,
        });
        assert!(!deletes.removes(&a) && deletes.removes(&b) && !deletes.removes(&c));
        assert_eq!(deletes.cookie.as_deref(), Some(&b"new"[..]));

        // Present phase: whatever is neither present nor changed is gone.
        let mut present = Refresh::new(Some(b"old"));
        present.state(state(EntryState::Add, a));
        present.state(state(EntryState::Present, b));
        present.info(SyncInfo::IdSet {
            cookie: Some(b"mid".to_vec()),
            refresh_deletes: false,
            uuids: vec![c],
        });
        present.done(DoneControl {
            cookie: None,
            refresh_deletes: false,
        });
        assert!(!present.removes(&a) && !present.removes(&b) && !present.removes(&c));
        assert!(present.removes(&d));
        assert_eq!(present.cookie.as_deref(), Some(&b"mid"[..]));

        // Without a cookie the refresh lists everything, whatever the Sync Done says.
        let mut initial = Refresh::new(None);
        initial.state(state(EntryState::Add, a));
        initial.done(DoneControl {
            cookie: Some(b"c".to_vec()),
            refresh_deletes: true,
        });
        assert!(!initial.removes(&a) && initial.removes(&b));
    }
}
