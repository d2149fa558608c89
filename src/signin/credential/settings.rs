//! The credential path's reloadable settings ([`SignInSettings`]): the URL quoted in TAP
//! rejections and the per-user failure throttle's limits, checked before they replace the
//! running ones.
//!
//! May depend on: `signin::outcome`.

use std::time::Duration;

use super::super::outcome::SignInError;

/// Reloadable settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInSettings {
    /// The web page's public URL, quoted in TAP rejections; empty when none is configured.
    pub public_url: String,
    /// Failures within `failure_window` that throttle a user (≥ 1).
    pub max_failures: u32,
    /// Window in which failures are counted.
    pub failure_window: Duration,
    /// How long a throttled user is rejected without a directory check.
    pub cooldown: Duration,
}

impl Default for SignInSettings {
    fn default() -> Self {
        SignInSettings {
            public_url: String::new(),
            max_failures: 5,
            failure_window: Duration::from_secs(300),
            cooldown: Duration::from_secs(60),
        }
    }
}

impl SignInSettings {
    pub(in crate::signin) fn check(&self) -> Result<(), SignInError> {
        if self.max_failures == 0 {
            return Err(SignInError::BadSetting("max_failures must be ≥ 1".into()));
        }
        if self.failure_window.is_zero() || self.cooldown.is_zero() {
            return Err(SignInError::BadSetting(
                "failure_window and cooldown must be longer than zero".into(),
            ));
        }
        Ok(())
    }
}
