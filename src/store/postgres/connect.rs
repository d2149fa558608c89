//! How tapd reaches PostgreSQL: the connection URL (with libpq's `sslmode` values), TLS through
//! rustls, and the connection pool with its per-connection settings.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and leaves certificate checks to
//! the TLS connector, so the URL's `sslmode` is read here and turned into both the driver's
//! mode and a rustls configuration with libpq's meaning:
//!
//! | sslmode | encryption | server certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked (as libpq) |
//! | `require` | always | not checked, unless `ca_file` is set: then as `verify-ca` (as libpq) |
//! | `verify-ca` | always | signed by `ca_file` (or the system roots) |
//! | `verify-full` | always | as `verify-ca`, and issued for the host name in the URL |
//!
//! rustls (with the ring provider) rather than native-tls: one TLS stack in the whole binary
//! (the web listener and the LDAP client use rustls too), no OpenSSL to link or patch, and the
//! same certificate handling everywhere.
//!
//! May depend on: `store` (error type). Reads the CA file it is given; nothing else.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as DriverSslMode;
use zeroize::Zeroizing;

use crate::store::StoreError;

/// How tapd connects to PostgreSQL, from `[store]`.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://…` or `postgresql://…`, with libpq's `sslmode` values.
    pub url: String,
    /// Password from `[store] password_file`, used when the URL carries none.
    pub password: Option<Zeroizing<String>>,
    /// PEM CA certificate(s) for `verify-ca` / `verify-full` (and `require`); `None`: the
    /// system trust store.
    pub ca_file: Option<PathBuf>,
    /// Connections this node keeps at most.
    pub pool_size: usize,
    /// `SET statement_timeout` on every connection: the longest one statement may run (or wait
    /// for a lock) before PostgreSQL cancels it.
    pub statement_timeout: Duration,
    /// The longest one connection attempt may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PostgresSettings {
    /// Settings with tapd's defaults around `url` (16 connections, 10 s statements, 5 s
    /// connects, no password file, system CA roots).
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: url.into(),
            password: None,
            ca_file: None,
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Default `[store] pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default `[store] statement_timeout`.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[store] connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// libpq's `sslmode` values that tapd supports (`allow` is not: it prefers plain text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it; the certificate is not checked.
    Prefer,
    /// TLS always; the certificate is checked only when a CA file is configured.
    Require,
    /// TLS always; the certificate must chain to a trusted CA.
    VerifyCa,
    /// TLS always; trusted chain and the URL's host name in the certificate.
    VerifyFull,
}

impl SslMode {
    /// The `sslmode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode={other} is not supported (use disable, prefer, require, verify-ca or verify-full)"
            )),
        }
    }
}

/// A PostgreSQL URL taken apart: the driver's configuration and the TLS mode.
#[derive(Clone)]
pub struct PostgresUrl {
    /// What tokio-postgres connects with (its own `sslmode` already set).
    pub driver: tokio_postgres::Config,
    /// The TLS mode the URL asked for.
    pub ssl_mode: SslMode,
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresUrl")
            .field("hosts", &self.driver.get_hosts())
            .field("dbname", &self.driver.get_dbname())
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// Query parameters the URL may not carry: tapd takes the CA from `[store] ca_file`, and
/// client certificates are not supported.
const REFUSED_PARAMETERS: &[(&str, &str)] = &[
    ("sslrootcert", "set [store] ca_file instead"),
    ("sslcert", "client certificates are not supported"),
    ("sslkey", "client certificates are not supported"),
    ("sslpassword", "client certificates are not supported"),
    ("sslcrl", "not supported"),
];

impl PostgresUrl {
    /// Parses a `postgres://` / `postgresql://` URL. The password is never part of an error.
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let mut ssl_mode = None;
        let mut kept: Vec<&str> = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "sslmode" {
                ssl_mode = Some(SslMode::parse(value)?);
                continue;
            }
            if let Some((_, why)) = REFUSED_PARAMETERS.iter().find(|(name, _)| *name == key) {
                return Err(format!("the URL parameter {key} is not accepted: {why}"));
            }
            kept.push(pair);
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut driver = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| format!("{} is not a valid PostgreSQL URL: {e}", redact(url)))?;
        if driver.get_hosts().is_empty() {
            return Err(format!("{} names no host", redact(url)));
        }
        // Without an sslmode: a server on this machine keeps libpq's `prefer`; any other is
        // reached with `verify-full` (issue 15: a remote `prefer` is open to a downgrade).
        let ssl_mode = ssl_mode.unwrap_or(if hosts_are_local(&driver) {
            SslMode::Prefer
        } else {
            SslMode::VerifyFull
        });
        driver.ssl_mode(match ssl_mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        if driver.get_application_name().is_none() {
            driver.application_name("tapd");
        }
        Ok(PostgresUrl { driver, ssl_mode })
    }

