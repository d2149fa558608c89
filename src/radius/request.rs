//! Strict validation of incoming RADIUS requests: a datagram from a known client becomes a
//! [`Request`] or a [`DropReason`] (a silent discard, counted by the caller). Checks run in
//! this order: framing (lengths, code, attribute walk), Message-Authenticator policy and
//! verification, then the attribute semantics (User-Name, credentials), so that reasons
//! after `bad_message_authenticator` are only ever counted for authenticated packets (or
//! for clients that opted out of MA).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ::radius::core::{rfc2865, rfc2869, rfc3162};
use zeroize::Zeroizing;

use super::client::RadiusClient;
use super::crypto::{self, DIGEST_LEN};
use super::{HEADER_LEN, MAX_ATTRIBUTES, MAX_PACKET_LEN};

const CODE_ACCESS_REQUEST: u8 = 1;
const CODE_STATUS_SERVER: u8 = 12;
/// Microsoft's SMI vendor number, which carries the MS-CHAP attributes (RFC 2548).
const VENDOR_MICROSOFT: u32 = 311;

/// Most Proxy-State octets (attribute headers included) a request may carry: the reply
/// echoes them all and still needs room for Message-Authenticator, Reply-Message and the
/// group reply attributes within 4096 octets.
pub const MAX_ECHOED_PROXY_STATE: usize = 2048;
const MS_CHAP_RESPONSE: u8 = 1;
const MS_CHAP_CPW_1: u8 = 3;
const MS_CHAP_CPW_2: u8 = 4;
const MS_CHAP_LM_ENC_PW: u8 = 5;
const MS_CHAP_NT_ENC_PW: u8 = 6;
const MS_CHAP_CHALLENGE: u8 = 11;
const MS_CHAP2_RESPONSE: u8 = 25;
const MS_CHAP2_CPW: u8 = 27;

/// Why a datagram was silently discarded. [`DropReason::as_str`] is the stable counter
/// label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// The datagram is shorter than the 20-octet header.
    #[error("datagram shorter than the RADIUS header")]
    TooShort,
    /// The Length field exceeds the 4096-octet maximum.
    #[error("Length field above 4096")]
    TooLong,
    /// The Length field is below 20 or larger than the datagram.
    #[error("Length field below 20 or beyond the datagram")]
    BadLength,
    /// An attribute has type 0, a length below 2, overruns the packet, or has a value
    /// malformed for its type (e.g. a NAS-IP-Address that is not 4 octets).
    #[error("malformed attribute")]
    BadAttribute,
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("too many attributes")]
    TooManyAttributes,
    /// The code is neither Access-Request nor Status-Server.
    #[error("code is neither Access-Request nor Status-Server")]
    UnknownCode,
    /// No Message-Authenticator, but the client requires it, or the packet is a
    /// Status-Server (RFC 5997) or carries EAP-Message (RFC 3579).
    #[error("Message-Authenticator missing")]
    MissingMessageAuthenticator,
    /// Message-Authenticator present but not 16 octets of value.
    #[error("Message-Authenticator of the wrong length")]
    MalformedMessageAuthenticator,
    /// Message-Authenticator does not verify (wrong secret or tampering).
    #[error("Message-Authenticator does not verify")]
    BadMessageAuthenticator,
    /// More than one Message-Authenticator.
    #[error("more than one Message-Authenticator")]
    DuplicateMessageAuthenticator,
    /// User-Password not 16 to 128 octets or not a multiple of 16.
    #[error("User-Password of invalid length")]
    BadPasswordLength,
    /// Proxy-State without Message-Authenticator from a client that may omit MA (R4).
    #[error("Proxy-State without Message-Authenticator")]
    ProxyStateWithoutMa,
    /// A Proxy-State with an empty value: the reply must echo it, and an attribute can't
    /// be empty (RFC 2865 §5.33), so no valid reply exists.
    #[error("Proxy-State of zero length (the reply could not echo it)")]
    EmptyProxyState,
    /// More Proxy-State octets than [`MAX_ECHOED_PROXY_STATE`]: echoed, they would leave no
    /// room in the 4096-octet reply for its own attributes.
    #[error("Proxy-State attributes too long to echo in a reply")]
    ProxyStateTooLarge,
    /// Access-Request without User-Name.
    #[error("User-Name missing")]
    MissingUserName,
    /// User-Name empty or not UTF-8.
    #[error("User-Name empty or not UTF-8")]
    BadUserName,
    /// A single-valued attribute (User-Name, User-Password, CHAP-Password, NAS-Identifier,
    /// NAS-IP-Address, NAS-IPv6-Address, Calling-Station-Id, State) appears twice.
    #[error("single-valued attribute repeated")]
    DuplicateAttribute,
    /// EAP-Message together with User-Password or CHAP-Password.
    #[error("EAP-Message together with a password")]
    EapWithPassword,
    /// More than one credential kind (PAP, CHAP, MS-CHAP) in one request.
    #[error("more than one kind of credential")]
    ConflictingCredentials,
}

