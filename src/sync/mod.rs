//! Runs directory syncs: read the directory, compute the pure plan, check the deletion guard,
//! apply the plan in one store transaction, record the status.
//!
//! One run at a time per node (a mutex) and across the nodes sharing a store (the store's sync
//! lease, renewed while the run lasts and released after it, its times by the database's
//! clock). A node that finds the lease held elsewhere skips the run; a node killed mid-run
//! leaves nothing half-applied (the plan is one transaction) and its lease lapses after
//! [`SyncOptions::lease_ttl`], so another node takes over. Every write of a run (the plan, the
//! status, the run's audit) carries the lease's fencing token, and the store refuses it inside
//! its transaction when the lease has lapsed or changed hands since: a node that stalled past
//! its lease (GC pause, SIGSTOP, frozen VM) can't commit over the sync of the node that took
//! over ([`SyncError::LeaseLost`], logged at warning). Scheduled runs also skip while another
//! node's last run is not yet due again, so the nodes together sync about once per interval.
//!
//! A full sync overlaps its three parts: the directory hands users over page by page, each is
//! planned as it arrives, and the store writes the upserts into a transaction it holds open
//! while later pages are read; deletions, the guard and the audit are settled after the last
//! page, before the commit.
//!
//! A directory that can't be read, times out or returns an incomplete result leaves the store
//! untouched; the error goes into the sync status. A plan that would delete more users than
//! the guard allows is refused (and audited) until an administrator confirms with
//! `tapctl sync run --allow-deletes`.
//!
//! Group references are resolved against the groups as the sync leaves them: a cn reference
//! (in `[admin.roles]`, the policy's targets or the other configured places) that two or more
//! groups share is warned about and audited at every sync that finds it, and the index the
//! services resolve references with ([`Syncer::group_index`]) is replaced after the commit.
//! Every admin role granted or revoked and every move into or out of the TAP scope is audited
//! with the plan ([`access`]).
//!
//! This is the one sync module, the service side of a sync; the directory sources
//! ([`crate::directory`]) only read. Its parts: [`plan`] (the pure plan and the deletion
//! guard), [`access`] (the role and scope changes audited with a plan), `apply` (the full and
//! incremental runs, each one store transaction), `events` (the run's audit events); this file
//! holds the runner, its lease and its schedule.
//!
//! May depend on: `model`, `store` (trait), `directory`, `clock`, `metrics` (sync runs,
//! errors, duration, last success and the apply latency are counted here), `policy`,
//! `group_ref`, `dn` (matching managers' DNs).

pub mod access;
mod apply;
mod events;
pub mod managers;
pub mod plan;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::directory::groups::GroupNesting;
use crate::directory::{DirectoryError, DirectorySource, SkippedUser};
use crate::group_ref::{GroupIndex, SharedGroupIndex};
use crate::logging::ErrorChain;
use crate::metrics::{Metrics, NoLabels, SyncErrorCause, SyncResult};
use crate::model::{NewAuditEvent, SyncStatus, Timestamp};
use crate::policy::roles::RoleMapping;
use crate::store::{LeaseLost, Store, StoreError, SyncFence, SyncLeaseOutcome};
use plan::{DeletionGuard, GuardTripped, SyncCounts};

/// Activity names of sync-related audit events.
pub mod activity {
    /// A sync changed the store.
    pub const SYNC_APPLIED: &str = "Directory sync applied changes";
    /// The deletion guard refused a sync.
    pub const DELETIONS_REFUSED: &str = "Directory sync refused: too many deletions";
    /// A sync failed to read the directory.
    pub const SYNC_FAILED: &str = "Directory sync failed";
    /// A TAP was revoked because the account was deleted.
    pub const TAP_REVOKED_DELETED: &str = "Temporary access pass revoked: account deleted";
    /// A TAP was revoked because the account was disabled.
    pub const TAP_REVOKED_DISABLED: &str = "Temporary access pass revoked: account disabled";
    /// A user entry could not be decoded and was skipped (its store row kept as it was).
    pub const ENTRY_SKIPPED: &str = "Directory sync: entry skipped";
    /// A cn group reference that two or more groups share (it names none of them).
    pub const AMBIGUOUS_GROUP_REFERENCE: &str = "Directory sync: ambiguous group reference";
    /// A user gained an admin role.
    pub const ROLE_GRANTED: &str = "Directory sync: admin role granted";
    /// A user lost an admin role.
    pub const ROLE_REVOKED: &str = "Directory sync: admin role revoked";
    /// A user moved into the TAP policy's scope.
    pub const SCOPE_ENTERED: &str = "Directory sync: user moved into TAP scope";
    /// A user moved out of the TAP policy's scope.
    pub const SCOPE_LEFT: &str = "Directory sync: user moved out of TAP scope";
}

