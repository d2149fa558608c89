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
//! over ([`SyncError::LeaseLost`], logged at warning). Scheduled runs also skip while another node's last run is not yet due again, so the
//! nodes together sync about once per interval.
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
//! May depend on: `model`, `store` (trait), `directory`, `clock`, `metrics` (sync runs,
//! errors, duration, last success and the apply latency are counted here), `policy`,
//! `group_ref`.

pub mod access;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::clock::Clock;
use crate::directory::groups::GroupNesting;
use crate::directory::sync::{
    plan_groups, plan_sync_owned, DeletionGuard, GuardTripped, SyncCounts, UserPlanner,
};
use crate::directory::{
    DirectoryChanges, DirectoryContents, DirectoryError, DirectorySource, SkippedUser,
};
use crate::group_ref::{GroupIndex, SharedGroupIndex};
use crate::metrics::{Metrics, NoLabels, StoreOperation, SyncErrorCause, SyncResult};
use crate::model::{AuditResult, Channel, NewAuditEvent, SyncStatus, Timestamp, User};
use crate::policy::roles::RoleMapping;
use crate::store::{
    LeaseLost, Store, StoreError, SyncFence, SyncLeaseOutcome, SyncPlan, SyncPlanEnd,
};
use access::{Access, AccessRules, Side};

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
}

