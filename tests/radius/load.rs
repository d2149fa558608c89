//! A short run of the RADIUS load generator (`examples/radius_load`, the driver of
//! `scripts/bench-radius.sh`) against the real tapd, so the benchmark tool keeps working.
//! It checks counts only, never speed.

use std::time::Duration;

use super::harness::{Tapd, RADIUS_SECRET};
use super::load_engine::{parse_credentials, run, LoadConfig};

#[test]
fn the_load_generator_gets_accepts_and_rejects_from_tapd_without_timeouts() {
    let tapd = Tapd::start();
    let credentials = parse_credentials(
        "alice alice-demo-pw\nbob bob-demo-pw\n# a wrong one\ncarol not-her-password\n",
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(run(LoadConfig {
            target: tapd.radius,
            secret: RADIUS_SECRET.as_bytes().to_vec(),
            concurrency: 3,
            duration: Duration::from_secs(1),
            max_requests: Some(300),
            timeout: Duration::from_secs(5),
            credentials,
            two_leg: false,
            source: None,
        }))
        .unwrap();
    assert!(report.accepts > 0, "{report:?}");
    assert!(report.rejects > 0, "{report:?}");
    assert_eq!(report.timeouts, 0, "{report:?}");
    assert_eq!(report.bad_replies, 0, "{report:?}");
    assert_eq!(report.sent, report.accepts + report.rejects, "{report:?}");
}