/// How syncs run.
/// How long a sync waits for one in progress on this node before answering "already running".
const RUNNING_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Interval between scheduled full syncs.
    pub interval: Duration,
    /// Deletion guard thresholds.
    pub guard: DeletionGuard,
    /// This node's identity for the sync lease and the status: unique per running process
    /// (the daemon uses host name, pid and a random suffix).
    pub node: String,
}

impl SyncOptions {
    /// How long a lease lasts unless renewed: the interval, at most a minute (a running sync
    /// renews it every third of that), at least a second.
    pub fn lease_ttl(&self) -> Duration {
        self.interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// Why a sync could not even be attempted or recorded.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Another sync is in progress on this node.
    #[error("a directory sync is already running")]
    AlreadyRunning,
    /// Another node holds the sync lease (it is syncing, or has just started to).
    #[error("a directory sync is running on node {holder} (its lease runs until {until}); try again later")]
    HeldElsewhere {
        /// The node holding the lease.
        holder: String,
        /// When its lease lapses unless renewed.
        until: Timestamp,
    },
    /// The run's lease lapsed or went to another node before the run could commit (this node
    /// stalled past its lease): the store refused the run's writes, and nothing of it is kept.
    #[error("directory sync refused: {0}")]
    LeaseLost(#[source] LeaseLost),
    /// The store failed while reading or applying.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost(lost) => SyncError::LeaseLost(lost),
            other => SyncError::Store(other),
        }
    }
}

/// Batches of users in flight between the directory reader, the planner and the store.
const STREAM_BATCHES: usize = 4;

/// How one run ended, before its status is recorded.
enum Outcome {
    /// The directory could not be read completely; nothing was changed.
    Failed {
        /// "full" or "incremental".
        kind: &'static str,
        /// Why.
        error: DirectoryError,
    },
    /// The deletion guard refused the plan; nothing was changed.
    Refused {
        /// What the guard said.
        tripped: GuardTripped,
        /// Users the store held.
        current_users: usize,
    },
    /// The plan was committed.
    Applied {
        /// "full" or "incremental".
        kind: &'static str,
        /// Users added, updated, deleted.
        counts: SyncCounts,
        /// Users the directory holds.
        users_seen: usize,
        /// Groups the directory holds.
        groups_seen: usize,
        /// Audit events recorded with the plan (logged after the commit).
        events: Vec<NewAuditEvent>,
        /// User entries skipped as undecodable.
        skipped: Vec<SkippedUser>,
        /// The groups as the sync left them, for resolving references from now on.
        index: GroupIndex,
        /// Their nesting, when the directory told.
        nesting: Option<GroupNesting>,
    },
}

/// Group references written in the configuration, besides the policy's (read from the store
/// at each sync): checked for ambiguity, and the roles also for the access audit.
#[derive(Clone, Debug, Default)]
struct ConfiguredReferences {
    roles: RoleMapping,
    /// (where, reference) of every other place: interrupt groups, RADIUS reply rules.
    other: Vec<(String, String)>,
}

/// Runs syncs for one node.
pub struct Syncer {
    store: Arc<dyn Store>,
    directory: Arc<dyn DirectorySource>,
    clock: Arc<dyn Clock>,
    options: SyncOptions,
    running: Mutex<()>,
    metrics: Arc<Metrics>,
    /// An incremental run asked for by [`Syncer::request_incremental`] is waiting to start.
    requested: AtomicBool,
    group_index: SharedGroupIndex,
    /// Whether `group_index` was loaded from the store (at start, or by a sync).
    index_loaded: AtomicBool,
    /// The nesting the last sync saw (for the path of a revocation).
    nesting: std::sync::Mutex<Option<GroupNesting>>,
    references: std::sync::RwLock<ConfiguredReferences>,
    /// The managers were resolved since this process started and no sync changed users
    /// since (a failed resolution clears it, so the next sync tries again).
    managers_resolved: AtomicBool,
}

