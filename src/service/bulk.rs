//! Bulk issuance (`tapctl tap bulk`): one TAP per row of a list, each mailed to its recipient
//! through the outbox, the code never shown to the administrator.
//!
//! Every row is checked before anything is written (unknown or quarantined user, a user
//! outside the TAP policy's scope, a target the caller's roles can't serve, bad terms, no or a
//! bad recipient, the same user twice), and each bad row is reported with its line and the
//! problem. The good rows are then issued with the role rules of a single create, each TAP
//! written together with its message and its audit event ("Admin registered security info",
//! naming the delivery target). A dry run stops after the checks.

use std::collections::HashMap;

use chrono::SubsecRound;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rules::Delivery;
use super::{activity, AdminSession, Result, ServiceError};
use crate::metrics::{StoreOperation, TapIssueChannel};
use crate::model::{MailState, OutboxMail, StoredTap, Timestamp, User};
use crate::policy::roles::{authorize, AdminAction, TargetUser};
use crate::policy::{self, CreateTapRequest};
use crate::tapcode;

/// Rows one request may carry.
pub const MAX_BULK_ROWS: usize = 10_000;
/// Codes hashed at once while issuing (the hashing pool bounds the real concurrency).
const HASH_AHEAD: usize = 8;

/// One row of a bulk list as written (fields are checked by the service).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRow {
    /// The row's line in the file (for messages).
    pub line: u32,
    /// Sign-in name or id of the user.
    pub user: String,
    /// RFC 3339 start; empty: now.
    #[serde(default)]
    pub start: String,
    /// Lifetime in minutes, or a duration (`8h`, `2d`); empty: the policy's default.
    #[serde(default)]
    pub lifetime: String,
    /// `true`/`false` (`yes`/`no`, `1`/`0`); empty: the policy's default.
    #[serde(default)]
    pub one_time: String,
    /// Mailbox the code goes to; empty: the user's manager's mail.
    #[serde(default)]
    pub recipient: String,
}

/// What happened to one row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// The row's line.
    pub line: u32,
    /// The user as the row names them.
    pub user: String,
    /// `queued`, `valid` (dry run) or `error`.
    pub status: String,
    /// Where the code goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The new TAP's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tap_id: Option<String>,
    /// Its validity window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// First instant it is no longer usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// What was wrong with the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A row that passed every check.
struct Checked {
    row: BulkRow,
    user: User,
    request: CreateTapRequest,
    delivery: Delivery,
}

impl AdminSession {
    /// Checks every row, then (unless `dry_run`) issues a TAP for each good one and queues its
    /// message. One result per row, in the rows' order; never a code.
    pub async fn bulk_issue(&self, rows: Vec<BulkRow>, dry_run: bool) -> Result<Vec<BulkResult>> {
        if !self.service.settings().mail_delivery {
            return Err(ServiceError::Conflict(
                "bulk issuance mails each pass, and no [smtp] server is configured".into(),
            ));
        }
        if rows.len() > MAX_BULK_ROWS {
            return Err(ServiceError::BadRequest(
                format!("{} rows; at most {MAX_BULK_ROWS} per list", rows.len()).into(),
            ));
        }
        let now = self.service.clock.now().trunc_subsecs(6);
        let current_policy = self.store().policy().await?;
        let index = self.service.group_index();
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut results = Vec::with_capacity(rows.len());
        let mut good = Vec::new();
        for row in rows {
            match self
                .check_row(&row, &current_policy, &index, now, &mut seen)
                .await?
            {
                Ok(checked) => {
                    results.push(BulkResult {
                        line: row.line,
                        user: row.user.clone(),
                        status: "valid".to_owned(),
                        recipient: Some(checked.delivery.address.clone()),
                        tap_id: None,
                        start: None,
                        expires: None,
                        error: None,
                    });
                    good.push((results.len() - 1, checked));
                }
                Err(error) => results.push(BulkResult {
                    line: row.line,
                    user: row.user.clone(),
                    status: "error".to_owned(),
                    recipient: None,
                    tap_id: None,
                    start: None,
                    expires: None,
                    error: Some(error),
                }),
            }
        }
        if dry_run {
            return Ok(results);
        }
        let length = current_policy.default_length;
        let mut good = good.into_iter().peekable();
        while good.peek().is_some() {
            // Hash a few codes at once (the pool bounds the real concurrency), then write them.
            let mut hashing = tokio::task::JoinSet::new();
            let batch: Vec<(usize, Checked)> = good.by_ref().take(HASH_AHEAD).collect();
            for (n, _) in batch.iter().enumerate() {
                let hasher = self.service.hasher.clone();
                hashing.spawn(async move {
                    let code = tapcode::generate(length);
                    let hash = hasher.hash(code.clone()).await;
                    (n, code, hash)
                });
            }
            let mut hashed = Vec::with_capacity(batch.len());
            while let Some(done) = hashing.join_next().await {
                hashed.push(done.map_err(|e| {
                    ServiceError::Internal(crate::store::Cause::with_source(
                        "hashing task failed",
                        e,
                    ))
                })?);
            }
            hashed.sort_by_key(|(n, _, _)| *n);
            for ((at, checked), (_, code, hash)) in batch.into_iter().zip(hashed) {
                let result = &mut results[at];
                match self
                    .issue_checked(&checked, &current_policy, &code, hash?)
                    .await
                {
                    Ok(tap) => {
                        result.status = "queued".to_owned();
                        result.tap_id = Some(tap.id.clone());
                        result.start = Some(tap.start);
                        result.expires = Some(tap.expires());
                    }
                    Err(e) => {
                        result.status = "error".to_owned();
                        result.recipient = None;
                        result.error = Some(e.to_string());
                    }
                }
            }
        }
        Ok(results)
    }

