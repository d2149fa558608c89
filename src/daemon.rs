//! Wiring: builds the concrete store, directory source, hashing pool and service from the
//! validated configuration, binds every listener, runs until SIGTERM/SIGINT, and shuts down
//! through one `CancellationToken` and one `JoinSet`.
//!
//! The only module that knows every concrete type. May use `anyhow` for context.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, SocketOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DirectorySource as DirectoryConfig, StoreUrl};
use crate::directory::ldap::{LdapDirectory, LdapSettings};
use crate::directory::ldif::LdifDirectory;
use crate::directory::sync::DeletionGuard;
use crate::directory::DirectorySource;
use crate::policy::{AdminRole, RoleMapping};
use crate::service::{ServiceSettings, TapService};
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::sync::{SyncOptions, Syncer};
use crate::tapcode::Hasher;

/// How long shutdown waits for in-flight work before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How many argon2 verifications may wait per running one before new ones are shed.
const ARGON2_QUEUE_PER_WORKER: usize = 8;

/// Opens the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.store.url {
        StoreUrl::Sqlite(path) => {
            let store = SqliteStore::open(path, config.store.busy_timeout)
                .await
                .with_context(|| format!("while opening the SQLite store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreUrl::Postgres(_) => {
            bail!(
                "store.url: the PostgreSQL backend is not part of this build yet; use sqlite:PATH"
            )
        }
    }
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
    }
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

/// Runs the daemon until a termination signal.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    log::info!(
        "tapd {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config).await?;
    let directory = open_directory(&config)?;
    let service = build_service(&config, store, directory, clock)?;

    let shutdown = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    let socket = SocketOptions {
        path: config.admin.socket.clone(),
        group: config.admin.socket_group.clone(),
    };
    let listener = admin::bind_socket(&socket).context("while creating the admin socket")?;
    log::info!("listening for admin on {}", socket.path.display());
    {
        let service = service.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            admin::serve(listener, service, shutdown)
                .await
                .context("admin API server failed")
        });
    }
    {
        let syncer = service.syncer().clone();
        let shutdown = shutdown.clone();
        let incremental = config.directory.incremental_interval;
        tasks.spawn(async move {
            sync_loop(syncer, incremental, shutdown).await;
            Ok(())
        });
    }

    let mut sigterm =
        signal(SignalKind::terminate()).context("while installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("while installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("while installing SIGHUP handler")?;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM received, stopping"); break; }
            _ = sigint.recv() => { log::info!("SIGINT received, stopping"); break; }
            _ = sighup.recv() => reload(&config_path, &service),
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
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = tasks.join_next().await {
            if let Ok(Err(e)) = result {
                log::warn!("while stopping: {e:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        log::warn!("some work did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        tasks.abort_all();
    }
    remove_socket(&socket.path);
    match failure {
        Some(e) => Err(e),
        None => {
            log::info!("tapd stopped");
            Ok(())
        }
    }
}

/// Re-reads the configuration and applies what can change without a restart. An invalid new
/// configuration is refused and the running one stays.
fn reload(config_path: &Path, service: &TapService) {
    match crate::config::load(config_path) {
        Ok(loaded) => {
            crate::logging::set_level(loaded.config.log.level);
            service.update_settings(service_settings(&loaded.config));
            log::info!("configuration reloaded from {}", config_path.display());
        }
        Err(e) => {
            log::error!("configuration reload refused, keeping the running configuration: {e}")
        }
    }
}

/// Runs a full sync at start and then every interval, with incremental syncs every
/// `incremental` in between (when set), until shutdown.
async fn sync_loop(
    syncer: Arc<Syncer>,
    incremental: Option<Duration>,
    shutdown: CancellationToken,
) {
    let interval = syncer.interval();
    match incremental {
        Some(every) if every < interval => log::info!(
            "directory sync from {}: full every {interval:?}, changes every {every:?}",
            syncer.describe_directory()
        ),
        _ => log::info!(
            "directory sync from {} every {interval:?}",
            syncer.describe_directory()
        ),
    }
    let mut last_full: Option<std::time::Instant> = None;
    loop {
        let full_due = last_full.is_none_or(|started| started.elapsed() >= interval);
        if full_due {
            last_full = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = async {
                if full_due {
                    syncer.run(false, "tapd").await
                } else {
                    syncer.run_incremental("tapd").await
                }
            } => {
                if let Err(e) = result {
                    log::warn!("scheduled directory sync did not run: {e}");
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

fn remove_socket(path: &Path) {
    if admin::server::is_socket(path) {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn!("could not remove the admin socket {}: {e}", path.display());
        }
    }
}
