//! The RADIUS front end's metric families, with their label types: how requests were
//! answered ([`RadiusOutcome`], labelled with the sign-in reason codes) and why datagrams got
//! no answer ([`RadiusDropCause`], labelled with the packet faults of [`DropReason`]). They
//! live here rather than in `metrics` so that `metrics` depends on no front end; the
//! registry renders them through [`FamilyGroup`].
//!
//! May depend on: `metrics` (the family types), `signin` (reason codes), the sibling request
//! parser (drop reasons).

use crate::metrics::{exposition, Counter, CounterVec, FamilyGroup, LabelSet};
use crate::signin::{RejectReason, SignInChannel, UnavailableReason};

use super::DropReason;

/// The RADIUS families: `tapd_radius_requests_total`, `tapd_radius_dropped_total`,
/// `tapd_radius_datagrams_received_total`, `tapd_radius_retransmissions_replayed_total`,
/// `tapd_radius_challenges_total`.
/// Obtain the registry's instance with `Metrics::group::<RadiusMetrics>()`.
#[derive(Debug, Default)]
pub struct RadiusMetrics {
    /// RADIUS requests answered, by result and reason.
    pub requests: CounterVec<RadiusOutcome>,
    /// RADIUS datagrams dropped without an answer, by cause.
    pub dropped: CounterVec<RadiusDropCause>,
    /// RADIUS datagrams received on any listener.
    pub received: Counter,
    /// RADIUS retransmissions answered from the reply cache (byte-identical reply).
    pub replayed: Counter,
    /// Access-Challenges sent (second factor) and the answers to them, by result.
    pub challenges: CounterVec<RadiusChallengeResult>,
}

impl FamilyGroup for RadiusMetrics {
    fn render(&self, out: &mut String) {
        exposition::counter(
            out,
            "tapd_radius_requests_total",
            "RADIUS requests answered, by result and reason.",
            &self.requests,
        );
        exposition::counter(
            out,
            "tapd_radius_dropped_total",
            "RADIUS datagrams dropped without an answer, by cause.",
            &self.dropped,
        );
        exposition::counter(
            out,
            "tapd_radius_datagrams_received_total",
            "RADIUS datagrams received on any listener.",
            &self.received,
        );
        exposition::counter(
            out,
            "tapd_radius_retransmissions_replayed_total",
            "RADIUS retransmissions answered from the reply cache.",
            &self.replayed,
        );
        exposition::counter(
            out,
            "tapd_radius_challenges_total",
            "RADIUS Access-Challenges sent (issued) and the answers to them (accepted, rejected).",
            &self.challenges,
        );
    }
}

/// The series of `tapd_radius_challenges_total{result}`: a small fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RadiusChallengeResult {
    /// An Access-Challenge was sent (`issued`).
    Issued,
    /// An answer to a challenge was accepted (`accepted`).
    Accepted,
    /// An answer to a challenge was rejected, whatever the reason (`rejected`).
    Rejected,
}

impl LabelSet for RadiusChallengeResult {
    const NAMES: &'static [&'static str] = &["result"];

    fn all() -> Vec<Self> {
        vec![Self::Issued, Self::Accepted, Self::Rejected]
    }

    fn values(self) -> Vec<&'static str> {
        vec![match self {
            Self::Issued => "issued",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }]
    }
}

/// How a RADIUS request was answered (replays from the reply cache are not counted here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RadiusOutcome {
    /// Access-Accept: the directory password was right (`accept`, `password`).
    Accept,
    /// Access-Accept to a Status-Server, RFC 5997 (`accept`, `status_server`).
    StatusServer,
    /// Access-Reject for a sign-in reason (`reject`, its RADIUS reason code, e.g.
    /// `tap_not_supported_radius`, `invalid_credentials`, `throttled`).
    Reject(RejectReason),
    /// Access-Reject because nothing could decide, with `directory_unavailable = "reject"`
    /// (`reject`, `directory_unavailable` / `store_unavailable` / `overloaded`).
    Unavailable(UnavailableReason),
}

impl LabelSet for RadiusOutcome {
    const NAMES: &'static [&'static str] = &["result", "reason"];

    fn all() -> Vec<Self> {
        let mut all = vec![Self::Accept, Self::StatusServer];
        all.extend(RejectReason::ALL.map(Self::Reject));
        all.extend(UnavailableReason::ALL.map(Self::Unavailable));
        all
    }

    fn values(self) -> Vec<&'static str> {
        match self {
            Self::Accept => vec!["accept", "password"],
            Self::StatusServer => vec!["accept", "status_server"],
            Self::Reject(reason) => vec!["reject", reason.code(SignInChannel::Radius)],
            Self::Unavailable(reason) => vec!["reject", reason.code()],
        }
    }
}

