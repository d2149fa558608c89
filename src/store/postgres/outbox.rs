//! The onboarding outbox on PostgreSQL (see `Store::issue_tap_by_mail` and its neighbours).
//! Several nodes share the table: a node claims a due row with `FOR UPDATE SKIP LOCKED` and a
//! lease timed by the database's clock, so each message goes to exactly one node at a time and
//! a claim left by a node that died lapses and is taken over.

use std::time::Duration;

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;

use super::rows::{self, text, to_db_time};
use super::{map_err, tx_execute};
use crate::model::{MailOutcome, MailState, OutboxMail, StoredTap, Timestamp};
use crate::store::seal::{self, Sealer};
use crate::store::{codec, ClaimedCode, StoreError, UndeliverableCode};

/// Columns an [`OutboxMail`] is read from, in [`mail`]'s order.
pub(super) const COLUMNS: &str = "id, tap_id, user_id, upn, display_name, recipient, tap_start, \
     tap_expires, one_time, origin, created, state, attempts, next_attempt, last_error, finished";

/// The answer of an outbox operation on a store opened without a secrets key.
pub(super) fn no_secrets_key() -> StoreError {
    StoreError::unavailable(
        "the onboarding outbox needs the store's secrets key (codes are kept only sealed)",
    )
}

pub(super) fn mail(row: &Row) -> Result<OutboxMail, StoreError> {
    let state: String = rows::col(row, 11)?;
    let attempts: i64 = rows::col(row, 12)?;
    Ok(OutboxMail {
        id: rows::col(row, 0)?,
        tap_id: rows::col(row, 1)?,
        user_id: rows::col(row, 2)?,
        user_principal_name: rows::col(row, 3)?,
        display_name: rows::col(row, 4)?,
        recipient: rows::col(row, 5)?,
        tap_start: rows::col(row, 6)?,
        tap_expires: rows::col(row, 7)?,
        one_time: rows::col(row, 8)?,
        origin: rows::col(row, 9)?,
        created: rows::col(row, 10)?,
        state: MailState::parse(&state)
            .ok_or_else(|| StoreError::corrupt(format!("unknown outbox state {state:?}")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt: rows::col(row, 13)?,
        last_error: rows::col(row, 14)?,
        finished: rows::col(row, 15)?,
    })
}

/// What can be read of a row [`mail`] can't decode (`error`), for the message to be failed
/// and listed with the reason: a value that doesn't read (a timestamp beyond what tapd can
/// represent, such as `infinity`) is the epoch, 0, false or empty, and an unknown state is
/// listed as failed (`last_error` names the damage). `None` when not even its id reads.
fn salvage(row: &Row, error: &StoreError) -> Option<OutboxMail> {
    let text = |i| rows::col::<String>(row, i).unwrap_or_default();
    let time = |i| rows::col::<Timestamp>(row, i).ok();
    Some(OutboxMail {
        id: rows::col(row, 0).ok()?,
        tap_id: text(1),
        user_id: text(2),
        user_principal_name: text(3),
        display_name: text(4),
        recipient: text(5),
        tap_start: time(6).unwrap_or_default(),
        tap_expires: time(7).unwrap_or_default(),
        one_time: rows::col(row, 8).unwrap_or(false),
        origin: text(9),
        created: time(10).unwrap_or_default(),
        state: rows::col::<String>(row, 11)
            .ok()
            .and_then(|state| MailState::parse(&state))
            .unwrap_or(MailState::Failed),
        attempts: rows::col::<i64>(row, 12)
            .ok()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0),
        next_attempt: time(13).unwrap_or_default(),
        last_error: Some(codec::unreadable_error(
            rows::col::<Option<String>>(row, 14).ok().flatten(),
            error,
        )),
        finished: rows::col::<Option<Timestamp>>(row, 15).ok().flatten(),
    })
}

/// A row of the listing: [`mail`], or what [`salvage`] reads of a damaged one (one damaged
/// message does not hide the others).
pub(super) fn listed(row: &Row) -> Result<OutboxMail, StoreError> {
    mail(row).or_else(|e| salvage(row, &e).ok_or(e))
}

/// The outbox part of `Store::issue_tap_by_mail` (the caller replaces the TAP and audits):
/// false when `grant` was already recorded.
pub(super) async fn issue(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    tap: &StoredTap,
    mail: &OutboxMail,
    code: &str,
    grant: Option<&str>,
) -> Result<bool, StoreError> {
    let user_id = text(&mail.user_id);
    let created = to_db_time(mail.created);
    if let Some(rule) = grant {
        let inserted = tx_execute(
            tx,
            "INSERT INTO onboarding_grants (rule, user_id, granted) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&text(rule), &user_id, &created],
        )
        .await?;
        if inserted == 0 {
            return Ok(false);
        }
        // Served: a failure noted before is over (a later one is news again).
        tx_execute(
            tx,
            "DELETE FROM onboarding_failures WHERE rule = $1 AND user_id = $2",
            &[&text(rule), &user_id],
        )
        .await?;
    }
    tx_execute(
        tx,
        "UPDATE outbox SET state = 'failed', sealed_code = NULL, claimed_by = NULL, \
         claim_until = NULL, finished = $2, last_error = 'replaced by a newer pass' \
         WHERE user_id = $1 AND state = 'queued'",
        &[&user_id, &created],
    )
    .await?;
    let sealed = sealer.seal(code, &seal::outbox_row(&mail.id));
    tx_execute(
        tx,
        "INSERT INTO outbox (id, tap_id, user_id, upn, display_name, recipient, tap_start, \
         tap_expires, one_time, origin, created, state, attempts, next_attempt, sealed_code) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued', 0, $12, $13)",
        &[
            &text(&mail.id),
            &text(&tap.id),
            &user_id,
            &text(&mail.user_principal_name),
            &text(&mail.display_name),
            &text(&mail.recipient),
            &to_db_time(mail.tap_start),
            &to_db_time(mail.tap_expires),
            &mail.one_time,
            &text(&mail.origin),
            &created,
            &to_db_time(mail.next_attempt),
            &sealed,
        ],
    )
    .await?;
    Ok(true)
}

/// `Store::claim_mail`: one statement, its own transaction.
pub(super) async fn claim(
    client: &Object,
    sealer: &Sealer,
    node: &str,
    now: Timestamp,
    lease: Duration,
) -> Result<Option<(OutboxMail, ClaimedCode)>, StoreError> {
    // When nothing is due, a row in a state tapd never writes (the schema forbids it) is
    // claimed the same way, to be failed (each selection has its own partial index).
    let mut rows = Vec::new();
    for selection in [
        "state = 'queued' AND next_attempt <= $3 \
         AND (claim_until IS NULL OR claim_until <= clock_timestamp()) \
         ORDER BY next_attempt, created, id",
        "state NOT IN ('queued', 'sent', 'failed') AND $3::timestamptz IS NOT NULL \
         AND (claim_until IS NULL OR claim_until <= clock_timestamp()) ORDER BY id",
    ] {
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, \
                 claim_until = clock_timestamp() + make_interval(secs => $2) \
             WHERE id = (SELECT id FROM outbox WHERE {selection} \
                 LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}, sealed_code"
        );
        let statement = client.prepare_cached(&sql).await.map_err(map_err)?;
        rows = client
            .query(
                &statement,
                &[&text(node), &lease.as_secs_f64(), &to_db_time(now)],
            )
            .await
            .map_err(map_err)?;
        if !rows.is_empty() {
            break;
        }
    }
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    // The claim stands (its own statement); a message that can't be read comes back to be
    // failed, not as an error that leaves it claimed, retried and never failed.
    let sealed: Option<String> = rows::col(row, 16).ok().flatten();
    match mail(row) {
        Ok(mail) => {
            let code = seal::open_outbox_code(sealer, &mail.id, sealed.as_deref());
            Ok(Some((mail, code)))
        }
        Err(e) => match salvage(row, &e) {
            Some(salvaged) => Ok(Some((
                salvaged,
                Err(UndeliverableCode::Unreadable(e.to_string())),
            ))),
            None => Err(e),
        },
    }
}

