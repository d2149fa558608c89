//! Prometheus metrics: one [`Metrics`] registry of lock-free atomic counters, gauges and
//! histograms, rendered in the Prometheus text format (`exposition`) and served on
//! `[metrics] listen` together with `/healthz` and `/readyz` (`http`).
//!
//! Why hand-written rather than the `prometheus-client` crate: every family here has a fixed,
//! small label set known at compile time, so a family is an array of atomics indexed by a
//! label enum. That keeps label cardinality bounded by construction (no label value ever
//! comes from a packet or a user), exports every series at 0 from the start (so `rate()` and
//! alerts work before the first event), and costs one atomic add per event with no
//! allocation and no lock. The text format is a few dozen lines.
//!
//! # Who increments what
//!
//! Every family whose labels are this module's own is declared here; the RADIUS and
//! federation families, whose labels are sign-in reasons and packet faults, are declared by
//! those front ends as a [`FamilyGroup`] (`radius::RadiusMetrics`,
//! `federation::FederationMetrics`) and registered into the same registry with
//! [`Metrics::group`], so this module names none of their types. The daemon registers every
//! group at start, so the exposition is complete before the first event. The component that
//! owns a code path increments its family through the shared `Arc<Metrics>`
//! ([`crate::service::TapService::metrics`]) or its group's `Arc`:
//!
//! | family | label enum | incremented by |
//! | --- | --- | --- |
//! | `tapd_radius_requests_total{result,reason}` | `radius::RadiusOutcome` | RADIUS handler |
//! | `tapd_radius_dropped_total{cause}` | `radius::RadiusDropCause` | RADIUS handler and socket loop |
//! | `tapd_radius_datagrams_received_total` | – | RADIUS socket loop |
//! | `tapd_radius_retransmissions_replayed_total` | – | RADIUS handler (reply cache hit) |
//! | `tapd_federation_requests_total{result,reason}` | `federation::FederationOutcome` | federation adapter |
//! | `tapd_taps_issued_total{channel}` | [`TapIssueChannel`] | service (`create_tap`) |
//! | `tapd_taps_used_total{channel}` | [`TapUseChannel`] | web sign-in |
//! | `tapd_tap_rejections_total{channel,reason}` | [`TapRejection`] | `signin` (RADIUS, federation), web |
//! | `tapd_web_sign_ins_total{method,result}` | [`WebSignIn`] | web sign-in |
//! | `tapd_directory_sync_runs_total{result}` | [`SyncResult`] | `sync::Syncer` |
//! | `tapd_directory_sync_errors_total{cause}` | [`SyncErrorCause`] | `sync::Syncer` |
//! | `tapd_directory_sync_entries_skipped_total` | – | `sync::Syncer` (one per undecodable user entry per run) |
//! | `tapd_directory_sync_duration_seconds` | – | `sync::Syncer` |
//! | `tapd_directory_sync_last_success_timestamp_seconds` | – | `sync::Syncer` |
//! | `tapd_identity_conflicts` | – | `sync::Syncer` (quarantined users after each successful run) |
//! | `tapd_ldap_bind_duration_seconds{result}` | [`LdapBindResult`] | `signin` (every password check) |
//! | `tapd_store_operation_duration_seconds{operation}` | [`StoreOperation`] | callers of the store |
//! | `tapd_config_reloads_total{result}` | [`ReloadResult`] | daemon (SIGHUP) |
//! | `tapd_build_info{version}`, `tapd_start_time_seconds` | – | daemon |
//!
//! To count a new outcome, add a variant to the label enum (with its label values) rather
//! than a new family; never put a user name, address or client name in a label.
//!
//! May depend on: `policy` (to map sign-in failures to labels); the HTTP endpoint also uses
//! the `store` trait for `/readyz`. Never on the front ends or the sign-in service: their
//! families come in as [`FamilyGroup`]s.

pub mod exposition;
pub mod http;

use std::any::{Any, TypeId};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::policy::SignInFailure;

