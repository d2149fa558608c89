//! The sd_notify sequence and SIGHUP reloads, through a test NOTIFY_SOCKET.

use nix::sys::signal::Signal;

use crate::{metric, NotifyListener, Tapd};

fn started_with_notify() -> (Tapd, NotifyListener) {
    let dir = tempfile::tempdir().unwrap();
    let listener = NotifyListener::bind(dir.path());
    let tapd = Tapd::start_in(
        dir,
        &[
            ("NOTIFY_SOCKET", listener.path.display().to_string()),
            ("WATCHDOG_USEC", "2000000".to_owned()),
        ],
    );
    (tapd, listener)
}

#[test]
fn ready_watchdog_reload_and_stopping() {
    let (mut tapd, mut notify) = started_with_notify();

    // The first thing systemd hears is READY=1, and by then every listener answers.
    let first = notify.next_message();
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
    assert!(first.contains("STATUS=serving"), "{first:?}");
    assert_eq!(tapd.admin_status("/v1/directory/sync") / 100, 2, "or 4xx");
    assert_eq!(tapd.http_get("/healthz").0, 200);
    assert_eq!(tapd.http_get("/readyz").0, 200);

    // The watchdog is fed (every second with WATCHDOG_USEC=2s).
    notify.wait_for("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1");
    // The directory state reaches systemctl status.
    while !notify
        .received
        .iter()
        .any(|m| m.contains("STATUS=serving; directory synced at"))
    {
        notify.next_message();
    }

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let pid = tapd.pid();
    tapd.signal(Signal::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{usec}");
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("configuration reloaded"), "{ready:?}");
    tapd.wait_for_log("configuration reloaded from");
    assert_eq!(tapd.pid(), pid);

    // SIGTERM: STOPPING=1, then a clean exit.
    tapd.signal(Signal::SIGTERM);
    notify.wait_for("STOPPING=1");
    let status = tapd.wait_exit();
    assert!(status.success(), "{status}");
    assert!(!tapd.admin_socket.exists(), "admin socket left behind");
}

#[test]
fn a_broken_config_on_sighup_keeps_the_old_one_serving() {
    let (mut tapd, mut notify) = started_with_notify();
    notify.wait_for("READY=1");
    let pid = tapd.pid();

    std::fs::write(&tapd.config, "[store\nthis is not TOML").unwrap();
    tapd.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1");
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("reload refused"), "{ready:?}");
    tapd.wait_for_log("configuration reload refused, keeping the running configuration");

    // A file that parses but is invalid is refused too.
    let mut invalid = Tapd::config_text(tapd.dir());
    invalid.push_str("\n[security]\nargon2_max_concurrent = 0\n");
    std::fs::write(&tapd.config, invalid).unwrap();
    tapd.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");

    // Same process, still serving, still feeding the watchdog.
    assert!(tapd.is_running());
    assert_eq!(tapd.pid(), pid);
    assert_eq!(tapd.admin_status("/v1/directory/sync") / 100, 2, "or 4xx");
    assert_eq!(tapd.http_get("/readyz").0, 200);
    notify.wait_for("WATCHDOG=1");
    let (_, body) = tapd.http_get("/metrics");
    assert_eq!(
        metric(&body, r#"tapd_config_reloads_total{result="failure"}"#),
        2.0
    );
    assert_eq!(
        metric(&body, r#"tapd_config_reloads_total{result="success"}"#),
        0.0
    );
    let refusals = tapd
        .log()
        .iter()
        .filter(|l| l.contains("configuration reload refused"))
        .count();
    assert_eq!(refusals, 2, "{:?}", tapd.log());

    // A good file again is taken.
    std::fs::write(&tapd.config, Tapd::config_text(tapd.dir())).unwrap();
    tapd.signal(Signal::SIGHUP);
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("configuration reloaded"), "{ready:?}");
}

#[test]
fn outside_systemd_nothing_is_sent_and_tapd_runs() {
    let mut tapd = Tapd::start(&[]);
    assert_eq!(tapd.http_get("/healthz").0, 200);
    tapd.signal(Signal::SIGHUP);
    tapd.wait_for_log("configuration reloaded from");
    tapd.signal(Signal::SIGTERM);
    assert!(tapd.wait_exit().success());
}
