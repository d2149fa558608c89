//! Onboarding by mail: the outbox worker that delivers queued TAPs to their recipients.
//!
//! Messages are queued by the TAP service (bulk issuance, onboarding rules) together with
//! their TAP, the code sealed in the store. This worker claims due messages (on PostgreSQL
//! every node runs one, and each message goes to exactly one of them), renders and sends each
//! through the SMTP server, and records the outcome with its audit event: accepted (the code
//! is erased), retried after an exponential backoff, or failed after `[smtp] max_attempts` (or
//! at once when the server refuses for good), which deletes the TAP so that no undelivered
//! code stays usable. A message whose sealed code can't be opened (altered in the database,
//! or sealed under a key this tapd does not hold) fails the same way at once, logged as an
//! error. Codes appear in no log line and no audit event.
//!
//! May depend on: `store` (trait), `model`, `clock`, `config`, `audit`, `logging`.

pub mod mailer;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::SmtpConfig;
use crate::logging::ErrorChain;
use crate::model::{AuditResult, Channel, MailOutcome, NewAuditEvent, OutboxMail};
use crate::store::{Store, UndeliverableCode};
pub use mailer::{Mailer, MailerError, SendFailure};

/// Audit activities of deliveries.
pub mod activity {
    /// The SMTP server accepted a message.
    pub const MAIL_ACCEPTED: &str = "Onboarding mail accepted by the mail server";
    /// A delivery failed and will be tried again.
    pub const MAIL_RETRIED: &str = "Onboarding mail delivery retried";
    /// A delivery was given up; the TAP it carried was deleted.
    pub const MAIL_FAILED: &str = "Onboarding mail delivery failed";
}

/// How long a claim lasts: longer than one delivery may take (`[smtp] timeout` is capped
/// below it), so a live node never loses a message it is sending.
const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// How often an idle worker looks for due messages.
const POLL: Duration = Duration::from_secs(1);
/// Messages one node sends at once (and SMTP connections it keeps).
pub const CONCURRENCY: u32 = 4;

/// The outbox worker of one node.
pub struct MailWorker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mailer: Mailer,
    config: SmtpConfig,
    node: String,
    /// The last read of the outbox failed (logged once until it works again).
    unreadable: std::sync::atomic::AtomicBool,
}

