//! The reasons and outcomes of sign-in decisions, in one place: what the RADIUS and federation
//! decision answers ([`SignInOutcome`] with its [`RejectReason`] / [`UnavailableReason`] codes,
//! by [`SignInChannel`]), and why a web sign-in was refused ([`Refusal`]), with the messages a
//! user reads.
//!
//! May depend on: `model`, `policy` (reason codes and messages), `store::identity` (the
//! conflict reason code), the sibling throttle.

use crate::model::{Channel, GroupRef, User};
use crate::policy::SignInFailure;

use super::throttle::Throttled;
use super::MAX_NAME_BYTES;

/// Errors of the credential decision's setup (decisions themselves never fail: they are
/// outcomes).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// A throttle setting is out of range.
    #[error("invalid sign-in setting: {0}")]
    BadSetting(String),
}

/// The non-web paths a credential can arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignInChannel {
    /// RADIUS (NPS-extension-style) PAP.
    Radius,
    /// The federation (AD FS-adapter-style) endpoint.
    Federation,
}

impl SignInChannel {
    /// The audit channel.
    pub fn channel(self) -> Channel {
        match self {
            SignInChannel::Radius => Channel::Radius,
            SignInChannel::Federation => Channel::Federation,
        }
    }

    /// The rejection a TAP gets on this path (DESIGN §2).
    pub fn tap_failure(self) -> SignInFailure {
        match self {
            SignInChannel::Radius => SignInFailure::TapNotSupportedRadius,
            SignInChannel::Federation => SignInFailure::TapNotSupportedFederation,
        }
    }
}

/// Why an attempt was rejected. [`RejectReason::code`] is the stable audit reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No user with that username or userPrincipalName.
    UserNotFound,
    /// The directory account is disabled.
    AccountDisabled,
    /// Empty or NUL-only credential (never sent to the directory).
    EmptyPassword,
    /// Too many recent failures; rejected without asking the directory.
    Throttled,
    /// Neither the directory password nor the user's TAP.
    InvalidCredentials,
    /// The user's TAP, which this path never accepts (and never consumes).
    TapNotSupported,
    /// A credential type this path does not support (CHAP, MS-CHAP, EAP, none at all).
    UnsupportedMethod,
    /// The password bound to the DN of the last sync, but the entry there is not the user
    /// (another stable id): the directory changed since, and an incremental sync is requested.
    BoundIdentityMismatch,
    /// A sign-in name of the user is also another user's: the user is quarantined until the
    /// directory is fixed ([`crate::model::IdentityConflict`]).
    IdentityConflict,
    /// The presented name is over [`MAX_NAME_BYTES`] or holds a control character
    /// ([`check_sign_in_name`]): refused before any store read, hashing, throttle entry or
    /// audit event.
    NameInvalid,
    /// The authenticator-app code is not a current code of the user's apps.
    TotpInvalid,
    /// The authenticator-app code was used already (each code works once).
    TotpReplayed,
    /// The State of a challenge answer is not one tapd issued, was used already, or was
    /// issued for another user, client or Calling-Station-Id.
    StateUnknown,
    /// The State of a challenge answer was issued longer ago than its lifetime.
    StateExpired,
    /// The client asks for a second factor and none came: no authenticator app registered
    /// (`without_second_factor = "reject"`) or, in append mode, no code after the password.
    SecondFactorMissing,
}

impl RejectReason {
    /// Every reason, for metric label sets.
    pub const ALL: [RejectReason; 15] = [
        RejectReason::UserNotFound,
        RejectReason::AccountDisabled,
        RejectReason::EmptyPassword,
        RejectReason::Throttled,
        RejectReason::InvalidCredentials,
        RejectReason::TapNotSupported,
        RejectReason::UnsupportedMethod,
        RejectReason::BoundIdentityMismatch,
        RejectReason::IdentityConflict,
        RejectReason::NameInvalid,
        RejectReason::TotpInvalid,
        RejectReason::TotpReplayed,
        RejectReason::StateUnknown,
        RejectReason::StateExpired,
        RejectReason::SecondFactorMissing,
    ];

    /// Stable snake_case reason code; the TAP code depends on the channel.
    pub fn code(self, channel: SignInChannel) -> &'static str {
        match self {
            RejectReason::UserNotFound => "user_not_found",
            RejectReason::AccountDisabled => "account_disabled",
            RejectReason::EmptyPassword => "empty_password",
            RejectReason::Throttled => "throttled",
            RejectReason::InvalidCredentials => "invalid_credentials",
            RejectReason::TapNotSupported => channel.tap_failure().code(),
            RejectReason::UnsupportedMethod => "unsupported_method",
            RejectReason::BoundIdentityMismatch => "bound_identity_mismatch",
            RejectReason::IdentityConflict => crate::store::identity::IDENTITY_CONFLICT_REASON,
            RejectReason::NameInvalid => "name_invalid",
            RejectReason::TotpInvalid => "totp_invalid",
            RejectReason::TotpReplayed => "totp_replayed",
            RejectReason::StateUnknown => "state_unknown",
            RejectReason::StateExpired => "state_expired",
            RejectReason::SecondFactorMissing => "second_factor_missing",
        }
    }
}

