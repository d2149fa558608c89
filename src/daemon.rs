//! Wiring: builds the concrete store, directory source, hashing pool and service from the
//! validated configuration, binds every listener, tells systemd about it (`notify`), keeps
//! the watchdog fed while every loop is alive (`watchdog`), reloads on SIGHUP (`reload`),
//! runs until SIGTERM/SIGINT, and shuts down through one `CancellationToken` and one
//! `JoinSet`. Every long-running loop is spawned through `Heartbeats::supervise`.
//!
//! The only module that knows every concrete type. May use `anyhow` for context.
//!
//! Over 800 lines on purpose: the composition root wires every listener and loop in start-up
//! order, and the order (bind, notify, watchdog, shutdown) is the thing to read in one place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, SocketOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DirectorySource as DirectoryConfig, LogFormat, StoreUrl};
use crate::directory::ldap::{LdapDirectory, LdapSettings};
use crate::directory::ldif::LdifDirectory;
use crate::directory::DirectorySource;
use crate::federation::FederationMetrics;
use crate::federation::{self, FederationState};
use crate::logging::ErrorChain;
use crate::metrics::http::{self as metrics_http, Readiness};
use crate::metrics::{Metrics, ReloadResult};
use crate::model::SyncStatus;
use crate::notify::{Notifier, NotifyError};
use crate::policy::{AdminRole, RoleMapping};
use crate::radius::RadiusMetrics;
use crate::radius::{RadiusHandler, RadiusSettings, ReplyCacheConfig};
use crate::reload::{self, Reloader};
use crate::service::{ServiceSettings, TapService};
use crate::signin::{SignIn, SignInSettings};
use crate::store::postgres::{PostgresSettings, PostgresStore};
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::sync::plan::DeletionGuard;
use crate::sync::{SyncError, SyncOptions};
use crate::tapcode::Hasher;
use crate::watchdog::Heartbeats;
use crate::web;

/// How long shutdown waits for in-flight work before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How many argon2 verifications may wait per running one before new ones are shed. A waiting
/// verification is only a parked future (memory is bounded by the running ones), so 16 per
/// worker lets a burst of sign-ins (20 at once on 2 cores) queue instead of being refused,
/// while a flood is still shed, and the sign-in throttle stops guessing before any hashing.
pub const ARGON2_QUEUE_PER_WORKER: usize = 16;

/// Opens the configured store, sealing authenticator-app secrets with the key of
/// `[store] secrets_key_file` (created when missing; rows in clear, or under
/// `secrets_previous_key_file` during a rotation, are sealed now). What the store stamps
/// itself takes `clock`'s time, the services' clock.
pub async fn open_store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn Store>> {
    let sealer = sealer(config)?;
    let sealing = "while sealing the store's secrets (store.secrets_key_file)";
    Ok(match open_store_unsealed(config).await? {
        OpenedStore::Sqlite(store) => Arc::new(
            store
                .with_clock(clock)
                .with_secrets(sealer)
                .await
                .context(sealing)?,
        ),
        OpenedStore::Postgres(store) => Arc::new(
            store
                .with_clock(clock)
                .with_secrets(sealer)
                .await
                .context(sealing)?,
        ),
    })
}

/// The sealer of `[store] secrets_key_file` (and the previous key, during a rotation).
fn sealer(config: &Config) -> anyhow::Result<crate::store::seal::Sealer> {
    let current = crate::config::secrets_key::read_or_create(&config.store.secrets_key_file)
        .context("store.secrets_key_file")?;
    let previous = match &config.store.secrets_previous_key_file {
        Some(path) => Some(
            crate::config::secrets_key::read(path).context("store.secrets_previous_key_file")?,
        ),
        None => None,
    };
    Ok(crate::store::seal::Sealer::new(
        &current,
        previous.as_deref(),
    ))
}