impl Syncer {
    /// Brings every user's `manager_id` in line with its entry's `manager` DN after a
    /// successful sync that changed users (and after the first one of this process)
    /// ([`managers`]), and says once per such sync how many managers are no synced user. A
    /// store error is logged; the next sync tries again.
    async fn resolve_managers(&self, status: &SyncStatus) {
        let changed = status.users_added + status.users_updated + status.users_deleted > 0;
        if !changed && self.managers_resolved.load(Ordering::SeqCst) {
            return;
        }
        let resolved = managers::resolve_in(self.store.as_ref()).await;
        self.managers_resolved
            .store(resolved.is_ok(), Ordering::SeqCst);
        match resolved {
            Ok(report) => {
                if !report.outside.is_empty() {
                    let (upn, dn) = &report.outside[0];
                    log::info!(
                        "{} user(s) name a manager who is no synced user (outside the synced \
                         base or filter), so no mail goes to a manager for them; e.g. {upn}: {dn}",
                        report.outside.len()
                    );
                }
                for (upn, dn) in &report.ambiguous {
                    log::warn!(
                        "{upn}: manager {dn} is the DN of several stored users; no manager is \
                         assumed"
                    );
                }
            }
            Err(e) => log::warn!("could not resolve managers: {}", ErrorChain(&e)),
        }
    }

