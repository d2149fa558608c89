//! The web registration site: the one place a Temporary Access Pass works (Entra's "My
//! Security Info"). A user signs in with a TAP (or the directory password, or a registered
//! passkey) and registers strong methods: a passkey or security key (WebAuthn), an
//! authenticator app (TOTP).
//!
//! Shape:
//! - [`signin`]: the sign-in decisions (which prompt, TAP rules of DESIGN §2, password, second
//!   factor, passkey sign-in), sessions opened and checked; no HTTP types;
//! - [`security_info`]: what a signed-in user may see and change, the registration window and
//!   interrupt mode; no HTTP types;
//! - [`throttle`], [`totp`], [`passkeys`], [`session`]: the building blocks;
//! - [`pages`]: server-rendered HTML (maud escapes every value), readable on a phone, usable
//!   without JavaScript except for the WebAuthn calls;
//! - [`handlers`]: the axum routes, CSRF / origin checks and the one mapping of failures to
//!   HTTP responses;
//! - [`server`]: the listener loop, HTTPS with rustls, graceful shutdown.
//!
//! [`router`] is composable: the daemon merges other routers (the federation adapter) into it
//! with `Router::merge` before handing it to [`serve`].
//!
//! May depend on: `service` (store, clock, argon2 pool, audit), `policy`, `directory` (the
//! password check), `config` (the `[web]` section), `model`. Nothing else depends on it but
//! `daemon`.

pub mod handlers;
pub mod pages;
pub mod passkeys;
pub mod security_info;
pub mod server;
pub mod session;
pub mod signin;
pub mod throttle;
pub mod totp;

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

use crate::config::{IpNetwork, PublicUrl, WebConfig};
use crate::directory::DirectorySource;
use crate::service::TapService;

pub use handlers::router;
pub use server::{load_tls, serve, ClientAddr};

use passkeys::{PasskeyError, Passkeys};
use throttle::{Throttle, ThrottleSettings};

/// The product name shown on pages and given to authenticators as the relying party's name.
pub const PRODUCT_NAME: &str = "tapd";

/// Entra's activity names for what happens on the web page (audit and logs).
pub mod activity {
    /// A sign-in attempt, successful or not; `details.authenticationMethod` says how.
    pub const SIGN_IN: &str = "User sign-in";
    /// A user added a passkey or authenticator app.
    pub const REGISTERED: &str = "User registered security info";
    /// A user deleted one of their methods or their own TAP.
    pub const DELETED: &str = "User deleted security info";
    /// A user signed out.
    pub const SIGNED_OUT: &str = "User signed out";
}

/// Authentication method names as Entra's sign-in logs spell them.
pub mod method_name {
    /// A Temporary Access Pass.
    pub const TAP: &str = "Temporary Access Pass";
    /// The directory password.
    pub const PASSWORD: &str = "Password";
    /// A passkey or security key.
    pub const PASSKEY: &str = "Passkey (FIDO2)";
    /// An authenticator app code.
    pub const AUTHENTICATOR_APP: &str = "Authenticator app";
}

/// Errors setting up or running the web site (request-level failures never get here).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `[web]` lacks something the site needs.
    #[error("web site configuration: {0}")]
    Configuration(String),
    /// The certificate or key file could not be read or used.
    #[error("TLS certificate or key: {0}")]
    Tls(String),
    /// The relying party could not be set up.
    #[error(transparent)]
    Passkey(#[from] PasskeyError),
    /// The listener failed in a way that can't be retried.
    #[error("web listener: {0}")]
    Io(#[from] std::io::Error),
}

/// How the site behaves, from `[web]`.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// The public origin: cookie scope, the only accepted `Origin`, the WebAuthn origin.
    pub public_url: PublicUrl,
    /// `Secure` and `__Host-` cookies: true unless the public URL is plain `http`
    /// (which configuration allows only on loopback).
    pub secure_cookies: bool,
    /// Peers whose `X-Forwarded-For` is believed (`[web] trusted_proxies`); empty: the
    /// socket peer is always the client. See [`forwarded_client`].
    pub trusted_proxies: Vec<IpNetwork>,
    /// Groups (id, normalised DN, or unique cn) whose members get the registration interrupt after a TAP sign-in.
    pub registration_interrupt_groups: Vec<String>,
    /// Guessing resistance.
    pub throttle: ThrottleSettings,
}