enum OpenedStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Opens the configured store without its secrets key: enough to read users, groups and the
/// policy (`check-config`), and it creates no key file.
async fn open_store_unsealed(config: &Config) -> anyhow::Result<OpenedStore> {
    match &config.store.url {
        StoreUrl::Sqlite(path) => {
            let store = SqliteStore::open(path, config.store.busy_timeout)
                .await
                .with_context(|| format!("while opening the SQLite store {}", path.display()))?;
            Ok(OpenedStore::Sqlite(store))
        }
        StoreUrl::Postgres(url) => {
            let settings = PostgresSettings {
                url: url.clone(),
                password: config
                    .store
                    .password
                    .as_ref()
                    .map(|secret| zeroize::Zeroizing::new(secret.expose().to_owned())),
                ca_file: config.store.ca_file.clone(),
                pool_size: config.store.pool_size,
                statement_timeout: config.store.statement_timeout,
                connect_timeout: config.store.connect_timeout,
            };
            let store = PostgresStore::open(&settings).await.with_context(|| {
                format!("while opening the PostgreSQL store {}", config.store.url)
            })?;
            let security = match store.connection_tls().await {
                Ok(Some(version)) => format!("encrypted with {version}"),
                Ok(None) => "not encrypted".to_owned(),
                Err(e) => format!("encryption unknown: {e}"),
            };
            log::info!("store: PostgreSQL at {} ({security})", config.store.url);
            Ok(OpenedStore::Postgres(store))
        }
    }
}

/// This process's identity among the nodes sharing a store: host name, pid and a random
/// suffix (two processes on one host, or a restarted one, never share it).
pub fn node_identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{host}/{}/{}",
        std::process::id(),
        suffix.get(..6).unwrap_or(&suffix)
    )
}

/// Builds the configured directory source.
pub fn open_directory(config: &Config) -> anyhow::Result<Arc<dyn DirectorySource>> {
    match &config.directory.source {
        DirectoryConfig::LdifFile(path) => {
            let mut source = LdifDirectory::open(path)
                .with_context(|| format!("while reading the directory file {}", path.display()))?;
            if !config.directory.base_dn.is_empty() {
                source = source.with_base_dn(&config.directory.base_dn);
            }
            let source = source.with_date_attributes(&config.directory.attributes.dates);
            Ok(Arc::new(source))
        }
        DirectoryConfig::Ldap { url, .. } => {
            let settings = LdapSettings::from_config(&config.directory)
                .context("directory: LDAP settings missing")?;
            let source = LdapDirectory::new(settings)
                .with_context(|| format!("while preparing the LDAP directory {}", url.url))?;
            Ok(Arc::new(source))
        }
    }
}

/// Settings of the service taken from the configuration (also applied on reload).
pub fn service_settings(config: &Config) -> ServiceSettings {
    ServiceSettings {
        roles: RoleMapping(
            config
                .admin
                .roles
                .entries()
                .into_iter()
                .filter_map(|(name, groups)| Some((AdminRole::parse(name)?, groups.to_vec())))
                .collect(),
        ),
        root_is_global_administrator: config.admin.root_is_global_administrator,
        group_references: configured_group_references(config),
        privileged_tap: config.policy.privileged_tap,
        registration_interrupt_groups: config.web.registration_interrupt_groups.clone(),
        mail_delivery: config.smtp.is_some(),
        onboarding_rules: config.onboarding_rules.clone(),
    }
}

/// The group references of `[web]` and `[radius]` as (where, reference); the roles' are in
/// [`RoleMapping::references`].
pub fn configured_group_references(config: &Config) -> Vec<(String, String)> {
    let interrupt = config
        .web
        .registration_interrupt_groups
        .iter()
        .map(|g| ("web.registration_interrupt_groups".to_owned(), g.clone()));
    let reply = config
        .radius
        .reply_attributes
        .iter()
        .map(|rule| ("radius.reply_attributes".to_owned(), rule.group.clone()));
    interrupt.chain(reply).collect()
}

