//! Onboarding rules (`[[onboarding.rules]]`): after each successful directory sync, a user who
//! newly matches a rule gets one TAP with the rule's terms, mailed through the outbox to the
//! user's manager (the synced user the entry's `manager` DN names, at their `mail`) or to the
//! rule's fixed mailbox. A user matches a group rule by joining the group after the rule was
//! first evaluated (the members it finds the first time are recorded without a pass: they are
//! not new), and a date rule while the date in the rule's attribute (`employeeHireDate`) is at
//! most `days_before` days ahead and not yet past, in the rule's zone (so the staff hired long
//! ago get nothing when the rule is added); a rule with both needs both. The store records
//! which users each rule served, in the same transaction as the TAP, so a user gets at most one
//! pass per rule however many nodes and syncs evaluate it. A user whose code has nowhere to go
//! (no manager, or a manager without mail, disabled or quarantined) gets no TAP: that is
//! audited (`onboarding_no_recipient`) and tried again at every later sync. Users holding an
//! admin role are skipped, and the skip audited, unless the rule includes them (then the
//! issuance says so). A failure that lasts is audited once: the store keeps the failure last
//! audited for each rule and user (across restarts and nodes) until the rule serves them; a
//! different failure is audited again.

use std::collections::HashSet;

use chrono::{NaiveDate, SubsecRound};
use serde_json::json;

use super::{activity, Result, TapService};
use crate::config::{OnboardingRule, RuleRecipient};
use crate::logging::ErrorChain;
use crate::metrics::{StoreOperation, TapIssueChannel};
use crate::model::{AuditResult, Channel, Group, NewAuditEvent, Timestamp, User};
use crate::policy::{self, CreateTapRequest};
use crate::tapcode;

/// The grant row that marks a rule as evaluated once (no user id is empty).
const EVALUATED: &str = "";

/// Reason code of a pass not issued because its code has nowhere to go.
pub const NO_RECIPIENT: &str = "onboarding_no_recipient";

/// Where a code goes, as decided for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Delivery {
    /// The mail address.
    pub address: String,
    /// The manager it belongs to (id, userPrincipalName), when it is the manager's.
    pub manager: Option<(String, String)>,
}

impl Delivery {
    /// The audit's `delivery` object (never a code).
    pub(super) fn audit(&self, mail_id: &str) -> serde_json::Value {
        match &self.manager {
            Some((id, upn)) => json!({
                "method": "mail",
                "recipient": self.address,
                "recipientKind": "manager",
                "manager": { "id": id, "userPrincipalName": upn },
                "mailId": mail_id,
            }),
            None => json!({
                "method": "mail",
                "recipient": self.address,
                "recipientKind": "mailbox",
                "mailId": mail_id,
            }),
        }
    }
}

impl TapService {
    /// Evaluates every onboarding rule against the synced directory (called after each
    /// successful sync). Problems are logged and audited; they never fail the sync.
    pub async fn run_onboarding_rules(&self) {
        let rules = self.settings().onboarding_rules;
        // One read of the groups for every rule that names one, not one per rule.
        let groups = if rules.iter().any(|rule| rule.group.is_some()) {
            match self.store.groups().await {
                Ok(groups) => groups,
                Err(e) => {
                    log::warn!("onboarding rules could not run: {}", ErrorChain(&e));
                    return;
                }
            }
        } else {
            Vec::new()
        };
        for rule in &rules {
            if let Err(e) = self.run_rule(rule, &groups).await {
                log::warn!(
                    "onboarding rule {:?} could not run: {}",
                    rule.name,
                    ErrorChain(&e)
                );
            }
        }
    }

