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
//! their nesting ([`GroupResolver`]) and then hands the users over page by page, each with its
//! effective groups, so that the store can write them while later pages are still on the wire.
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

pub mod bind_pool;
pub mod connection;
pub mod content_sync;
pub mod entry;
pub mod escape;
pub mod schema;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDateTime;
use ldap3::Ldap;
use tokio::sync::{mpsc, Mutex};

use self::bind_pool::BindPool;
use self::connection::{Connector, RefreshError, TlsOptions};
use self::entry::LdapEntry;
use self::schema::{ChangeMarker, GroupRecord, Schema};
use super::groups::{resolve, GroupResolver, RawGroup, RawUser, Resolved};
use super::{
    password_is_unusable, DirectoryChanges, DirectoryContents, DirectoryError, DirectorySource,
    PasswordCheck, SkippedUser, StreamedContents,
};
use crate::config::{
    DirectoryAttributes, DirectoryConfig, DirectoryPreset, DirectorySource as SourceConfig,
    LdapTransport, Secret,
};
use crate::model::{Group, User};

/// GeneralizedTime as written in filters and by OpenLDAP / 389-DS.
const GENERALIZED_TIME: &str = "%Y%m%d%H%M%SZ";

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

/// What the last reads returned, kept for incremental reads.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    /// Users by id, without memberships.
    users: HashMap<String, User>,
    /// Groups by id.
    groups: HashMap<String, GroupRecord>,
    /// Entries changed at or after this point have not been seen yet.
    watermark: Option<Watermark>,
    /// Whether incremental reads use RFC 4533 content sync, and where they resume.
    content_sync: ContentSync,
}

/// Whether incremental reads use RFC 4533 content sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum ContentSync {
    /// Not known yet: the next incremental read asks the root DSE.
    #[default]
    Untried,
    /// The server offers it; where each search resumes.
    Offered(Cookies),
    /// Not offered, or it failed; timestamps until the next full read tries again.
    Unusable,
}

impl ContentSync {
    /// What a full read leaves: cookies stay valid (a refresh from an older cookie only repeats
    /// changes the full read already saw), and a failure is tried again.
    fn after_full_read(previous: Option<&Snapshot>) -> ContentSync {
        match previous.map(|snapshot| &snapshot.content_sync) {
            Some(ContentSync::Offered(cookies)) => ContentSync::Offered(cookies.clone()),
            _ => ContentSync::Untried,
        }
    }
}

/// The content-sync cookies of the user and the group search; `None` before the first refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cookies {
    users: Option<Vec<u8>>,
    groups: Option<Vec<u8>>,
}

/// One of the two configured searches.
#[derive(Clone, Copy, Debug)]
enum Search {
    Users,
    Groups,
}

/// Ids of users and groups an incremental read found deleted (or no longer matching).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Removed {
    users: Vec<String>,
    groups: Vec<String>,
}

/// Where the next incremental read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Watermark {
    /// `modifyTimestamp >= this` (server time).
    Timestamp(NaiveDateTime),
    /// `uSNChanged >` this position's USN, on the same domain controller.
    Usn(UsnPosition),
}

/// Active Directory's `highestCommittedUSN` and the domain controller it was read from. USNs
/// are counted per domain controller and per restore of its database, so an incremental read
/// is only valid on the same one (Microsoft's "Polling for Changes Using the USNChanged
/// Attribute": the DC's DNS name and `invocationId` are kept with the USN, and a change of
/// either means a full sync).
#[derive(Clone, Debug, PartialEq, Eq)]
struct UsnPosition {
    usn: u64,
    /// The DC's `dnsHostName`.
    host: String,
    /// The `invocationId` of the DC's NTDS Settings object (`dsServiceName`).
    invocation_id: Vec<u8>,
}

impl UsnPosition {
    /// Whether an incremental read from `self` is valid where `now` was read.
    fn same_database(&self, now: &UsnPosition) -> bool {
        self.host.eq_ignore_ascii_case(&now.host) && self.invocation_id == now.invocation_id
    }
}

/// Entries read by one pass (full or incremental), before they are merged.
#[derive(Default)]
struct Batch {
    users: Vec<User>,
    groups: Vec<GroupRecord>,
    newest_timestamp: Option<NaiveDateTime>,
    /// User entries that could not be decoded.
    skipped_users: Vec<SkippedUser>,
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

    /// A full read. The searches run on a thread of their own with a single-threaded
    /// runtime: the connection's decoding task and the conversion into users and groups then
    /// share one thread instead of handing every entry across threads, which cost a quarter of
    /// the read's CPU in the 100,000-user benchmark. Resolving memberships happens back on the
    /// caller's thread, so its large temporary allocations are reused by the rest of the sync
    /// (done on the reader thread, they raised the peak RSS by 90 MB). Every wait is bounded by
    /// the connect and operation timeouts.
    async fn full_read(&self) -> Result<DirectoryContents, DirectoryError> {
        let inner = self.inner.clone();
        let (batch, watermark) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    DirectoryError::Unavailable(format!("cannot start the directory reader: {e}"))
                })?;
            runtime.block_on(inner.full_batch())
        })
        .await
        .map_err(|e| DirectoryError::Unavailable(format!("the directory reader failed: {e}")))??;
        Ok(self.inner.install(batch, watermark).await)
    }
}