impl WebSettings {
    /// Settings from a validated `[web]` section; fails when it has no `public_url`.
    pub fn from_config(web: &WebConfig) -> Result<Self, WebError> {
        let public_url = web.public_url.clone().ok_or_else(|| {
            WebError::Configuration("web.public_url is required to serve the site".to_owned())
        })?;
        Ok(WebSettings {
            secure_cookies: public_url.is_https(),
            public_url,
            trusted_proxies: web.trusted_proxies.clone(),
            registration_interrupt_groups: web.registration_interrupt_groups.clone(),
            throttle: ThrottleSettings::default(),
        })
    }
}

/// The client a request from `peer` stands for, read from its `X-Forwarded-For` header
/// lines (`forwarded`, in order), or `None` when the socket peer is the client.
///
/// The header is read only when `peer` is one of the `trusted` proxies: anyone else can
/// write anything there. Then the entries (all lines, comma-separated) are walked from the
/// right, the end the nearest proxy appended, skipping the addresses of trusted proxies; the
/// first untrusted address is the client. Anything malformed in the walked part (not an IP
/// address, an empty entry, a line that is not text) or an empty header, or a chain of only
/// trusted proxies, means the socket peer is used: a wrong guess would let a client pick
/// its own address.
pub fn forwarded_client<'a>(
    peer: IpAddr,
    forwarded: impl IntoIterator<Item = &'a axum::http::HeaderValue>,
    trusted: &[IpNetwork],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|network| network.contains(ip));
    if !is_trusted(peer) {
        return None;
    }
    let mut entries = Vec::new();
    for line in forwarded {
        let text = line.to_str().ok()?;
        entries.extend(text.split(',').map(str::trim));
    }
    for entry in entries.iter().rev() {
        let ip: IpAddr = entry.parse().ok()?;
        if !is_trusted(ip) {
            return Some(ip);
        }
    }
    None
}

/// Where a request came from, for throttling and audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The client's address.
    pub ip: IpAddr,
    /// As recorded in audit (`IP:port`, or the forwarded address).
    pub text: String,
}

impl Source {
    /// A source from a socket address.
    pub fn from_socket(addr: SocketAddr) -> Self {
        Source {
            ip: addr.ip(),
            text: addr.to_string(),
        }
    }
}

/// Everything a request handler needs.
pub struct Web {
    service: Arc<TapService>,
    directory: Arc<dyn DirectorySource>,
    settings: WebSettings,
    throttle: Throttle,
    passkeys: Passkeys,
    /// Outstanding passkey ceremonies per source (sign-in) or user (registration).
    ceremonies: passkeys::CeremonyLimiter,
}

impl Web {
    /// The settings in force.
    pub fn settings(&self) -> &WebSettings {
        &self.settings
    }

    /// The TAP service (store, clock, argon2 pool).
    pub fn service(&self) -> &Arc<TapService> {
        &self.service
    }

    /// The sign-in throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }
}

/// Shared, cheaply cloned state of the site.
#[derive(Clone)]
pub struct WebState(Arc<Web>);

impl WebState {
    /// Builds the site over the service and the directory (for password checks).
    pub fn new(
        service: Arc<TapService>,
        directory: Arc<dyn DirectorySource>,
        settings: WebSettings,
    ) -> Result<Self, WebError> {
        let passkeys = Passkeys::new(&settings.public_url, PRODUCT_NAME)?;
        Ok(WebState(Arc::new(Web {
            service,
            directory,
            throttle: Throttle::new(settings.throttle.clone()),
            settings,
            passkeys,
            ceremonies: passkeys::CeremonyLimiter::default(),
        })))
    }
}

impl Deref for WebState {
    type Target = Web;

    fn deref(&self) -> &Web {
        &self.0
    }
}