/// Why no decision could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnavailableReason {
    /// The directory could not check the password.
    Directory,
    /// The store could not be read.
    Store,
    /// The argon2 pool shed the TAP check.
    Overloaded,
}

impl UnavailableReason {
    /// Every reason, for metric label sets.
    pub const ALL: [UnavailableReason; 3] = [
        UnavailableReason::Directory,
        UnavailableReason::Store,
        UnavailableReason::Overloaded,
    ];

    /// Stable snake_case reason code.
    pub fn code(self) -> &'static str {
        match self {
            UnavailableReason::Directory => "directory_unavailable",
            UnavailableReason::Store => "store_unavailable",
            UnavailableReason::Overloaded => "overloaded",
        }
    }
}

/// The decision on one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignInOutcome {
    /// The directory password: sign the user in.
    Accept {
        /// The user (boxed: a user is much larger than the other outcomes).
        user: Box<User>,
        /// The user's effective groups (nested resolved), for reply attributes and claims.
        groups: Vec<GroupRef>,
    },
    /// Refused.
    Reject {
        /// Why.
        reason: RejectReason,
        /// Text for the user, only for a TAP (the DESIGN §2 message); other rejections say
        /// nothing more than "rejected".
        message: Option<String>,
    },
    /// No decision: the directory, the store or the hashing pool is unavailable. The RADIUS
    /// path stays silent (the NAS fails over); the federation path answers 503.
    Unavailable {
        /// What was unavailable.
        reason: UnavailableReason,
    },
}

impl SignInOutcome {
    /// The reason code, `None` for an accept.
    pub fn reason_code(&self, channel: SignInChannel) -> Option<&'static str> {
        match self {
            SignInOutcome::Accept { .. } => None,
            SignInOutcome::Reject { reason, .. } => Some(reason.code(channel)),
            SignInOutcome::Unavailable { reason } => Some(reason.code()),
        }
    }
}

/// Who is asking, for audit: the path, the configured client or relying party, the peer.
#[derive(Clone, Debug)]
pub struct AttemptContext {
    /// RADIUS or federation.
    pub channel: SignInChannel,
    /// The configured RADIUS client or relying party name.
    pub client: String,
    /// The peer's address (`ip:port`).
    pub source: String,
    /// Extra audit detail from the request (NAS-Identifier, Calling-Station-Id…); never a
    /// secret.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AttemptContext {
    /// Where the attempt came from, for counting failures: the Calling-Station-Id when the
    /// request has one, else the NAS (NAS-Identifier, NAS-IP-Address), else the peer's
    /// address without its port. See the module documentation for what a spoofed
    /// Calling-Station-Id can do (lock only its own key).
    pub fn throttle_source(&self) -> String {
        let text = |key: &str| {
            self.details
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(|v| v.chars().take(MAX_NAME_BYTES).collect::<String>())
        };
        if let Some(station) = text("callingStationId") {
            return format!("station:{station}");
        }
        if let Some(nas) = text("nasIdentifier") {
            return format!("nas:{nas}");
        }
        if let Some(nas) = text("nasIpAddress") {
            return format!("nas-ip:{nas}");
        }
        let peer = self
            .source
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| self.source.clone());
        format!("peer:{peer}")
    }
}

/// Why a sign-in was refused; shown to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A TAP refusal with its DESIGN §2 reason code and message.
    Tap(SignInFailure),
    /// Unknown name, wrong password or disabled account (one message for all).
    InvalidPassword,
    /// The authenticator-app code did not verify (or was used already).
    InvalidCode,
    /// The passkey's answer did not verify, or the passkey is unknown.
    PasskeyRefused,
    /// Too many failures: wait.
    Throttled(Throttled),
    /// The password bound to an entry that is no longer the user's (the directory changed
    /// since the last sync); the user reads the wrong-password message.
    BoundIdentityMismatch,
    /// The user is quarantined: one of its sign-in names is also another user's.
    IdentityConflict,
}

impl Refusal {
    /// The stable reason code for audit and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Tap(failure) => failure.code(),
            Refusal::InvalidPassword => "invalid_password",
            Refusal::InvalidCode => "invalid_code",
            Refusal::PasskeyRefused => "passkey_refused",
            Refusal::Throttled(_) => "throttled",
            Refusal::BoundIdentityMismatch => "bound_identity_mismatch",
            Refusal::IdentityConflict => crate::store::identity::IDENTITY_CONFLICT_REASON,
        }
    }

    /// What the user reads.
    pub fn message(&self, public_url: &str) -> String {
        match self {
            Refusal::Tap(failure) => failure.message(public_url),
            Refusal::InvalidPassword | Refusal::BoundIdentityMismatch => {
                "Your account or password is incorrect.".to_owned()
            }
            Refusal::IdentityConflict => "Your account can't be used to sign in until your \
                 administrator resolves a conflict with another account's name."
                .to_owned(),
            Refusal::InvalidCode => {
                "That code didn't work. Check the code in your authenticator app and try again."
                    .to_owned()
            }
            Refusal::PasskeyRefused => {
                "That passkey could not be verified. Try again, or sign in another way.".to_owned()
            }
            Refusal::Throttled(t) => format!(
                "Too many failed sign-in attempts. Try again in {} seconds.",
                t.retry_after.num_seconds().max(1)
            ),
        }
    }
}