    /// The checks of one row; `Ok(Err(problem))` for a bad row.
    async fn check_row(
        &self,
        row: &BulkRow,
        current_policy: &crate::model::TapPolicy,
        index: &crate::group_ref::GroupIndex,
        now: Timestamp,
        seen: &mut HashMap<String, u32>,
    ) -> Result<std::result::Result<Checked, String>> {
        let key = row.user.trim();
        if key.is_empty() {
            return Ok(Err("no user".to_owned()));
        }
        let Some((user, groups)) = self.store().user_with_groups(key).await? else {
            return Ok(Err(format!("unknown user {key:?}: not in the directory")));
        };
        if let Some(line) = seen.insert(user.id.clone(), row.line) {
            return Ok(Err(format!(
                "user {} is also on line {line}: one pass per user",
                user.username
            )));
        }
        if let Some(conflict) = &user.identity_conflict {
            return Ok(Err(format!(
                "user {} is quarantined by an identity conflict: {}",
                user.username,
                conflict.describe()
            )));
        }
        let roles = self.service.roles_in(&groups);
        let target = TargetUser {
            user_id: &user.id,
            roles: &roles,
        };
        if let Err(denied) = authorize(&self.actor, AdminAction::CreateTap, Some(target)) {
            return Ok(Err(denied.to_string()));
        }
        if !policy::in_scope(current_policy, &user, &groups, index) {
            return Ok(Err(format!(
                "user {} is outside the TAP policy's scope (its included and excluded groups)",
                user.username
            )));
        }
        let request = match parse_terms(row) {
            Ok(request) => request,
            Err(problem) => return Ok(Err(problem)),
        };
        if let Err(e) = policy::creation_terms(current_policy, &request, now) {
            return Ok(Err(e.to_string()));
        }
        let recipient = row.recipient.trim();
        let delivery = if recipient.is_empty() {
            match self.service.manager_mailbox(&user).await? {
                Ok(delivery) => delivery,
                Err(why) => {
                    return Ok(Err(format!(
                        "no recipient: the row names none, and {why} (user {})",
                        user.username
                    )))
                }
            }
        } else {
            if let Err(e) = recipient.parse::<lettre::Address>() {
                return Ok(Err(format!(
                    "recipient {recipient:?} is not a mail address: {e}"
                )));
            }
            Delivery {
                address: recipient.to_owned(),
                manager: None,
            }
        };
        Ok(Ok(Checked {
            row: row.clone(),
            user,
            request,
            delivery,
        }))
    }

