//! The two kinds of sync run, once the lease is held: a full sync that overlaps reading,
//! planning and writing ([`Syncer::full_streamed`]), and an incremental one that compares only
//! what changed ([`Syncer::incremental`]). Both end in one store transaction or none.
//!
//! May depend on: what [`super`] may.

use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

use super::events::{access_may_differ, AccessInput};
use super::plan::{plan_groups, plan_sync_owned, SyncCounts, UserPlanner};
use super::{Outcome, SyncError, Syncer, STREAM_BATCHES};
use crate::directory::{DirectoryChanges, DirectoryContents, DirectoryError};
use crate::group_ref::GroupIndex;
use crate::metrics::StoreOperation;
use crate::model::User;
use crate::store::{StoreError, SyncFence, SyncPlan, SyncPlanEnd};

impl Syncer {
    /// An incremental sync: only the changed and deleted entries are compared with what the
    /// store holds for them (no full store read), then applied in one transaction. Deletions
    /// come only from sources that see them between full syncs (RFC 4533 content sync); they
    /// go through the same deletion guard, revocations and audit as a full sync's.
    pub(super) async fn incremental(
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
    pub(super) async fn full_streamed(
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
                        error: DirectoryError::unavailable("the directory read stopped".to_owned()),
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
            return Err(SyncError::Store(StoreError::unavailable(
                "the store did not commit the sync".to_owned(),
            )));
        }
        Ok(outcome)
    }
}