/// What `tapd check-config` says of the configuration's group references against the groups
/// the store holds from the last sync: one line per cn reference that two or more synced
/// groups share (it names none of them), or why the store could not be read. A SQLite file
/// that doesn't exist yet (no sync ever ran) is not created.
pub async fn check_group_references(config: &Config) -> Vec<String> {
    if let StoreUrl::Sqlite(path) = &config.store.url {
        if !path.exists() {
            return Vec::new();
        }
    }
    let store: Arc<dyn Store> = match open_store_unsealed(config).await {
        Ok(OpenedStore::Sqlite(store)) => Arc::new(store),
        Ok(OpenedStore::Postgres(store)) => Arc::new(store),
        Err(e) => {
            return vec![format!(
                "group references not checked against the synced groups: {}",
                ErrorChain(&*e)
            )]
        }
    };
    let (groups, policy) = match (store.groups().await, store.policy().await) {
        (Ok(groups), Ok(policy)) => (groups, policy),
        (Err(e), _) | (_, Err(e)) => {
            return vec![format!(
                "group references not checked against the synced groups: {e}"
            )]
        }
    };
    let index = crate::group_ref::GroupIndex::of_groups(&groups);
    let mut references = service_settings(config).roles.references();
    references.extend(configured_group_references(config));
    let targets = policy
        .include_targets
        .iter()
        .map(|t| ("policy.includeTargets", &t.id, t.target_type))
        .chain(
            policy
                .exclude_targets
                .iter()
                .map(|t| ("policy.excludeTargets", &t.id, t.target_type)),
        );
    for (place, id, target_type) in targets {
        if target_type == crate::model::TargetType::Group && id != crate::model::ALL_USERS {
            references.push((place.to_owned(), id.clone()));
        }
    }
    index
        .ambiguities(references.iter().map(|(p, r)| (p.as_str(), r.as_str())))
        .into_iter()
        .map(|ambiguity| ambiguity.to_string())
        .collect()
}