    /// Whether every host of the URL is on this machine (a loopback address, `localhost` or
    /// a Unix socket directory): only then may the connection go without a verified TLS.
    pub fn is_local(&self) -> bool {
        hosts_are_local(&self.driver)
    }

    /// Why this URL's transport is refused, naming the key to change: a server that is not on
    /// this machine must be reached with `sslmode=verify-full` (the default), unless
    /// `[store] allow_insecure_transport = true` accepts a weaker mode. `require` is weaker
    /// too: without `ca_file` it checks no certificate at all, with one it checks no host name.
    pub fn transport_problem(&self, has_ca_file: bool, allow_insecure: bool) -> Option<String> {
        if self.is_local() || allow_insecure || self.ssl_mode == SslMode::VerifyFull {
            return None;
        }
        let what = match (self.ssl_mode, has_ca_file) {
            (SslMode::Disable, _) => "sends passwords and data in clear",
            (SslMode::Prefer, _) => "falls back to clear text and checks no certificate",
            (SslMode::Require, false) => "checks no certificate (require without store.ca_file)",
            (SslMode::Require, true) | (SslMode::VerifyCa, _) => {
                "does not check that the certificate names the server"
            }
            (SslMode::VerifyFull, _) => return None,
        };
        Some(format!(
            "sslmode={} {what} for a server that is not on this machine: use sslmode=verify-full \
             (the default), or set store.allow_insecure_transport = true to accept it",
            self.ssl_mode.as_str()
        ))
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        self.driver.get_password().is_some()
    }
}

/// Whether every host names this machine: `localhost`, a loopback address, or a Unix socket.
fn hosts_are_local(driver: &tokio_postgres::Config) -> bool {
    driver.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        tokio_postgres::config::Host::Unix(_) => true,
    }) && driver.get_hostaddrs().iter().all(|ip| ip.is_loopback())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Builds the pool: connections are opened on demand (none at build time), each gets the
/// session settings below right after it connects, and a connection whose socket closed is
/// dropped when it comes back (`RecyclingMethod::Fast`), so after an outage the pool refills
/// with fresh connections by itself.
pub(crate) fn build_pool(settings: &PostgresSettings) -> Result<Pool, StoreError> {
    let parsed = PostgresUrl::parse(&settings.url).map_err(StoreError::unavailable)?;
    let mut driver = parsed.driver;
    if let (false, Some(password)) = (driver.get_password().is_some(), &settings.password) {
        driver.password(password.as_bytes());
    }
    driver.connect_timeout(settings.connect_timeout);
    driver.keepalives(true);
    driver.keepalives_idle(Duration::from_secs(30));
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
        parsed.ssl_mode,
        settings.ca_file.as_deref(),
    )?);
    let manager = Manager::from_config(
        driver,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let session = session_settings(settings.statement_timeout);
    Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        // Waiting for a free connection, opening one, and checking one coming back are each
        // bounded, so a caller gets `Unavailable` instead of hanging while PostgreSQL is away.
        .wait_timeout(Some(settings.statement_timeout))
        .create_timeout(Some(settings.connect_timeout + Duration::from_secs(1)))
        .recycle_timeout(Some(settings.connect_timeout))
        .post_create(Hook::async_fn(move |client, _| {
            let session = session.clone();
            Box::pin(async move {
                client
                    .batch_execute(&session)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| StoreError::unavailable_from(format!("building the PostgreSQL pool: {e}"), e))
}

/// The `SET`s every new connection runs. `statement_timeout` bounds any statement (lock waits
/// included); `idle_in_transaction_session_timeout` frees the locks of a node that stalls in
/// the middle of a transaction, so the other nodes are not held up by it.
fn session_settings(statement_timeout: Duration) -> String {
    let millis = statement_timeout.as_millis().max(1);
    format!(
        "SET statement_timeout = {millis}; \
         SET idle_in_transaction_session_timeout = {}; \
         SET TIME ZONE 'UTC'",
        millis.saturating_mul(2)
    )
}

/// The rustls configuration for a TLS mode (unused for `disable`).
fn tls_config(mode: SslMode, ca_file: Option<&Path>) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::unavailable_from(format!("TLS setup: {e}"), e))?;
    let verify = match (mode, ca_file) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => Some(false),
        (SslMode::VerifyFull, _) => Some(true),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        None => Arc::new(crate::tls::AcceptAnyCertificate(provider)),
        Some(check_name) => {
            let roots = Arc::new(root_store(ca_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| StoreError::unavailable_from(format!("TLS setup: {e}"), e))?;
            if check_name {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // As libpq 17 does; servers that negotiate TLS directly require it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The CA certificates to trust: the configured file, or the system's.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, StoreError> {
    crate::tls::root_store(ca_file, "PostgreSQL").map_err(StoreError::Unavailable)
}

/// `sslmode=verify-ca`: the chain must verify, the host name is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