/// A set of label values for one metric family: a small enum whose every value is exported
/// from the start. Implemented by the label enums below (mostly through `label_set!`).
pub trait LabelSet: Copy + PartialEq + Send + Sync + 'static {
    /// Label names, in the order [`LabelSet::values`] gives the values.
    const NAMES: &'static [&'static str];
    /// Every series of the family, in exposition order.
    fn all() -> Vec<Self>;
    /// This series' label values, one per name.
    fn values(self) -> Vec<&'static str>;
}

/// Declares a fieldless label enum whose variants map to fixed label values.
macro_rules! label_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident [$($label:literal),+] {
            $($(#[$vmeta:meta])* $variant:ident => [$($value:literal),+]),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl LabelSet for $name {
            const NAMES: &'static [&'static str] = &[$($label),+];
            fn all() -> Vec<Self> {
                vec![$(Self::$variant),+]
            }
            fn values(self) -> Vec<&'static str> {
                match self {
                    $(Self::$variant => vec![$($value),+]),+
                }
            }
        }
    };
}

label_set! {
    /// Where a TAP was issued.
    pub enum TapIssueChannel ["channel"] {
        /// By an administrator over the admin API.
        Admin => ["admin"],
    }
}

label_set! {
    /// Where a TAP was used to sign in (only the web page accepts one).
    pub enum TapUseChannel ["channel"] {
        /// A successful TAP sign-in on the web registration page.
        Web => ["web"],
    }
}

label_set! {
    /// A sign-in with a TAP that was refused, by channel and reason code.
    pub enum TapRejection ["channel", "reason"] {
        /// RADIUS never accepts a TAP.
        Radius => ["radius", "tap_not_supported_radius"],
        /// The federation adapter never accepts a TAP.
        Federation => ["federation", "tap_not_supported_federation"],
        /// Web: the TAP has expired.
        WebExpired => ["web", "tap_expired"],
        /// Web: the TAP is not valid yet.
        WebNotYetValid => ["web", "tap_not_yet_valid"],
        /// Web: no TAP, or the code does not match.
        WebNotFound => ["web", "tap_not_found"],
        /// Web: out of scope, one-time TAP used, or multi-use while the policy wants one-time.
        WebBlockedByPolicy => ["web", "tap_blocked_by_policy"],
    }
}

impl TapRejection {
    /// The series for a sign-in failure (web failures map to their reason).
    pub fn of(failure: &SignInFailure) -> Self {
        match failure {
            SignInFailure::TapExpired => Self::WebExpired,
            SignInFailure::TapNotYetValid { .. } => Self::WebNotYetValid,
            SignInFailure::TapNotFound => Self::WebNotFound,
            SignInFailure::TapBlockedByPolicy => Self::WebBlockedByPolicy,
            SignInFailure::TapNotSupportedRadius => Self::Radius,
            SignInFailure::TapNotSupportedFederation => Self::Federation,
        }
    }
}

label_set! {
    /// A sign-in on the web page, by method and result.
    pub enum WebSignIn ["method", "result"] {
        /// Signed in with a TAP.
        TapSuccess => ["temporary_access_pass", "success"],
        /// A TAP sign-in failed (the reason is in `tapd_tap_rejections_total`).
        TapFailure => ["temporary_access_pass", "failure"],
        /// Signed in with the directory password.
        PasswordSuccess => ["password", "success"],
        /// A password sign-in failed.
        PasswordFailure => ["password", "failure"],
        /// Signed in with a registered passkey.
        PasskeySuccess => ["passkey", "success"],
        /// A passkey sign-in failed.
        PasskeyFailure => ["passkey", "failure"],
    }
}

label_set! {
    /// How a directory sync run ended.
    pub enum SyncResult ["result"] {
        /// The store now mirrors the directory.
        Success => ["success"],
        /// Nothing was applied (see `tapd_directory_sync_errors_total` for why).
        Failure => ["failure"],
    }
}

label_set! {
    /// Why a directory sync run applied nothing.
    pub enum SyncErrorCause ["cause"] {
        /// The directory could not be read completely.
        DirectoryUnavailable => ["directory_unavailable"],
        /// The deletion guard refused a mass deletion.
        DeletionGuard => ["deletion_guard"],
        /// The store failed while reading or applying.
        Store => ["store"],
    }
}

