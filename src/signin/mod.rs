//! The sign-in service: every credential decision the front ends ask for.
//!
//! - [`credential`]: the RADIUS and federation decision (directory password accepted, TAP
//!   refused with its message, never consumed), as [`SignIn`];
//! - [`second_factor`]: the authenticator-app code after the password for RADIUS clients
//!   that want one (Access-Challenge State store, append mode);
//! - [`site`], [`web`], [`passkey_sign_in`], [`registration`]: the registration site's sign-in
//!   steps (TAP, password, second factor, passkey) and self-service registration, as
//!   [`SelfService`];
//! - [`outcome`]: the reasons and outcomes of both, with their codes and messages;
//! - [`throttle`]: guessing resistance for both (per user and source on the credential path,
//!   per account and address on the site) and the aggregation of refusal audits;
//! - [`session`], [`passkeys`], [`totp`]: the building blocks of web sessions and methods.
//!
//! Front ends parse, call one of these and render; they never reach the store, the
//! directory, policy or tapcode themselves.
//!
//! May depend on: `model`, `policy`, `store` and `directory` (traits), `tapcode`, `clock`,
//! `audit`, `metrics`, `sync` (to request a sync), `service`, `config`. Knows nothing about
//! RADIUS packets or HTTP.

pub mod credential;
pub mod outcome;
pub mod passkey_sign_in;
pub mod passkeys;
pub mod registration;
pub mod second_factor;
pub mod session;
pub mod site;
pub mod throttle;
pub mod totp;
pub mod web;

pub use crate::policy::{SignInFailure, UsabilityReason};
pub use credential::{SignIn, SignInSettings, MAX_CREDENTIAL_BYTES, SIGN_IN_ACTIVITY};
pub use outcome::{
    AttemptContext, RejectReason, SignInChannel, SignInError, SignInOutcome, UnavailableReason,
};
pub use registration::Registration;
pub use second_factor::{SecondFactorOutcome, CHALLENGE_MESSAGE};
pub use site::{Failure, PasswordDirectory, SelfService, SelfServiceSettings, Source};
pub use throttle::{AuditAggregator, REFUSAL_AUDIT_INTERVAL};

/// Longest sign-in name accepted on any channel (RADIUS User-Name, federation
/// userPrincipalName, every web step that carries a name), in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a typed sign-in name is refused outright ([`check_sign_in_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Longer than [`MAX_NAME_BYTES`].
    #[error("the user name is too long ({0} bytes; at most 256 are allowed)")]
    TooLong(usize),
    /// Holds a control character (C0, DEL or C1).
    #[error("the user name contains a control character")]
    ControlCharacter,
}

/// The one check every channel applies to a typed sign-in name, before any store access,
/// hashing, throttle entry or audit event: at most [`MAX_NAME_BYTES`] bytes and no control
/// character (`char::is_control`: C0, DEL, C1). A name that passes can be a throttle key and
/// an audit actor without bounding or escaping it again.
pub fn check_sign_in_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}