/// Why a request could not be served; [`handlers`] maps each to one status and page, and web
/// visitors never see internal detail.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The form or JSON is malformed or names something that doesn't exist.
    #[error("{0}")]
    BadRequest(String),
    /// The request is not allowed: another site's form, a missing CSRF token, interrupt mode,
    /// a closed registration window. The message is shown to the user.
    #[error("{0}")]
    Forbidden(String),
    /// The session is missing or over; the user must sign in (again).
    #[error("sign-in required")]
    SignInRequired,
    /// Too many requests from this source (e.g. passkey ceremonies started); answered 429.
    #[error("{0}")]
    TooManyRequests(String),
    /// Too many argon2 verifications queued; try again shortly.
    #[error("the sign-in service is busy")]
    Busy,
    /// The store or directory can't be reached right now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or unreadable data; logged, not shown.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(m) => Failure::Unavailable(m.to_string()),
            other => Failure::Internal(other.to_string()),
        }
    }
}

impl From<crate::tapcode::HashError> for Failure {
    fn from(e: crate::tapcode::HashError) -> Self {
        match e {
            crate::tapcode::HashError::Overloaded => Failure::Busy,
            other => Failure::Internal(other.to_string()),
        }
    }
}

impl From<crate::service::ServiceError> for Failure {
    fn from(e: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as E;
        match e {
            E::BadRequest(m) | E::NotFound(m) => Failure::BadRequest(m),
            E::Forbidden(m) | E::Conflict(m) => Failure::Forbidden(m),
            E::Unavailable(m) => Failure::Unavailable(m.to_string()),
            E::Overloaded(_) => Failure::Busy,
            E::Internal(m) => Failure::Internal(m.to_string()),
        }
    }
}

#[cfg(test)]
mod forwarded_tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|n| IpNetwork::parse(n).unwrap()).collect()
    }

    fn client(peer: &str, lines: &[&[u8]], trusted: &[&str]) -> Option<IpAddr> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_bytes(l).unwrap())
            .collect();
        forwarded_client(peer.parse().unwrap(), values.iter(), &nets(trusted))
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_writes() {
        assert_eq!(client("198.51.100.7", &[b"203.0.113.1"], &[]), None);
        assert_eq!(
            client("198.51.100.7", &[b"203.0.113.1"], &["10.0.0.0/8"]),
            None
        );
    }

    #[test]
    fn the_walk_goes_from_the_right_skipping_trusted_hops() {
        let trusted = ["10.0.0.0/8", "192.0.2.1"];
        // client, then two trusted proxies appended by the chain
        assert_eq!(
            client("10.0.0.1", &[b"203.0.113.9, 192.0.2.1, 10.1.2.3"], &trusted),
            ip("203.0.113.9")
        );
        // A spoofed entry left of the real client is never reached.
        assert_eq!(
            client("10.0.0.1", &[b"1.2.3.4, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(
                "10.0.0.1",
                &[b"1.2.3.4", b"203.0.113.9, 10.9.9.9"],
                &trusted
            ),
            ip("203.0.113.9")
        );
        // IPv6 entries.
        assert_eq!(
            client("10.0.0.1", &[b"2001:db8::5"], &trusted),
            ip("2001:db8::5")
        );
    }

    #[test]
    fn anything_malformed_in_the_walked_part_means_the_socket_peer() {
        let trusted = ["10.0.0.0/8"];
        for lines in [
            &[&b"not-an-address"[..]][..],
            &[b"203.0.113.9, garbage"],
            &[b"203.0.113.9,,10.0.0.2"],
            &[b""],
            &[b"203.0.113.9:4711"],
            &[b"[2001:db8::5]"],
            &[b"\xff\xfe"],
        ] {
            assert_eq!(client("10.0.0.1", lines, &trusted), None, "{lines:?}");
        }
        // No header at all, or only trusted hops: the peer.
        assert_eq!(client("10.0.0.1", &[], &trusted), None);
        assert_eq!(client("10.0.0.1", &[b"10.0.0.7, 10.0.0.8"], &trusted), None);
        // Garbage left of the first untrusted address is never looked at.
        assert_eq!(
            client("10.0.0.1", &[b"garbage, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
    }
}
