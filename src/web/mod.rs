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

use crate::config::{PublicUrl, WebConfig};
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
    /// Take the client address from the last `X-Forwarded-For` entry (a TLS proxy in front).
    pub trust_forwarded_for: bool,
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
            trust_forwarded_for: web.behind_tls_proxy,
            registration_interrupt_groups: web.registration_interrupt_groups.clone(),
            throttle: ThrottleSettings::default(),
        })
    }
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
            crate::store::StoreError::Unavailable(m) => Failure::Unavailable(m),
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
            E::Unavailable(m) => Failure::Unavailable(m),
            E::Overloaded(_) => Failure::Busy,
            E::Internal(m) => Failure::Internal(m),
        }
    }
}