impl MailWorker {
    /// A worker for `node` (unique per process, as the sync lease's).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: &SmtpConfig,
        node: String,
    ) -> Result<MailWorker, MailerError> {
        Ok(MailWorker {
            store,
            clock,
            mailer: Mailer::new(config, CONCURRENCY)?,
            config: config.clone(),
            node,
            unreadable: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Delivers until `shutdown`: [`CONCURRENCY`] loops, each claiming and sending one
    /// message at a time. A message being sent when shutdown comes is finished first (or, if
    /// the process dies, its claim lapses and another node or the next start sends it).
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        log::info!(
            "onboarding mail: delivering through {}:{} as node {}",
            worker.config.server.host,
            worker.config.server.port,
            worker.node
        );
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (worker, shutdown) = (worker.clone(), shutdown.clone());
            loops.spawn(async move { worker.deliver_loop(shutdown).await });
        }
        while loops.join_next().await.is_some() {}
    }

    async fn deliver_loop(&self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            use std::sync::atomic::Ordering;
            let claimed = self
                .store
                .claim_mail(&self.node, self.clock.now(), CLAIM_LEASE)
                .await;
            if claimed.is_ok() && self.unreadable.swap(false, Ordering::Relaxed) {
                log::info!("onboarding mail: the outbox can be read again");
            }
            match claimed {
                Ok(Some((mail, Ok(code)))) => {
                    self.deliver(mail, code).await;
                    continue;
                }
                Ok(Some((mail, Err(undeliverable)))) => {
                    self.fail_undeliverable(mail, &undeliverable).await;
                    continue;
                }
                Ok(None) => {}
                // Once per outage, not once per loop and second.
                Err(e) if !self.unreadable.swap(true, Ordering::Relaxed) => log::warn!(
                    "onboarding mail: cannot read the outbox (messages wait, nothing is lost): {}",
                    ErrorChain(&e)
                ),
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One attempt at `mail`, and its outcome recorded.
    async fn deliver(&self, mail: OutboxMail, code: Zeroizing<String>) {
        let sent = match self.mailer.render(&mail, &code) {
            Ok(message) => {
                drop(code);
                self.mailer.send(message).await
            }
            Err(failure) => Err(failure),
        };
        let attempt = mail.attempts + 1;
        let (outcome, event) = match sent {
            Ok(()) => (
                MailOutcome::Accepted,
                self.event(
                    &mail,
                    activity::MAIL_ACCEPTED,
                    AuditResult::Success,
                    None,
                    attempt,
                ),
            ),
            Err(failure) if failure.permanent || attempt >= self.config.max_attempts => {
                let error = if failure.permanent {
                    format!("refused for good: {}", failure.message)
                } else {
                    format!("gave up after {attempt} attempts: {}", failure.message)
                };
                let event = self.event(
                    &mail,
                    activity::MAIL_FAILED,
                    AuditResult::Failure,
                    Some(("mail_delivery_failed", &error)),
                    attempt,
                );
                (MailOutcome::Failed { error }, event)
            }
            Err(failure) => {
                let next_attempt = self.clock.now() + backoff(&self.config, mail.attempts);
                let event = self.event(
                    &mail,
                    activity::MAIL_RETRIED,
                    AuditResult::Failure,
                    Some(("mail_delivery_retried", &failure.message)),
                    attempt,
                );
                (
                    MailOutcome::Retry {
                        next_attempt,
                        error: failure.message,
                    },
                    event,
                )
            }
        };
        self.finish(&mail, &outcome, &event).await;
    }

    /// A claimed message whose code can't be opened: no attempt can ever deliver it, so it
    /// fails at once and its TAP is deleted (an undelivered code must not stay usable).
    async fn fail_undeliverable(&self, mail: OutboxMail, undeliverable: &UndeliverableCode) {
        let error = ErrorChain(undeliverable).to_string();
        log::error!(
            "onboarding mail {} to {} for {}: {error}; the message is failed and its TAP \
             deleted (issue a new one)",
            mail.id,
            mail.recipient,
            mail.user_principal_name
        );
        let event = self.event(
            &mail,
            activity::MAIL_FAILED,
            AuditResult::Failure,
            Some(("mail_delivery_failed", &error)),
            mail.attempts + 1,
        );
        self.finish(&mail, &MailOutcome::Failed { error }, &event)
            .await;
    }

    /// Records `outcome` for `mail` with its audit `event`, while this node holds the claim.
    async fn finish(&self, mail: &OutboxMail, outcome: &MailOutcome, event: &NewAuditEvent) {
        let now = self.clock.now();
        match self
            .store
            .finish_mail(&mail.id, &self.node, now, outcome, event)
            .await
        {
            Ok(true) => crate::audit::log(event),
            Ok(false) => log::warn!(
                "onboarding mail {}: another node took the message over while it was being sent",
                mail.id
            ),
            Err(e) => log::error!(
                "onboarding mail {}: the outcome could not be recorded (the message is sent \
                 again once its claim lapses): {}",
                mail.id,
                ErrorChain(&e)
            ),
        }
    }

    fn event(
        &self,
        mail: &OutboxMail,
        activity: &str,
        result: AuditResult,
        reason: Option<(&str, &str)>,
        attempt: u32,
    ) -> NewAuditEvent {
        let mut details = json!({
            "category": "UserManagement",
            "mailId": mail.id,
            "recipient": mail.recipient,
            "TemporaryAccessPass.Id": mail.tap_id,
            "origin": mail.origin,
            "attempt": attempt,
        });
        if let Some((_, message)) = reason {
            details["message"] = json!(message);
        }
        NewAuditEvent {
            time: self.clock.now(),
            actor: "tapd".to_owned(),
            activity: activity.to_owned(),
            target: Some(mail.user_principal_name.clone()),
            result,
            reason_code: reason.map(|(code, _)| code.to_owned()),
            channel: Channel::Admin,
            source_address: Some(format!("node {}", self.node)),
            details,
        }
    }
}

/// The wait after the `failures`-th failure (0 for the first): `retry_initial` doubled per
/// earlier failure, at most `retry_max`.
pub fn backoff(config: &SmtpConfig, failures: u32) -> chrono::Duration {
    let factor = 2u32.saturating_pow(failures.min(30));
    let wait = config
        .retry_initial
        .checked_mul(factor)
        .unwrap_or(config.retry_max)
        .min(config.retry_max);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
}
