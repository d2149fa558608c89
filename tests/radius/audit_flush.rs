//! `[audit] sign_in_flush`: the audit events of RADIUS sign-in decisions wait for their
//! window after the answer, and SIGTERM stores what is waiting before tapd exits.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{radclient, Options, Tapd, RADIUS_SECRET};
use crate::pap_attributes;

/// The stored sign-in events (activity "User sign-in") naming `target`.
fn sign_ins(tapd: &Tapd, target: &str) -> usize {
    let audit = tapd.tapctl(&["audit", "--activity", "User sign-in", "--limit", "1000"]);
    let events = audit
        .as_array()
        .or_else(|| audit["value"].as_array())
        .cloned()
        .unwrap_or_default();
    events
        .iter()
        .filter(|event| event.to_string().contains(target))
        .map(|_: &Value| ())
        .count()
}

#[test]
fn sign_in_audit_waiting_in_its_window_is_stored_at_sigterm() {
    let mut tapd = Tapd::start_with(Options {
        sign_in_flush: "10s",
        ..Options::default()
    });
    let started = Instant::now();
    for (user, password, reply) in [
        ("alice", "alice-demo-pw", "Access-Accept"),
        ("bob", "not-bobs-password", "Access-Reject"),
        ("erin", "erin-demo-pw", "Access-Accept"),
    ] {
        let answer = radclient(
            tapd.radius,
            "auth",
            RADIUS_SECRET,
            &pap_attributes(user, password),
        );
        assert_eq!(answer.reply.as_deref(), Some(reply), "{answer:?}");
    }
    // Answered before stored: nothing is in the store yet (checked only while the window
    // is certainly still open on a slow machine).
    let waiting = sign_ins(&tapd, "@example.org");
    if started.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            waiting, 0,
            "the events were stored before their window ended"
        );
    }

    let status = tapd.terminate();
    assert!(status.success(), "tapd exited with {status:?}");
    tapd.restart();
    for user in ["alice@example.org", "bob@example.org", "erin@example.org"] {
        assert_eq!(sign_ins(&tapd, user), 1, "the sign-in of {user} was lost");
    }
}