/// Builds the service over an opened store and directory.
pub fn build_service(
    config: &Config,
    store: Arc<dyn Store>,
    directory: Arc<dyn DirectorySource>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<TapService>> {
    let hasher = Hasher::new(
        config.security.argon2_max_concurrent,
        ARGON2_QUEUE_PER_WORKER * config.security.argon2_max_concurrent,
    )
    .context("while preparing the argon2 pool")?;
    let sync = SyncOptions {
        interval: config.directory.sync_interval,
        guard: DeletionGuard {
            max_deletes: u64::from(config.directory.deletion_guard.max_deletes),
            max_share_percent: config.directory.deletion_guard.max_percent,
        },
        node: node_identity(),
    };
    Ok(Arc::new(TapService::new(
        store,
        directory,
        clock,
        hasher,
        service_settings(config),
        sync,
    )))
}

/// Where `[log] format` sends log lines.
pub fn log_destination(config: &Config) -> crate::logging::Destination {
    match config.log.format {
        LogFormat::Auto => crate::logging::Destination::Auto,
        LogFormat::Journal => crate::logging::Destination::Journal,
        LogFormat::Stderr => crate::logging::Destination::Stderr,
    }
}

/// Runs the daemon until a termination signal.
///
/// Order of events, as systemd sees it (`Type=notify`): the store is opened, every listener
/// is bound and every service loop spawned, then `READY=1` (the directory is NOT waited
/// for: its state goes into `STATUS=`). While running, `WATCHDOG=1` every half watchdog
/// interval as long as every loop is alive; SIGHUP sends `RELOADING=1`, reloads and sends
/// `READY=1` again; SIGTERM/SIGINT or a failed loop sends `STOPPING=1` and drains.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    log::info!(
        "tapd {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    );
    let notifier = Notifier::from_env();
    let heartbeats = Heartbeats::for_watchdog(notifier.watchdog_interval());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, clock.clone()).await?;
    let directory = open_directory(&config)?;
    let service = build_service(&config, store.clone(), directory.clone(), clock.clone())?;
    let signin = build_signin(&config, &service, directory.clone())?;
    let metrics = service.metrics().clone();
    // The front ends' families are exported at zero from the start, configured or not.
    metrics.group::<RadiusMetrics>();
    metrics.group::<FederationMetrics>();
    // Group references resolve against the synced groups from the first request on.
    if let Err(e) = service.syncer().refresh_group_index().await {
        log::warn!("could not read the synced groups (group references by cn match nothing until the first sync): {}", ErrorChain(&e));
    }
    metrics
        .start_time
        .set(clock.now().timestamp_millis() as f64 / 1000.0);

    let config = Arc::new(config);
    let reloader = Reloader::new(config.clone());
    register_reloadable_parts(&reloader, &service);

    let shutdown = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    // ---- listeners: bind every one of them before READY=1 ----
    let socket = SocketOptions {
        path: config.admin.socket.clone(),
        group: config.admin.socket_group.clone(),
    };
    let listener = admin::bind_socket(&socket).context("while creating the admin socket")?;
    log::info!("listening for admin on {}", socket.path.display());
    {
        let service = service.clone();
        let shutdown = shutdown.clone();
        let connection_timeout = config.admin.connection_timeout;
        tasks.spawn(heartbeats.supervise("admin API", async move {
            admin::serve(listener, service, connection_timeout, shutdown)
                .await
                .context("admin API server failed")
        }));
    }
    let readiness = Arc::new(Readiness::new(
        store.clone(),
        heartbeats.clone(),
        metrics.clone(),
    ));
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("while binding the metrics listener {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        log::info!("listening for metrics on {bound}");
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let shutdown = shutdown.clone();
        let limits = config.web.limits;
        tasks.spawn(heartbeats.supervise("metrics", async move {
            metrics_http::serve(listener, metrics, readiness, limits, shutdown)
                .await
                .context("metrics server failed")
        }));
    }
    let front_ends = Arc::new(
        start_front_ends(
            &config,
            &service,
            directory.clone(),
            signin,
            &metrics,
            &mut Loops {
                tasks: &mut tasks,
                heartbeats: &heartbeats,
                shutdown: &shutdown,
            },
        )
        .await?,
    );
    {
        let front_ends = front_ends.clone();
        reloader.register(reload::reloadable(
            "RADIUS clients, federation tokens and sign-in settings",
            move |next| {
                let radius = RadiusSettings::from_config(&next.radius)
                    .map_err(|e| format!("RADIUS clients: {e}"))?;
                let next = next.clone();
                let front_ends = front_ends.clone();
                Ok(Box::new(move || front_ends.apply(&next, radius)))
            },
        ));
    }
    {
        let service = service.clone();
        let shutdown = shutdown.clone();
        let notifier = notifier.clone();
        let incremental = config.directory.incremental_interval;
        tasks.spawn(heartbeats.supervise("directory sync", async move {
            sync_loop(service, incremental, notifier, shutdown).await;
            Ok(())
        }));
    }
    if let Some(retention) = config.audit.retention {
        let (store, clock, shutdown) = (store.clone(), clock.clone(), shutdown.clone());
        tasks.spawn(heartbeats.supervise("audit retention", async move {
            crate::store::retention::prune_loop(store, clock, retention, shutdown).await;
            Ok(())
        }));
    }
    {
        // The audit chain head goes to the journal every minute (and once more below, after
        // every other task has stopped, so the last head covers the last event).
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(heartbeats.supervise("audit chain head", async move {
            crate::store::chain::head_loop(store, crate::store::chain::HEAD_INTERVAL, shutdown)
                .await;
            Ok(())
        }));
    }
    if let Some(smtp) = &config.smtp {
        let worker = crate::onboarding::MailWorker::new(
            store.clone(),
            clock.clone(),
            smtp,
            service.syncer().node().to_owned(),
        )
        .context("while preparing the SMTP client")?;
        let shutdown = shutdown.clone();
        tasks.spawn(heartbeats.supervise("onboarding mail", async move {
            worker.run(shutdown).await;
            Ok(())
        }));
    }

    let mut sigterm =
        signal(SignalKind::terminate()).context("while installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("while installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("while installing SIGHUP handler")?;

    readiness.set_listeners_up();
    report(notifier.ready("serving; first directory sync running"));
    if let Some(interval) = notifier.watchdog_interval() {
        log::info!(
            "systemd watchdog: {interval:?}, pinging every {:?} while {} are alive",
            interval / 2,
            heartbeats.names().join(", ")
        );
    }
    let mut watchdog = notifier.watchdog_interval().map(|interval| {
        let mut ticker = tokio::time::interval(interval / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut withheld = false;

    let mut failure = None;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM received, stopping"); break; }
            _ = sigint.recv() => { log::info!("SIGINT received, stopping"); break; }
            _ = sighup.recv() => {
                report(notifier.reloading());
                let status = reload(&config_path, &reloader, &metrics);
                report(notifier.ready(&status));
            }
            _ = watchdog_tick(&mut watchdog) => {
                let stale = heartbeats.stale();
                if stale.is_empty() {
                    report(notifier.watchdog());
                    if withheld {
                        log::info!("every service loop responds again; watchdog pings resumed");
                        withheld = false;
                    }
                } else if !withheld {
                    log::error!(
                        "not pinging the systemd watchdog: {} not responding",
                        stale.join(", ")
                    );
                    withheld = true;
                }
            }
            finished = tasks.join_next() => {
                match finished {
                    Some(Ok(Ok(()))) | None => failure = Some(anyhow::anyhow!("a service loop stopped unexpectedly")),
                    Some(Ok(Err(e))) => failure = Some(e),
                    Some(Err(e)) => failure = Some(anyhow::anyhow!("a service loop panicked: {e}")),
                }
                break;
            }
        }
    }
    report(notifier.stopping());
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = tasks.join_next().await {
            if let Ok(Err(e)) = result {
                log::warn!("while stopping: {}", ErrorChain(&*e));
            }
        }
    })
    .await;
    if drained.is_err() {
        log::warn!("some work did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        tasks.abort_all();
    }
    // The front ends are stopped: store the sign-in audit events still in their window.
    front_ends.signin.flush_audit().await;
    crate::store::chain::log_head(&*store).await;
    remove_socket(&socket.path);
    match failure {
        Some(e) => Err(e),
        None => {
            log::info!("tapd stopped");
            Ok(())
        }
    }
}