impl LdapDirectory {
    /// A full read that hands users to `out` page by page ([`Inner::streamed_batch`]), on the
    /// same kind of reader thread as [`LdapDirectory::full_read`]. The snapshot for incremental
    /// reads is replaced only when the read succeeded.
    async fn full_read_streamed(
        &self,
        out: mpsc::Sender<Vec<User>>,
    ) -> Result<StreamedContents, DirectoryError> {
        let inner = self.inner.clone();
        let (batch, watermark, exact) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    DirectoryError::Unavailable(format!("cannot start the directory reader: {e}"))
                })?;
            runtime.block_on(inner.streamed_batch(&out))
        })
        .await
        .map_err(|e| DirectoryError::Unavailable(format!("the directory reader failed: {e}")))??;
        let skipped_users = batch.skipped_users.clone();
        let streamed = if exact {
            // No member lists: the planner compares a group's own attributes, and the store
            // derives its members from the users' group ids.
            StreamedContents {
                groups: batch
                    .groups
                    .iter()
                    .map(|record| group_of(record, Vec::new()))
                    .collect(),
                replanned_users: None,
                skipped_users,
            }
        } else {
            // A later entry changed what an earlier one meant: resolve it all again, and
            // have every user planned again with its final memberships.
            log::info!(
                "{}: a user entry is also a group, or a memberUid names several users; \
                 memberships resolved again after the read",
                self.inner.settings.url
            );
            let contents = snapshot_of(batch.users.clone(), batch.groups.clone(), None).contents();
            StreamedContents {
                groups: contents.groups,
                replanned_users: Some(contents.users),
                skipped_users,
            }
        };
        // Indexing 100,000 entries for the next incremental read is off the sync's critical
        // path: the lock is taken now, so an incremental read waits for the new snapshot.
        let mut snapshot = self.inner.snapshot.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let content_sync = ContentSync::after_full_read(snapshot.as_ref());
            *snapshot = Some(Snapshot {
                content_sync,
                ..snapshot_of(batch.users, batch.groups, watermark)
            });
        });
        Ok(streamed)
    }
}

