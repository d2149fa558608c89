//! Runs directory syncs: read the directory, compute the pure plan, check the deletion guard,
//! apply the plan in one store transaction, record the status. One run at a time per node.
//!
//! A directory that can't be read, times out or returns an incomplete result leaves the store
//! untouched; the error goes into the sync status. A plan that would delete more users than
//! the guard allows is refused (and audited) until an administrator confirms with
//! `tapctl sync run --allow-deletes`.
//!
//! May depend on: `model`, `store` (trait), `directory`, `clock`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::directory::sync::{plan_sync_owned, DeletionGuard};
use crate::directory::{DirectoryChanges, DirectoryContents, DirectorySource};
use crate::model::{AuditResult, Channel, NewAuditEvent, SyncStatus};
use crate::store::{Store, StoreError};

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
}

/// How syncs run.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Interval between scheduled full syncs.
    pub interval: Duration,
    /// Deletion guard thresholds.
    pub guard: DeletionGuard,
}

/// Why a sync could not even be attempted or recorded.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Another sync is in progress on this node.
    #[error("a directory sync is already running")]
    AlreadyRunning,
    /// The store failed while reading or applying.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one read returned.
enum Fresh {
    /// Everything (full read).
    Full(DirectoryContents),
    /// Only what changed (incremental read).
    Changes(DirectoryChanges),
}

/// Runs syncs for one node.
pub struct Syncer {
    store: Arc<dyn Store>,
    directory: Arc<dyn DirectorySource>,
    clock: Arc<dyn Clock>,
    options: SyncOptions,
    running: Mutex<()>,
}