    async fn run_rule(&self, rule: &OnboardingRule, groups: &[Group]) -> Result<()> {
        let now = self.clock.now().trunc_subsecs(6);
        let candidates: Vec<String> = match &rule.group {
            Some(reference) => {
                let index = self.group_index();
                let Some(group) = groups.iter().find(|g| g.is_named_by(reference, &index)) else {
                    self.note_once(rule, "", || {
                        log::warn!(
                            "onboarding rule {:?}: group {:?} names no synced group",
                            rule.name,
                            reference
                        )
                    });
                    return Ok(());
                };
                if rule.date.is_none() {
                    return self.run_group_rule(rule, &group.member_user_ids, now).await;
                }
                group.member_user_ids.clone()
            }
            None => {
                let Some(date) = &rule.date else {
                    return Ok(());
                };
                // Only the users whose date is in the window need a look, and only they are
                // read: not the whole user table at every sync.
                let (from, to) = window(date.days_before, day_in(&rule.time_zone, now));
                self.store
                    .users_dated_between(&date.attribute, from, to)
                    .await?
            }
        };
        let served: HashSet<String> = self
            .store
            .onboarding_granted(&rule.name, &candidates)
            .await?
            .into_iter()
            .collect();
        for user_id in candidates.iter().filter(|id| !served.contains(*id)) {
            self.serve(rule, user_id, now).await?;
        }
        Ok(())
    }

    /// A rule matched by group alone: the first evaluation records the members as not new.
    async fn run_group_rule(
        &self,
        rule: &OnboardingRule,
        members: &[String],
        now: Timestamp,
    ) -> Result<()> {
        let mut asked = vec![EVALUATED.to_owned()];
        asked.extend(members.iter().cloned());
        let served: HashSet<String> = self
            .store
            .onboarding_granted(&rule.name, &asked)
            .await?
            .into_iter()
            .collect();
        if !served.contains(EVALUATED) {
            self.store
                .onboarding_baseline(&rule.name, &asked, now)
                .await?;
            log::info!(
                "onboarding rule {:?}: {} current member(s) of {:?} recorded as not new; \
                 members who join from now on get a pass",
                rule.name,
                members.len(),
                rule.group.as_deref().unwrap_or_default()
            );
            return Ok(());
        }
        for user_id in members.iter().filter(|id| !served.contains(*id)) {
            self.serve(rule, user_id, now).await?;
        }
        Ok(())
    }