/// A snapshot holding `users` and `groups` by id.
fn snapshot_of(
    users: Vec<User>,
    groups: Vec<GroupRecord>,
    watermark: Option<Watermark>,
) -> Snapshot {
    Snapshot {
        users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
        groups: groups.into_iter().map(|g| (g.raw.id.clone(), g)).collect(),
        watermark,
        content_sync: ContentSync::Untried,
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

    /// Reads users and groups matching the configured filters, each further restricted by
    /// `changed_since` (an extra filter term) when given. Users first, then groups: running the
    /// two searches at once on two connections was measured four times slower against slapd.
    async fn read_batch(
        &self,
        ldap: &mut Ldap,
        changed_since: Option<&str>,
    ) -> Result<Batch, DirectoryError> {
        let restrict = |filter: &str| match changed_since {
            Some(term) => format!("(&{filter}{term})"),
            None => filter.to_owned(),
        };
        let user_filter = restrict(&self.settings.user_filter);
        let group_filter = restrict(&self.settings.group_filter);
        let mut users = Vec::new();
        let mut skipped_users = Vec::new();
        let mut users_newest = None;
        self.connector
            .paged_search(
                ldap,
                &self.settings.user_base,
                &user_filter,
                &self.schema.user_attributes,
                self.settings.page_size,
                |entry| {
                    self.newest_of(&entry, &mut users_newest);
                    match self.decode_user(&entry) {
                        Ok(Some(user)) => users.push(user),
                        Ok(None) => {}
                        Err(skipped) => skipped_users.push(skipped),
                    }
                    Ok(())
                },
            )
            .await?;
        let (groups, groups_newest) = self.read_groups(ldap, &group_filter).await?;
        check_unique_ids(&users, &groups)?;
        Ok(Batch {
            users,
            groups,
            newest_timestamp: users_newest.max(groups_newest),
            skipped_users,
        })
    }

    /// A user entry as a [`User`]; `Ok(None)` for an entry without a username (not a user
    /// tapd can sign in, as before), `Err` for one that can't be decoded, warned about with
    /// its DN.
    fn decode_user(&self, entry: &LdapEntry) -> Result<Option<User>, SkippedUser> {
        self.schema.user(entry).map_err(|reason| {
            log::warn!("directory user entry {} skipped: {reason}", entry.dn);
            SkippedUser {
                dn: entry.dn.clone(),
                id: self.schema.user_id(entry).ok(),
                reason,
            }
        })
    }

    /// Keeps in `newest` the latest `modifyTimestamp` seen (OpenLDAP, 389-DS).
    fn newest_of(&self, entry: &LdapEntry, newest: &mut Option<NaiveDateTime>) {
        let marker = self.schema.change_marker;
        if marker == ChangeMarker::ModifyTimestamp {
            if let Some(time) = entry
                .first_text(marker.attribute())
                .ok()
                .flatten()
                .and_then(|text| parse_generalized_time(&text))
            {
                *newest = Some(newest.map_or(time, |n| n.max(time)));
            }
        }
    }

    /// Reads the groups matching `filter`, with every chunk of an Active Directory ranged
    /// member attribute, and the newest `modifyTimestamp` among them.
    async fn read_groups(
        &self,
        ldap: &mut Ldap,
        filter: &str,
    ) -> Result<(Vec<GroupRecord>, Option<NaiveDateTime>), DirectoryError> {
        let member = self.schema.member_attribute().to_ascii_lowercase();
        let mut groups: Vec<GroupRecord> = Vec::new();
        let mut ranged: Vec<(usize, u64)> = Vec::new();
        let mut newest = None;
        self.connector
            .paged_search(
                ldap,
                &self.settings.group_base,
                filter,
                &self.schema.group_attributes,
                self.settings.page_size,
                |entry| {
                    self.newest_of(&entry, &mut newest);
                    let mut group = self.schema.group(&entry).map_err(DirectoryError::Invalid)?;
                    if let Some(next) = take_ranged_values(&entry, &member, &mut group)? {
                        ranged.push((groups.len(), next));
                    }
                    groups.push(group);
                    Ok(())
                },
            )
            .await?;
        for (index, start) in ranged {
            if let Some(group) = groups.get_mut(index) {
                self.fetch_remaining_members(ldap, group, &member, start)
                    .await?;
            }
        }
        Ok((groups, newest))
    }

    /// The searches of a full read whose users are handed to `out` page by page, each with its
    /// effective groups: groups first (there are far fewer), their nesting resolved, then the
    /// users ([`GroupResolver`]). Returns the batch for the snapshot, and each group's
    /// transitive members (index-aligned with the batch's groups) when the early resolution
    /// proved exact.
    async fn streamed_batch(
        &self,
        out: &mpsc::Sender<Vec<User>>,
    ) -> Result<(Batch, Option<Watermark>, bool), DirectoryError> {
        let started = Instant::now();
        let mut ldap = self.open().await?;
        let result = async {
            let usn = match self.schema.change_marker {
                ChangeMarker::UsnChanged => Some(self.usn_position(&mut ldap).await?),
                ChangeMarker::ModifyTimestamp => None,
            };
            let (groups, groups_newest) = self
                .read_groups(&mut ldap, &self.settings.group_filter)
                .await?;
            let mut resolver = GroupResolver::new(groups.iter().map(|g| &g.raw));
            let mut users: Vec<User> = Vec::new();
            let mut skipped_users = Vec::new();
            let mut users_newest = None;
            let mut cookie = Vec::new();
            let mut page = 0;
            loop {
                page += 1;
                let mut resolved: Vec<User> =
                    Vec::with_capacity(usize::try_from(self.settings.page_size).unwrap_or(0));
                cookie = self
                    .connector
                    .search_page(
                        &mut ldap,
                        &self.settings.user_base,
                        &self.settings.user_filter,
                        &self.schema.user_attributes,
                        self.settings.page_size,
                        (cookie, page),
                        |entry| {
                            self.newest_of(&entry, &mut users_newest);
                            match self.decode_user(&entry) {
                                Ok(Some(user)) => {
                                    let group_ids =
                                        resolver.user_group_ids(&user.dn, &user.username);
                                    resolved.push(User {
                                        group_ids,
                                        ..user.clone()
                                    });
                                    users.push(user);
                                }
                                Ok(None) => {}
                                Err(skipped) => skipped_users.push(skipped),
                            }
                            Ok(())
                        },
                    )
                    .await?;
                if !resolved.is_empty() && out.send(resolved).await.is_err() {
                    return Err(DirectoryError::Unavailable(
                        "the sync stopped taking users".to_owned(),
                    ));
                }
                if cookie.is_empty() {
                    break;
                }
            }
            check_unique_ids(&users, &groups)?;
            let exact = resolver.is_exact();
            let batch = Batch {
                users,
                groups,
                newest_timestamp: users_newest.max(groups_newest),
                skipped_users,
            };
            Ok::<_, DirectoryError>((usn, batch, exact))
        }
        .await;
        let _ = ldap.unbind().await;
        let (usn, batch, exact) = result?;
        let watermark = next_watermark(usn, None, batch.newest_timestamp, started.elapsed());
        Ok((batch, watermark, exact))
    }

    /// Active Directory returns at most 1,500 (MaxValRange) values of a multi-valued attribute
    /// per entry as `member;range=0-1499`; the rest is read chunk by chunk.
    async fn fetch_remaining_members(
        &self,
        ldap: &mut Ldap,
        group: &mut GroupRecord,
        member: &str,
        mut start: u64,
    ) -> Result<(), DirectoryError> {
        // Bounded: each round must advance, and no group has more than this many chunks.
        for _ in 0..100_000 {
            let request = vec![format!("{member};range={start}-*")];
            let Some(entry) = self
                .connector
                .read_entry(ldap, &group.raw.dn, &request)
                .await?
            else {
                return Err(DirectoryError::Incomplete(format!(
                    "group {} disappeared while its members were read",
                    group.raw.dn
                )));
            };
            match take_ranged_values(&entry, member, group)? {
                Some(next) if next > start => start = next,
                Some(_) => {
                    return Err(DirectoryError::Incomplete(format!(
                        "{} returned no progress reading the members of {}",
                        self.settings.url, group.raw.dn
                    )))
                }
                None => return Ok(()),
            }
        }
        Err(DirectoryError::Incomplete(format!(
            "too many member ranges in {}",
            group.raw.dn
        )))
    }

    /// Active Directory's `highestCommittedUSN` from the root DSE, with the domain controller
    /// that answered: its `dnsHostName`, and the `invocationId` of its `dsServiceName` entry.
    async fn usn_position(&self, ldap: &mut Ldap) -> Result<UsnPosition, DirectoryError> {
        let url = &self.settings.url;
        let missing = |what: &str| {
            DirectoryError::Invalid(format!(
                "{url} has no {what} in its root DSE (is it Active Directory?)"
            ))
        };
        let names = ["highestCommittedUSN", "dnsHostName", "dsServiceName"].map(str::to_owned);
        let root = self
            .connector
            .read_entry(ldap, "", &names)
            .await?
            .ok_or_else(|| missing("highestCommittedUSN"))?;
        let text = |name: &str| root.first_text(name).ok().flatten();
        let usn = text("highestCommittedUSN")
            .and_then(|usn| usn.trim().parse().ok())
            .ok_or_else(|| missing("highestCommittedUSN"))?;
        let host = text("dnsHostName").ok_or_else(|| missing("dnsHostName"))?;
        let service = text("dsServiceName").ok_or_else(|| missing("dsServiceName"))?;
        let invocation_id = self
            .connector
            .read_entry(ldap, &service, &["invocationId".to_owned()])
            .await?
            .and_then(|entry| entry.values("invocationId").next().map(<[u8]>::to_vec))
            .ok_or_else(|| {
                DirectoryError::Invalid(format!(
                    "{url}: the domain controller's {service} has no invocationId"
                ))
            })?;
        Ok(UsnPosition {
            usn,
            host,
            invocation_id,
        })
    }

    /// The searches of a full read: every user and group, and where the next incremental
    /// read starts.
    async fn full_batch(&self) -> Result<(Batch, Option<Watermark>), DirectoryError> {
        let started = Instant::now();
        let mut ldap = self.open().await?;
        let result = async {
            let usn = match self.schema.change_marker {
                ChangeMarker::UsnChanged => Some(self.usn_position(&mut ldap).await?),
                ChangeMarker::ModifyTimestamp => None,
            };
            let batch = self.read_batch(&mut ldap, None).await?;
            Ok::<_, DirectoryError>((usn, batch))
        }
        .await;
        let _ = ldap.unbind().await;
        let (usn, batch) = result?;
        let watermark = next_watermark(usn, None, batch.newest_timestamp, started.elapsed());
        Ok((batch, watermark))
    }

    /// Replaces the snapshot with a full read's entries and returns them resolved.
    async fn install(&self, batch: Batch, watermark: Option<Watermark>) -> DirectoryContents {
        let mut snapshot = snapshot_of(batch.users, batch.groups, watermark);
        let contents = snapshot.contents();
        let mut current = self.snapshot.lock().await;
        snapshot.content_sync = ContentSync::after_full_read(current.as_ref());
        *current = Some(snapshot);
        contents
    }

    /// An incremental read: by RFC 4533 content sync where the server offers it
    /// ([`Inner::refresh_read`]), else by `modifyTimestamp` / `uSNChanged`
    /// ([`Inner::timestamp_read`]). `None` without a snapshot, or without a watermark when
    /// content sync can't be used.
    async fn incremental_read(&self) -> Result<Option<DirectoryChanges>, DirectoryError> {
        let mut guard = self.snapshot.lock().await;
        let Some(snapshot) = guard.as_mut() else {
            return Ok(None);
        };
        let (batch, removed) = match self.refresh_read(snapshot).await? {
            Some(refreshed) => refreshed,
            None => match self.timestamp_read(snapshot).await? {
                Some(batch) => (batch, Removed::default()),
                None => return Ok(None),
            },
        };
        let skipped_users = batch.skipped_users.clone();
        let mut changes = snapshot.merge(batch, removed);
        changes.skipped_users = skipped_users;
        log::debug!(
            "incremental read of {}: {} users and {} groups changed, {} users and {} groups gone",
            self.settings.url,
            changes.users.len(),
            changes.groups.len(),
            changes.deleted_user_ids.len(),
            changes.deleted_group_ids.len()
        );
        Ok(Some(changes))
    }

    /// Reads the entries changed since the snapshot's watermark, and moves the watermark on.
    /// `None` without a watermark, or when Active Directory's USNs can't be compared with it
    /// (another domain controller answered, or the same one restored from a backup): a full
    /// read is due.
    async fn timestamp_read(
        &self,
        snapshot: &mut Snapshot,
    ) -> Result<Option<Batch>, DirectoryError> {
        let Some(watermark) = snapshot.watermark.clone() else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut ldap = self.open().await?;
        let result = async {
            let (term, position) = match &watermark {
                Watermark::Timestamp(since) => (
                    format!(
                        "(modifyTimestamp>={})",
                        escape::escape_filter_value(&since.format(GENERALIZED_TIME).to_string())
                    ),
                    None,
                ),
                Watermark::Usn(last) => {
                    let now = self.usn_position(&mut ldap).await?;
                    if !last.same_database(&now) {
                        log::info!(
                            "{}: the last read was on domain controller {} (invocationId {}), \
                             this one is {} (invocationId {}); its USNs can't be compared, so a \
                             full sync runs instead",
                            self.settings.url,
                            last.host,
                            hex(&last.invocation_id),
                            now.host,
                            hex(&now.invocation_id)
                        );
                        return Ok(None);
                    }
                    (
                        format!("(uSNChanged>={})", last.usn.saturating_add(1)),
                        Some(now),
                    )
                }
            };
            let batch = self.read_batch(&mut ldap, Some(&term)).await?;
            Ok::<_, DirectoryError>(Some((position, batch)))
        }
        .await;
        let _ = ldap.unbind().await;
        let Some((position, batch)) = result? else {
            return Ok(None);
        };
        snapshot.watermark = next_watermark(
            position,
            Some(&watermark),
            batch.newest_timestamp,
            started.elapsed(),
        );
        Ok(Some(batch))
    }

    /// Reads what changed by RFC 4533 content sync (refreshOnly), when the server offers it:
    /// the changed entries and the ids of entries that are gone. `None` when it is not offered
    /// or can't be used now; the caller then reads by timestamp, and the next full read tries
    /// content sync again.
    ///
    /// The first refresh after tapd starts has no cookie, so the server sends every entry once
    /// (and the service account needs a size limit that allows it); later ones send only what
    /// changed since the cookie, and deletions either listed (a delete phase, from slapd's
    /// session log) or implied by the entries listed as present (a present phase).
    async fn refresh_read(
        &self,
        snapshot: &mut Snapshot,
    ) -> Result<Option<(Batch, Removed)>, DirectoryError> {
        // Active Directory has DirSync instead, which tapd does not use.
        if self.schema.change_marker == ChangeMarker::UsnChanged {
            return Ok(None);
        }
        let url = &self.settings.url;
        let marker = self.schema.change_marker.attribute();
        let cookies = match &snapshot.content_sync {
            ContentSync::Unusable => return Ok(None),
            ContentSync::Offered(cookies) => cookies.clone(),
            ContentSync::Untried => {
                if !self.offers_content_sync().await? {
                    log::info!(
                        "{url} does not offer RFC 4533 content sync; incremental syncs read {marker}"
                    );
                    snapshot.content_sync = ContentSync::Unusable;
                    return Ok(None);
                }
                Cookies::default()
            }
        };
        let started = Instant::now();
        let mut attempt = self.refresh_all(&cookies, snapshot).await;
        if matches!(attempt, Err(RefreshError::CookieRejected)) && cookies != Cookies::default() {
            log::info!("{url} can no longer refresh from tapd's content sync cookie; reading every entry once");
            attempt = self.refresh_all(&Cookies::default(), snapshot).await;
        }
        match attempt {
            Ok((batch, removed, cookies)) => {
                snapshot.content_sync = ContentSync::Offered(cookies);
                // Kept moving, for when content sync stops being usable.
                snapshot.watermark = next_watermark(
                    None,
                    snapshot.watermark.as_ref(),
                    batch.newest_timestamp,
                    started.elapsed(),
                );
                Ok(Some((batch, removed)))
            }
            Err(RefreshError::Directory(e)) => Err(e),
            Err(RefreshError::CookieRejected) => {
                self.refuse_content_sync(snapshot, "a refresh without a cookie was rejected");
                Ok(None)
            }
            Err(RefreshError::Unusable(reason)) => {
                self.refuse_content_sync(snapshot, &reason);
                Ok(None)
            }
        }
    }

    /// Falls back to timestamps until the next full read, saying why: as a warning the first
    /// time a reason comes up, then at info level (every full sync tries again).
    fn refuse_content_sync(&self, snapshot: &mut Snapshot, reason: &str) {
        snapshot.content_sync = ContentSync::Unusable;
        let url = &self.settings.url;
        let marker = self.schema.change_marker.attribute();
        let message = format!(
            "RFC 4533 content sync with {url} can't be used ({reason}); incremental syncs read \
             {marker} until the next full sync tries again. A size limit means the service \
             account must be allowed to read every user or group in one search (OpenLDAP: \
             limits dn.exact=\"<bind_dn>\" size=unlimited)"
        );
        let mut last = self
            .content_sync_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.as_deref() == Some(reason) {
            log::info!("{message}");
        } else {
            log::warn!("{message}");
            *last = Some(reason.to_owned());
        }
    }

    /// Whether the root DSE lists the Sync Request control.
    async fn offers_content_sync(&self) -> Result<bool, DirectoryError> {
        let mut ldap = self.open().await?;
        let root = self
            .connector
            .read_entry(&mut ldap, "", &["supportedControl".to_owned()])
            .await;
        let _ = ldap.unbind().await;
        Ok(root?.is_some_and(|root| {
            root.values("supportedControl")
                .any(|oid| oid == content_sync::SYNC_REQUEST_OID.as_bytes())
        }))
    }

    /// Refreshes the users and then the groups from `cookies`, on a connection of its own (a
    /// refresh abandoned half-way leaves its messages on it): the changed entries, the ids in
    /// `snapshot` that are gone, and the cookies to continue from.
    async fn refresh_all(
        &self,
        cookies: &Cookies,
        snapshot: &Snapshot,
    ) -> Result<(Batch, Removed, Cookies), RefreshError> {
        let mut ldap = self.open().await.map_err(RefreshError::Directory)?;
        let result = self.refresh_on(&mut ldap, cookies, snapshot).await;
        let _ = ldap.unbind().await;
        result
    }

    async fn refresh_on(
        &self,
        ldap: &mut Ldap,
        cookies: &Cookies,
        snapshot: &Snapshot,
    ) -> Result<(Batch, Removed, Cookies), RefreshError> {
        let invalid = |e: String| RefreshError::Directory(DirectoryError::Invalid(e));
        let mut users = Vec::new();
        let mut skipped_users = HashSet::new();
        let mut undecoded = Vec::new();
        let mut users_newest = None;
        let user_refresh = self
            .refresh_search(ldap, Search::Users, cookies.users.clone(), |entry, uuid| {
                self.newest_of(&entry, &mut users_newest);
                let known_id = || {
                    snapshot
                        .users
                        .keys()
                        .find(|id| content_sync::uuid_of_id(id) == Some(uuid))
                        .cloned()
                };
                match self.decode_user(&entry) {
                    Ok(Some(user)) => {
                        self.check_sync_uuid(&user.id, &entry.dn, uuid)?;
                        users.push(user);
                    }
                    // No longer a usable user: gone, as a full read would find.
                    Ok(None) => {
                        skipped_users.insert(uuid);
                    }
                    // Listed as present, so not gone: its snapshot entry and store row stay.
                    Err(mut skipped) => {
                        if skipped.id.is_none() {
                            skipped.id = known_id();
                        }
                        undecoded.push(skipped);
                    }
                }
                Ok(())
            })
            .await?;
        let mut groups = Vec::new();
        let mut groups_newest = None;
        let group_refresh = self
            .refresh_search(
                ldap,
                Search::Groups,
                cookies.groups.clone(),
                |entry, uuid| {
                    self.newest_of(&entry, &mut groups_newest);
                    let group = self.schema.group(&entry).map_err(invalid)?;
                    self.check_sync_uuid(&group.raw.id, &entry.dn, uuid)?;
                    groups.push(group);
                    Ok(())
                },
            )
            .await?;
        check_unique_ids(&users, &groups).map_err(RefreshError::Directory)?;
        let gone = |id: &String, refresh: &content_sync::Refresh, skipped: &HashSet<_>| {
            content_sync::uuid_of_id(id)
                .is_some_and(|uuid| refresh.removes(&uuid) || skipped.contains(&uuid))
        };
        let removed = Removed {
            users: snapshot
                .users
                .keys()
                .filter(|id| gone(id, &user_refresh, &skipped_users))
                .cloned()
                .collect(),
            groups: snapshot
                .groups
                .keys()
                .filter(|id| gone(id, &group_refresh, &HashSet::new()))
                .cloned()
                .collect(),
        };
        let cookies = Cookies {
            users: user_refresh.cookie.or_else(|| cookies.users.clone()),
            groups: group_refresh.cookie.or_else(|| cookies.groups.clone()),
        };
        Ok((
            Batch {
                users,
                groups,
                newest_timestamp: users_newest.max(groups_newest),
                skipped_users: undecoded,
            },
            removed,
            cookies,
        ))
    }

    /// [`Connector::refresh`] of the configured user or group search.
    async fn refresh_search(
        &self,
        ldap: &mut Ldap,
        search: Search,
        cookie: Option<Vec<u8>>,
        on_entry: impl FnMut(LdapEntry, content_sync::SyncUuid) -> Result<(), RefreshError>,
    ) -> Result<content_sync::Refresh, RefreshError> {
        let (base, filter, attributes) = match search {
            Search::Users => (
                &self.settings.user_base,
                &self.settings.user_filter,
                &self.schema.user_attributes,
            ),
            Search::Groups => (
                &self.settings.group_base,
                &self.settings.group_filter,
                &self.schema.group_attributes,
            ),
        };
        self.connector
            .refresh(ldap, base, filter, attributes, cookie, on_entry)
            .await
    }

    /// Refuses content sync when the entry's id is not the sync UUID the server names it by:
    /// deletions would then be matched to the wrong ids.
    fn check_sync_uuid(
        &self,
        id: &str,
        dn: &str,
        uuid: content_sync::SyncUuid,
    ) -> Result<(), RefreshError> {
        if content_sync::uuid_of_id(id) == Some(uuid) {
            return Ok(());
        }
        Err(RefreshError::Unusable(format!(
            "{dn}: its id {id} is not the sync UUID the server sends; content sync needs the \
             id attribute to be entryUUID (OpenLDAP) or nsUniqueId (389-DS)"
        )))
    }
}

/// Where the next incremental read starts after a read that took `elapsed`: Active
/// Directory's USN `position` read before it, else the newest `modifyTimestamp` it saw backed
/// off by [`safe_timestamp`] but never earlier than a `previous` timestamp watermark; else
/// `previous` as it was.
fn next_watermark(
    position: Option<UsnPosition>,
    previous: Option<&Watermark>,
    newest: Option<NaiveDateTime>,
    elapsed: Duration,
) -> Option<Watermark> {
    if let Some(position) = position {
        return Some(Watermark::Usn(position));
    }
    let Some(newest) = newest else {
        return previous.cloned();
    };
    let candidate = safe_timestamp(newest, elapsed);
    Some(Watermark::Timestamp(match previous {
        Some(Watermark::Timestamp(old)) => (*old).max(candidate),
        _ => candidate,
    }))
}

/// Refuses a read in which two entries (users or groups) share a stable id.
fn check_unique_ids(users: &[User], groups: &[GroupRecord]) -> Result<(), DirectoryError> {
    let mut ids: HashMap<&str, &str> = HashMap::with_capacity(users.len() + groups.len());
    let entries = users.iter().map(|u| (u.id.as_str(), u.dn.as_str())).chain(
        groups
            .iter()
            .map(|g| (g.raw.id.as_str(), g.raw.dn.as_str())),
    );
    for (id, dn) in entries {
        if let Some(other) = ids.insert(id, dn) {
            return Err(DirectoryError::Invalid(format!(
                "{dn} has the same id {id} as {other}"
            )));
        }
    }
    Ok(())
}

/// Moves the values of a ranged member attribute (`member;range=0-1499`) into `group` and
/// returns where the next chunk starts, `None` when there is no more.
fn take_ranged_values(
    entry: &LdapEntry,
    member: &str,
    group: &mut GroupRecord,
) -> Result<Option<u64>, DirectoryError> {
    let mut next = None;
    for attribute in &entry.attributes {
        if attribute.name != member {
            continue;
        }
        let Some((_, high)) = attribute.range() else {
            continue;
        };
        for value in &attribute.values {
            let text = std::str::from_utf8(value).map_err(|_| {
                DirectoryError::Invalid(format!("{}: a {member} value is not UTF-8", entry.dn))
            })?;
            group.raw.member_dns.push(text.to_owned());
        }
        next = high.map(|high| high.saturating_add(1));
    }
    Ok(next)
}

/// Octets as lower-case hex, for messages.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A watermark no later than the server's time when a read that took `elapsed` started, given
/// the newest `modifyTimestamp` it saw (one-second resolution, so one more second off).
fn safe_timestamp(newest: NaiveDateTime, elapsed: Duration) -> NaiveDateTime {
    let margin = chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
        + chrono::Duration::seconds(1);
    newest - margin
}

/// Parses GeneralizedTime as directories write `modifyTimestamp`: `20240102030405Z`,
/// optionally with fractional seconds (`20240102030405.0Z`, Active Directory).
fn parse_generalized_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim().strip_suffix('Z')?;
    let whole = text.split(['.', ',']).next()?;
    // By hand rather than with a chrono format string: a full sync reads one timestamp per
    // entry, and the general-purpose parser cost as much as decoding the rest of the entry.
    let digits: [u8; 14] = whole.as_bytes().try_into().ok()?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |from: usize, to: usize| {
        digits
            .iter()
            .take(to)
            .skip(from)
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)).ok()?,
        number(4, 6),
        number(6, 8),
    )?
    .and_hms_opt(number(8, 10), number(10, 12), number(12, 14))
}

