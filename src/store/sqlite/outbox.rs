//! The onboarding outbox on SQLite (see `Store::issue_tap_by_mail` and its neighbours): one
//! writer, so a claim is one `UPDATE … RETURNING` on the oldest due row.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{insert_audit, map_err, rows};
use crate::model::{MailOutcome, MailState, NewAuditEvent, OutboxMail, StoredTap, Timestamp};
use crate::store::seal::{self, Sealer};
use crate::store::{codec, ClaimedCode, StoreError, UndeliverableCode};

/// Columns an [`OutboxMail`] is read from, in [`mail`]'s order.
pub(super) const COLUMNS: &str = "id, tap_id, user_id, upn, display_name, recipient, tap_start, \
     tap_expires, one_time, origin, created, state, attempts, next_attempt, last_error, finished";

pub(super) fn mail(row: &Row<'_>) -> Result<OutboxMail, StoreError> {
    let get = |e: rusqlite::Error| StoreError::corrupt_from(format!("outbox row: {e}"), e);
    let state: String = row.get(11).map_err(get)?;
    let attempts: i64 = row.get(12).map_err(get)?;
    Ok(OutboxMail {
        id: row.get(0).map_err(get)?,
        tap_id: row.get(1).map_err(get)?,
        user_id: row.get(2).map_err(get)?,
        user_principal_name: row.get(3).map_err(get)?,
        display_name: row.get(4).map_err(get)?,
        recipient: row.get(5).map_err(get)?,
        tap_start: rows::from_micros(row.get(6).map_err(get)?)?,
        tap_expires: rows::from_micros(row.get(7).map_err(get)?)?,
        one_time: row.get(8).map_err(get)?,
        origin: row.get(9).map_err(get)?,
        created: rows::from_micros(row.get(10).map_err(get)?)?,
        state: MailState::parse(&state)
            .ok_or_else(|| StoreError::corrupt(format!("unknown outbox state {state:?}")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt: rows::from_micros(row.get(13).map_err(get)?)?,
        last_error: row.get(14).map_err(get)?,
        finished: row
            .get::<_, Option<i64>>(15)
            .map_err(get)?
            .map(rows::from_micros)
            .transpose()?,
    })
}

/// What can be read of a row [`mail`] can't decode (`error`), for the message to be failed
/// and listed with the reason: its text columns as stored; a value that doesn't read is the
/// epoch, 0 or false, and an unknown state is listed as failed (`last_error` names the damage).
/// `None` when not even its id reads.
fn salvage(row: &Row<'_>, error: &StoreError) -> Option<OutboxMail> {
    let text = |i: usize| row.get::<_, String>(i).unwrap_or_default();
    let time = |i: usize| {
        row.get::<_, i64>(i)
            .ok()
            .and_then(|micros| rows::from_micros(micros).ok())
    };
    Some(OutboxMail {
        id: row.get(0).ok()?,
        tap_id: text(1),
        user_id: text(2),
        user_principal_name: text(3),
        display_name: text(4),
        recipient: text(5),
        tap_start: time(6).unwrap_or_default(),
        tap_expires: time(7).unwrap_or_default(),
        one_time: row.get(8).unwrap_or(false),
        origin: text(9),
        created: time(10).unwrap_or_default(),
        state: row
            .get::<_, String>(11)
            .ok()
            .and_then(|state| MailState::parse(&state))
            .unwrap_or(MailState::Failed),
        attempts: row
            .get::<_, i64>(12)
            .ok()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0),
        next_attempt: time(13).unwrap_or_default(),
        last_error: Some(codec::unreadable_error(
            row.get::<_, Option<String>>(14).ok().flatten(),
            error,
        )),
        finished: time(15),
    })
}

/// A row of the listing: [`mail`], or what [`salvage`] reads of a damaged one (one damaged
/// message does not hide the others).
pub(super) fn listed(row: &Row<'_>) -> Result<OutboxMail, StoreError> {
    mail(row).or_else(|e| salvage(row, &e).ok_or(e))
}

/// The outbox part of `Store::issue_tap_by_mail` (the caller replaces the TAP and audits):
/// false when `grant` was already recorded.
pub(super) fn issue(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    tap: &StoredTap,
    mail: &OutboxMail,
    code: &str,
    grant: Option<&str>,
) -> Result<bool, StoreError> {
    if let Some(rule) = grant {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO onboarding_grants (rule, user_id, granted) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![rule, mail.user_id, rows::to_micros(mail.created)])
            })
            .map_err(map_err)?;
        if inserted == 0 {
            return Ok(false);
        }
        // Served: a failure noted before is over (a later one is news again).
        tx.prepare_cached("DELETE FROM onboarding_failures WHERE rule = ?1 AND user_id = ?2")
            .and_then(|mut stmt| stmt.execute(params![rule, mail.user_id]))
            .map_err(map_err)?;
    }
    tx.prepare_cached(
        "UPDATE outbox SET state = 'failed', sealed_code = NULL, claimed_by = NULL, \
         claim_until = NULL, finished = ?2, last_error = 'replaced by a newer pass' \
         WHERE user_id = ?1 AND state = 'queued'",
    )
    .and_then(|mut stmt| stmt.execute(params![mail.user_id, rows::to_micros(mail.created)]))
    .map_err(map_err)?;
    let sealed = sealer.seal(code, &seal::outbox_row(&mail.id));
    tx.prepare_cached(
        "INSERT INTO outbox (id, tap_id, user_id, upn, display_name, recipient, tap_start, \
         tap_expires, one_time, origin, created, state, attempts, next_attempt, sealed_code) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'queued', 0, ?12, ?13)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            mail.id,
            tap.id,
            mail.user_id,
            mail.user_principal_name,
            mail.display_name,
            mail.recipient,
            rows::to_micros(mail.tap_start),
            rows::to_micros(mail.tap_expires),
            mail.one_time,
            mail.origin,
            rows::to_micros(mail.created),
            rows::to_micros(mail.next_attempt),
            sealed,
        ])
    })
    .map_err(map_err)?;
    Ok(true)
}