impl DropReason {
    /// Stable snake_case label for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::BadLength => "bad_length",
            DropReason::BadAttribute => "bad_attribute",
            DropReason::TooManyAttributes => "too_many_attributes",
            DropReason::UnknownCode => "unknown_code",
            DropReason::MissingMessageAuthenticator => "missing_message_authenticator",
            DropReason::MalformedMessageAuthenticator => "malformed_message_authenticator",
            DropReason::BadMessageAuthenticator => "bad_message_authenticator",
            DropReason::DuplicateMessageAuthenticator => "duplicate_message_authenticator",
            DropReason::BadPasswordLength => "bad_password_length",
            DropReason::ProxyStateWithoutMa => "proxy_state_without_ma",
            DropReason::EmptyProxyState => "empty_proxy_state",
            DropReason::ProxyStateTooLarge => "proxy_state_too_large",
            DropReason::MissingUserName => "missing_user_name",
            DropReason::BadUserName => "bad_user_name",
            DropReason::DuplicateAttribute => "duplicate_attribute",
            DropReason::EapWithPassword => "eap_with_password",
            DropReason::ConflictingCredentials => "conflicting_credentials",
        }
    }

    /// Every reason, for registering counters up front.
    pub const ALL: [DropReason; 19] = [
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::BadLength,
        DropReason::BadAttribute,
        DropReason::TooManyAttributes,
        DropReason::UnknownCode,
        DropReason::MissingMessageAuthenticator,
        DropReason::MalformedMessageAuthenticator,
        DropReason::BadMessageAuthenticator,
        DropReason::DuplicateMessageAuthenticator,
        DropReason::BadPasswordLength,
        DropReason::ProxyStateWithoutMa,
        DropReason::EmptyProxyState,
        DropReason::ProxyStateTooLarge,
        DropReason::MissingUserName,
        DropReason::BadUserName,
        DropReason::DuplicateAttribute,
        DropReason::EapWithPassword,
        DropReason::ConflictingCredentials,
    ];
}

/// The request codes this server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Access-Request (code 1).
    AccessRequest,
    /// Status-Server (code 12, RFC 5997): answered with Access-Accept, nothing else done.
    StatusServer,
}

/// The credential a request carries.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthKind {
    /// PAP: the revealed User-Password, trailing NUL padding stripped. May be empty (an
    /// all-NUL password); the caller must refuse empty passwords before any bind (R8).
    Pap(Zeroizing<Vec<u8>>),
    /// A method this server does not support: `"chap"`, `"mschap"`, `"mschapv2"` or `"eap"`.
    Unsupported(&'static str),
    /// No credential attribute at all (e.g. Status-Server).
    None,
}

impl fmt::Debug for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthKind::Pap(_) => f.write_str("Pap(<redacted>)"),
            AuthKind::Unsupported(kind) => f.debug_tuple("Unsupported").field(kind).finish(),
            AuthKind::None => f.write_str("None"),
        }
    }
}

/// A validated request: framing checked, Message-Authenticator verified when present (and
/// present whenever the client policy requires it), credentials decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Access-Request or Status-Server.
    pub code: RequestKind,
    /// The Identifier, echoed in the reply.
    pub identifier: u8,
    /// The Request Authenticator.
    pub authenticator: [u8; DIGEST_LEN],
    /// User-Name; always present on an Access-Request.
    pub user_name: Option<String>,
    /// The credential carried.
    pub auth: AuthKind,
    /// Proxy-State values in order, to be copied into the reply (RFC 2865 §5.33).
    pub proxy_states: Vec<Vec<u8>>,
    /// NAS-Identifier (lossy UTF-8; for logs and audit only).
    pub nas_identifier: Option<String>,
    /// NAS-IP-Address or NAS-IPv6-Address (the IPv4 one if both).
    pub nas_ip: Option<IpAddr>,
    /// Calling-Station-Id (lossy UTF-8; for logs and audit only).
    pub calling_station_id: Option<String>,
    /// Whether the request carried a (verified) Message-Authenticator.
    pub message_authenticator: bool,
    /// State (RFC 2865 §5.24): the answer to an Access-Challenge carries the State the
    /// challenge sent, unchanged.
    pub state: Option<Vec<u8>>,
}