impl Snapshot {
    /// Users sorted by id, and their memberships resolved.
    fn resolve(&self) -> (Vec<&User>, Vec<&GroupRecord>, Resolved) {
        let mut users: Vec<&User> = self.users.values().collect();
        users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut records: Vec<&GroupRecord> = self.groups.values().collect();
        records.sort_unstable_by(|a, b| a.raw.id.cmp(&b.raw.id));
        let raw_users: Vec<RawUser> = users
            .iter()
            .map(|u| RawUser {
                dn: u.dn.clone(),
                id: u.id.clone(),
                username: u.username.clone(),
            })
            .collect();
        let raw_groups: Vec<RawGroup> = records.iter().map(|g| g.raw.clone()).collect();
        let resolved = resolve(&raw_users, &raw_groups);
        (users, records, resolved)
    }

    /// Users and groups with memberships resolved, sorted by id.
    fn contents(&self) -> DirectoryContents {
        let (users, records, resolved) = self.resolve();
        let users = users
            .into_iter()
            .zip(resolved.user_group_ids)
            .map(|(user, group_ids)| User {
                group_ids,
                ..user.clone()
            })
            .collect();
        let groups = records
            .into_iter()
            .zip(resolved.group_member_user_ids)
            .map(|(record, member_user_ids)| group_of(record, member_user_ids))
            .collect();
        DirectoryContents { users, groups }
    }