label_set! {
    /// How a password-check bind against the directory ended.
    pub enum LdapBindResult ["result"] {
        /// The password was right.
        Success => ["success"],
        /// The directory said invalid credentials.
        InvalidCredentials => ["invalid_credentials"],
        /// The bind succeeded, but to an entry that is not the user's (another stable id).
        BoundIdentityMismatch => ["bound_identity_mismatch"],
        /// Timeout, connection or protocol error.
        Error => ["error"],
    }
}

label_set! {
    /// Store operations whose latency is measured.
    pub enum StoreOperation ["operation"] {
        /// The readiness probe's read (`/readyz`).
        HealthCheck => ["health_check"],
        /// Storing a new TAP (admin create).
        ReplaceTap => ["replace_tap"],
        /// Consuming a one-time TAP at sign-in.
        ConsumeTap => ["consume_tap"],
        /// Applying a directory sync plan.
        ApplySync => ["apply_sync"],
        /// Reading a user for a sign-in or an admin request.
        ReadUser => ["read_user"],
        /// Appending an audit event on its own.
        AppendAudit => ["append_audit"],
    }
}

label_set! {
    /// Outcome of a SIGHUP configuration reload.
    pub enum ReloadResult ["result"] {
        /// The new configuration is in force.
        Success => ["success"],
        /// The new configuration was refused; the old one keeps running.
        Failure => ["failure"],
    }
}

/// The only series of a family without labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoLabels;