/// Attributes of interest found by the framing walk, borrowed from the datagram.
#[derive(Default)]
struct Scan<'a> {
    user_name: Option<&'a [u8]>,
    user_password: Option<&'a [u8]>,
    chap_password: bool,
    eap_message: bool,
    ms_chap: Option<&'static str>,
    ma_value_offset: Option<usize>,
    proxy_states: Vec<&'a [u8]>,
    /// Octets the Proxy-States take, attribute headers included.
    proxy_state_octets: usize,
    nas_identifier: Option<&'a [u8]>,
    nas_ipv4: Option<Ipv4Addr>,
    nas_ipv6: Option<Ipv6Addr>,
    calling_station_id: Option<&'a [u8]>,
    state: Option<&'a [u8]>,
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DropReason> {
    if slot.is_some() {
        return Err(DropReason::DuplicateAttribute);
    }
    *slot = Some(value);
    Ok(())
}

/// Which MS-CHAP flavour a Microsoft vendor-specific attribute signals, checking its
/// sub-attribute framing strictly (a length-0 sub-attribute loops forever in some parsers).
fn microsoft_vsa(sub_attributes: &[u8]) -> Result<Option<&'static str>, DropReason> {
    let mut found = None;
    let mut rest = sub_attributes;
    while !rest.is_empty() {
        let &[kind, len, ..] = rest else {
            return Err(DropReason::BadAttribute);
        };
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            return Err(DropReason::BadAttribute);
        }
        match kind {
            MS_CHAP2_RESPONSE | MS_CHAP2_CPW => found = Some("mschapv2"),
            MS_CHAP_RESPONSE | MS_CHAP_CPW_1 | MS_CHAP_CPW_2 | MS_CHAP_LM_ENC_PW
            | MS_CHAP_NT_ENC_PW | MS_CHAP_CHALLENGE => {
                found = found.or(Some("mschap"));
            }
            _ => {}
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(found)
}

/// Walks the attributes of `packet` (already cut to its Length), checking framing and
/// collecting what the request needs.
fn scan_attributes(packet: &[u8]) -> Result<Scan<'_>, DropReason> {
    let mut scan = Scan::default();
    let mut offset = HEADER_LEN;
    let mut count = 0usize;
    while let Some(rest) = packet.get(offset..).filter(|r| !r.is_empty()) {
        let &[kind, len, ..] = rest else {
            return Err(DropReason::BadAttribute);
        };
        let len = usize::from(len);
        if kind == 0 || len < 2 || len > rest.len() {
            return Err(DropReason::BadAttribute);
        }
        count += 1;
        if count > MAX_ATTRIBUTES {
            return Err(DropReason::TooManyAttributes);
        }
        let value = rest.get(2..len).ok_or(DropReason::BadAttribute)?;
        match kind {
            rfc2865::USER_NAME_TYPE => set_once(&mut scan.user_name, value)?,
            rfc2865::USER_PASSWORD_TYPE => set_once(&mut scan.user_password, value)?,
            rfc2865::CHAP_PASSWORD_TYPE => {
                if scan.chap_password {
                    return Err(DropReason::DuplicateAttribute);
                }
                scan.chap_password = true;
            }
            rfc2865::NAS_IP_ADDRESS_TYPE => {
                let octets: [u8; 4] = value.try_into().map_err(|_| DropReason::BadAttribute)?;
                set_once(&mut scan.nas_ipv4, Ipv4Addr::from(octets))?;
            }
            rfc3162::NAS_IPV6_ADDRESS_TYPE => {
                let octets: [u8; 16] = value.try_into().map_err(|_| DropReason::BadAttribute)?;
                set_once(&mut scan.nas_ipv6, Ipv6Addr::from(octets))?;
            }
            rfc2865::NAS_IDENTIFIER_TYPE => set_once(&mut scan.nas_identifier, value)?,
            rfc2865::CALLING_STATION_ID_TYPE => set_once(&mut scan.calling_station_id, value)?,
            rfc2865::STATE_TYPE => set_once(&mut scan.state, value)?,
            rfc2865::PROXY_STATE_TYPE => {
                // Every Proxy-State goes back in the reply; one that can't be encoded there
                // is refused now rather than breaking the reply later.
                if value.is_empty() {
                    return Err(DropReason::EmptyProxyState);
                }
                scan.proxy_state_octets += len;
                if scan.proxy_state_octets > MAX_ECHOED_PROXY_STATE {
                    return Err(DropReason::ProxyStateTooLarge);
                }
                scan.proxy_states.push(value);
            }
            rfc2869::EAP_MESSAGE_TYPE => scan.eap_message = true,
            rfc2869::MESSAGE_AUTHENTICATOR_TYPE => {
                if scan.ma_value_offset.is_some() {
                    return Err(DropReason::DuplicateMessageAuthenticator);
                }
                if value.len() != DIGEST_LEN {
                    return Err(DropReason::MalformedMessageAuthenticator);
                }
                scan.ma_value_offset = Some(offset + 2);
            }
            rfc2865::VENDOR_SPECIFIC_TYPE => {
                let Some((vendor, sub_attributes)) = value.split_first_chunk::<4>() else {
                    return Err(DropReason::BadAttribute);
                };
                if u32::from_be_bytes(*vendor) == VENDOR_MICROSOFT {
                    if let Some(flavour) = microsoft_vsa(sub_attributes)? {
                        if scan.ms_chap != Some("mschapv2") {
                            scan.ms_chap = Some(flavour);
                        }
                    }
                }
            }
            _ => {}
        }
        offset += len;
    }
    Ok(scan)
}