    /// Issues `rule`'s pass to one user not yet served, if the user (still) matches and the
    /// code has somewhere to go.
    async fn serve(&self, rule: &OnboardingRule, user_id: &str, now: Timestamp) -> Result<()> {
        let Some((user, user_groups)) = self.store.user_with_groups(user_id).await? else {
            return Ok(());
        };
        if !user.account_enabled || user.identity_conflict.is_some() {
            return Ok(());
        }
        let hire_date = match &rule.date {
            None => None,
            Some(date) => {
                let today = day_in(&rule.time_zone, now);
                match user.dates.get(&date.attribute) {
                    Some(day) if in_window(*day, date.days_before, today) => Some(*day),
                    _ => return Ok(()),
                }
            }
        };
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
            self.rule_failure(rule, &user, "onboarding_admin_skipped", &message, &message)
                .await;
            return Ok(());
        }
        let delivery = match &rule.recipient {
            RuleRecipient::Mailbox(address) => Delivery {
                address: address.clone(),
                manager: None,
            },
            RuleRecipient::Manager => match self.manager_mailbox(&user).await? {
                Ok(delivery) => delivery,
                Err(why) => {
                    let message = format!(
                        "no pass for {} yet: {why}; tried again at every sync",
                        user.user_principal_name
                    );
                    if self
                        .rule_failure(rule, &user, NO_RECIPIENT, &why, &message)
                        .await
                    {
                        log::warn!("onboarding rule {:?}: {message}", rule.name);
                    }
                    return Ok(());
                }
            },
        };
        if let Err(e) = self
            .issue_for_rule(rule, &user, !roles.is_empty(), &delivery, hire_date, now)
            .await
        {
            log::warn!(
                "onboarding rule {:?}: no pass for {}: {}",
                rule.name,
                user.user_principal_name,
                ErrorChain(&e)
            );
        }
        Ok(())
    }

    /// The mailbox of `user`'s manager, or why there is none to mail: no manager is synced
    /// for them, or the manager is disabled, quarantined or has no mail address.
    pub(super) async fn manager_mailbox(
        &self,
        user: &User,
    ) -> Result<std::result::Result<Delivery, String>> {
        let Some(manager_id) = &user.manager_id else {
            return Ok(Err(match &user.manager_dn {
                Some(dn) => format!("their manager {dn} is no synced user"),
                None => "the directory names no manager for them".to_owned(),
            }));
        };
        let Some(manager) = self
            .store
            .user(manager_id)
            .await?
            .filter(|m| m.id == *manager_id)
        else {
            return Ok(Err(format!(
                "their manager (id {manager_id}) is no longer synced"
            )));
        };
        let who = &manager.user_principal_name;
        if !manager.account_enabled {
            return Ok(Err(format!("their manager {who} is disabled")));
        }
        if manager.identity_conflict.is_some() {
            return Ok(Err(format!(
                "their manager {who} is quarantined by an identity conflict"
            )));
        }
        let Some(address) = manager
            .mail
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        else {
            return Ok(Err(format!("their manager {who} has no mail address")));
        };
        if let Err(e) = address.parse::<lettre::Address>() {
            return Ok(Err(format!(
                "the mail of their manager {who}, {address:?}, is not a mail address: {e}"
            )));
        }
        Ok(Ok(Delivery {
            address: address.to_owned(),
            manager: Some((manager.id.clone(), manager.user_principal_name.clone())),
        }))
    }

    async fn issue_for_rule(
        &self,
        rule: &OnboardingRule,
        user: &User,
        is_admin: bool,
        delivery: &Delivery,
        hire_date: Option<NaiveDate>,
        now: Timestamp,
    ) -> Result<()> {
        let current_policy = self.store.policy().await?;
        let request = CreateTapRequest {
            start: rule_start(rule, hire_date, now),
            lifetime_in_minutes: rule.lifetime_in_minutes,
            is_usable_once: rule.one_time,
        };
        let terms = match policy::creation_terms(&current_policy, &request, now) {
            Ok(terms) => terms,
            Err(e) => {
                // By its code: the message names moments that move with the clock.
                self.rule_failure(rule, user, e.code(), "", &e.to_string())
                    .await;
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
            delivery.address.clone(),
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
                "delivery": delivery.audit(&mail.id),
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

    /// Runs `note` the first time (in this process) a rule notes something about `user_id`.
    fn note_once(&self, rule: &OnboardingRule, user_id: &str, note: impl FnOnce()) {
        let first = self
            .onboarding_notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((rule.name.clone(), user_id.to_owned()));
        if first {
            note();
        }
    }

    /// Audits that `rule` can't serve `user` (`reason`, `message`) when that is news: the
    /// store keeps the failure last audited for each rule and user (`reason` and `detail`,
    /// what tells one failure from another), across restarts and nodes, so a lasting failure
    /// is audited once and a changed one again. True when it was audited now.
    async fn rule_failure(
        &self,
        rule: &OnboardingRule,
        user: &User,
        reason: &str,
        detail: &str,
        message: &str,
    ) -> bool {
        let key = (rule.name.clone(), user.id.clone());
        let noted = format!("{reason}: {detail}");
        let known = self
            .onboarding_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            == Some(&noted);
        if known {
            return false;
        }
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
        let news = match self
            .store
            .note_onboarding_failure(&rule.name, &user.id, &noted, &event)
            .await
        {
            Ok(news) => news,
            Err(e) => {
                log::error!(
                    "could not record an onboarding rule's failure and its audit event: {}",
                    ErrorChain(&e)
                );
                return false;
            }
        };
        if news {
            crate::audit::log(&event);
        }
        self.onboarding_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, noted);
        news
    }
}

/// The day `now` is in `zone`.
fn day_in(zone: &jiff::tz::TimeZone, now: Timestamp) -> NaiveDate {
    jiff::Timestamp::from_microsecond(now.timestamp_micros())
        .ok()
        .and_then(|ts| {
            let day = ts.to_zoned_datetime(zone.clone()).date();
            NaiveDate::from_ymd_opt(
                i32::from(day.year()),
                u32::try_from(day.month()).ok()?,
                u32::try_from(day.day()).ok()?,
            )
        })
        .unwrap_or_else(|| now.date_naive())
}

/// Whether a user whose date is `date` matches on `today`: from `days_before` days before
/// the date until the date itself, both included.
pub(crate) fn in_window(date: NaiveDate, days_before: u32, today: NaiveDate) -> bool {
    let opens = date
        .checked_sub_days(chrono::Days::new(u64::from(days_before)))
        .unwrap_or(NaiveDate::MIN);
    opens <= today && today <= date
}

/// The dates that match on `today` ([`in_window`]), as the range `from..=to`: today until
/// `days_before` days ahead.
fn window(days_before: u32, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let to = today
        .checked_add_days(chrono::Days::new(u64::from(days_before)))
        .unwrap_or(NaiveDate::MAX);
    (today, to)
}

/// The rule's start for a user matched at `now`: `start_time` (in the rule's zone) on the
/// start day, `start_after_days` after the user's date for a date rule, after the day of
/// matching otherwise; `None` (at once) when there is no start time or that moment has passed.
fn rule_start(
    rule: &OnboardingRule,
    hire_date: Option<NaiveDate>,
    now: Timestamp,
) -> Option<Timestamp> {
    let (hour, minute) = rule.start_time?;
    let base = hire_date.unwrap_or_else(|| day_in(&rule.time_zone, now));
    let day = base.checked_add_days(chrono::Days::new(u64::from(rule.start_after_days)))?;
    let day = jiff::civil::Date::new(
        i16::try_from(chrono::Datelike::year(&day)).ok()?,
        i8::try_from(chrono::Datelike::month(&day)).ok()?,
        i8::try_from(chrono::Datelike::day(&day)).ok()?,
    )
    .ok()?;
    let start = day
        .at(hour, minute, 0, 0)
        .to_zoned_datetime(rule.time_zone.clone())
        .ok()?
        .timestamp();
    let start = chrono::DateTime::from_timestamp_micros(start.as_microsecond())?;
    (start > now).then_some(start)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_window_opens_days_before_and_closes_after_the_date() {
        let hired = day(2026, 12, 9);
        assert!(in_window(hired, 5, day(2026, 12, 6)));
        assert!(in_window(hired, 5, day(2026, 12, 4)));
        assert!(!in_window(hired, 5, day(2026, 12, 3)));
        assert!(in_window(hired, 5, day(2026, 12, 9)));
        // Hired in the past: the window is closed (old hires get nothing).
        assert!(!in_window(hired, 5, day(2026, 12, 10)));
        assert!(!in_window(day(2026, 10, 27), 5, day(2026, 12, 6)));
        assert!(in_window(hired, 0, hired));
        assert!(!in_window(hired, 0, day(2026, 12, 8)));
    }

    #[test]
    fn the_window_as_a_range_holds_exactly_the_matching_dates() {
        let today = day(2026, 12, 6);
        for days_before in [0, 1, 5, 365] {
            let (from, to) = window(days_before, today);
            let mut date = day(2025, 11, 1);
            while date < day(2028, 2, 1) {
                assert_eq!(
                    (from..=to).contains(&date),
                    in_window(date, days_before, today),
                    "{date} with {days_before} day(s) before"
                );
                date = date.succ_opt().unwrap();
            }
        }
        assert_eq!(window(5, NaiveDate::MAX), (NaiveDate::MAX, NaiveDate::MAX));
    }

    #[test]
    fn the_day_is_the_zone_s() {
        let late = chrono::DateTime::parse_from_rfc3339("2026-12-06T23:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(day_in(&berlin, late), day(2026, 12, 7));
        assert_eq!(day_in(&jiff::tz::TimeZone::UTC, late), day(2026, 12, 6));
    }
}