    /// Merges an incremental batch and the ids found gone, and returns what differs from
    /// before: changed, new or gone entries, and entries whose resolved memberships moved
    /// because of them.
    fn merge(&mut self, batch: Batch, removed: Removed) -> DirectoryChanges {
        let removed_users: Vec<String> = removed
            .users
            .into_iter()
            .filter(|id| self.users.contains_key(id))
            .collect();
        let removed_groups: Vec<String> = removed
            .groups
            .into_iter()
            .filter(|id| self.groups.contains_key(id))
            .collect();
        let changed_users: Vec<User> = batch
            .users
            .into_iter()
            .filter(|user| self.users.get(&user.id) != Some(user))
            .collect();
        let changed_groups: Vec<GroupRecord> = batch
            .groups
            .into_iter()
            .filter(|group| self.groups.get(&group.raw.id) != Some(group))
            .collect();
        // Memberships can only move when a group changed or went, or a user appeared, went,
        // was renamed or changed username (member DNs and memberUid values point at those).
        // Otherwise one resolution after the merge gives the changed users their (unchanged)
        // groups.
        let memberships_may_move = !changed_groups.is_empty()
            || !removed_groups.is_empty()
            || !removed_users.is_empty()
            || changed_users
                .iter()
                .any(|user| match self.users.get(&user.id) {
                    None => true,
                    Some(old) => old.dn != user.dn || old.username != user.username,
                });
        let before = if memberships_may_move {
            Some(self.memberships())
        } else {
            None
        };
        let touched_users: HashSet<String> = changed_users.iter().map(|u| u.id.clone()).collect();
        let touched_groups: HashSet<String> =
            changed_groups.iter().map(|g| g.raw.id.clone()).collect();
        for id in &removed_users {
            self.users.remove(id);
        }
        for id in &removed_groups {
            self.groups.remove(id);
        }
        for user in changed_users {
            self.users.insert(user.id.clone(), user);
        }
        for group in changed_groups {
            self.groups.insert(group.raw.id.clone(), group);
        }
        let mut changes = DirectoryChanges {
            total_users: self.users.len(),
            total_groups: self.groups.len(),
            deleted_user_ids: removed_users,
            deleted_group_ids: removed_groups,
            ..DirectoryChanges::default()
        };
        if !memberships_may_move && touched_users.is_empty() && touched_groups.is_empty() {
            return changes;
        }
        let (users, records, resolved) = self.resolve();
        for (user, group_ids) in users.into_iter().zip(resolved.user_group_ids) {
            let moved = before
                .as_ref()
                .is_some_and(|(old, _)| old.get(&user.id) != Some(&group_ids));
            if moved || touched_users.contains(&user.id) {
                changes.users.push(User {
                    group_ids,
                    ..user.clone()
                });
            }
        }
        for (record, members) in records.into_iter().zip(resolved.group_member_user_ids) {
            let moved = before
                .as_ref()
                .is_some_and(|(_, old)| old.get(&record.raw.id) != Some(&members));
            if moved || touched_groups.contains(&record.raw.id) {
                changes.groups.push(group_of(record, members));
            }
        }
        changes
    }