fn lossy(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Validates one datagram from `client` (already looked up by source address with
/// [`find_client`](super::find_client)). Never panics; every refusal is a silent discard.
pub fn parse_request(buf: &[u8], client: &RadiusClient) -> Result<Request, DropReason> {
    let Some((header, _)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(DropReason::TooShort);
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if length > MAX_PACKET_LEN {
        return Err(DropReason::TooLong);
    }
    // Octets beyond Length are padding and ignored (RFC 2865 §3).
    let packet = match buf.get(..length) {
        Some(packet) if length >= HEADER_LEN => packet,
        _ => return Err(DropReason::BadLength),
    };
    let code = match header[0] {
        CODE_ACCESS_REQUEST => RequestKind::AccessRequest,
        CODE_STATUS_SERVER => RequestKind::StatusServer,
        _ => return Err(DropReason::UnknownCode),
    };
    let identifier = header[1];
    let mut authenticator = [0u8; DIGEST_LEN];
    authenticator.copy_from_slice(&header[4..HEADER_LEN]);

    let scan = scan_attributes(packet)?;

    // Message-Authenticator policy (R1, R2, R4, R7) before anything reads the contents.
    let secret = client.secret.expose();
    match scan.ma_value_offset {
        Some(offset) => {
            if !crypto::verify_request_message_authenticator(secret, packet, offset) {
                return Err(DropReason::BadMessageAuthenticator);
            }
        }
        None => {
            if client.require_message_authenticator
                || code == RequestKind::StatusServer
                || scan.eap_message
            {
                return Err(DropReason::MissingMessageAuthenticator);
            }
            if !scan.proxy_states.is_empty() {
                return Err(DropReason::ProxyStateWithoutMa);
            }
        }
    }

    let user_name = match scan.user_name {
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(name) if !name.is_empty() => Some(name.to_owned()),
            _ => return Err(DropReason::BadUserName),
        },
        None if code == RequestKind::AccessRequest => return Err(DropReason::MissingUserName),
        None => None,
    };

    if scan.eap_message && (scan.user_password.is_some() || scan.chap_password) {
        return Err(DropReason::EapWithPassword);
    }
    let kinds = [
        scan.user_password.is_some(),
        scan.chap_password,
        scan.ms_chap.is_some(),
        scan.eap_message,
    ];
    if kinds.iter().filter(|present| **present).count() > 1 {
        return Err(DropReason::ConflictingCredentials);
    }
    let auth = if let Some(hidden) = scan.user_password {
        let password = crypto::decrypt_user_password(hidden, secret, &authenticator)
            .ok_or(DropReason::BadPasswordLength)?;
        AuthKind::Pap(password)
    } else if scan.chap_password {
        AuthKind::Unsupported("chap")
    } else if let Some(flavour) = scan.ms_chap {
        AuthKind::Unsupported(flavour)
    } else if scan.eap_message {
        AuthKind::Unsupported("eap")
    } else {
        AuthKind::None
    };

    Ok(Request {
        code,
        identifier,
        authenticator,
        user_name,
        auth,
        proxy_states: scan.proxy_states.iter().map(|v| v.to_vec()).collect(),
        nas_identifier: lossy(scan.nas_identifier),
        nas_ip: scan
            .nas_ipv4
            .map(IpAddr::V4)
            .or(scan.nas_ipv6.map(IpAddr::V6)),
        calling_station_id: lossy(scan.calling_station_id),
        message_authenticator: scan.ma_value_offset.is_some(),
        state: scan.state.map(<[u8]>::to_vec),
    })
}
