//! RADIUS clients (NASes): who may talk to us, with which shared secret, and whether their
//! requests must carry Message-Authenticator. RFC 2865 §3: "A RADIUS server MUST use the
//! source IP address of the RADIUS UDP packet to decide which shared secret to use".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::RadiusError;

/// A RADIUS shared secret: never empty, wiped from memory on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// Wraps secret bytes; an empty secret is refused (RFC 2865 §3). RFC 2865 recommends at
    /// least 16 octets; enforcing that is left to configuration checks.
    pub fn new(bytes: Vec<u8>) -> Result<Self, RadiusError> {
        if bytes.is_empty() {
            return Err(RadiusError::EmptySecret);
        }
        Ok(SharedSecret(Zeroizing::new(bytes)))
    }

    /// The secret octets, for keying MD5/HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// One configured RADIUS client (a NAS, or a network of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadiusClient {
    /// Name for logs and counters.
    pub name: String,
    /// Source addresses this client may send from (a single address is a /32 or /128).
    pub network: IpNet,
    /// The shared secret.
    pub secret: SharedSecret,
    /// BlastRADIUS (R1): drop every Access-Request without Message-Authenticator. When
    /// `false` (a logged, explicit opt-out for legacy NASes), requests without MA are still
    /// dropped if they carry Proxy-State (R4, "limit Proxy-State").
    pub require_message_authenticator: bool,
}

/// Parses a client address: either an IP address (`10.0.0.5`, `::1`) or an address/prefix
/// (`10.0.0.0/8`). Host bits under the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_network(text: &str) -> Result<IpNet, RadiusError> {
    let text = text.trim();
    if let Ok(net) = IpNet::from_str(text) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(text)
        .map(IpNet::from)
        .map_err(|_| RadiusError::BadClientNetwork(text.to_owned()))
}

/// The client whose network contains `source`, the most specific prefix winning (the first
/// configured on a tie). IPv4-mapped IPv6 sources (`::ffff:a.b.c.d`, from dual-stack
/// sockets) are matched as IPv4.
pub fn find_client(clients: &[RadiusClient], source: IpAddr) -> Option<&RadiusClient> {
    let source = match source {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    let mut best: Option<&RadiusClient> = None;
    for client in clients.iter().filter(|c| c.network.contains(&source)) {
        if best.is_none_or(|b| client.network.prefix_len() > b.network.prefix_len()) {
            best = Some(client);
        }
    }
    best
}