impl LabelSet for NoLabels {
    const NAMES: &'static [&'static str] = &[];
    fn all() -> Vec<Self> {
        vec![NoLabels]
    }
    fn values(self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// A monotonically increasing count per label set.
#[derive(Debug)]
pub struct CounterVec<L: LabelSet> {
    labels: Vec<L>,
    counts: Vec<AtomicU64>,
}

impl<L: LabelSet> Default for CounterVec<L> {
    fn default() -> Self {
        let labels = L::all();
        let counts = labels.iter().map(|_| AtomicU64::new(0)).collect();
        CounterVec { labels, counts }
    }
}

impl<L: LabelSet> CounterVec<L> {
    fn slot(&self, label: L) -> Option<&AtomicU64> {
        let index = self.labels.iter().position(|known| *known == label)?;
        self.counts.get(index)
    }

    /// Adds one to `label`'s series.
    pub fn inc(&self, label: L) {
        self.add(label, 1);
    }

    /// Adds `n` to `label`'s series.
    pub fn add(&self, label: L, n: u64) {
        if let Some(count) = self.slot(label) {
            count.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current count of `label`'s series.
    pub fn get(&self, label: L) -> u64 {
        self.slot(label).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn series(&self) -> impl Iterator<Item = (Vec<&'static str>, u64)> + '_ {
        self.labels
            .iter()
            .zip(&self.counts)
            .map(|(label, count)| (label.values(), count.load(Ordering::Relaxed)))
    }
}

/// A counter without labels.
pub type Counter = CounterVec<NoLabels>;

/// A value that goes up and down (stored as `f64` bits).
#[derive(Debug, Default)]
pub struct Gauge {
    bits: AtomicU64,
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

/// Bucket upper bounds (seconds) for request-path latencies: directory binds, store calls.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket upper bounds (seconds) for whole directory syncs.
pub const SYNC_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// One histogram series: per-bucket counts (non-cumulative; the exposition sums them) and
/// the sum of observations in nanoseconds.
#[derive(Debug)]
struct HistogramSeries {
    buckets: Vec<AtomicU64>,
    overflow: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A latency distribution per label set.
#[derive(Debug)]
pub struct HistogramVec<L: LabelSet> {
    bounds: &'static [f64],
    labels: Vec<L>,
    series: Vec<HistogramSeries>,
}

impl<L: LabelSet> HistogramVec<L> {
    /// A family with the given bucket upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        let labels = L::all();
        let series = labels
            .iter()
            .map(|_| HistogramSeries {
                buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
                overflow: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            })
            .collect();
        HistogramVec {
            bounds,
            labels,
            series,
        }
    }

    /// Records one observation in `label`'s series.
    pub fn observe(&self, label: L, took: Duration) {
        let Some(series) = self
            .labels
            .iter()
            .position(|known| *known == label)
            .and_then(|index| self.series.get(index))
        else {
            return;
        };
        let seconds = took.as_secs_f64();
        match self.bounds.iter().position(|bound| seconds <= *bound) {
            Some(bucket) => {
                if let Some(count) = series.buckets.get(bucket) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                series.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        series.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations `label`'s series holds.
    pub fn count(&self, label: L) -> u64 {
        self.labels
            .iter()
            .position(|known| *known == label)
            .and_then(|index| self.series.get(index))
            .map_or(0, |series| {
                series
                    .buckets
                    .iter()
                    .chain(std::iter::once(&series.overflow))
                    .map(|c| c.load(Ordering::Relaxed))
                    .sum()
            })
    }
}

/// A histogram without labels.
pub type Histogram = HistogramVec<NoLabels>;

/// A set of metric families owned by the module that produces them (the RADIUS and
/// federation front ends), so that their label types, which name sign-in reasons and packet
/// faults, stay beside the code that decides them and this module depends on none of it.
/// Obtained once through [`Metrics::group`] and counted into directly: one atomic add per
/// event, as for the families declared here.
pub trait FamilyGroup: Default + Send + Sync + 'static {
    /// Appends every family of the group in the text format (see [`exposition`]).
    fn render(&self, out: &mut String);
}

/// A registered group, kept both as itself (to hand out again) and as something to render.
struct Registered {
    id: TypeId,
    group: Arc<dyn Any + Send + Sync>,
    render: fn(&(dyn Any + Send + Sync), &mut String),
}

/// The [`FamilyGroup`]s registered so far, rendered in registration order.
#[derive(Default)]
struct Groups(Mutex<Vec<Registered>>);

impl Groups {
    fn get_or_register<G: FamilyGroup>(&self) -> Arc<G> {
        let mut groups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = TypeId::of::<G>();
        if let Some(known) = groups.iter().find(|known| known.id == id) {
            if let Ok(group) = known.group.clone().downcast::<G>() {
                return group;
            }
        }
        let group = Arc::new(G::default());
        groups.push(Registered {
            id,
            group: group.clone(),
            render: |group, out| {
                if let Some(group) = group.downcast_ref::<G>() {
                    group.render(out);
                }
            },
        });
        group
    }

    fn render(&self, out: &mut String) {
        let groups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for registered in groups.iter() {
            (registered.render)(registered.group.as_ref(), out);
        }
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        write!(f, "Groups({} registered)", groups.len())
    }
}

/// Every metric tapd exports. Shared as `Arc<Metrics>`; all methods take `&self`.
#[derive(Debug)]
pub struct Metrics {
    /// TAPs issued, by channel.
    pub taps_issued: CounterVec<TapIssueChannel>,
    /// TAPs used to sign in, by channel.
    pub taps_used: CounterVec<TapUseChannel>,
    /// TAP sign-ins refused, by channel and reason.
    pub tap_rejections: CounterVec<TapRejection>,
    /// Web sign-ins, by method and result.
    pub web_sign_ins: CounterVec<WebSignIn>,
    /// Directory sync runs, by result.
    pub sync_runs: CounterVec<SyncResult>,
    /// Directory sync runs that applied nothing, by cause.
    pub sync_errors: CounterVec<SyncErrorCause>,
    /// User entries skipped as undecodable, once per entry per sync run.
    pub sync_entries_skipped: Counter,
    /// How long directory syncs take.
    pub sync_duration: Histogram,
    /// Unix time of the last successful sync (0: none yet).
    pub sync_last_success: Gauge,
    /// Users quarantined by an identity conflict after the last successful sync.
    pub identity_conflicts: Gauge,
    /// Password-check bind latency against the directory.
    pub ldap_bind_duration: HistogramVec<LdapBindResult>,
    /// Store call latency, by operation.
    pub store_duration: HistogramVec<StoreOperation>,
    /// SIGHUP reloads, by result.
    pub config_reloads: CounterVec<ReloadResult>,
    /// Unix time the daemon started (set by the daemon).
    pub start_time: Gauge,
    /// The families registered by the modules that own them ([`Metrics::group`]).
    groups: Groups,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series at zero.
    pub fn new() -> Self {
        Metrics {
            taps_issued: CounterVec::default(),
            taps_used: CounterVec::default(),
            tap_rejections: CounterVec::default(),
            web_sign_ins: CounterVec::default(),
            sync_runs: CounterVec::default(),
            sync_errors: CounterVec::default(),
            sync_entries_skipped: Counter::default(),
            sync_duration: Histogram::new(SYNC_BUCKETS),
            sync_last_success: Gauge::default(),
            identity_conflicts: Gauge::default(),
            ldap_bind_duration: HistogramVec::new(LATENCY_BUCKETS),
            store_duration: HistogramVec::new(LATENCY_BUCKETS),
            config_reloads: CounterVec::default(),
            start_time: Gauge::default(),
            groups: Groups::default(),
        }
    }

    /// The registry's instance of the family group `G`, registered (every series at zero)
    /// on the first call; later calls return the same instance. The daemon asks for every
    /// group at start, so the exposition is complete before the first event; components
    /// ask when they are built and keep the `Arc` (no lookup on the hot path).
    pub fn group<G: FamilyGroup>(&self) -> Arc<G> {
        self.groups.get_or_register()
    }

    /// Runs a store call and records its latency under `operation`.
    pub async fn time_store<T>(
        &self,
        operation: StoreOperation,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let started = std::time::Instant::now();
        let result = call.await;
        self.store_duration.observe(operation, started.elapsed());
        result
    }

    /// The whole registry in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = writeln!(
            out,
            "# HELP tapd_build_info The running tapd version.\n# TYPE tapd_build_info gauge\ntapd_build_info{{version=\"{}\"}} 1",
            exposition::escape(env!("CARGO_PKG_VERSION"))
        );
        exposition::gauge(
            &mut out,
            "tapd_start_time_seconds",
            "Unix time the daemon started.",
            &self.start_time,
        );
        self.groups.render(&mut out);
        exposition::counter(
            &mut out,
            "tapd_taps_issued_total",
            "Temporary Access Passes issued, by channel.",
            &self.taps_issued,
        );
        exposition::counter(
            &mut out,
            "tapd_taps_used_total",
            "Temporary Access Passes used to sign in, by channel.",
            &self.taps_used,
        );
        exposition::counter(
            &mut out,
            "tapd_tap_rejections_total",
            "Sign-ins with a Temporary Access Pass that were refused, by channel and reason.",
            &self.tap_rejections,
        );
        exposition::counter(
            &mut out,
            "tapd_web_sign_ins_total",
            "Sign-ins on the web registration page, by method and result.",
            &self.web_sign_ins,
        );
        exposition::counter(
            &mut out,
            "tapd_directory_sync_runs_total",
            "Directory sync runs, by result.",
            &self.sync_runs,
        );
        exposition::counter(
            &mut out,
            "tapd_directory_sync_errors_total",
            "Directory sync runs that applied nothing, by cause.",
            &self.sync_errors,
        );
        exposition::counter(
            &mut out,
            "tapd_directory_sync_entries_skipped_total",
            "User entries a directory sync skipped because they could not be decoded.",
            &self.sync_entries_skipped,
        );
        exposition::histogram(
            &mut out,
            "tapd_directory_sync_duration_seconds",
            "Duration of directory sync runs.",
            &self.sync_duration,
        );
        exposition::gauge(
            &mut out,
            "tapd_directory_sync_last_success_timestamp_seconds",
            "Unix time of the last successful directory sync (0: none since start).",
            &self.sync_last_success,
        );
        exposition::gauge(
            &mut out,
            "tapd_identity_conflicts",
            "Users quarantined because a sign-in name of theirs is also another user's.",
            &self.identity_conflicts,
        );
        exposition::histogram(
            &mut out,
            "tapd_ldap_bind_duration_seconds",
            "Latency of password-check binds against the directory, by result.",
            &self.ldap_bind_duration,
        );
        exposition::histogram(
            &mut out,
            "tapd_store_operation_duration_seconds",
            "Latency of store operations, by operation.",
            &self.store_duration,
        );
        exposition::counter(
            &mut out,
            "tapd_config_reloads_total",
            "Configuration reloads (SIGHUP), by result.",
            &self.config_reloads,
        );
        out
    }
}

#[cfg(test)]
mod tests;