impl Syncer {
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
        }
    }

    /// The index of every synced group that group references resolve against; replaced after
    /// each sync this node runs, and loaded by [`Syncer::refresh_group_index`].
    pub fn group_index(&self) -> &SharedGroupIndex {
        &self.group_index
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
                Err(e) => log::warn!("requested directory sync did not run: {e}"),
            }
        });
    }

    async fn run_read(
        &self,
        incremental: bool,
        allow_deletes: bool,
        actor: &str,
    ) -> Result<SyncStatus, SyncError> {
        let _guard = self
            .running
            .try_lock()
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
                match self.store.quarantined_users().await {
                    Ok(users) => self.metrics.identity_conflicts.set(users.len() as f64),
                    Err(e) => log::warn!("could not count quarantined users: {e}"),
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
                        Err(e) => log::warn!("could not renew the directory sync lease: {e}"),
                    }
                }
            }
        };
        if let Err(SyncError::LeaseLost(lost)) = &result {
            log::warn!("directory sync on node {node}: the store refused its writes: {lost}");
        }
        if let Err(e) = self.store.release_sync_lease(&fence).await {
            log::warn!("could not release the directory sync lease (it lapses by itself): {e}");
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
                    "{kind} directory sync from {} failed: {message}",
                    self.directory.describe()
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

    /// An incremental sync: only the changed and deleted entries are compared with what the
    /// store holds for them (no full store read), then applied in one transaction. Deletions
    /// come only from sources that see them between full syncs (RFC 4533 content sync); they
    /// go through the same deletion guard, revocations and audit as a full sync's.
    async fn incremental(
        &self,
        fence: &SyncFence,
        changes: DirectoryChanges,
        allow_deletes: bool,
        actor: &str,
    ) -> Result<Outcome, SyncError> {
        let mut current_users =
            Vec::with_capacity(changes.users.len() + changes.deleted_user_ids.len());
        let touched = changes
            .users
            .iter()
            .map(|user| &user.id)
            .chain(&changes.deleted_user_ids);
        for id in touched {
            if let Some(known) = self.store.user(id).await? {
                if known.id == *id {
                    current_users.push(known);
                }
            }
        }
        let group_ids: Vec<String> = changes
            .groups
            .iter()
            .map(|g| g.id.clone())
            .chain(changes.deleted_group_ids.iter().cloned())
            .collect();
        let current_groups = self.store.groups_by_id(&group_ids).await?;
        // The guard weighs deletions against every user, not just the ones read here.
        let users_before = changes.total_users + changes.deleted_user_ids.len();
        let plan = plan_sync_owned(
            &current_users,
            &current_groups,
            DirectoryContents {
                users: changes.users,
                groups: changes.groups,
            },
        );
        if !allow_deletes {
            if let Err(tripped) = self.options.guard.check(users_before, &plan) {
                return Ok(Outcome::Refused {
                    tripped,
                    current_users: users_before,
                });
            }
        }
        let counts = SyncCounts::of(&current_users, &plan);
        let mut events = self
            .apply_events(&current_users, &plan, counts, actor)
            .await?;
        let before = self.group_index.current();
        let index = before.with_changes(&plan.upsert_groups, &plan.delete_group_ids);
        let nesting = self.directory.group_nesting().await;
        let everyone;
        let unchanged: &[User] = if index == *before {
            &[]
        } else {
            // Which group a reference names may have changed for anyone.
            everyone = self.store.users(None).await?;
            &everyone
        };
        let access = AccessInput {
            before_users: &current_users,
            after_users: &plan.upsert_users,
            deleted_user_ids: &plan.delete_user_ids,
            unchanged_users: unchanged,
            before: &before,
            after: &index,
            nesting: nesting.as_ref(),
        };
        events.extend(self.reference_events(access, actor).await?);
        self.metrics
            .time_store(
                StoreOperation::ApplySync,
                self.store.apply_sync(fence, &plan, &events),
            )
            .await?;
        Ok(Outcome::Applied {
            kind: "incremental",
            counts,
            users_seen: changes.total_users,
            groups_seen: changes.total_groups,
            events,
            skipped: changes.skipped_users,
            index,
            nesting,
        })
    }

    /// A full sync with the directory read, the plan and the store's transaction overlapping:
    /// users are planned one by one as the directory hands them over
    /// ([`DirectorySource::read_all_streamed`], [`UserPlanner`]) and their upserts go into the
    /// store's open transaction ([`Store::apply_sync_streamed`]) while later pages are still
    /// being read. What needs every entry (deletions, the deletion guard, groups, revocations
    /// and their audit) is decided after the last user, before the commit; a failed read, a
    /// tripped guard or any error drops the transaction, so the store is left as it was.
    async fn full_streamed(
        &self,
        fence: &SyncFence,
        allow_deletes: bool,
        actor: &str,
    ) -> Result<Outcome, SyncError> {
        let (users_tx, mut users_rx) = mpsc::channel::<Vec<User>>(STREAM_BATCHES);
        let (upserts_tx, upserts_rx) = mpsc::channel::<Vec<User>>(STREAM_BATCHES);
        let (end_tx, end_rx) = oneshot::channel::<SyncPlanEnd>();
        let (read_tx, read_rx) = oneshot::channel();
        let read = async {
            let result = self.directory.read_all_streamed(users_tx).await;
            let _ = read_tx.send(result);
        };
        let plan = async {
            // The store is read while the directory is being read.
            let current_users = self.store.users(None).await?;
            let current_groups = self.store.groups().await?;
            let mut planner = UserPlanner::new(&current_users);
            let before_by_id: HashMap<&str, &User> =
                current_users.iter().map(|u| (u.id.as_str(), u)).collect();
            // Users whose access may have changed, as the directory has them now.
            let mut touched: HashMap<String, User> = HashMap::new();
            while let Some(batch) = users_rx.recv().await {
                let upserts: Vec<User> =
                    batch.into_iter().filter_map(|u| planner.plan(u)).collect();
                for user in &upserts {
                    if access_may_differ(before_by_id.get(user.id.as_str()).copied(), user) {
                        touched.insert(user.id.clone(), user.clone());
                    }
                }
                if !upserts.is_empty() && upserts_tx.send(upserts).await.is_err() {
                    // The store gave up; its error is what the run reports.
                    break;
                }
            }
            // Ends a read still sending (it fails); after a complete read, nothing.
            drop(users_rx);
            let fresh = match read_rx.await {
                Ok(Ok(fresh)) => fresh,
                Ok(Err(error)) => {
                    return Ok(Outcome::Failed {
                        kind: "full",
                        error,
                    });
                }
                Err(_) => {
                    return Ok(Outcome::Failed {
                        kind: "full",
                        error: DirectoryError::Unavailable("the directory read stopped".to_owned()),
                    })
                }
            };
            let mut late_upserts: Vec<User> = fresh
                .replanned_users
                .unwrap_or_default()
                .into_iter()
                .filter_map(|u| planner.replan(u))
                .collect();
            late_upserts.sort_by(|a, b| a.id.cmp(&b.id));
            for user in &late_upserts {
                touched.insert(user.id.clone(), user.clone());
            }
            drop(upserts_tx);
            let groups_seen = fresh.groups.len();
            let index = GroupIndex::of_groups(&fresh.groups);
            let (upsert_groups, delete_group_ids) = plan_groups(&current_groups, fresh.groups);
            for skipped in &fresh.skipped_users {
                planner.keep(skipped);
            }
            let users = planner.finish();
            let plan = SyncPlan {
                upsert_users: late_upserts,
                delete_user_ids: users.delete_user_ids,
                upsert_groups,
                delete_group_ids,
                revoke_tap_user_ids: users.revoke_tap_user_ids,
            };
            if !allow_deletes {
                if let Err(tripped) = self.options.guard.check(current_users.len(), &plan) {
                    return Ok(Outcome::Refused {
                        tripped,
                        current_users: current_users.len(),
                    });
                }
            }
            let changed = users.counts.added + users.counts.updated > 0 || !plan.is_empty();
            let mut events = if changed {
                self.apply_events(&current_users, &plan, users.counts, actor)
                    .await?
            } else {
                Vec::new()
            };
            let before = self.group_index.current();
            let nesting = self.directory.group_nesting().await;
            let after_users: Vec<User> = touched.into_values().collect();
            let unchanged: Vec<User> = if index == *before {
                Vec::new()
            } else {
                // Which group a reference names may have changed for anyone.
                let skip: std::collections::HashSet<&str> = after_users
                    .iter()
                    .map(|u| u.id.as_str())
                    .chain(plan.delete_user_ids.iter().map(String::as_str))
                    .collect();
                current_users
                    .iter()
                    .filter(|u| !skip.contains(u.id.as_str()))
                    .cloned()
                    .collect()
            };
            let access = AccessInput {
                before_users: &current_users,
                after_users: &after_users,
                deleted_user_ids: &plan.delete_user_ids,
                unchanged_users: &unchanged,
                before: &before,
                after: &index,
                nesting: nesting.as_ref(),
            };
            events.extend(self.reference_events(access, actor).await?);
            let _ = end_tx.send(SyncPlanEnd {
                plan,
                audit: events.clone(),
            });
            Ok::<_, SyncError>(Outcome::Applied {
                kind: "full",
                counts: users.counts,
                users_seen: users.users_seen,
                groups_seen,
                events,
                skipped: fresh.skipped_users,
                index,
                nesting,
            })
        };
        // Timed as ApplySync like any apply; for a streamed full sync that is how long its
        // transaction is open, which includes the directory read.
        let apply = self.metrics.time_store(
            StoreOperation::ApplySync,
            self.store.apply_sync_streamed(fence, upserts_rx, end_rx),
        );
        let ((), outcome, committed) = tokio::join!(read, plan, apply);
        let committed = committed?;
        let outcome = outcome?;
        if matches!(outcome, Outcome::Applied { .. }) && !committed {
            return Err(SyncError::Store(StoreError::Unavailable(
                "the store did not commit the sync".to_owned(),
            )));
        }
        Ok(outcome)
    }

    /// The audit events applying `plan` records: a revoked TAP for every deleted or disabled
    /// user that holds one, and a summary when the plan changes anything (`counts` include
    /// upserts already streamed).
    async fn apply_events(
        &self,
        current_users: &[crate::model::User],
        plan: &SyncPlan,
        counts: SyncCounts,
        actor: &str,
    ) -> Result<Vec<NewAuditEvent>, SyncError> {
        let now = self.clock.now();
        let mut events = Vec::new();
        let by_id: std::collections::HashMap<&str, &crate::model::User> =
            current_users.iter().map(|u| (u.id.as_str(), u)).collect();
        let revocations = plan
            .delete_user_ids
            .iter()
            .map(|id| (id, activity::TAP_REVOKED_DELETED))
            .chain(
                plan.revoke_tap_user_ids
                    .iter()
                    .map(|id| (id, activity::TAP_REVOKED_DISABLED)),
            );
        for (id, activity) in revocations {
            if self.store.tap_for_user(id).await?.is_some() {
                let upn = by_id
                    .get(id.as_str())
                    .map(|u| u.user_principal_name.clone());
                events.push(self.event(now, actor, activity, upn, json!({ "userId": id })));
            }
        }
        if counts.added + counts.updated > 0 || !plan.is_empty() {
            events.push(self.event(
                now,
                actor,
                activity::SYNC_APPLIED,
                None,
                json!({
                    "node": self.options.node,
                    "usersAdded": counts.added, "usersUpdated": counts.updated, "usersDeleted": counts.deleted,
                    "groupsUpserted": plan.upsert_groups.len(), "groupsDeleted": plan.delete_group_ids.len(),
                }),
            ));
        }
        Ok(events)
    }

    /// Counts, and audits one by one, the user entries a run skipped as undecodable.
    async fn record_skipped(&self, actor: &str, skipped: &[SkippedUser]) {
        for entry in skipped {
            self.metrics.sync_entries_skipped.inc(NoLabels);
            let mut event = self.event(
                self.clock.now(),
                actor,
                activity::ENTRY_SKIPPED,
                Some(entry.dn.clone()),
                json!({ "dn": entry.dn, "userId": entry.id, "reason": entry.reason }),
            );
            event.result = AuditResult::Failure;
            event.reason_code = Some("entry_undecodable".to_owned());
            crate::audit::log(&event);
            if let Err(e) = self.store.append_audit(&event).await {
                log::error!("could not record sync audit event: {e}");
            }
        }
    }

    /// The audit events of group references: one per ambiguous cn reference (also logged as a
    /// warning), and one per admin role granted or revoked and per move into or out of the TAP
    /// scope, judged against the groups before (`access.before`) and after the sync.
    async fn reference_events(
        &self,
        access: AccessInput<'_>,
        actor: &str,
    ) -> Result<Vec<NewAuditEvent>, SyncError> {
        let now = self.clock.now();
        let policy = self.store.policy().await?;
        let configured = self.configured_references();
        let mut references = configured.roles.references();
        references.extend(configured.other.iter().cloned());
        for (place, targets) in [
            (
                "policy.includeTargets",
                policy
                    .include_targets
                    .iter()
                    .map(|t| (&t.id, t.target_type))
                    .collect::<Vec<_>>(),
            ),
            (
                "policy.excludeTargets",
                policy
                    .exclude_targets
                    .iter()
                    .map(|t| (&t.id, t.target_type))
                    .collect(),
            ),
        ] {
            for (id, target_type) in targets {
                if target_type == crate::model::TargetType::Group && id != crate::model::ALL_USERS {
                    references.push((place.to_owned(), id.clone()));
                }
            }
        }
        let mut events = Vec::new();
        let ambiguities = access
            .after
            .ambiguities(references.iter().map(|(p, r)| (p.as_str(), r.as_str())));
        for ambiguity in ambiguities {
            log::warn!("directory sync: {ambiguity}");
            let mut event = self.event(
                now,
                actor,
                activity::AMBIGUOUS_GROUP_REFERENCE,
                None,
                json!({
                    "place": ambiguity.place,
                    "reference": ambiguity.reference,
                    "groupDns": ambiguity.group_dns,
                }),
            );
            event.result = AuditResult::Failure;
            event.reason_code = Some("ambiguous_group_reference".to_owned());
            events.push(event);
        }

        let rules = AccessRules {
            roles: &configured.roles,
            policy: &policy,
        };
        let previous_nesting = self
            .nesting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let before_side = |user| Side {
            user,
            index: access.before,
            nesting: previous_nesting.as_ref().or(access.nesting),
        };
        let after_side = |user| Side {
            user,
            index: access.after,
            nesting: access.nesting,
        };
        let before_by_id: HashMap<&str, &User> = access
            .before_users
            .iter()
            .map(|u| (u.id.as_str(), u))
            .collect();
        let mut changes = Vec::new();
        for user in access.after_users {
            let before = before_by_id.get(user.id.as_str()).map(|u| before_side(u));
            changes.extend(access::changes(rules, before, Some(after_side(user))));
        }
        for id in access.deleted_user_ids {
            if let Some(user) = before_by_id.get(id.as_str()) {
                changes.extend(access::changes(rules, Some(before_side(user)), None));
            }
        }
        for user in access.unchanged_users {
            changes.extend(access::changes(
                rules,
                Some(before_side(user)),
                Some(after_side(user)),
            ));
        }
        for change in changes {
            let (activity, verb) = match (change.access, change.granted) {
                (Access::TapScope, true) => (activity::SCOPE_ENTERED, "in"),
                (Access::TapScope, false) => (activity::SCOPE_LEFT, "out"),
                (Access::Role(_), true) => (activity::ROLE_GRANTED, "granted"),
                (Access::Role(_), false) => (activity::ROLE_REVOKED, "revoked"),
            };
            let path = change.path.join(" → ");
            log::info!(
                "directory sync: {} {} {verb} through {path}",
                change.user_principal_name,
                change.access.name()
            );
            events.push(self.event(
                now,
                actor,
                activity,
                Some(change.user_principal_name.clone()),
                json!({
                    "userId": change.user_id,
                    "role": change.access.name(),
                    "change": verb,
                    "path": path,
                    "reason": change.reason,
                }),
            ));
        }
        Ok(events)
    }

    fn event(
        &self,
        time: crate::model::Timestamp,
        actor: &str,
        activity: &str,
        target: Option<String>,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            time,
            actor: actor.to_owned(),
            activity: activity.to_owned(),
            target,
            result: AuditResult::Success,
            reason_code: None,
            channel: Channel::Sync,
            source_address: None,
            details,
        }
    }

    /// The audit event of a run that failed or was refused, recorded with its status.
    fn failure_event(
        &self,
        actor: &str,
        activity: &str,
        reason: &str,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        let mut event = self.event(self.clock.now(), actor, activity, None, details);
        event.result = AuditResult::Failure;
        event.reason_code = Some(reason.to_owned());
        event
    }
}

/// What [`Syncer::reference_events`] compares.
#[derive(Clone, Copy)]
struct AccessInput<'a> {
    /// Users as the store held them (at least every user in `after_users` that existed, and
    /// every deleted one).
    before_users: &'a [User],
    /// New and changed users as the sync stores them.
    after_users: &'a [User],
    /// Users the sync deletes.
    deleted_user_ids: &'a [String],
    /// Users the sync leaves as they were, to judge again because the groups changed.
    unchanged_users: &'a [User],
    /// The groups before and after.
    before: &'a GroupIndex,
    after: &'a GroupIndex,
    /// The nesting after, when known.
    nesting: Option<&'a GroupNesting>,
}

/// Whether `after` may hold other roles or another scope than `before` (new to the store, or
/// different groups, account state or names).
fn access_may_differ(before: Option<&User>, after: &User) -> bool {
    before.is_none_or(|b| {
        b.group_ids != after.group_ids
            || b.account_enabled != after.account_enabled
            || b.username != after.username
            || b.user_principal_name != after.user_principal_name
    })
}