    /// Issues one checked row: the TAP, its message and its audit event, in one write.
    async fn issue_checked(
        &self,
        checked: &Checked,
        current_policy: &crate::model::TapPolicy,
        code: &str,
        code_hash: String,
    ) -> Result<StoredTap> {
        let now = self.service.clock.now().trunc_subsecs(6);
        let terms = policy::creation_terms(current_policy, &checked.request, now)
            .map_err(ServiceError::refused)?;
        let user = &checked.user;
        let (tap, mail) = tap_and_mail(
            user,
            &terms,
            code,
            code_hash,
            now,
            checked.delivery.address.clone(),
            format!("bulk by {}", self.actor_name),
        );
        let event = self.event(
            activity::TAP_CREATED,
            Some(&user.user_principal_name),
            json!({
                "category": "UserManagement",
                "activityDisplayName": "Admin registered security info",
                "TemporaryAccessPass.Id": tap.id,
                "TemporaryAccessPass.StartDateTime": tap.start,
                "TemporaryAccessPass.EndDateTime": tap.expires(),
                "TemporaryAccessPass.AccessPassUsage": if tap.is_usable_once { "Once" } else { "Multiple" },
                "delivery": checked.delivery.audit(&mail.id),
                "line": checked.row.line,
            }),
        );
        self.service
            .metrics
            .time_store(
                StoreOperation::ReplaceTap,
                self.store()
                    .issue_tap_by_mail(&tap, &mail, code, None, &event),
            )
            .await?;
        self.service.metrics.taps_issued.inc(TapIssueChannel::Admin);
        crate::audit::log(&event);
        Ok(tap)
    }
}

/// The row's start, lifetime and one-time flag, or the problem with them.
fn parse_terms(row: &BulkRow) -> std::result::Result<CreateTapRequest, String> {
    let start = match row.start.trim() {
        "" => None,
        text => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    format!("start {text:?} is not an RFC 3339 date-time (e.g. 2026-01-31T08:00:00+01:00): {e}")
                })?
                .with_timezone(&chrono::Utc),
        ),
    };
    let lifetime = match row.lifetime.trim() {
        "" => None,
        text => Some(match text.parse::<i64>() {
            Ok(minutes) => minutes,
            Err(_) => {
                let duration = crate::config::parse_duration(text).map_err(|e| {
                    format!("lifetime {text:?} is neither minutes nor a duration such as 8h: {e}")
                })?;
                i64::try_from(duration.as_secs() / 60).unwrap_or(i64::MAX)
            }
        }),
    };
    let one_time = match row.one_time.trim().to_ascii_lowercase().as_str() {
        "" => None,
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        other => {
            return Err(format!(
                "one_time {other:?} is not true or false (yes/no, 1/0)"
            ))
        }
    };
    Ok(CreateTapRequest {
        start,
        lifetime_in_minutes: lifetime,
        is_usable_once: one_time,
    })
}

impl AdminSession {
    /// The newest `limit` onboarding messages and where each stands; never a code.
    pub async fn onboarding_status(&self, limit: u32) -> Result<Vec<OutboxMail>> {
        self.check(AdminAction::ReadAudit, "Read onboarding mail status", None)
            .await?;
        Ok(self
            .store()
            .mails(limit.clamp(1, MAX_BULK_ROWS as u32))
            .await?)
    }
}

/// A new TAP for `user` on `terms` (its code `code`, hashed as `code_hash`) and the queued
/// message that carries the code to `recipient`; `origin` says who asked, for the status list.
/// Bulk issuance and onboarding rules both write exactly this pair.
pub(super) fn tap_and_mail(
    user: &User,
    terms: &policy::TapTerms,
    code: &str,
    code_hash: String,
    now: Timestamp,
    recipient: String,
    origin: String,
) -> (StoredTap, OutboxMail) {
    let tap = StoredTap {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        code_hash,
        created: now,
        start: terms.start.trunc_subsecs(6),
        lifetime_in_minutes: terms.lifetime_in_minutes,
        is_usable_once: terms.is_usable_once,
        used_at: None,
        code_length: u32::try_from(code.len()).ok(),
    };
    let mail = OutboxMail {
        id: uuid::Uuid::new_v4().to_string(),
        tap_id: tap.id.clone(),
        user_id: user.id.clone(),
        user_principal_name: user.user_principal_name.clone(),
        display_name: user.display_name.clone(),
        recipient,
        tap_start: tap.start,
        tap_expires: tap.expires(),
        one_time: tap.is_usable_once,
        origin,
        created: now,
        state: MailState::Queued,
        attempts: 0,
        next_attempt: now,
        last_error: None,
        finished: None,
    };
    (tap, mail)
}
