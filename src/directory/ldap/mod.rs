//! A directory on an LDAP server (OpenLDAP, 389 Directory Server, Active Directory), read
//! with paged searches and checked by bind.
//!
//! [`LdapDirectory`] implements [`DirectorySource`]: `read_all` opens one connection, binds as
//! the service account, pages through users and then groups (RFC 2696), and builds the same
//! users and resolved groups the LDIF source does. Anything short of a complete answer (server
//! down, timeout, size limit, a page that fails) is an error, so the sync runner leaves the
//! store untouched. Password checks bind as the user's stored DN on a separate bounded pool
//! ([`bind_pool`]), and count only when the entry bound to still has the user's stable id.
//!
//! `read_all_streamed`, what the syncer's full syncs use, reads the groups first, resolves
//! their nesting ([`super::groups::GroupResolver`]) and then hands the users over page by
//! page, each with its effective groups, so that the store can write them while later pages
//! are still on the wire.
//!
//! Incremental reads: after a full read the directory keeps the raw entries it saw. Where the
//! server offers RFC 4533 content sync (its root DSE lists the Sync Request control; slapd's
//! syncprov overlay, 389-DS's content synchronisation plugin), `read_changes` runs a
//! refreshOnly search for users and one for groups ([`content_sync`],
//! [`connection::Connector::refresh`]): the first one after start has no cookie and returns
//! every entry once, later ones only what changed since their cookie, with deletions listed or
//! implied by the entries listed as present. Deletions then reach the store at once, under the
//! deletion guard. Without content sync, or when it fails (a size limit on the unpaged refresh,
//! a refused control, a malformed answer, an id attribute that is not the sync UUID), the read
//! falls back until the next full read to a watermark: the largest `modifyTimestamp` seen minus
//! the read's duration and a second (OpenLDAP, 389-DS; server time, one-second resolution, so
//! nothing changed during the read is missed), or Active Directory's `highestCommittedUSN` read
//! before the search, kept with the domain controller's `dnsHostName` and `invocationId` (a
//! read from another DC, or from one restored from a backup, is a full read instead); only
//! entries changed since the watermark are asked for. Deletions and
//! entries that stopped matching the filters are not visible that way; the next full read
//! catches them. The margin means that entries stamped within a read's duration of the newest
//! change are read again by every incremental read until something newer changes (harmless:
//! unchanged entries are dropped before the store is touched). Either way the changed entries
//! are merged into the kept ones, memberships are resolved again, and only the users and
//! groups that differ are returned (a changed group can move the effective groups of many
//! users).
//!
//! May depend on: `config` (validated directory settings), `model`, `directory` (trait, groups),
//! `ldap3`, `rustls`.
//!
//! The source is split by what each part reads: [`full_read`] (the paged full reads, plain
//! and streamed), [`snapshot`] (the entries kept between reads and the merge of a changed
//! batch into them), [`incremental`] (the watermark readers by `modifyTimestamp` and by
//! Active Directory's USN, and the dispatch between them and content sync) and [`refresh`]
//! (the RFC 4533 content-sync reader over [`content_sync`]'s protocol). This file holds the
//! settings, the shared state and the [`DirectorySource`] implementation.

pub mod bind_pool;
pub mod connection;
pub mod content_sync;
pub mod entry;
pub mod escape;
mod full_read;
mod incremental;
mod refresh;
pub mod schema;
mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::Ldap;
use tokio::sync::{mpsc, Mutex};

use self::bind_pool::BindPool;
use self::connection::{Connector, TlsOptions};
use self::schema::Schema;
use self::snapshot::Snapshot;
use super::{
    password_is_unusable, DirectoryChanges, DirectoryContents, DirectoryError, DirectorySource,
    PasswordCheck, StreamedContents,
};
use crate::config::{
    DirectoryAttributes, DirectoryConfig, DirectoryPreset, DirectorySource as SourceConfig,
    LdapTransport, Secret,
};
use crate::model::User;

/// Everything the LDAP source needs, taken from the validated configuration.
#[derive(Clone, Debug)]
pub struct LdapSettings {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// How the connection is protected.
    pub transport: LdapTransport,
    /// Service account DN and password; `None` binds anonymously.
    pub bind: Option<(String, Secret)>,
    /// Extra trusted CAs (PEM); `None`: system roots.
    pub ca_file: Option<PathBuf>,
    /// Verify certificate and host name.
    pub tls_verify: bool,
    /// Bound on establishing a connection (TCP, StartTLS, TLS handshake).
    pub connect_timeout: Duration,
    /// Bound on each operation (bind, each search entry and result).
    pub operation_timeout: Duration,
    /// Base DN (also the domain of generated userPrincipalNames).
    pub base_dn: String,
    /// Where users are searched (subtree).
    pub user_base: String,
    /// Where groups are searched (subtree).
    pub group_base: String,
    /// Filter selecting users.
    pub user_filter: String,
    /// Filter selecting groups.
    pub group_filter: String,
    /// Paged-results page size.
    pub page_size: u32,
    /// Connections kept for password-check binds.
    pub bind_pool_size: u32,
    /// Schema preset.
    pub preset: DirectoryPreset,
    /// Attribute names.
    pub attributes: DirectoryAttributes,
}

