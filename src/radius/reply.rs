//! Encoding replies: a [`Decision`] for a validated [`Request`] becomes Access-Accept,
//! Access-Reject or Access-Challenge (RFC 2865 §4.4: State and Reply-Message) bytes with Message-Authenticator as the FIRST attribute (R3, BlastRADIUS),
//! then Reply-Message, the caller's attributes, and the request's Proxy-State copied in
//! order (RFC 2865 §5.33). MA is computed (with the request authenticator in the header)
//! before the Response Authenticator, which covers it.

use ::radius::core::{rfc2865, rfc2869};

use super::client::SharedSecret;
use super::crypto::{self, DIGEST_LEN};
use super::request::{Request, RequestKind};
use super::{RadiusError, HEADER_LEN, MAX_PACKET_LEN};

const CODE_ACCESS_ACCEPT: u8 = 2;
const CODE_ACCESS_REJECT: u8 = 3;
const CODE_ACCESS_CHALLENGE: u8 = 11;
/// Largest attribute value (the length octet counts type and length too).
const MAX_VALUE_LEN: usize = 253;

/// An attribute the caller puts in a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyAttribute {
    /// Reply-Message (18), split into several attributes of at most 253 octets at character
    /// boundaries; an empty message adds nothing.
    ReplyMessage(String),
    /// Class (25), opaque, echoed by the NAS in accounting.
    Class(Vec<u8>),
    /// Filter-Id (11).
    FilterId(String),
    /// Session-Timeout (27), in seconds.
    SessionTimeout(u32),
    /// Service-Type (6).
    ServiceType(u32),
    /// Any other attribute, by type. Message-Authenticator, Proxy-State, User-Password,
    /// CHAP-Password, EAP-Message and type 0 are refused.
    Other {
        /// The attribute type.
        kind: u8,
        /// The value, 1 to 253 octets.
        value: Vec<u8>,
    },
}

/// The outcome for an Access-Request, decided by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Access-Accept with these attributes.
    Accept {
        /// Attributes after Message-Authenticator, in order.
        attributes: Vec<ReplyAttribute>,
    },
    /// Access-Reject, optionally with a Reply-Message for the user.
    Reject {
        /// Text shown to the user by NASes that display it.
        reply_message: Option<String>,
    },
    /// Access-Challenge (RFC 2865 §4.4): the NAS shows `reply_message` and sends the
    /// user's answer in a new Access-Request carrying `state` unchanged.
    Challenge {
        /// State (RFC 2865 §5.24), 1 to 253 octets.
        state: Vec<u8>,
        /// The prompt.
        reply_message: String,
    },
}

fn push_attribute(out: &mut Vec<u8>, kind: u8, value: &[u8]) -> Result<(), RadiusError> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(RadiusError::BadReplyAttributeLength {
            kind,
            len: value.len(),
        });
    }
    out.push(kind);
    // Cannot truncate: value.len() + 2 <= 255 was checked above.
    out.push((value.len() + 2) as u8);
    out.extend_from_slice(value);
    Ok(())
}

fn push_reply_message(out: &mut Vec<u8>, message: &str) -> Result<(), RadiusError> {
    let mut start = 0;
    let mut end = 0;
    for (index, ch) in message.char_indices() {
        let next = index + ch.len_utf8();
        if next - start > MAX_VALUE_LEN {
            push_attribute(
                out,
                rfc2865::REPLY_MESSAGE_TYPE,
                &message.as_bytes()[start..end],
            )?;
            start = end;
        }
        end = next;
    }
    if end > start {
        push_attribute(
            out,
            rfc2865::REPLY_MESSAGE_TYPE,
            &message.as_bytes()[start..end],
        )?;
    }
    Ok(())
}

