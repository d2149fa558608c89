//! The audit events of a sync run: TAPs revoked with their accounts, the run's summary,
//! undecodable entries skipped, ambiguous group references, and every admin role granted or
//! revoked and every move into or out of the TAP scope ([`super::access`]).
//!
//! May depend on: what [`super`] may.

use std::collections::HashMap;

use serde_json::json;

use super::access::{self, Access, AccessRules, Side};
use super::activity;
use super::plan::SyncCounts;
use super::{SyncError, Syncer};
use crate::directory::groups::GroupNesting;
use crate::directory::SkippedUser;
use crate::group_ref::GroupIndex;
use crate::logging::ErrorChain;
use crate::metrics::NoLabels;
use crate::model::{AuditResult, Channel, NewAuditEvent, User};
use crate::store::SyncPlan;

impl Syncer {
    /// The audit events applying `plan` records: a revoked TAP for every deleted or disabled
    /// user that holds one, and a summary when the plan changes anything (`counts` include
    /// upserts already streamed).
    pub(super) async fn apply_events(
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
    pub(super) async fn record_skipped(&self, actor: &str, skipped: &[SkippedUser]) {
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
                log::error!("could not record sync audit event: {}", ErrorChain(&e));
            }
        }
    }

    /// The audit events of group references: one per ambiguous cn reference (also logged as a
    /// warning), and one per admin role granted or revoked and per move into or out of the TAP
    /// scope, judged against the groups before (`access.before`) and after the sync.
    pub(super) async fn reference_events(
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

    pub(super) fn event(
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
    pub(super) fn failure_event(
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
pub(super) struct AccessInput<'a> {
    /// Users as the store held them (at least every user in `after_users` that existed, and
    /// every deleted one).
    pub(super) before_users: &'a [User],
    /// New and changed users as the sync stores them.
    pub(super) after_users: &'a [User],
    /// Users the sync deletes.
    pub(super) deleted_user_ids: &'a [String],
    /// Users the sync leaves as they were, to judge again because the groups changed.
    pub(super) unchanged_users: &'a [User],
    /// The groups before and after.
    pub(super) before: &'a GroupIndex,
    pub(super) after: &'a GroupIndex,
    /// The nesting after, when known.
    pub(super) nesting: Option<&'a GroupNesting>,
}

/// Whether `after` may hold other roles or another scope than `before` (new to the store, or
/// different groups, account state or names).
pub(super) fn access_may_differ(before: Option<&User>, after: &User) -> bool {
    before.is_none_or(|b| {
        b.group_ids != after.group_ids
            || b.account_enabled != after.account_enabled
            || b.username != after.username
            || b.user_principal_name != after.user_principal_name
    })
}
