//! The Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`, one line per
//! series, histograms as cumulative `_bucket{le=…}` lines plus `_sum` and `_count`.
//!
//! May depend on: the metric types of this module only.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{CounterVec, Gauge, HistogramVec, LabelSet};

/// Escapes a label value: backslash, double quote and newline.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// `{a="x",b="y"}` (empty for no labels), with `extra` appended (used for `le`).
fn label_text(names: &[&str], values: &[&str], extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if let Some((name, value)) = extra {
        pairs.push(format!("{name}=\"{}\"", escape(value)));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A float the way Prometheus writes it (`+Inf`, integers without a fraction).
fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{value}")
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends a counter family.
pub fn counter<L: LabelSet>(out: &mut String, name: &str, help: &str, family: &CounterVec<L>) {
    header(out, name, help, "counter");
    for (values, count) in family.series() {
        let _ = writeln!(out, "{name}{} {count}", label_text(L::NAMES, &values, None));
    }
}

/// Appends a gauge without labels.
pub fn gauge(out: &mut String, name: &str, help: &str, gauge: &Gauge) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {}", number(gauge.get()));
}

/// Appends a histogram family.
pub fn histogram<L: LabelSet>(out: &mut String, name: &str, help: &str, family: &HistogramVec<L>) {
    header(out, name, help, "histogram");
    for (label, series) in family.labels.iter().zip(&family.series) {
        let values = label.values();
        let mut cumulative = 0u64;
        for (bound, count) in family.bounds.iter().zip(&series.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                label_text(L::NAMES, &values, Some(("le", &number(*bound))))
            );
        }
        cumulative += series.overflow.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            label_text(L::NAMES, &values, Some(("le", "+Inf")))
        );
        let sum = series.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let labels = label_text(L::NAMES, &values, None);
        let _ = writeln!(out, "{name}_sum{labels} {}", number(sum));
        let _ = writeln!(out, "{name}_count{labels} {cumulative}");
    }
}