impl LdapSettings {
    /// The LDAP settings of `config`; `None` when the directory is not an LDAP server.
    pub fn from_config(config: &DirectoryConfig) -> Option<Self> {
        let SourceConfig::Ldap { url, transport } = &config.source else {
            return None;
        };
        Some(LdapSettings {
            url: url.url.clone(),
            transport: *transport,
            bind: config
                .bind
                .as_ref()
                .map(|bind| (bind.dn.clone(), bind.password.clone())),
            ca_file: config.ca_file.clone(),
            tls_verify: config.tls_verify,
            connect_timeout: config.connect_timeout,
            operation_timeout: config.operation_timeout,
            base_dn: config.base_dn.clone(),
            user_base: config.user_base.clone(),
            group_base: config.group_base.clone(),
            user_filter: config.user_filter.clone(),
            group_filter: config.group_filter.clone(),
            page_size: config.page_size,
            bind_pool_size: config.bind_pool_size,
            preset: config.preset,
            attributes: config.attributes.clone(),
        })
    }
}

/// A directory on an LDAP server.
pub struct LdapDirectory {
    inner: Arc<Inner>,
}

/// The directory's state, shared with the thread a full read runs on.
struct Inner {
    settings: LdapSettings,
    connector: Connector,
    schema: Schema,
    pool: BindPool,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
    /// Why content sync was last found unusable, so that the same reason is logged as a
    /// warning once, not at every full sync that tries again.
    content_sync_refusal: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.inner.settings.url)
            .finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// Prepares the source (TLS configuration, pools). Does not connect: an unreachable
    /// server must not stop the daemon from starting; the first sync reports it.
    pub fn new(settings: LdapSettings) -> Result<Self, DirectoryError> {
        Ok(LdapDirectory {
            inner: Arc::new(Inner::new(settings)?),
        })
    }

    /// The password-check pool (tests look at its connection count).
    pub fn bind_pool(&self) -> &BindPool {
        &self.inner.pool
    }
}

impl Inner {
    fn new(settings: LdapSettings) -> Result<Self, DirectoryError> {
        let tls = TlsOptions {
            enabled: settings.transport != LdapTransport::Plain,
            starttls: settings.transport == LdapTransport::StartTls,
            ca_file: settings.ca_file.as_deref(),
            verify: settings.tls_verify,
        };
        let connector = Connector::new(
            &settings.url,
            &tls,
            settings.connect_timeout,
            settings.operation_timeout,
        )?;
        let schema = Schema::new(
            settings.preset,
            settings.attributes.clone(),
            &settings.base_dn,
        );
        let pool = BindPool::new(
            connector.clone(),
            usize::try_from(settings.bind_pool_size).unwrap_or(1),
            schema.clone(),
        );
        Ok(Inner {
            settings,
            connector,
            schema,
            pool,
            snapshot: Arc::new(Mutex::new(None)),
            content_sync_refusal: std::sync::Mutex::new(None),
        })
    }

    /// Opens a connection bound as the service account (or anonymous).
    async fn open(&self) -> Result<Ldap, DirectoryError> {
        let mut ldap = self.connector.connect().await?;
        if let Some((dn, password)) = &self.settings.bind {
            self.connector
                .service_bind(&mut ldap, dn, password.expose())
                .await?;
        }
        Ok(ldap)
    }
}

#[async_trait]
impl DirectorySource for LdapDirectory {
    async fn read_all(&self) -> Result<DirectoryContents, DirectoryError> {
        self.full_read().await
    }

    async fn read_all_streamed(
        &self,
        users: mpsc::Sender<Vec<User>>,
    ) -> Result<StreamedContents, DirectoryError> {
        self.full_read_streamed(users).await
    }

    async fn read_changes(&self) -> Result<Option<DirectoryChanges>, DirectoryError> {
        self.inner.incremental_read().await
    }

    async fn group_nesting(&self) -> Option<super::groups::GroupNesting> {
        let snapshot = self.inner.snapshot.lock().await;
        let groups = &snapshot.as_ref()?.groups;
        Some(super::groups::GroupNesting::of(
            groups.values().map(|g| &g.raw),
        ))
    }

    async fn check_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<PasswordCheck, DirectoryError> {
        // Refused before any bind: an empty password is an "unauthenticated bind" that many
        // servers accept (RFC 4513 §5.1.2), and a disabled or DN-less account has no business
        // reaching the server.
        if password_is_unusable(password) || !user.account_enabled || user.dn.trim().is_empty() {
            return Ok(PasswordCheck::Invalid);
        }
        self.inner.pool.check(&user.dn, &user.id, password).await
    }

    fn describe(&self) -> String {
        let settings = &self.inner.settings;
        let transport = match settings.transport {
            LdapTransport::Ldaps => "LDAPS",
            LdapTransport::StartTls => "StartTLS",
            LdapTransport::Plain => "plain loopback",
        };
        format!(
            "LDAP directory {} ({transport}, {} preset, base {})",
            settings.url,
            settings.preset.as_str(),
            settings.base_dn
        )
    }
}
