//! The federation endpoint's metric family, with its label types: how authenticate
//! requests were answered ([`FederationOutcome`], labelled with the sign-in reason codes or
//! the reason a request was refused before any decision). It lives here rather than in
//! `metrics` so that `metrics` depends on no front end; the registry renders it through
//! [`FamilyGroup`].
//!
//! May depend on: `metrics` (the family types), `signin` (reason codes).

use crate::metrics::{exposition, CounterVec, FamilyGroup, LabelSet};
use crate::signin::{RejectReason, SignInChannel, UnavailableReason};

/// The federation family, `tapd_federation_requests_total`. Obtain the registry's instance
/// with `Metrics::group::<FederationMetrics>()`.
#[derive(Debug, Default)]
pub struct FederationMetrics {
    /// Federation authenticate requests, by result and reason.
    pub requests: CounterVec<FederationOutcome>,
}

impl FamilyGroup for FederationMetrics {
    fn render(&self, out: &mut String) {
        exposition::counter(
            out,
            "tapd_federation_requests_total",
            "Federation authenticate requests, by result and reason.",
            &self.requests,
        );
    }
}

/// How a federation authenticate request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FederationOutcome {
    /// 200: the directory password was right (`accept`, `password`).
    Accept,
    /// 403 or 401: refused for a sign-in reason (`reject`, its federation reason code, e.g.
    /// `tap_not_supported_federation`, `invalid_credentials`, `unsupported_method`).
    Reject(RejectReason),
    /// 503: nothing could decide (`unavailable`, `directory_unavailable` / …).
    Unavailable(UnavailableReason),
    /// Refused before any decision (`refused`, the reason below).
    Refused(FederationRefusal),
}

/// Why a federation request was refused before any sign-in decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FederationRefusal {
    /// 401: missing or unknown bearer token (`invalid_token`).
    InvalidToken,
    /// 400: the body is not the expected JSON (`bad_request`).
    BadRequest,
    /// 413: the body is too large (`payload_too_large`).
    PayloadTooLarge,
}

impl LabelSet for FederationOutcome {
    const NAMES: &'static [&'static str] = &["result", "reason"];

    fn all() -> Vec<Self> {
        let mut all = vec![Self::Accept];
        all.extend(RejectReason::ALL.map(Self::Reject));
        all.extend(UnavailableReason::ALL.map(Self::Unavailable));
        all.extend(
            [
                FederationRefusal::InvalidToken,
                FederationRefusal::BadRequest,
                FederationRefusal::PayloadTooLarge,
            ]
            .map(Self::Refused),
        );
        all
    }

    fn values(self) -> Vec<&'static str> {
        match self {
            Self::Accept => vec!["accept", "password"],
            Self::Reject(reason) => vec!["reject", reason.code(SignInChannel::Federation)],
            Self::Unavailable(reason) => vec!["unavailable", reason.code()],
            Self::Refused(FederationRefusal::InvalidToken) => vec!["refused", "invalid_token"],
            Self::Refused(FederationRefusal::BadRequest) => vec!["refused", "bad_request"],
            Self::Refused(FederationRefusal::PayloadTooLarge) => {
                vec!["refused", "payload_too_large"]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn every_series_is_distinct_exported_at_zero_and_labelled_with_the_reason_codes() {
        let all: Vec<Vec<&str>> = FederationOutcome::all()
            .into_iter()
            .map(LabelSet::values)
            .collect();
        for (index, values) in all.iter().enumerate() {
            assert!(!all[..index].contains(values), "duplicate {values:?}");
        }
        let metrics = Metrics::new();
        metrics.group::<FederationMetrics>();
        let text = metrics.render();
        for series in [
            r#"tapd_federation_requests_total{result="accept",reason="password"} 0"#,
            r#"tapd_federation_requests_total{result="reject",reason="tap_not_supported_federation"} 0"#,
            r#"tapd_federation_requests_total{result="unavailable",reason="directory_unavailable"} 0"#,
            r#"tapd_federation_requests_total{result="refused",reason="invalid_token"} 0"#,
        ] {
            assert!(
                text.lines().any(|line| line == series),
                "{series} in\n{text}"
            );
        }
    }
}