/// The transaction of `Store::claim_mail`.
pub(super) fn claim(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    node: &str,
    now: Timestamp,
    lease: Duration,
) -> Result<Option<(OutboxMail, ClaimedCode)>, StoreError> {
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
    let now = rows::to_micros(now);
    // A next attempt that is no integer (SQLite keeps what it is given) is due at once: the
    // message can't be read and is failed, rather than waiting forever with its TAP usable.
    // When nothing is due, a row in a state tapd never writes (the schema forbids it) is
    // claimed the same way, to be failed (each selection has its own partial index).
    for selection in [
        "state = 'queued' AND (next_attempt <= ?3 OR typeof(next_attempt) <> 'integer') \
         AND (claim_until IS NULL OR claim_until <= ?3) ORDER BY next_attempt, created, id",
        "state NOT IN ('queued', 'sent', 'failed') \
         AND (claim_until IS NULL OR claim_until <= ?3) ORDER BY id",
    ] {
        if let Some(claimed) = claim_one(tx, sealer, selection, node, now, until)? {
            return Ok(Some(claimed));
        }
    }
    Ok(None)
}

/// Claims the first row of `selection` (a condition and its order) for `node` until `until`.
fn claim_one(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    selection: &str,
    node: &str,
    now: i64,
    until: Timestamp,
) -> Result<Option<(OutboxMail, ClaimedCode)>, StoreError> {
    let claimed = tx
        .prepare_cached(&format!(
            "UPDATE outbox SET claimed_by = ?1, claim_until = ?2 WHERE id = (\
               SELECT id FROM outbox WHERE {selection} LIMIT 1) \
             RETURNING {COLUMNS}, sealed_code"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![node, rows::to_micros(until), now], |row| {
                // Nothing read here may fail the statement: that would undo the claim and
                // the same damaged row would come first again, blocking the queue.
                let decoded = mail(row).map_err(|e| match salvage(row, &e) {
                    Some(salvaged) => Ok((salvaged, e)),
                    None => Err(e),
                });
                Ok((decoded, row.get::<_, Option<String>>(16).ok().flatten()))
            })
            .optional()
        })
        .map_err(map_err)?;
    let Some((decoded, sealed)) = claimed else {
        return Ok(None);
    };
    match decoded {
        Ok(mail) => {
            let code = seal::open_outbox_code(sealer, &mail.id, sealed.as_deref());
            Ok(Some((mail, code)))
        }
        Err(Ok((salvaged, e))) => Ok(Some((
            salvaged,
            Err(UndeliverableCode::Unreadable(e.to_string())),
        ))),
        Err(Err(e)) => Err(e),
    }
}

/// The transaction of `Store::finish_mail`.
pub(super) fn finish(
    tx: &Transaction<'_>,
    id: &str,
    node: &str,
    now: Timestamp,
    outcome: &MailOutcome,
    audit: &NewAuditEvent,
) -> Result<bool, StoreError> {
    let now = rows::to_micros(now);
    // Not sent or failed: queued, or a state tapd never writes (failed as unreadable).
    const HELD: &str = "id = ?1 AND claimed_by = ?2 AND state NOT IN ('sent', 'failed')";
    let changed = match outcome {
        MailOutcome::Accepted => tx
            .prepare_cached(&format!(
                "UPDATE outbox SET state = 'sent', sealed_code = NULL, attempts = attempts + 1, \
                 finished = ?3, last_error = NULL, claimed_by = NULL, claim_until = NULL \
                 WHERE {HELD}"
            ))
            .and_then(|mut stmt| stmt.execute(params![id, node, now])),
        MailOutcome::Retry {
            next_attempt,
            error,
        } => tx
            .prepare_cached(&format!(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?3, last_error = ?4, \
                 claimed_by = NULL, claim_until = NULL WHERE {HELD}"
            ))
            .and_then(|mut stmt| {
                stmt.execute(params![id, node, rows::to_micros(*next_attempt), error])
            }),
        MailOutcome::Failed { error } => tx
            .prepare_cached(&format!(
                "UPDATE outbox SET state = 'failed', sealed_code = NULL, attempts = attempts + 1, \
                 finished = ?3, last_error = ?4, claimed_by = NULL, claim_until = NULL \
                 WHERE {HELD}"
            ))
            .and_then(|mut stmt| stmt.execute(params![id, node, now, error])),
    }
    .map_err(map_err)?;
    if changed == 0 {
        return Ok(false);
    }
    if matches!(outcome, MailOutcome::Failed { .. }) {
        tx.prepare_cached(
            "DELETE FROM taps WHERE id = (SELECT tap_id FROM outbox WHERE id = ?1) \
             AND user_id = (SELECT user_id FROM outbox WHERE id = ?1)",
        )
        .and_then(|mut stmt| stmt.execute(params![id]))
        .map_err(map_err)?;
    }
    insert_audit(tx, audit)?;
    Ok(true)
}