    /// A runner over `directory` into `store`.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn DirectorySource>,
        clock: Arc<dyn Clock>,
        options: SyncOptions,
        metrics: Arc<Metrics>,
    ) -> Self {
        Syncer {
            store,
            directory,
            clock,
            options,
            running: Mutex::new(()),
            metrics,
            requested: AtomicBool::new(false),
            group_index: SharedGroupIndex::default(),
            index_loaded: AtomicBool::new(false),
            nesting: std::sync::Mutex::new(None),
            references: std::sync::RwLock::new(ConfiguredReferences::default()),
            managers_resolved: AtomicBool::new(false),
        }
    }

    /// The index of every synced group that group references resolve against; replaced after
    /// each sync this node runs, and loaded by [`Syncer::refresh_group_index`].
    pub fn group_index(&self) -> &SharedGroupIndex {
        &self.group_index
    }

    /// The group nesting the last sync on this node saw, when the directory told.
    pub fn nesting(&self) -> Option<GroupNesting> {
        self.nesting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the group index from the store (at start, and when another node synced).
    pub async fn refresh_group_index(&self) -> Result<(), StoreError> {
        let groups = self.store.groups().await?;
        self.group_index.replace(GroupIndex::of_groups(&groups));
        self.index_loaded.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The `[admin.roles]` mapping, for ambiguity warnings and the role audit.
    pub fn set_roles(&self, roles: RoleMapping) {
        self.references
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .roles = roles;
    }

    /// The other configured group references as (where, reference), e.g.
    /// (`web.registration_interrupt_groups`, `engineering`), checked for ambiguity.
    pub fn set_group_references(&self, references: Vec<(String, String)>) {
        self.references
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .other = references;
    }

    fn configured_references(&self) -> ConfiguredReferences {
        self.references
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The sync interval.
    pub fn interval(&self) -> Duration {
        self.options.interval
    }

    /// What the directory source is, for logs.
    pub fn describe_directory(&self) -> String {
        self.directory.describe()
    }

    /// This node's identity.
    pub fn node(&self) -> &str {
        &self.options.node
    }

    /// A scheduled run: skipped (`Ok(None)`) while another node's last run is not due again,
    /// so that a cluster syncs about once per interval; otherwise [`Syncer::run`].
    pub async fn run_scheduled(&self) -> Result<Option<SyncStatus>, SyncError> {
        let status = self.store.sync_status().await?;
        let by_other_node = status
            .node
            .as_deref()
            .is_some_and(|n| n != self.options.node);
        if let (true, Some(next_run)) = (by_other_node, status.next_run) {
            if next_run > self.clock.now() {
                log::debug!(
                    "directory sync not due: node {} synced last, next run at {next_run}",
                    status.node.as_deref().unwrap_or("?")
                );
                // That node's sync may have changed the groups references resolve against.
                self.refresh_group_index().await?;
                return Ok(None);
            }
        }
        self.run(false, "tapd").await.map(Some)
    }

    /// Runs one full sync. Directory failures and guard refusals are not errors here: they are
    /// recorded in the returned (and stored) status. `actor` names who asked (audit).
    pub async fn run(&self, allow_deletes: bool, actor: &str) -> Result<SyncStatus, SyncError> {
        self.run_read(false, allow_deletes, actor).await
    }

    /// Runs one incremental sync: only entries changed since the last read are fetched and
    /// compared with what the store holds for them, then applied like a full sync. Deletions
    /// are applied when the directory reports them (RFC 4533 content sync), under the deletion
    /// guard; otherwise they wait for the next full sync. Falls back to a full sync when the
    /// directory can't read incrementally.
    pub async fn run_incremental(&self, actor: &str) -> Result<SyncStatus, SyncError> {
        self.run_read(true, false, actor).await
    }

    /// Asks for an incremental sync soon, without waiting for it: a sign-in found the
    /// directory changed since the last sync (`why`, for the log). The run starts on a task of
    /// its own once a run in progress has ended (that one may have read the directory before
    /// the change); while one requested run waits, further requests join it.
    pub fn request_incremental(self: &Arc<Self>, why: &str) {
        if self.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        log::info!("incremental directory sync requested: {why}");
        let syncer = self.clone();
        tokio::spawn(async move {
            drop(syncer.running.lock().await);
            syncer.requested.store(false, Ordering::Release);
            match syncer.run_incremental("tapd").await {
                Ok(_) => {}
                // Started meanwhile by this node or another: it reads the directory as it is now.
                Err(SyncError::AlreadyRunning | SyncError::HeldElsewhere { .. }) => {}
                Err(e) => log::warn!("requested directory sync did not run: {}", ErrorChain(&e)),
            }
        });
    }

    async fn run_read(
        &self,
        incremental: bool,
        allow_deletes: bool,
        actor: &str,
    ) -> Result<SyncStatus, SyncError> {
        // A run that is finishing (releasing its lease, counting quarantines) is waited for
        // briefly, so that a sync asked for right after another one ends is not refused; a
        // run still reading the directory answers "already running" after that wait.
        let _guard = tokio::time::timeout(RUNNING_WAIT, self.running.lock())
            .await
            .map_err(|_| SyncError::AlreadyRunning)?;
        let timer = Instant::now();
        let outcome = self.run_with_lease(incremental, allow_deletes, actor).await;
        self.metrics
            .sync_duration
            .observe(NoLabels, timer.elapsed());
        let error = match &outcome {
            Ok(status) if status.last_result.as_deref() == Some("success") => None,
            Ok(status) if status.last_result.as_deref() == Some("deletionsRefused") => {
                Some(SyncErrorCause::DeletionGuard)
            }
            Ok(_) => Some(SyncErrorCause::DirectoryUnavailable),
            // Another node syncs: not a failure of this one.
            Err(SyncError::HeldElsewhere { .. }) => return outcome,
            Err(_) => Some(SyncErrorCause::Store),
        };
        match error {
            None => {
                self.metrics.sync_runs.inc(SyncResult::Success);
                if let Ok(status) = &outcome {
                    self.resolve_managers(status).await;
                }
                match self.store.quarantined_users().await {
                    Ok(users) => self.metrics.identity_conflicts.set(users.len() as f64),
                    Err(e) => log::warn!("could not count quarantined users: {}", ErrorChain(&e)),
                }
                if let Ok(Some(success)) = outcome.as_ref().map(|status| status.last_success) {
                    self.metrics
                        .sync_last_success
                        .set(success.timestamp_millis() as f64 / 1000.0);
                }
            }
            Some(cause) => {
                self.metrics.sync_runs.inc(SyncResult::Failure);
                self.metrics.sync_errors.inc(cause);
            }
        }
        outcome
    }

    /// Takes the sync lease (one node at a time), renews it while the run lasts and releases it.
    ///
    /// A renewal that finds the lease lost only stops renewing: whether the run may commit is
    /// decided by the store, inside the commit's own transaction (the fencing token), which no
    /// pause between a check here and the commit can get around.
    async fn run_with_lease(
        &self,
        incremental: bool,
        allow_deletes: bool,
        actor: &str,
    ) -> Result<SyncStatus, SyncError> {
        let node = self.options.node.as_str();
        let ttl = self.options.lease_ttl();
        let fence = match self.store.try_sync_lease(node, ttl).await? {
            SyncLeaseOutcome::Granted(lease) => lease.fence(),
            SyncLeaseOutcome::HeldElsewhere(lease) => {
                log::info!(
                    "directory sync skipped: node {} holds the sync lease until {}",
                    lease.holder,
                    lease.expires
                );
                return Err(SyncError::HeldElsewhere {
                    holder: lease.holder,
                    until: lease.expires,
                });
            }
        };
        let work = self.run_leased(&fence, incremental, allow_deletes, actor);
        tokio::pin!(work);
        let mut renew = tokio::time::interval(ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut renewing = true;
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = renew.tick(), if renewing => {
                    match self.store.renew_sync_lease(&fence, ttl).await {
                        Ok(_) => {}
                        Err(StoreError::LeaseLost(lost)) => {
                            log::warn!("could not renew the directory sync lease: {lost}; this run's writes will be refused");
                            renewing = false;
                        }
                        // The run itself will meet the same outage and report it.
                        Err(e) => log::warn!("could not renew the directory sync lease: {}", ErrorChain(&e)),
                    }
                }
            }
        };
        if let Err(SyncError::LeaseLost(lost)) = &result {
            log::warn!("directory sync on node {node}: the store refused its writes: {lost}");
        }
        if let Err(e) = self.store.release_sync_lease(&fence).await {
            log::warn!(
                "could not release the directory sync lease (it lapses by itself): {}",
                ErrorChain(&e)
            );
        }
        result
    }

    /// The body of [`Syncer::run`], while this node holds the lease.
    async fn run_leased(
        &self,
        fence: &SyncFence,
        incremental: bool,
        allow_deletes: bool,
        actor: &str,
    ) -> Result<SyncStatus, SyncError> {
        let started = self.clock.now();
        let timer = Instant::now();
        if !self.index_loaded.load(Ordering::SeqCst) {
            // The access audit compares with the groups before the sync.
            self.refresh_group_index().await?;
        }
        let mut status = self.store.sync_status().await?;
        status.last_run_started = Some(started);
        status.node = Some(self.options.node.clone());
        status.initiated_by = Some(actor.to_owned());

        let outcome = if incremental {
            match self.directory.read_changes().await {
                Ok(Some(changes)) => {
                    self.incremental(fence, changes, allow_deletes, actor)
                        .await?
                }
                Ok(None) => self.full_streamed(fence, allow_deletes, actor).await?,
                Err(e) => Outcome::Failed {
                    kind: "incremental",
                    error: e,
                },
            }
        } else {
            self.full_streamed(fence, allow_deletes, actor).await?
        };
        status.last_run_finished = Some(self.clock.now());
        status.last_run_duration_ms = Some(timer.elapsed().as_millis() as u64);
        status.next_run = chrono::Duration::from_std(self.options.interval)
            .ok()
            .map(|d| started + d);
        match outcome {
            Outcome::Failed { kind, error } => {
                let message = error.to_string();
                log::error!(
                    "{kind} directory sync from {} failed: {}",
                    self.directory.describe(),
                    ErrorChain(&error)
                );
                status.last_error = Some(message.clone());
                status.deletions_refused = 0;
                status.last_result = Some("failed".to_owned());
                let event = self.failure_event(
                    actor,
                    activity::SYNC_FAILED,
                    "directory_unavailable",
                    json!({ "error": message }),
                );
                self.store
                    .put_sync_status(fence, &status, std::slice::from_ref(&event))
                    .await?;
                crate::audit::log(&event);
            }
            Outcome::Refused {
                tripped,
                current_users,
            } => {
                let message = tripped.to_string();
                log::warn!("directory sync refused: {message}");
                status.last_error = Some(message.clone());
                status.deletions_refused = tripped.would_delete;
                status.last_result = Some("deletionsRefused".to_owned());
                let event = self.failure_event(
                    actor,
                    activity::DELETIONS_REFUSED,
                    "deletion_guard",
                    json!({ "wouldDelete": tripped.would_delete, "users": current_users, "message": message }),
                );
                self.store
                    .put_sync_status(fence, &status, std::slice::from_ref(&event))
                    .await?;
                crate::audit::log(&event);
            }
            Outcome::Applied {
                kind,
                counts,
                users_seen,
                groups_seen,
                events,
                skipped,
                index,
                nesting,
            } => {
                for event in &events {
                    crate::audit::log(event);
                }
                self.record_skipped(actor, &skipped).await;
                self.group_index.replace(index);
                self.index_loaded.store(true, Ordering::SeqCst);
                *self.nesting.lock().unwrap_or_else(|e| e.into_inner()) = nesting;
                status.users_seen = users_seen as u64;
                status.groups_seen = groups_seen as u64;
                status.users_added = counts.added;
                status.users_updated = counts.updated;
                status.users_deleted = counts.deleted;
                status.deletions_refused = 0;
                status.last_error = None;
                status.last_result = Some("success".to_owned());
                status.last_success = status.last_run_finished;
                self.store.put_sync_status(fence, &status, &[]).await?;
                log::info!(
                    "{kind} directory sync from {}: {} users, {} groups; {} added, {} updated, {} deleted in {} ms",
                    self.directory.describe(),
                    users_seen,
                    groups_seen,
                    counts.added,
                    counts.updated,
                    counts.deleted,
                    status.last_run_duration_ms.unwrap_or(0)
                );
            }
        }
        Ok(status)
    }
}
