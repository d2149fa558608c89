//! RADIUS: the protocol core, sans I/O, plus the handler and socket loop built around it.
//!
//! - core (`request`, `reply`, `cache`, `client`, `crypto`): bytes in → a validated
//!   [`Request`] or a [`DropReason`]; a [`Decision`] → reply bytes; the RFC 5080
//!   [`ReplyCache`]. Depends on no other tapd module (see below);
//! - [`handler`]: one datagram in, at most one reply out, deciding through
//!   [`crate::signin`]; no socket;
//! - [`server`]: the small UDP loop with bounded concurrency.
//!
//! Both count into the daemon's [`crate::metrics::Metrics`] registry (RFC 2865 §1.2: a
//! silently discarded packet "SHOULD [be recorded] in a statistics counter").
//!
//! # The core
//!
//! The core, sans I/O: bytes in → a validated [`Request`] or a
//! [`DropReason`]; a [`Decision`] → reply bytes; plus the RFC 5080 [`ReplyCache`].
//!
//! Why it exists: the RADIUS decoder runs before any authentication, so it is the pre-auth
//! attack surface (security requirements R1–R7, §8.2). Keeping it free of sockets, the
//! directory and the store makes every rule testable with fixture packets and fuzzable.
//! The core depends on no other tapd module, only on the `radius` crate (attribute dictionary and,
//! in tests, an independent packet builder/verifier), RustCrypto `md-5`/`hmac`, `subtle`,
//! `zeroize` and `ipnet`. Time is a parameter (`now: Instant`).
//!
//! # What the `radius` 0.4 crate does not check, and what this module does instead
//!
//! Read from the crate source (`radius-0.4.0/src/core/{packet,attributes,avp}.rs`):
//! - `Packet::decode` checks header ≥ 20, Length ≤ 4096, datagram ≥ Length and attribute
//!   lengths, but accepts attribute type 0, any number of attributes, and any code (unknown
//!   codes become `Code::Invalid`). We walk the attributes ourselves and drop type 0, more
//!   than [`MAX_ATTRIBUTES`] attributes and every code but Access-Request/Status-Server.
//! - `Packet::is_authentic_request` returns `true` for Access-Request and Status-Server
//!   without looking at Message-Authenticator. We verify MA ourselves (HMAC-MD5, RFC 3579
//!   §3.2) with a constant-time compare (`subtle`), require it by default (R1), always for
//!   Status-Server (RFC 5997) and with EAP-Message (RFC 3579), drop duplicates and lengths
//!   other than 18.
//! - `AVP::encode_user_password` (PAP decrypt) accepts 16–128 octets without checking for a
//!   multiple of 16 and truncates at the *first* NUL. We drop bad lengths and strip only
//!   *trailing* NULs (the RFC 2865 §5.2 padding), keeping the result in `Zeroizing` memory.
//!   An all-NUL password decodes to an empty one; the caller must refuse it (R8).
//! - `Packet::encode` never adds or computes MA and `is_authentic_response` compares with
//!   `==`. We encode replies ourselves with MA as the first attribute (R3).
//!
//! So the crate is used for its attribute-type dictionary; its codec is used only in tests
//! as an independent implementation, and its server not at all.
//!
//! # Length handling
//!
//! RFC 2865 §3: octets beyond the Length field "MUST be treated as padding and ignored on
//! reception", so trailing bytes are ignored (and not covered by MA); a Length larger than
//! the datagram, smaller than 20 or larger than 4096 drops the packet.

mod cache;
mod client;
mod crypto;
pub mod handler;
pub mod metrics;
mod reply;
mod request;
pub mod server;

#[cfg(test)]
mod tests;

pub use cache::{CacheKey, CacheLookup, ReplyCache, ReplyCacheConfig};
pub use client::{find_client, parse_network, RadiusClient, SharedSecret};
pub use handler::{RadiusHandler, RadiusSettings, ReplyAttributeRule, PAP_ONLY_MESSAGE};
pub use ipnet::IpNet;
pub use metrics::{RadiusChallengeResult, RadiusDropCause, RadiusMetrics, RadiusOutcome};
pub use reply::{encode_reply, Decision, ReplyAttribute};
pub use request::{parse_request, AuthKind, DropReason, Request, RequestKind};

/// Length of the RADIUS header (Code, Identifier, Length, Authenticator).
pub const HEADER_LEN: usize = 20;
/// Largest RADIUS packet (RFC 2865 §3).
pub const MAX_PACKET_LEN: usize = 4096;
/// Most attributes accepted in one request (FreeRADIUS `max_attributes` default).
pub const MAX_ATTRIBUTES: usize = 200;

/// Errors of the RADIUS core outside packet validation (which yields [`DropReason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadiusError {
    /// A shared secret was empty; RFC 2865 §3 says it "MUST NOT be empty".
    #[error("the RADIUS shared secret must not be empty")]
    EmptySecret,
    /// A client address was neither an IP address nor an address/prefix (CIDR).
    #[error("{0:?} is neither an IP address nor an address/prefix")]
    BadClientNetwork(String),
    /// The reply would exceed the 4096-octet RADIUS maximum.
    #[error("the RADIUS reply would be {0} octets, more than the maximum of 4096")]
    ReplyTooLarge(usize),
    /// A reply attribute value is empty or longer than 253 octets.
    #[error("reply attribute {kind} has a value of {len} octets; allowed are 1 to 253")]
    BadReplyAttributeLength {
        /// The attribute type.
        kind: u8,
        /// The value length given.
        len: usize,
    },
    /// A reply attribute whose type this module manages itself (Message-Authenticator,
    /// Proxy-State) or that never belongs in a reply (User-Password, CHAP-Password,
    /// EAP-Message, type 0).
    #[error("reply attribute type {0} may not be set by the caller")]
    ForbiddenReplyAttribute(u8),
}
