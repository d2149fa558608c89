//! The web registration site: the one place a Temporary Access Pass works (Entra's "My
//! Security Info"). A user signs in with a TAP (or the directory password, or a registered
//! passkey) and registers strong methods: a passkey or security key (WebAuthn), an
//! authenticator app (TOTP).
//!
//! Shape:
//! - the sign-in service ([`crate::signin::SelfService`]) makes every decision: which prompt,
//!   the TAP rules of DESIGN §2, password, second factor, passkey sign-in, sessions,
//!   registration windows and interrupt mode; the web only asks it and renders the answer;
//! - [`extract`]: the visitor extractors and the forgery check around request bodies;
//! - [`respond`]: pages, redirects, cookies, and the one failure mapping per response kind;
//! - [`session`]: cookies and the origin check;
//! - [`pages`]: server-rendered HTML (maud escapes every value), readable on a phone, usable
//!   without JavaScript except for the WebAuthn calls;
//! - [`handlers`]: the axum routes, CSRF / origin checks and the one mapping of failures to
//!   HTTP responses;
//!
//! [`router`] is composable: the daemon merges other routers (the federation adapter) into it
//! with `Router::merge` before handing it to [`serve`].
//!
//! May depend on: `signin` (every decision), `service` (handed through to it), `config` (the
//! `[web]` section), `model`. Never `store`, `directory`, `policy` or `tapcode`. Nothing else
//! depends on it but `daemon` (and the listener loop shared by federation and metrics).

pub mod extract;
pub mod handlers;
pub mod pages;
pub mod respond;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{IpNetwork, PublicUrl, WebConfig};
use crate::service::TapService;
use crate::signin::passkeys::PasskeyError;
use crate::signin::throttle::ThrottleSettings;
use crate::signin::{PasswordDirectory, SelfService, SelfServiceSettings};

pub use crate::http_listener::{load_tls, serve, ClientAddr};
pub use handlers::router;

pub use crate::signin::site::{activity, method_name, PRODUCT_NAME};
pub use crate::signin::{Failure, Source};
// The sign-in service's modules under the paths the web's callers have used.
pub use crate::signin::registration as security_info;
pub use crate::signin::web as signin;
pub use crate::signin::{passkeys, throttle, totp};

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

/// Everything a request handler needs: the site's settings and its sign-in service.
pub struct Web {
    settings: WebSettings,
    signin: SelfService,
}

/// Shared, cheaply cloned state of the site.
#[derive(Clone)]
pub struct WebState(Arc<Web>);

impl WebState {
    /// Builds the site over the service and the directory (which it hands to the sign-in
    /// service for password checks).
    pub fn new(
        service: Arc<TapService>,
        directory: PasswordDirectory,
        settings: WebSettings,
    ) -> Result<Self, WebError> {
        let signin = SelfService::new(
            service,
            directory,
            SelfServiceSettings {
                public_url: settings.public_url.clone(),
                registration_interrupt_groups: settings.registration_interrupt_groups.clone(),
                throttle: settings.throttle.clone(),
            },
        )?;
        Ok(WebState(Arc::new(Web { settings, signin })))
    }

    /// The settings in force.
    pub fn settings(&self) -> &WebSettings {
        &self.0.settings
    }

    /// The sign-in service the handlers call: every step a handler may take is one of its
    /// methods (self-service registration through [`SelfService::registration`]).
    pub fn signin(&self) -> &SelfService {
        &self.0.signin
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
