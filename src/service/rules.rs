//! Onboarding rules (`[[onboarding.rules]]`): after each successful directory sync, a user who
//! joined a rule's group since the rule was first evaluated gets one TAP with the rule's terms,
//! mailed to the rule's recipient through the outbox. The store records which users each rule
//! served, in the same transaction as the TAP, so a user gets at most one pass per rule however
//! many nodes and syncs evaluate it. The members a rule finds the first time it runs are
//! recorded without a pass (they are not new). Users holding an admin role are skipped, and
//! the skip audited, unless the rule includes them (then the issuance says so).

use std::collections::HashSet;

use chrono::SubsecRound;
use serde_json::json;

use super::{activity, Result, TapService};
use crate::config::OnboardingRule;
use crate::logging::ErrorChain;
use crate::metrics::{StoreOperation, TapIssueChannel};
use crate::model::{AuditResult, Channel, NewAuditEvent, Timestamp, User};
use crate::policy::{self, CreateTapRequest};
use crate::tapcode;

/// The grant row that marks a rule as evaluated once (no user id is empty).
const EVALUATED: &str = "";

impl TapService {
    /// Evaluates every onboarding rule against the synced directory (called after each
    /// successful sync). Problems are logged and audited; they never fail the sync.
    pub async fn run_onboarding_rules(&self) {
        let rules = self.settings().onboarding_rules;
        for rule in &rules {
            if let Err(e) = self.run_rule(rule).await {
                log::warn!(
                    "onboarding rule {:?} could not run: {}",
                    rule.name,
                    ErrorChain(&e)
                );
            }
        }
    }

    async fn run_rule(&self, rule: &OnboardingRule) -> Result<()> {
        let index = self.group_index();
        let groups = self.store.groups().await?;
        let Some(group) = groups.iter().find(|g| g.is_named_by(&rule.group, &index)) else {
            self.note_once(rule, "", || {
                log::warn!(
                    "onboarding rule {:?}: group {:?} names no synced group",
                    rule.name,
                    rule.group
                )
            });
            return Ok(());
        };
        let mut asked = vec![EVALUATED.to_owned()];
        asked.extend(group.member_user_ids.iter().cloned());
        let served: HashSet<String> = self
            .store
            .onboarding_granted(&rule.name, &asked)
            .await?
            .into_iter()
            .collect();
        let now = self.clock.now().trunc_subsecs(6);
        if !served.contains(EVALUATED) {
            self.store
                .onboarding_baseline(&rule.name, &asked, now)
                .await?;
            log::info!(
                "onboarding rule {:?}: {} current member(s) of {} recorded as not new; members \
                 who join from now on get a pass",
                rule.name,
                group.member_user_ids.len(),
                group.display_name
            );
            return Ok(());
        }
        for user_id in &group.member_user_ids {
            if served.contains(user_id) {
                continue;
            }
            let Some((user, user_groups)) = self.store.user_with_groups(user_id).await? else {
                continue;
            };
            if !user.account_enabled || user.identity_conflict.is_some() {
                continue;
            }
            let roles = self.roles_in(&user_groups);
            if !roles.is_empty() && !rule.include_admins {
                let message = format!(
                    "{} holds an admin role ({}); onboarding rule {:?} does not serve admins \
                     (set include_admins = true to)",
                    user.user_principal_name,
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    rule.name
                );
                if self.first_note(rule, &user.id) {
                    self.rule_failure(rule, &user, "onboarding_admin_skipped", &message)
                        .await;
                }
                continue;
            }
            if let Err(e) = self
                .issue_for_rule(rule, &user, !roles.is_empty(), now)
                .await
            {
                log::warn!(
                    "onboarding rule {:?}: no pass for {}: {}",
                    rule.name,
                    user.user_principal_name,
                    ErrorChain(&e)
                );
            }
        }
        Ok(())
    }

