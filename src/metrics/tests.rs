#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::*;

fn line<'a>(text: &'a str, series: &str) -> &'a str {
    text.lines()
        .find(|line| {
            line.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

fn value(text: &str, series: &str) -> f64 {
    line(text, series)
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn every_family_is_exported_at_zero_with_its_labels() {
    let text = Metrics::new().render();
    for series in [
        r#"tapd_taps_issued_total{channel="admin"}"#,
        r#"tapd_taps_used_total{channel="web"}"#,
        r#"tapd_tap_rejections_total{channel="radius",reason="tap_not_supported_radius"}"#,
        r#"tapd_tap_rejections_total{channel="web",reason="tap_expired"}"#,
        r#"tapd_web_sign_ins_total{method="temporary_access_pass",result="success"}"#,
        r#"tapd_directory_sync_runs_total{result="success"}"#,
        r#"tapd_directory_sync_errors_total{cause="deletion_guard"}"#,
        "tapd_directory_sync_duration_seconds_count",
        "tapd_directory_sync_last_success_timestamp_seconds",
        r#"tapd_ldap_bind_duration_seconds_count{result="success"}"#,
        r#"tapd_store_operation_duration_seconds_count{operation="replace_tap"}"#,
        r#"tapd_config_reloads_total{result="failure"}"#,
    ] {
        assert_eq!(value(&text, series), 0.0, "{series}");
    }
    assert!(text.contains("# TYPE tapd_taps_issued_total counter\n"));
    assert!(text.contains("# TYPE tapd_ldap_bind_duration_seconds histogram\n"));
    assert!(text.contains("# TYPE tapd_directory_sync_last_success_timestamp_seconds gauge\n"));
    assert!(text.ends_with('\n'));
}

#[test]
fn counters_move_only_their_own_series() {
    let metrics = Metrics::new();
    metrics.taps_issued.inc(TapIssueChannel::Admin);
    metrics.taps_issued.inc(TapIssueChannel::Admin);
    metrics.sync_errors.inc(SyncErrorCause::DeletionGuard);
    metrics
        .tap_rejections
        .inc(TapRejection::of(&SignInFailure::TapNotSupportedRadius));
    let text = metrics.render();
    assert_eq!(
        value(&text, r#"tapd_taps_issued_total{channel="admin"}"#),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"tapd_directory_sync_errors_total{cause="deletion_guard"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"tapd_directory_sync_runs_total{result="success"}"#),
        0.0
    );
    assert_eq!(
        value(
            &text,
            r#"tapd_tap_rejections_total{channel="radius",reason="tap_not_supported_radius"}"#
        ),
        1.0
    );
    assert_eq!(metrics.taps_issued.get(TapIssueChannel::Admin), 2);
}

#[test]
fn histogram_buckets_are_cumulative_and_count_matches_inf() {
    let metrics = Metrics::new();
    let ok = LdapBindResult::Success;
    metrics
        .ldap_bind_duration
        .observe(ok, Duration::from_micros(800));
    metrics
        .ldap_bind_duration
        .observe(ok, Duration::from_millis(30));
    metrics
        .ldap_bind_duration
        .observe(ok, Duration::from_secs(60));
    let text = metrics.render();
    let bucket = |le: &str| {
        value(
            &text,
            &format!(r#"tapd_ldap_bind_duration_seconds_bucket{{result="success",le="{le}"}}"#),
        )
    };
    assert_eq!(bucket("0.0005"), 0.0);
    assert_eq!(bucket("0.001"), 1.0);
    assert_eq!(bucket("0.025"), 1.0);
    assert_eq!(bucket("0.05"), 2.0);
    assert_eq!(bucket("10"), 2.0);
    assert_eq!(bucket("+Inf"), 3.0);
    assert_eq!(
        value(
            &text,
            r#"tapd_ldap_bind_duration_seconds_count{result="success"}"#
        ),
        3.0
    );
    let sum = value(
        &text,
        r#"tapd_ldap_bind_duration_seconds_sum{result="success"}"#,
    );
    assert!((sum - 60.0308).abs() < 1e-9, "{sum}");
    assert_eq!(metrics.ldap_bind_duration.count(ok), 3);
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(exposition::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[tokio::test]
async fn store_calls_are_timed() {
    let metrics = Metrics::new();
    let answer = metrics
        .time_store(StoreOperation::ApplySync, async { 42 })
        .await;
    assert_eq!(answer, 42);
    assert_eq!(metrics.store_duration.count(StoreOperation::ApplySync), 1);
    assert_eq!(metrics.store_duration.count(StoreOperation::ReplaceTap), 0);
}

fn distinct_series<L: LabelSet>() {
    let all: Vec<Vec<&str>> = L::all().into_iter().map(LabelSet::values).collect();
    for (index, values) in all.iter().enumerate() {
        assert_eq!(values.len(), L::NAMES.len(), "{values:?}");
        assert!(
            !all[..index].contains(values),
            "duplicate series {values:?}"
        );
    }
}

#[test]
fn no_family_exports_the_same_series_twice() {
    distinct_series::<TapRejection>();
    distinct_series::<WebSignIn>();
    distinct_series::<SyncErrorCause>();
}

/// A family group as a front end declares one.
#[derive(Debug, Default)]
struct Probe {
    seen: Counter,
}

impl FamilyGroup for Probe {
    fn render(&self, out: &mut String) {
        exposition::counter(out, "tapd_probe_total", "A probe.", &self.seen);
    }
}

#[test]
fn a_group_is_registered_once_exported_at_zero_and_counted_into_directly() {
    let metrics = Metrics::new();
    assert!(!metrics.render().contains("tapd_probe_total"));
    let first = metrics.group::<Probe>();
    assert_eq!(value(&metrics.render(), "tapd_probe_total"), 0.0);
    first.seen.inc(NoLabels);
    let again = metrics.group::<Probe>();
    assert!(Arc::ptr_eq(&first, &again), "one instance per registry");
    again.seen.inc(NoLabels);
    let text = metrics.render();
    assert_eq!(value(&text, "tapd_probe_total"), 2.0);
    assert_eq!(text.matches("# TYPE tapd_probe_total counter").count(), 1);
}