/// Waits for the next watchdog tick, or forever when the watchdog is off.
async fn watchdog_tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Logs a failed notification once at warn (a broken NOTIFY_SOCKET would otherwise warn on
/// every watchdog tick), later ones at debug.
fn report(result: Result<(), NotifyError>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = result {
        if WARNED.swap(true, Ordering::Relaxed) {
            log::debug!("sd_notify: {e}");
        } else {
            log::warn!("sd_notify: {e}");
        }
    }
}

/// The parts of the daemon that follow a reload. RADIUS clients and secrets, TLS
/// certificates and federation tokens register here (or read `Reloader::subscribe`) as
/// their components land.
fn register_reloadable_parts(reloader: &Reloader, service: &Arc<TapService>) {
    reloader.register(reload::reloadable("log level", |next| {
        let level = next.log.level;
        Ok(Box::new(move || crate::logging::set_level(level)))
    }));
    let service = service.clone();
    reloader.register(reload::reloadable("admin roles", move |next| {
        let settings = service_settings(next);
        let service = service.clone();
        Ok(Box::new(move || service.update_settings(settings)))
    }));
}

/// Re-reads the configuration and applies what can change without a restart. An invalid new
/// configuration is refused and the running one stays. Returns the status line for systemd.
fn reload(config_path: &Path, reloader: &Reloader, metrics: &Metrics) -> String {
    let loaded = match crate::config::load(config_path) {
        Ok(loaded) => loaded,
        Err(e) => {
            metrics.config_reloads.inc(ReloadResult::Failure);
            log::error!(
                "configuration reload refused, keeping the running configuration: {}",
                e.problems.join("; ")
            );
            return "serving; configuration reload refused (invalid file), old configuration in force".into();
        }
    };
    for warning in &loaded.warnings {
        log::warn!("configuration: {warning}");
    }
    match reloader.reload(loaded.config) {
        Ok(done) => {
            metrics.config_reloads.inc(ReloadResult::Success);
            log::info!(
                "configuration reloaded from {} ({})",
                config_path.display(),
                done.applied.join(", ")
            );
            if !done.restart_required.is_empty() {
                log::warn!(
                    "changed keys that take effect only after a restart: {}",
                    done.restart_required.join(", ")
                );
            }
            "serving; configuration reloaded".into()
        }
        Err(e) => {
            metrics.config_reloads.inc(ReloadResult::Failure);
            log::error!("configuration reload refused, keeping the running configuration: {e}");
            "serving; configuration reload refused, old configuration in force".into()
        }
    }
}

/// Runs a full sync at start and then every interval, with incremental syncs every
/// `incremental` in between (when set and shorter), until shutdown; the outcome goes into
/// systemd's STATUS line.
async fn sync_loop(
    service: Arc<TapService>,
    incremental: Option<Duration>,
    notifier: Notifier,
    shutdown: CancellationToken,
) {
    let syncer = service.syncer().clone();
    let interval = syncer.interval();
    match incremental {
        Some(every) if every < interval => log::info!(
            "directory sync from {} (node {}): full every {interval:?}, changes every {every:?}",
            syncer.describe_directory(),
            syncer.node()
        ),
        _ => log::info!(
            "directory sync from {} every {interval:?} (node {})",
            syncer.describe_directory(),
            syncer.node()
        ),
    }
    let mut first = true;
    let mut last_full: Option<std::time::Instant> = None;
    loop {
        let full_due = last_full.is_none_or(|started| started.elapsed() >= interval);
        if full_due {
            last_full = Some(std::time::Instant::now());
        }
        // The first run at start always tries (another node may still hold the lease); later
        // full ones only when no other node synced within the interval.
        let run = async {
            if std::mem::take(&mut first) {
                syncer.run(false, "tapd").await.map(Some)
            } else if full_due {
                syncer.run_scheduled().await
            } else {
                syncer.run_incremental("tapd").await.map(Some)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = run => {
                let status = match result {
                    Ok(Some(status)) => {
                        // New users are known now: the onboarding rules look for them.
                        service.run_onboarding_rules().await;
                        Some(directory_status(&status))
                    }
                    Ok(None) => None,
                    // Logged by the syncer: another node is syncing.
                    Err(SyncError::HeldElsewhere { holder, .. }) => {
                        Some(format!("serving; directory sync is run by node {holder}"))
                    }
                    Err(e) => {
                        log::warn!("scheduled directory sync did not run: {}", ErrorChain(&e));
                        Some(format!("serving; directory sync did not run: {e}"))
                    }
                };
                if let Some(status) = status {
                    report(notifier.status(&status));
                }
            }
        }
        let until_full = last_full
            .map(|started| interval.saturating_sub(started.elapsed()))
            .unwrap_or(interval);
        let wait = match incremental {
            Some(every) => every.min(until_full),
            None => until_full,
        }
        .max(Duration::from_secs(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The STATUS line after a sync.
fn directory_status(status: &SyncStatus) -> String {
    let when = |time: Option<crate::model::Timestamp>| {
        time.map_or_else(|| "never".to_owned(), |t| crate::policy::rfc3339(&t))
    };
    match status.last_result.as_deref() {
        Some("success") => format!(
            "serving; directory synced at {} ({} users, {} groups)",
            when(status.last_run_finished),
            status.users_seen,
            status.groups_seen
        ),
        _ => format!(
            "serving; directory sync failed at {}: {}; last success {}",
            when(status.last_run_finished),
            status.last_error.as_deref().unwrap_or("unknown error"),
            when(status.last_success)
        ),
    }
}

fn remove_socket(path: &Path) {
    if admin::server::is_socket(path) {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn!("could not remove the admin socket {}: {e}", path.display());
        }
    }
}

/// Sign-in settings taken from the configuration (also applied on reload).
pub fn signin_settings(config: &Config) -> SignInSettings {
    SignInSettings {
        public_url: config
            .web
            .public_url
            .as_ref()
            .map(|url| url.as_str().to_owned())
            .unwrap_or_default(),
        max_failures: config.security.sign_in_max_failures,
        failure_window: config.security.sign_in_failure_window,
        cooldown: config.security.sign_in_cooldown,
    }
}

/// Builds the sign-in decision shared by RADIUS and federation.
pub fn build_signin(
    config: &Config,
    service: &TapService,
    directory: Arc<dyn DirectorySource>,
) -> anyhow::Result<Arc<SignIn>> {
    let signin = SignIn::new(
        service.store().clone(),
        directory,
        service.hasher().clone(),
        service.clock().clone(),
        service.metrics().clone(),
        signin_settings(config),
    )
    .context("while preparing the sign-in service")?
    .with_syncer(service.syncer().clone())
    .with_group_index(service.syncer().group_index().clone())
    .with_audit_flush(config.audit.sign_in_flush);
    Ok(Arc::new(signin))
}

/// The running RADIUS and federation front ends, kept for reloads.
struct FrontEnds {
    signin: Arc<SignIn>,
    radius: Option<Arc<RadiusHandler>>,
    federation: Option<Arc<FederationState>>,
}

impl FrontEnds {
    /// Applies what can change without a restart: clients, reply attributes, relying
    /// parties, throttle settings, the public URL. New listen addresses need a restart.
    /// `radius` was prepared (and validated) from `config` before the switch.
    fn apply(&self, config: &Config, radius: RadiusSettings) {
        if let Err(e) = self.signin.update_settings(signin_settings(config)) {
            log::error!("sign-in settings not reloaded: {e}");
        }
        if let Some(handler) = &self.radius {
            handler.update_settings(radius);
        }
        if let Some(federation) = &self.federation {
            federation.update_relying_parties(&config.federation.relying_parties);
            federation.set_reject_delay(config.federation.reject_delay);
        }
    }
}

/// Binds the RADIUS sockets and the federation listener, logs `listening for …`, and
/// spawns their loops into `tasks`.
async fn start_front_ends(
    config: &Config,
    service: &Arc<TapService>,
    directory: Arc<dyn DirectorySource>,
    signin: Arc<SignIn>,
    metrics: &Arc<Metrics>,
    loops: &mut Loops<'_>,
) -> anyhow::Result<FrontEnds> {
    let mut front_ends = FrontEnds {
        signin: signin.clone(),
        radius: None,
        federation: None,
    };
    if config.radius.is_enabled() {
        let settings = RadiusSettings::from_config(&config.radius)
            .context("while preparing the RADIUS clients")?;
        let mut sockets = Vec::new();
        for addr in &config.radius.listen {
            let socket = crate::radius::server::bind(*addr)
                .with_context(|| format!("while binding the RADIUS socket {addr}"))?;
            sockets.push(socket);
        }
        let handler = Arc::new(RadiusHandler::new(
            settings,
            signin.clone(),
            ReplyCacheConfig::default(),
            metrics.clone(),
        ));
        front_ends.radius = Some(handler.clone());
        let shutdown = loops.shutdown.clone();
        loops
            .tasks
            .spawn(loops.heartbeats.supervise("RADIUS", async move {
                crate::radius::server::serve(handler, sockets, shutdown)
                    .await
                    .context("RADIUS server failed")
            }));
    }

    // The federation endpoint has its own listener when `[federation] listen` is set, or else
    // shares the web listener (and its HTTPS). Both are served by `web::serve`.
    if config.federation.listen.is_none() && config.web.listen.is_none() {
        return Ok(front_ends);
    }
    if config.federation.relying_parties.is_empty() {
        log::warn!(
            "no [[federation.relying_parties]] configured: every federation request is refused"
        );
    }
    let federation_state = Arc::new(FederationState::new(
        signin,
        &config.federation.relying_parties,
        metrics.clone(),
    ));
    federation_state.set_reject_delay(config.federation.reject_delay);
    front_ends.federation = Some(federation_state.clone());
    let tls = match &config.web.tls {
        Some(files) => Some(web::load_tls(files).context("while loading the web TLS files")?),
        None => None,
    };
    if let Some(addr) = config.federation.listen {
        let router = federation::router(federation_state.clone());
        spawn_http(
            "federation",
            addr,
            tls.clone(),
            router,
            config.web.limits,
            loops,
        )
        .await?;
    }
    if let Some(addr) = config.web.listen {
        let settings = web::WebSettings::from_config(&config.web)?;
        let state = web::WebState::new(service.clone(), directory, settings)
            .context("while setting up the web site")?;
        let mut router = web::router(state);
        if config.federation.listen.is_none() {
            router = router.merge(federation::router(federation_state));
        }
        spawn_http("web", addr, tls, router, config.web.limits, loops).await?;
    }
    Ok(front_ends)
}

/// Binds an HTTP(S) listener, logs `listening for WHAT on ADDR` and serves `router` on it.
async fn spawn_http(
    what: &'static str,
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    limits: crate::config::HttpLimits,
    loops: &mut Loops<'_>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("while binding the {what} listener {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("while reading the address of the {what} listener"))?;
    log::info!("listening for {what} on {local}");
    let shutdown = loops.shutdown.clone();
    loops
        .tasks
        .spawn(loops.heartbeats.supervise(what, async move {
            web::serve(listener, tls, router, limits, shutdown)
                .await
                .with_context(|| format!("{what} server failed"))
        }));
    Ok(())
}

/// Where long-running loops go: the daemon's `JoinSet`, watched by the watchdog, stopped by
/// the shutdown token.
struct Loops<'a> {
    tasks: &'a mut JoinSet<anyhow::Result<()>>,
    heartbeats: &'a Arc<Heartbeats>,
    shutdown: &'a CancellationToken,
}