impl Syncer {
    /// A runner over `directory` into `store`.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn DirectorySource>,
        clock: Arc<dyn Clock>,
        options: SyncOptions,
    ) -> Self {
        Syncer {
            store,
            directory,
            clock,
            options,
            running: Mutex::new(()),
        }
    }

    /// The sync interval.
    pub fn interval(&self) -> Duration {
        self.options.interval
    }

    /// What the directory source is, for logs.
    pub fn describe_directory(&self) -> String {
        self.directory.describe()
    }

    /// Runs one full sync. Directory failures and guard refusals are not errors here: they are
    /// recorded in the returned (and stored) status. `actor` names who asked (audit).
    pub async fn run(&self, allow_deletes: bool, actor: &str) -> Result<SyncStatus, SyncError> {
        self.run_read(false, allow_deletes, actor).await
    }

    /// Runs one incremental sync: only entries changed since the last read are fetched and
    /// compared with what the store holds for them, then applied like a full sync; deletions
    /// wait for the next full sync. Falls back to a full sync when the directory can't read
    /// incrementally.
    pub async fn run_incremental(&self, actor: &str) -> Result<SyncStatus, SyncError> {
        self.run_read(true, false, actor).await
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
        let started = self.clock.now();
        let timer = Instant::now();
        let mut status = self.store.sync_status().await?;
        status.last_run_started = Some(started);

        let (kind, outcome) = if incremental {
            match self.directory.read_changes().await {
                Ok(Some(changes)) => ("incremental", Ok(Fresh::Changes(changes))),
                Ok(None) => ("full", self.directory.read_all().await.map(Fresh::Full)),
                Err(e) => ("incremental", Err(e)),
            }
        } else {
            ("full", self.directory.read_all().await.map(Fresh::Full))
        };
        let finish = |status: &mut SyncStatus, result: &str| {
            status.last_run_finished = Some(self.clock.now());
            status.last_run_duration_ms = Some(timer.elapsed().as_millis() as u64);
            status.last_result = Some(result.to_owned());
            status.next_run = chrono::Duration::from_std(self.options.interval)
                .ok()
                .map(|d| started + d);
        };
        let fresh = match outcome {
            Ok(fresh) => fresh,
            Err(e) => {
                let message = e.to_string();
                log::error!(
                    "{kind} directory sync from {} failed: {message}",
                    self.directory.describe()
                );
                status.last_error = Some(message.clone());
                status.deletions_refused = 0;
                finish(&mut status, "failed");
                self.store.put_sync_status(&status).await?;
                self.audit(
                    actor,
                    activity::SYNC_FAILED,
                    None,
                    AuditResult::Failure,
                    Some("directory_unavailable"),
                    json!({ "error": message }),
                )
                .await;
                return Ok(status);
            }
        };

        let (current_users, plan, users_seen, groups_seen) = match fresh {
            Fresh::Full(contents) => {
                let current_users = self.store.users(None).await?;
                let current_groups = self.store.groups().await?;
                let seen = (contents.users.len(), contents.groups.len());
                let plan = plan_sync_owned(&current_users, &current_groups, contents);
                (current_users, plan, seen.0, seen.1)
            }
            Fresh::Changes(changes) => {
                // Compare only the changed entries with what the store holds for them: no
                // full store read, and no deletions (the next full sync finds those).
                let mut current_users = Vec::with_capacity(changes.users.len());
                for user in &changes.users {
                    if let Some(known) = self.store.user(&user.id).await? {
                        if known.id == user.id {
                            current_users.push(known);
                        }
                    }
                }
                let group_ids: Vec<String> = changes.groups.iter().map(|g| g.id.clone()).collect();
                let current_groups = self.store.groups_by_id(&group_ids).await?;
                let plan = plan_sync_owned(
                    &current_users,
                    &current_groups,
                    DirectoryContents {
                        users: changes.users,
                        groups: changes.groups,
                    },
                );
                (
                    current_users,
                    plan,
                    changes.total_users,
                    changes.total_groups,
                )
            }
        };
        if !allow_deletes {
            if let Err(tripped) = self.options.guard.check(current_users.len(), &plan) {
                let message = tripped.to_string();
                log::warn!("directory sync refused: {message}");
                status.last_error = Some(message.clone());
                status.deletions_refused = plan.delete_user_ids.len() as u64;
                finish(&mut status, "deletionsRefused");
                self.store.put_sync_status(&status).await?;
                self.audit(
                    actor,
                    activity::DELETIONS_REFUSED,
                    None,
                    AuditResult::Failure,
                    Some("deletion_guard"),
                    json!({ "wouldDelete": plan.delete_user_ids.len(), "users": current_users.len(), "message": message }),
                )
                .await;
                return Ok(status);
            }
        }

        let now = self.clock.now();
        let mut events = Vec::new();
        let by_id: std::collections::HashMap<&str, &crate::model::User> =
            current_users.iter().map(|u| (u.id.as_str(), u)).collect();
        for id in &plan.delete_user_ids {
            if self.store.tap_for_user(id).await?.is_some() {
                let upn = by_id
                    .get(id.as_str())
                    .map(|u| u.user_principal_name.clone());
                events.push(self.event(
                    now,
                    actor,
                    activity::TAP_REVOKED_DELETED,
                    upn,
                    json!({ "userId": id }),
                ));
            }
        }
        for id in &plan.revoke_tap_user_ids {
            if self.store.tap_for_user(id).await?.is_some() {
                let upn = by_id
                    .get(id.as_str())
                    .map(|u| u.user_principal_name.clone());
                events.push(self.event(
                    now,
                    actor,
                    activity::TAP_REVOKED_DISABLED,
                    upn,
                    json!({ "userId": id }),
                ));
            }
        }
        let counts = crate::directory::sync::SyncCounts::of(&current_users, &plan);
        if !plan.is_empty() {
            events.push(self.event(
                now,
                actor,
                activity::SYNC_APPLIED,
                None,
                json!({
                    "usersAdded": counts.added, "usersUpdated": counts.updated, "usersDeleted": counts.deleted,
                    "groupsUpserted": plan.upsert_groups.len(), "groupsDeleted": plan.delete_group_ids.len(),
                }),
            ));
        }
        self.store.apply_sync(&plan, &events).await?;
        for event in &events {
            crate::audit::log(event);
        }
        status.users_seen = users_seen as u64;
        status.groups_seen = groups_seen as u64;
        status.users_added = counts.added;
        status.users_updated = counts.updated;
        status.users_deleted = counts.deleted;
        status.deletions_refused = 0;
        status.last_error = None;
        finish(&mut status, "success");
        status.last_success = status.last_run_finished;
        self.store.put_sync_status(&status).await?;
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
        Ok(status)
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

    async fn audit(
        &self,
        actor: &str,
        activity: &str,
        target: Option<String>,
        result: AuditResult,
        reason: Option<&str>,
        details: serde_json::Value,
    ) {
        let mut event = self.event(self.clock.now(), actor, activity, target, details);
        event.result = result;
        event.reason_code = reason.map(str::to_owned);
        crate::audit::log(&event);
        if let Err(e) = self.store.append_audit(&event).await {
            log::error!("could not record sync audit event: {e}");
        }
    }
}