    async fn issue_for_rule(
        &self,
        rule: &OnboardingRule,
        user: &User,
        is_admin: bool,
        now: Timestamp,
    ) -> Result<()> {
        let current_policy = self.store.policy().await?;
        let request = CreateTapRequest {
            start: rule_start(rule, now),
            lifetime_in_minutes: rule.lifetime_in_minutes,
            is_usable_once: rule.one_time,
        };
        let terms = match policy::creation_terms(&current_policy, &request, now) {
            Ok(terms) => terms,
            Err(e) => {
                if self.first_note(rule, &user.id) {
                    self.rule_failure(rule, user, e.code(), &e.to_string())
                        .await;
                }
                return Ok(());
            }
        };
        let code = tapcode::generate(current_policy.default_length);
        let code_hash = self.hasher.hash(code.clone()).await?;
        let (tap, mail) = super::bulk::tap_and_mail(
            user,
            &terms,
            &code,
            code_hash,
            now,
            rule.recipient.clone(),
            format!("rule {}", rule.name),
        );
        let event = NewAuditEvent {
            time: now,
            actor: format!("tapd (onboarding rule {})", rule.name),
            activity: activity::TAP_CREATED.to_owned(),
            target: Some(user.user_principal_name.clone()),
            result: AuditResult::Success,
            reason_code: None,
            channel: Channel::Sync,
            source_address: None,
            details: json!({
                "category": "UserManagement",
                "activityDisplayName": "Admin registered security info",
                "TemporaryAccessPass.Id": tap.id,
                "TemporaryAccessPass.StartDateTime": tap.start,
                "TemporaryAccessPass.EndDateTime": tap.expires(),
                "TemporaryAccessPass.AccessPassUsage": if tap.is_usable_once { "Once" } else { "Multiple" },
                "delivery": { "method": "mail", "recipient": mail.recipient, "mailId": mail.id },
                "onboardingRule": rule.name,
                "adminRoleHolder": is_admin,
            }),
        };
        let issued = self
            .metrics
            .time_store(
                StoreOperation::ReplaceTap,
                self.store
                    .issue_tap_by_mail(&tap, &mail, &code, Some(&rule.name), &event),
            )
            .await?;
        if issued {
            self.metrics.taps_issued.inc(TapIssueChannel::Admin);
            crate::audit::log(&event);
        }
        Ok(())
    }

    /// True the first time (in this process) a rule notes something about `user_id`, so a
    /// problem that persists is audited once, not at every sync.
    fn first_note(&self, rule: &OnboardingRule, user_id: &str) -> bool {
        self.onboarding_notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((rule.name.clone(), user_id.to_owned()))
    }

    fn note_once(&self, rule: &OnboardingRule, user_id: &str, note: impl FnOnce()) {
        if self.first_note(rule, user_id) {
            note();
        }
    }

    async fn rule_failure(&self, rule: &OnboardingRule, user: &User, reason: &str, message: &str) {
        let event = NewAuditEvent {
            time: self.clock.now(),
            actor: format!("tapd (onboarding rule {})", rule.name),
            activity: activity::TAP_CREATED.to_owned(),
            target: Some(user.user_principal_name.clone()),
            result: AuditResult::Failure,
            reason_code: Some(reason.to_owned()),
            channel: Channel::Sync,
            source_address: None,
            details: json!({ "message": message, "onboardingRule": rule.name }),
        };
        crate::audit::log(&event);
        if let Err(e) = self.store.append_audit(&event).await {
            log::error!(
                "could not record an onboarding rule's audit event: {}",
                ErrorChain(&e)
            );
        }
    }
}

/// The rule's start for a user matched at `now`: `start_time` on the start day in the rule's
/// zone, or `None` (at once) when there is no start time or that moment has passed.
fn rule_start(rule: &OnboardingRule, now: Timestamp) -> Option<Timestamp> {
    let (hour, minute) = rule.start_time?;
    let now_ts = jiff::Timestamp::from_microsecond(now.timestamp_micros()).ok()?;
    let today = now_ts.to_zoned_datetime(rule.time_zone.clone()).date();
    let day = today
        .checked_add(jiff::Span::new().days(i64::from(rule.start_after_days)))
        .ok()?;
    let start = day
        .at(hour, minute, 0, 0)
        .to_zoned_datetime(rule.time_zone.clone())
        .ok()?
        .timestamp();
    let start = chrono::DateTime::from_timestamp_micros(start.as_microsecond())?;
    (start > now).then_some(start)
}