/// Why a RADIUS datagram got no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RadiusDropCause {
    /// The source address matches no `[[radius.clients]]` network.
    UnknownClient,
    /// The packet failed validation (see [`DropReason`]).
    Invalid(DropReason),
    /// A retransmission of a request still being processed (its reply will answer it).
    DuplicateInFlight,
    /// A Status-Server beyond the per-client rate limit (RFC 5997 §3).
    StatusServerRateLimited,
    /// The directory could not be reached and `directory_unavailable = "drop"`.
    DirectoryUnavailable,
    /// The store could not be read and `directory_unavailable = "drop"`.
    StoreUnavailable,
    /// Load shedding: the request queue or the TAP hashing pool was full.
    Overloaded,
    /// The reply could not be encoded (a bug or an oversized attribute set).
    EncodeFailed,
    /// The reply was decided (and counted in `tapd_radius_requests_total`) but the socket
    /// refused to send it.
    SendFailed,
}

impl RadiusDropCause {
    /// The drop for a request nothing could decide (`directory_unavailable = "drop"`).
    pub fn unavailable(reason: UnavailableReason) -> Self {
        match reason {
            UnavailableReason::Directory => Self::DirectoryUnavailable,
            UnavailableReason::Store => Self::StoreUnavailable,
            UnavailableReason::Overloaded => Self::Overloaded,
        }
    }
}

impl LabelSet for RadiusDropCause {
    const NAMES: &'static [&'static str] = &["cause"];

    fn all() -> Vec<Self> {
        let mut all = vec![Self::UnknownClient];
        all.extend(DropReason::ALL.iter().copied().map(Self::Invalid));
        all.extend([
            Self::DuplicateInFlight,
            Self::StatusServerRateLimited,
            Self::DirectoryUnavailable,
            Self::StoreUnavailable,
            Self::Overloaded,
            Self::EncodeFailed,
            Self::SendFailed,
        ]);
        all
    }

    fn values(self) -> Vec<&'static str> {
        vec![match self {
            Self::UnknownClient => "unknown_client",
            Self::Invalid(reason) => reason.as_str(),
            Self::DuplicateInFlight => "duplicate_in_flight",
            Self::StatusServerRateLimited => "status_server_rate_limited",
            Self::DirectoryUnavailable => "directory_unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::Overloaded => "overloaded",
            Self::EncodeFailed => "encode_failed",
            Self::SendFailed => "send_failed",
        }]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::metrics::Metrics;

    /// The value of one series in `text`, failing when it is not exported.
    fn value(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_series_is_distinct_and_labelled_with_the_sign_in_reason_codes() {
        for label_set in [
            RadiusOutcome::all()
                .into_iter()
                .map(LabelSet::values)
                .collect::<Vec<_>>(),
            RadiusDropCause::all()
                .into_iter()
                .map(LabelSet::values)
                .collect(),
        ] {
            for (index, values) in label_set.iter().enumerate() {
                assert!(!label_set[..index].contains(values), "duplicate {values:?}");
            }
        }
        let metrics = Metrics::new();
        let radius = metrics.group::<RadiusMetrics>();
        let text = metrics.render();
        for series in [
            r#"tapd_radius_requests_total{result="accept",reason="password"}"#,
            r#"tapd_radius_requests_total{result="reject",reason="invalid_credentials"}"#,
            r#"tapd_radius_requests_total{result="reject",reason="user_not_found"}"#,
            r#"tapd_radius_requests_total{result="reject",reason="throttled"}"#,
            r#"tapd_radius_requests_total{result="reject",reason="unsupported_method"}"#,
            r#"tapd_radius_requests_total{result="reject",reason="directory_unavailable"}"#,
            r#"tapd_radius_requests_total{result="accept",reason="status_server"}"#,
            r#"tapd_radius_dropped_total{cause="unknown_client"}"#,
            r#"tapd_radius_dropped_total{cause="bad_message_authenticator"}"#,
            r#"tapd_radius_dropped_total{cause="duplicate_in_flight"}"#,
            r#"tapd_radius_dropped_total{cause="directory_unavailable"}"#,
            r#"tapd_radius_dropped_total{cause="overloaded"}"#,
            "tapd_radius_retransmissions_replayed_total",
            "tapd_radius_datagrams_received_total",
            r#"tapd_radius_challenges_total{result="issued"}"#,
            r#"tapd_radius_challenges_total{result="accepted"}"#,
            r#"tapd_radius_challenges_total{result="rejected"}"#,
        ] {
            assert_eq!(value(&text, series), 0, "{series}");
        }
        radius
            .requests
            .inc(RadiusOutcome::Reject(RejectReason::TapNotSupported));
        radius.dropped.inc(RadiusDropCause::Invalid(
            DropReason::BadMessageAuthenticator,
        ));
        let text = metrics.render();
        let tap =
            r#"tapd_radius_requests_total{result="reject",reason="tap_not_supported_radius"}"#;
        assert_eq!(value(&text, tap), 1);
        assert_eq!(
            value(
                &text,
                r#"tapd_radius_dropped_total{cause="bad_message_authenticator"}"#
            ),
            1
        );
        assert_eq!(
            value(&text, r#"tapd_radius_dropped_total{cause="too_short"}"#),
            0
        );
    }
}
