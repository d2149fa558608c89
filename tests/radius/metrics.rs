//! `/metrics` of the real daemon after real traffic: a RADIUS accept, a TAP rejected over
//! RADIUS and over federation, a Status-Server, a federation request with a bad token and a
//! `tapctl sync run` move exactly their series, scraped over plain HTTP.

use crate::harness::{curl, metric, radclient, Tapd, FEDERATION_TOKEN, RADIUS_SECRET};
use crate::pap_attributes;

const RADIUS_ACCEPT: &str = r#"tapd_radius_requests_total{result="accept",reason="password"}"#;
const RADIUS_TAP: &str =
    r#"tapd_radius_requests_total{result="reject",reason="tap_not_supported_radius"}"#;
const RADIUS_INVALID: &str =
    r#"tapd_radius_requests_total{result="reject",reason="invalid_credentials"}"#;
const RADIUS_STATUS: &str = r#"tapd_radius_requests_total{result="accept",reason="status_server"}"#;
const RADIUS_RECEIVED: &str = "tapd_radius_datagrams_received_total";
const TAPS_REJECTED_RADIUS: &str =
    r#"tapd_tap_rejections_total{channel="radius",reason="tap_not_supported_radius"}"#;
const TAPS_REJECTED_FEDERATION: &str =
    r#"tapd_tap_rejections_total{channel="federation",reason="tap_not_supported_federation"}"#;
const FEDERATION_TAP: &str =
    r#"tapd_federation_requests_total{result="reject",reason="tap_not_supported_federation"}"#;
const FEDERATION_BAD_TOKEN: &str =
    r#"tapd_federation_requests_total{result="refused",reason="invalid_token"}"#;
const SYNC_OK: &str = r#"tapd_directory_sync_runs_total{result="success"}"#;
const BINDS_OK: &str = r#"tapd_ldap_bind_duration_seconds_count{result="success"}"#;
const BINDS_INVALID: &str =
    r#"tapd_ldap_bind_duration_seconds_count{result="invalid_credentials"}"#;

#[test]
fn metrics_move_after_a_radius_accept_tap_rejections_and_a_sync() {
    let tapd = Tapd::start();
    let code = tapd.create_one_time_tap("alice");
    let before = tapd.scrape();

    let accept = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("alice", "alice-demo-pw"),
    );
    assert_eq!(accept.reply.as_deref(), Some("Access-Accept"), "{accept:?}");
    let tap = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("alice", &code),
    );
    assert_eq!(tap.reply.as_deref(), Some("Access-Reject"), "{tap:?}");
    let status = radclient(
        tapd.radius,
        "status",
        RADIUS_SECRET,
        "Message-Authenticator = 0x00\n",
    );
    assert_eq!(status.reply.as_deref(), Some("Access-Accept"), "{status:?}");

    let path = "/federation/v1/authenticate";
    let body = format!(r#"{{"userPrincipalName":"alice@example.org","credential":"{code}"}}"#);
    let federation_tap = curl(tapd.web, "POST", path, Some(FEDERATION_TOKEN), Some(&body));
    assert_eq!(federation_tap.status, 403, "{federation_tap:?}");
    let bad_token = curl(tapd.web, "POST", path, Some("wrong-token"), Some(&body));
    assert_eq!(bad_token.status, 401, "{bad_token:?}");

    tapd.tapctl(&["sync", "run"]);

    let after = tapd.scrape();
    let moved = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(moved(RADIUS_ACCEPT), 1.0, "{after}");
    assert_eq!(moved(RADIUS_TAP), 1.0, "{after}");
    assert_eq!(moved(RADIUS_INVALID), 0.0, "{after}");
    assert_eq!(moved(RADIUS_STATUS), 1.0, "{after}");
    assert_eq!(moved(RADIUS_RECEIVED), 3.0, "{after}");
    assert_eq!(moved(TAPS_REJECTED_RADIUS), 1.0, "{after}");
    assert_eq!(moved(TAPS_REJECTED_FEDERATION), 1.0, "{after}");
    assert_eq!(moved(FEDERATION_TAP), 1.0, "{after}");
    assert_eq!(moved(FEDERATION_BAD_TOKEN), 1.0, "{after}");
    assert_eq!(moved(SYNC_OK), 1.0, "{after}");
    // The RADIUS password and the RADIUS TAP each cost one directory check; the same TAP
    // over federation is answered from the sign-in rejection cache without one.
    assert_eq!(moved(BINDS_OK), 1.0, "{after}");
    assert_eq!(moved(BINDS_INVALID), 1.0, "{after}");
    // Nothing was dropped.
    for line in after.lines() {
        if line.starts_with("tapd_radius_dropped_total{") {
            assert!(line.ends_with(" 0"), "{line}");
        }
    }
    // No user name ever appears in a label.
    assert!(!after.contains("alice"), "{after}");
}

const TAP_VERIFICATIONS: &str = "tapd_tap_verifications_total";

/// Wrong passwords cost no argon2: only a credential with the length and alphabet of the
/// user's own TAP is hashed, and a retried TAP is answered from the rejection cache.
#[test]
fn wrong_passwords_are_rejected_without_touching_the_hashing_pool() {
    let tapd = Tapd::start();
    let code = tapd.create_one_time_tap("alice");
    let before = tapd.scrape();
    let reject = |user: &str, password: &str| {
        let answer = radclient(
            tapd.radius,
            "auth",
            RADIUS_SECRET,
            &pap_attributes(user, password),
        );
        assert_eq!(answer.reply.as_deref(), Some("Access-Reject"), "{answer:?}");
    };
    let same_length_outside_alphabet = "0".repeat(code.len());
    // Another length than alice's TAP, a character no code has, and a user without a TAP
    // (a credential that could be a code): none of them is hashed.
    reject("alice", &format!("{code}x"));
    reject("alice", &same_length_outside_alphabet);
    reject("bob", &code);
    let after = tapd.scrape();
    let moved = |text: &str, series: &str| metric(text, series) - metric(&before, series);
    assert_eq!(moved(&after, RADIUS_INVALID), 3.0, "{after}");
    assert_eq!(moved(&after, TAP_VERIFICATIONS), 0.0, "{after}");

    // The TAP itself is recognised (one verification), and so is a same-shaped wrong code.
    reject("alice", &code);
    let mut other = code.clone().into_bytes();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    reject("alice", std::str::from_utf8(&other).unwrap());
    let later = tapd.scrape();
    assert_eq!(moved(&later, RADIUS_TAP), 1.0, "{later}");
    assert_eq!(moved(&later, TAP_VERIFICATIONS), 2.0, "{later}");

    // Retried, the TAP is answered from the cache without another verification.
    reject("alice", &code);
    let last = tapd.scrape();
    assert_eq!(moved(&last, RADIUS_TAP), 2.0, "{last}");
    assert_eq!(moved(&last, TAP_VERIFICATIONS), 2.0, "{last}");
}
