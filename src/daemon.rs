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
use crate::directory::ldif::LdifDirectory;
use crate::directory::sync::DeletionGuard;
use crate::directory::DirectorySource;
use crate::federation::{self, FederationState};
use crate::policy::{AdminRole, RoleMapping};
use crate::radius::{RadiusCounters, RadiusHandler, RadiusSettings, ReplyCacheConfig};
use crate::service::{ServiceSettings, TapService};
use crate::signin::{SignIn, SignInSettings};
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
        DirectoryConfig::Ldap { url, .. } => bail!(
            "directory.url {url:?}: the LDAP directory source is not part of this build yet; use file:PATH.ldif"
        ),
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
    let service = build_service(&config, store, directory.clone(), clock)?;
    let signin = build_signin(&config, &service, directory)?;

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
    let front_ends = start_front_ends(&config, signin, &mut tasks, &shutdown).await?;
    {
        let syncer = service.syncer().clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            sync_loop(syncer, shutdown).await;
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
            _ = sighup.recv() => reload(&config_path, &service, &front_ends),
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
fn reload(config_path: &Path, service: &TapService, front_ends: &FrontEnds) {
    match crate::config::load(config_path) {
        Ok(loaded) => {
            crate::logging::set_level(loaded.config.log.level);
            service.update_settings(service_settings(&loaded.config));
            front_ends.reload(&loaded.config);
            log::info!("configuration reloaded from {}", config_path.display());
        }
        Err(e) => {
            log::error!("configuration reload refused, keeping the running configuration: {e}")
        }
    }
}

/// Runs a full sync at start and then every interval, until shutdown.
async fn sync_loop(syncer: Arc<Syncer>, shutdown: CancellationToken) {
    log::info!(
        "directory sync from {} every {:?}",
        syncer.describe_directory(),
        syncer.interval()
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = syncer.run(false, "tapd") => {
                if let Err(e) = result {
                    log::warn!("scheduled directory sync did not run: {e}");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(syncer.interval()) => {}
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
        signin_settings(config),
    )
    .context("while preparing the sign-in service")?;
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
    fn reload(&self, config: &Config) {
        if let Err(e) = self.signin.update_settings(signin_settings(config)) {
            log::error!("sign-in settings not reloaded: {e}");
        }
        if let Some(radius) = &self.radius {
            match RadiusSettings::from_config(&config.radius) {
                Ok(settings) => radius.update_settings(settings),
                Err(e) => log::error!("RADIUS settings not reloaded: {e}"),
            }
        }
        if let Some(federation) = &self.federation {
            federation.update_relying_parties(&config.federation.relying_parties);
        }
    }
}

/// Binds the RADIUS sockets and the federation listener, logs `listening for …`, and
/// spawns their loops into `tasks`.
async fn start_front_ends(
    config: &Config,
    signin: Arc<SignIn>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
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
            Arc::new(RadiusCounters::default()),
        ));
        front_ends.radius = Some(handler.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            crate::radius::server::serve(handler, sockets, shutdown)
                .await
                .context("RADIUS server failed")
        });
    }

    // The federation endpoint has its own listener, or else shares the web listener. Until
    // the web site (with HTTPS) lands, it is served as plain HTTP, and only where that is
    // allowed: loopback, no TLS configured, or a TLS proxy in front.
    let (addr, what) = match (config.federation.listen, config.web.listen) {
        (Some(addr), _) => (addr, "federation"),
        (None, Some(addr)) => (addr, "web"),
        (None, None) => return Ok(front_ends),
    };
    let plain_allowed = config.web.tls.is_none()
        || config.web.behind_tls_proxy
        || (what == "federation" && addr.ip().is_loopback());
    if !plain_allowed {
        log::warn!(
            "the federation endpoint is not served on {addr}: HTTPS listeners are not part of this build yet"
        );
        return Ok(front_ends);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("while binding the {what} listener {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("while reading the address of the {what} listener"))?;
    log::info!("listening for {what} on {local}");
    if config.federation.relying_parties.is_empty() {
        log::warn!(
            "no [[federation.relying_parties]] configured: every federation request is refused"
        );
    }
    let state = Arc::new(FederationState::new(
        signin,
        &config.federation.relying_parties,
    ));
    front_ends.federation = Some(state.clone());
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        federation::serve(listener, state, shutdown)
            .await
            .context("federation server failed")
    });
    Ok(front_ends)
}