    /// Each user's group ids and each group's member ids, by id.
    #[allow(clippy::type_complexity)]
    fn memberships(&self) -> (HashMap<String, Vec<String>>, HashMap<String, Vec<String>>) {
        let (users, records, resolved) = self.resolve();
        let users = users
            .into_iter()
            .map(|u| u.id.clone())
            .zip(resolved.user_group_ids)
            .collect();
        let groups = records
            .into_iter()
            .map(|g| g.raw.id.clone())
            .zip(resolved.group_member_user_ids)
            .collect();
        (users, groups)
    }
}

fn group_of(record: &GroupRecord, member_user_ids: Vec<String>) -> Group {
    Group {
        id: record.raw.id.clone(),
        dn: record.raw.dn.clone(),
        display_name: record.display_name.clone(),
        member_user_ids,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn generalized_time_with_and_without_fractions() {
        let t = parse_generalized_time("20240102030405Z").unwrap();
        assert_eq!(t.format(GENERALIZED_TIME).to_string(), "20240102030405Z");
        assert_eq!(parse_generalized_time("20240102030405.0Z"), Some(t));
        assert_eq!(parse_generalized_time("20240102030405"), None);
        assert_eq!(parse_generalized_time("garbage"), None);
        assert_eq!(parse_generalized_time("20241302030405Z"), None);
        assert_eq!(parse_generalized_time("2024010203040Z"), None);
        assert_eq!(parse_generalized_time("2024010203040xZ"), None);
        assert_eq!(
            parse_generalized_time(" 19991231235959.123Z ").map(|t| t.to_string()),
            Some("1999-12-31 23:59:59".to_owned())
        );
    }

    #[test]
    fn watermark_backs_off_by_the_read_time_and_a_second() {
        let newest = parse_generalized_time("20240102030405Z").unwrap();
        let safe = safe_timestamp(newest, Duration::from_millis(2_500));
        assert_eq!(safe.format(GENERALIZED_TIME).to_string(), "20240102030401Z");
    }

    #[test]
    fn next_watermark_never_moves_back() {
        let at = |text: &str| parse_generalized_time(text).unwrap();
        let second = Duration::from_millis(0);
        let previous = Watermark::Timestamp(at("20240102030405Z"));
        assert_eq!(
            next_watermark(None, Some(&previous), Some(at("20240102030400Z")), second),
            Some(previous.clone()),
            "an older change does not move it back"
        );
        assert_eq!(
            next_watermark(None, Some(&previous), None, second),
            Some(previous.clone())
        );
        assert_eq!(
            next_watermark(None, Some(&previous), Some(at("20240102030409Z")), second),
            Some(Watermark::Timestamp(at("20240102030408Z")))
        );
        let position = UsnPosition {
            usn: 7,
            host: "dc1".to_owned(),
            invocation_id: vec![1],
        };
        assert_eq!(
            next_watermark(Some(position.clone()), Some(&previous), None, second),
            Some(Watermark::Usn(position))
        );
        assert_eq!(next_watermark(None, None, None, second), None);
    }

    fn user(id: &str, name: &str) -> User {
        User {
            id: id.to_owned(),
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            username: name.to_owned(),
            user_principal_name: format!("{name}@example.org"),
            display_name: name.to_owned(),
            mail: None,
            account_enabled: true,
            group_ids: Vec::new(),
            identity_conflict: None,
        }
    }

    #[test]
    fn snapshot_contents_resolve_nesting_and_sort_by_id() {
        let mut snapshot = Snapshot::default();
        for (id, name) in [("u2", "bob"), ("u1", "alice")] {
            snapshot.users.insert(id.to_owned(), user(id, name));
        }
        let group = |id: &str, cn: &str, dns: &[&str], uids: &[&str]| GroupRecord {
            raw: crate::directory::groups::RawGroup {
                dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
                id: id.to_owned(),
                cn: cn.to_owned(),
                member_dns: dns.iter().map(|s| (*s).to_owned()).collect(),
                member_uids: uids.iter().map(|s| (*s).to_owned()).collect(),
            },
            display_name: cn.to_owned(),
        };
        snapshot.groups.insert(
            "g1".to_owned(),
            group(
                "g1",
                "outer",
                &["cn=inner,ou=groups,dc=example,dc=org"],
                &[],
            ),
        );
        snapshot
            .groups
            .insert("g2".to_owned(), group("g2", "inner", &[], &["bob"]));
        let contents = snapshot.contents();
        assert_eq!(contents.users[0].id, "u1");
        assert_eq!(contents.users[1].group_ids, vec!["g1", "g2"]);
        assert_eq!(contents.groups[0].member_user_ids, vec!["u2"]);
    }

    #[test]
    fn merge_reports_changed_entries_and_moved_memberships() {
        let group = |id: &str, cn: &str, dns: &[String]| GroupRecord {
            raw: crate::directory::groups::RawGroup {
                dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
                id: id.to_owned(),
                cn: cn.to_owned(),
                member_dns: dns.to_vec(),
                member_uids: Vec::new(),
            },
            display_name: cn.to_owned(),
        };
        let mut snapshot = Snapshot::default();
        for (id, name) in [("u1", "alice"), ("u2", "bob"), ("u3", "carol")] {
            snapshot.users.insert(id.to_owned(), user(id, name));
        }
        let alice_dn = user("u1", "alice").dn;
        let bob_dn = user("u2", "bob").dn;
        snapshot.groups.insert(
            "g1".to_owned(),
            group("g1", "staff", std::slice::from_ref(&alice_dn)),
        );

        // Nothing new: nothing reported.
        let unchanged = snapshot.merge(
            Batch {
                users: vec![user("u3", "carol")],
                ..Batch::default()
            },
            Removed::default(),
        );
        assert!(unchanged.users.is_empty() && unchanged.groups.is_empty());
        assert_eq!(unchanged.total_users, 3);

        // An attribute change: just that user, with its groups.
        let mut renamed = user("u1", "alice");
        renamed.display_name = "Alice L.".to_owned();
        let changes = snapshot.merge(
            Batch {
                users: vec![renamed],
                ..Batch::default()
            },
            Removed::default(),
        );
        assert_eq!(changes.users.len(), 1);
        assert_eq!(changes.users[0].group_ids, vec!["g1"]);
        assert!(changes.groups.is_empty());

        // bob joins the group: the group and bob change, alice does not.
        let changes = snapshot.merge(
            Batch {
                groups: vec![group("g1", "staff", &[alice_dn, bob_dn])],
                ..Batch::default()
            },
            Removed::default(),
        );
        let ids: Vec<&str> = changes.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, vec!["u2"]);
        assert_eq!(changes.users[0].group_ids, vec!["g1"]);
        assert_eq!(changes.groups.len(), 1);
        assert_eq!(changes.groups[0].member_user_ids, vec!["u1", "u2"]);
    }

    #[test]
    fn ranged_member_values_are_collected_with_the_next_start() {
        use super::entry::EntryAttribute;
        let entry = LdapEntry {
            dn: "cn=big,dc=example,dc=org".to_owned(),
            attributes: vec![EntryAttribute {
                name: "member".to_owned(),
                options: vec!["range=0-1".to_owned()],
                values: vec![b"cn=a".to_vec(), b"cn=b".to_vec()],
            }],
        };
        let mut group = GroupRecord {
            raw: crate::directory::groups::RawGroup {
                dn: entry.dn.clone(),
                id: "g".to_owned(),
                cn: "big".to_owned(),
                member_dns: Vec::new(),
                member_uids: Vec::new(),
            },
            display_name: "big".to_owned(),
        };
        assert_eq!(
            take_ranged_values(&entry, "member", &mut group).unwrap(),
            Some(2)
        );
        assert_eq!(group.raw.member_dns, vec!["cn=a", "cn=b"]);
    }
}