/// The outbox part of `Store::finish_mail` (the caller audits): false when `node` no longer
/// holds the claim.
pub(super) async fn finish(
    tx: &Transaction<'_>,
    id: &str,
    node: &str,
    now: Timestamp,
    outcome: &MailOutcome,
) -> Result<bool, StoreError> {
    let (id, node, now) = (text(id), text(node), to_db_time(now));
    // Not sent or failed: queued, or a state tapd never writes (failed as unreadable).
    const HELD: &str = "id = $1 AND claimed_by = $2 AND state NOT IN ('sent', 'failed')";
    let changed = match outcome {
        MailOutcome::Accepted => {
            tx_execute(
                tx,
                &format!(
                    "UPDATE outbox SET state = 'sent', sealed_code = NULL, \
                     attempts = attempts + 1, finished = $3, last_error = NULL, \
                     claimed_by = NULL, claim_until = NULL WHERE {HELD}"
                ),
                &[&id, &node, &now],
            )
            .await?
        }
        MailOutcome::Retry {
            next_attempt,
            error,
        } => {
            tx_execute(
                tx,
                &format!(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt = $3, \
                     last_error = $4, claimed_by = NULL, claim_until = NULL WHERE {HELD}"
                ),
                &[&id, &node, &to_db_time(*next_attempt), &text(error)],
            )
            .await?
        }
        MailOutcome::Failed { error } => {
            tx_execute(
                tx,
                &format!(
                    "UPDATE outbox SET state = 'failed', sealed_code = NULL, \
                     attempts = attempts + 1, finished = $3, last_error = $4, \
                     claimed_by = NULL, claim_until = NULL WHERE {HELD}"
                ),
                &[&id, &node, &now, &text(error)],
            )
            .await?
        }
    };
    if changed == 0 {
        return Ok(false);
    }
    if matches!(outcome, MailOutcome::Failed { .. }) {
        tx_execute(
            tx,
            "DELETE FROM taps t USING outbox o \
             WHERE o.id = $1 AND t.id = o.tap_id AND t.user_id = o.user_id",
            &[&id],
        )
        .await?;
    }
    Ok(true)
}
