//! The registration site's half of the sign-in service: [`SelfService`] holds what the web
//! sign-in steps ([`super::web`]) and self-service registration ([`super::registration`])
//! share (the TAP service, the directory for password checks, the throttle, the WebAuthn
//! relying party), with the failure type both return and the names they audit under. The web
//! front end holds one and only renders what it answers.
//!
//! May depend on: `service`, `directory` (the password check), `config` (the public URL),
//! `model`, `logging` (the failure's [`Cause`]), and the sibling building blocks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::PublicUrl;
use crate::directory::DirectorySource;
use crate::logging::Cause;
use crate::model::RegisteredMethod;
use crate::service::TapService;

use super::passkeys::{self, PasskeyError, Passkeys};
use super::throttle::{Throttle, ThrottleSettings};
use super::web::Current;

/// The directory the sign-in service checks passwords against. Front ends receive it from the
/// daemon and hand it over untouched.
pub type PasswordDirectory = Arc<dyn DirectorySource>;

/// The product name shown on pages and given to authenticators as the relying party's name.
pub const PRODUCT_NAME: &str = "tapd";

/// Entra's activity names for what happens on the web page (audit and logs).
pub mod activity {
    /// A sign-in attempt, successful or not; `details.authenticationMethod` says how.
    pub const SIGN_IN: &str = crate::service::activity::SIGN_IN;
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

/// Why a request could not be served; the web maps each to one status and page, and web
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
    /// The store or directory can't be reached right now. The underlying error, when there is
    /// one, is the source: the web logs the chain, visitors see a generic page.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A bug or unreadable data; logged with its cause chain, not shown.
    #[error("internal: {0}")]
    Internal(#[source] Cause),
}

impl Failure {
    /// [`Failure::Unavailable`] caused by `err`: its text is the message, and it is kept as the
    /// source.
    pub(crate) fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Failure::Unavailable(Cause::with_source(err.to_string(), err))
    }

    /// [`Failure::Internal`] caused by `err`: its text is the message, and it is kept as the
    /// source.
    pub(crate) fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Failure::Internal(Cause::with_source(err.to_string(), err))
    }

    /// [`Failure::Internal`] caused by `err` while doing `what` ("what: err"), `err` kept as the
    /// source.
    pub(crate) fn internal_in(
        what: &str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Failure::Internal(Cause::with_source(format!("{what}: {err}"), err))
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(cause) => Failure::Unavailable(cause),
            other => Failure::internal(other),
        }
    }
}

impl From<crate::tapcode::HashError> for Failure {
    fn from(e: crate::tapcode::HashError) -> Self {
        match e {
            crate::tapcode::HashError::Overloaded => Failure::Busy,
            other => Failure::internal(other),
        }
    }
}

impl From<crate::service::ServiceError> for Failure {
    fn from(e: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as E;
        match e {
            E::BadRequest(m) => Failure::BadRequest(m.to_string()),
            E::NotFound(m) => Failure::BadRequest(m),
            E::Forbidden(m) | E::Conflict(m) => Failure::Forbidden(m.to_string()),
            E::Unavailable(cause) => Failure::Unavailable(cause),
            E::Overloaded(_) => Failure::Busy,
            E::Internal(cause) => Failure::Internal(cause),
        }
    }
}

/// What the site's sign-in service needs from `[web]`.
#[derive(Clone, Debug)]
pub struct SelfServiceSettings {
    /// The public origin: the WebAuthn relying party and origin, the authenticator app's issuer.
    pub public_url: PublicUrl,
    /// Groups (id, normalised DN, or unique cn) whose members get the registration interrupt
    /// after a TAP sign-in.
    pub registration_interrupt_groups: Vec<String>,
    /// Guessing resistance.
    pub throttle: ThrottleSettings,
}

/// The registration site's sign-in and self-service registration.
pub struct SelfService {
    pub(super) service: Arc<TapService>,
    pub(super) directory: PasswordDirectory,
    pub(super) settings: SelfServiceSettings,
    pub(super) throttle: Throttle,
    pub(super) passkeys: Passkeys,
    /// Outstanding passkey ceremonies per source (sign-in) or user (registration).
    pub(super) ceremonies: passkeys::CeremonyLimiter,
}

impl SelfService {
    /// The site's sign-in service over the TAP service and the directory (for password checks).
    pub fn new(
        service: Arc<TapService>,
        directory: PasswordDirectory,
        settings: SelfServiceSettings,
    ) -> Result<Self, PasskeyError> {
        let passkeys = Passkeys::new(&settings.public_url, PRODUCT_NAME)?;
        Ok(SelfService {
            service,
            directory,
            throttle: Throttle::new(settings.throttle.clone()),
            settings,
            passkeys,
            ceremonies: passkeys::CeremonyLimiter::default(),
        })
    }

    /// The sign-in throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The methods the session's user has registered (the second-factor page offers them).
    pub async fn methods_of(&self, current: &Current) -> Result<Vec<RegisteredMethod>, Failure> {
        Ok(self.service.store().methods(&current.user.id).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::logging::ErrorChain;
    use crate::service::ServiceError;
    use crate::store::StoreError;

    fn driver(text: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, text.to_owned())
    }

    /// Each way a store, service or decoding error becomes a failure keeps the underlying
    /// error for the log's chain, with the failure's message as it was.
    #[test]
    fn failures_keep_the_error_beneath_them() {
        let cases = [
            (
                Failure::from(StoreError::unavailable_from(
                    "PostgreSQL can't be reached",
                    driver("connection refused by the driver"),
                )),
                "unavailable: PostgreSQL can't be reached",
            ),
            (
                Failure::from(StoreError::corrupt_from(
                    "bad row",
                    driver("column 3 is not JSON"),
                )),
                "internal: store holds unreadable data: bad row",
            ),
            (
                Failure::from(ServiceError::Internal(Cause::with_source(
                    "sync failed",
                    driver("LDAP server gone"),
                ))),
                "internal: sync failed",
            ),
            (
                Failure::internal_in("ceremony state", driver("expected value")),
                "internal: ceremony state: expected value",
            ),
            (
                Failure::unavailable(driver("ldap bind timed out")),
                "unavailable: ldap bind timed out",
            ),
        ];
        for (failure, message) in cases {
            assert_eq!(failure.to_string(), message);
            let mut deepest: &dyn std::error::Error = &failure;
            while let Some(next) = deepest.source() {
                deepest = next;
            }
            let kept = deepest
                .downcast_ref::<std::io::Error>()
                .unwrap_or_else(|| panic!("the driver's error is not kept: {failure:?}"));
            assert!(
                ErrorChain(&failure)
                    .to_string()
                    .ends_with(&kept.to_string()),
                "{}",
                ErrorChain(&failure)
            );
        }
    }
}
