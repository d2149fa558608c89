//! The metrics listener: `/metrics` moves with a TAP creation and a sync; `/healthz`, `/readyz`.

use crate::{metric, Tapd, WAIT};

const ISSUED: &str = r#"tapd_taps_issued_total{channel="admin"}"#;
const SYNC_OK: &str = r#"tapd_directory_sync_runs_total{result="success"}"#;
const SYNC_DURATIONS: &str = "tapd_directory_sync_duration_seconds_count";
const SYNC_LAST_SUCCESS: &str = "tapd_directory_sync_last_success_timestamp_seconds";
const STORE_REPLACE_TAP: &str =
    r#"tapd_store_operation_duration_seconds_count{operation="replace_tap"}"#;
const STORE_APPLY_SYNC: &str =
    r#"tapd_store_operation_duration_seconds_count{operation="apply_sync"}"#;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test drives the admin API as root (the break-glass administrator): run it as root, e.g. through scripts/test.sh"
    );
}

#[test]
fn counters_move_after_a_tap_create_and_a_sync() {
    require_root();
    let tapd = Tapd::start(&[]);
    assert_eq!(tapd.http_get("/healthz"), (200, "ok\n".to_owned()));

    // Wait for the startup sync, so that the counts below only move because of us.
    let deadline = std::time::Instant::now() + WAIT;
    let before = loop {
        let (status, body) = tapd.http_get("/metrics");
        assert_eq!(status, 200);
        if metric(&body, SYNC_OK) >= 1.0 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no startup sync:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(tapd.http_get("/readyz").0, 200);
    assert_eq!(metric(&before, ISSUED), 0.0);
    assert!(metric(&before, SYNC_LAST_SUCCESS) > 1.6e9);

    let created = tapd.tapctl(&["tap", "create", "alice"]);
    assert!(created.status.success(), "{created:?}");
    let synced = tapd.tapctl(&["sync", "run"]);
    assert!(synced.status.success(), "{synced:?}");

    let (_, after) = tapd.http_get("/metrics");
    assert_eq!(metric(&after, ISSUED), 1.0);
    assert!(metric(&after, SYNC_OK) >= metric(&before, SYNC_OK) + 1.0);
    assert!(metric(&after, SYNC_DURATIONS) >= metric(&before, SYNC_DURATIONS) + 1.0);
    assert_eq!(metric(&after, STORE_REPLACE_TAP), 1.0);
    assert!(metric(&after, STORE_APPLY_SYNC) >= 1.0);
    assert!(metric(&after, SYNC_LAST_SUCCESS) >= metric(&before, SYNC_LAST_SUCCESS));
    // Families owned by components that are not exercised here are exported at zero.
    assert_eq!(
        metric(
            &after,
            r#"tapd_radius_requests_total{result="accept",reason="password"}"#
        ),
        0.0
    );
    assert!(after.contains("# TYPE tapd_ldap_bind_duration_seconds histogram"));
}