fn push_reply_attribute(out: &mut Vec<u8>, attribute: &ReplyAttribute) -> Result<(), RadiusError> {
    match attribute {
        ReplyAttribute::ReplyMessage(message) => push_reply_message(out, message),
        ReplyAttribute::Class(class) => push_attribute(out, rfc2865::CLASS_TYPE, class),
        ReplyAttribute::FilterId(id) => push_attribute(out, rfc2865::FILTER_ID_TYPE, id.as_bytes()),
        ReplyAttribute::SessionTimeout(seconds) => {
            push_attribute(out, rfc2865::SESSION_TIMEOUT_TYPE, &seconds.to_be_bytes())
        }
        ReplyAttribute::ServiceType(service) => {
            push_attribute(out, rfc2865::SERVICE_TYPE_TYPE, &service.to_be_bytes())
        }
        ReplyAttribute::Other { kind, value } => match *kind {
            0
            | rfc2865::USER_PASSWORD_TYPE
            | rfc2865::CHAP_PASSWORD_TYPE
            | rfc2865::PROXY_STATE_TYPE
            | rfc2869::EAP_MESSAGE_TYPE
            | rfc2869::MESSAGE_AUTHENTICATOR_TYPE => {
                Err(RadiusError::ForbiddenReplyAttribute(*kind))
            }
            kind => push_attribute(out, kind, value),
        },
    }
}

/// Encodes the reply to `request`.
///
/// A Status-Server is always answered with a bare Access-Accept (RFC 5997 §3; the
/// `decision` is ignored): Message-Authenticator plus Proxy-State. Errors only when the
/// caller's attributes are invalid or the reply would exceed 4096 octets.
pub fn encode_reply(
    request: &Request,
    decision: &Decision,
    secret: &SharedSecret,
) -> Result<Vec<u8>, RadiusError> {
    let mut out = Vec::with_capacity(128);
    let code = match (request.code, decision) {
        (RequestKind::StatusServer, _) | (_, Decision::Accept { .. }) => CODE_ACCESS_ACCEPT,
        (_, Decision::Reject { .. }) => CODE_ACCESS_REJECT,
        (_, Decision::Challenge { .. }) => CODE_ACCESS_CHALLENGE,
    };
    out.extend_from_slice(&[code, request.identifier, 0, 0]);
    out.extend_from_slice(&request.authenticator);
    let ma_value_offset = out.len() + 2;
    push_attribute(
        &mut out,
        rfc2869::MESSAGE_AUTHENTICATOR_TYPE,
        &[0; DIGEST_LEN],
    )?;

    if request.code == RequestKind::AccessRequest {
        match decision {
            Decision::Accept { attributes } => {
                for attribute in attributes {
                    push_reply_attribute(&mut out, attribute)?;
                }
            }
            Decision::Reject { reply_message } => {
                if let Some(message) = reply_message {
                    push_reply_message(&mut out, message)?;
                }
            }
            Decision::Challenge {
                state,
                reply_message,
            } => {
                push_reply_message(&mut out, reply_message)?;
                push_attribute(&mut out, rfc2865::STATE_TYPE, state)?;
            }
        }
    }
    for state in &request.proxy_states {
        push_attribute(&mut out, rfc2865::PROXY_STATE_TYPE, state)?;
    }

    let length = out.len();
    if length > MAX_PACKET_LEN {
        return Err(RadiusError::ReplyTooLarge(length));
    }
    // Cannot truncate: length <= 4096 was checked above.
    out[2..4].copy_from_slice(&(length as u16).to_be_bytes());

    // The header still holds the request authenticator, as RFC 3579 §3.2 wants for MA.
    // Both `None` cases are impossible (the offsets were written above); map them anyway.
    let ma = crypto::message_authenticator(secret.expose(), &out, ma_value_offset)
        .ok_or(RadiusError::ReplyTooLarge(length))?;
    out[ma_value_offset..ma_value_offset + DIGEST_LEN].copy_from_slice(&ma);
    let response = crypto::response_authenticator(&out, &request.authenticator, secret.expose())
        .ok_or(RadiusError::ReplyTooLarge(length))?;
    out[4..HEADER_LEN].copy_from_slice(&response);
    Ok(out)
}
