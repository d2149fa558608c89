//! The audit chain on PostgreSQL ([`crate::store::chain`]): the one audit insert locks the
//! chain head row (`SELECT … FOR UPDATE`) inside the transaction that writes the events, so
//! nodes writing at once take turns on it: every event gets the next sequence number and its
//! predecessor's hash, with no gaps and no forks, and a rollback takes its numbers with it.
//! Also: linking the events stored before the chain existed, chain-checked retention pruning
//! with its signed checkpoint, and the reads verification needs.
//!
//! May depend on: tokio-postgres, the store's types and `chain`.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::map_err;
use super::rows::{self, col, opt_text, text, to_db_time};
use crate::model::{NewAuditEvent, Timestamp};
use crate::store::chain::{self, ChainHead, ChainRow, ChainState, Checkpoint};
use crate::store::seal::Sealer;
use crate::store::StoreError;

/// The columns a [`ChainRow`] is read from, in this order.
pub(super) const CHAIN_COLUMNS: &str = "seq, time, actor, activity, target, result, \
     reason_code, channel, source_address, details, prev_hash";

/// Reads a row selected with [`CHAIN_COLUMNS`].
pub(super) fn chain_row(row: &Row) -> Result<ChainRow, StoreError> {
    let time: DateTime<Utc> = col(row, 1)?;
    Ok(ChainRow {
        seq: col(row, 0)?,
        time_micros: time.timestamp_micros(),
        actor: col(row, 2)?,
        activity: col(row, 3)?,
        target: col(row, 4)?,
        result: col(row, 5)?,
        reason_code: col(row, 6)?,
        channel: col(row, 7)?,
        source_address: col(row, 8)?,
        details: col(row, 9)?,
        prev_hash: col::<Option<String>>(row, 10)?.unwrap_or_default(),
    })
}

/// The row `event` is stored as (before linking): exactly the values bound, NUL replaced as
/// every PostgreSQL write replaces it.
fn row_of(event: &NewAuditEvent) -> Result<ChainRow, StoreError> {
    Ok(ChainRow {
        seq: 0,
        time_micros: to_db_time(event.time).timestamp_micros(),
        actor: text(&event.actor).into_owned(),
        activity: text(&event.activity).into_owned(),
        target: opt_text(&event.target).map(|t| t.into_owned()),
        result: rows::result_str(event.result).to_owned(),
        reason_code: opt_text(&event.reason_code).map(|t| t.into_owned()),
        channel: event.channel.as_str().to_owned(),
        source_address: opt_text(&event.source_address).map(|t| t.into_owned()),
        details: text(&rows::to_json(&event.details)?).into_owned(),
        prev_hash: String::new(),
    })
}

async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await.map_err(map_err)?;
    tx.execute(&statement, params).await.map_err(map_err)
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await.map_err(map_err)?;
    tx.query(&statement, params).await.map_err(map_err)
}

/// Locks the chain head row until the transaction ends and reads it.
async fn lock_head(tx: &Transaction<'_>) -> Result<ChainHead, StoreError> {
    let rows = query(
        tx,
        "SELECT head_seq, head_hash FROM audit_chain WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::corrupt("the audit chain head row is missing"))?;
    Ok(ChainHead {
        seq: col(row, 0)?,
        hash: col(row, 1)?,
    })
}

async fn set_head(tx: &Transaction<'_>, head: &ChainHead) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1",
        &[&head.seq, &head.hash],
    )
    .await?;
    Ok(())
}

/// Writes already linked rows.
async fn insert_rows(tx: &Transaction<'_>, linked: &[ChainRow]) -> Result<(), StoreError> {
    let mut seq = Vec::with_capacity(linked.len());
    let mut time = Vec::with_capacity(linked.len());
    let mut actor = Vec::with_capacity(linked.len());
    let mut activity = Vec::with_capacity(linked.len());
    let mut target = Vec::with_capacity(linked.len());
    let mut result = Vec::with_capacity(linked.len());
    let mut reason_code = Vec::with_capacity(linked.len());
    let mut channel = Vec::with_capacity(linked.len());
    let mut source_address = Vec::with_capacity(linked.len());
    let mut details = Vec::with_capacity(linked.len());
    let mut prev_hash = Vec::with_capacity(linked.len());
    for r in linked {
        seq.push(r.seq);
        time.push(
            DateTime::from_timestamp_micros(r.time_micros)
                .ok_or_else(|| StoreError::corrupt("audit time out of range"))?,
        );
        actor.push(r.actor.as_str());
        activity.push(r.activity.as_str());
        target.push(r.target.as_deref());
        result.push(r.result.as_str());
        reason_code.push(r.reason_code.as_deref());
        channel.push(r.channel.as_str());
        source_address.push(r.source_address.as_deref());
        details.push(r.details.as_str());
        prev_hash.push(r.prev_hash.as_str());
    }
    execute(
        tx,
        "INSERT INTO audit (seq, time, actor, activity, target, result, reason_code, channel, \
         source_address, details, prev_hash) \
         SELECT seq, time, actor, activity, target, result, reason_code, channel, \
         source_address, details, prev_hash \
         FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
         AS e(seq, time, actor, activity, target, result, reason_code, channel, \
         source_address, details, prev_hash) ORDER BY seq",
        &[
            &seq,
            &time,
            &actor,
            &activity,
            &target,
            &result,
            &reason_code,
            &channel,
            &source_address,
            &details,
            &prev_hash,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts `events`, in order, as the next links of the chain: the one place an audit row is
/// written on PostgreSQL. Holds the chain head's row lock until `tx` ends.
pub(super) async fn insert(
    tx: &Transaction<'_>,
    events: &[NewAuditEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut linked = events.iter().map(row_of).collect::<Result<Vec<_>, _>>()?;
    let new_head = chain::link(&lock_head(tx).await?, &mut linked);
    insert_rows(tx, &linked).await?;
    set_head(tx, &new_head).await
}

/// Numbers and links the events stored before the chain existed, in the order they were
/// written; run once, by the migration that adds the chain.
pub(super) async fn link_existing(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let found = query(
        tx,
        &format!("SELECT id, {CHAIN_COLUMNS} FROM audit WHERE seq IS NULL ORDER BY id"),
        &[],
    )
    .await?;
    let mut ids = Vec::with_capacity(found.len());
    let mut linked = Vec::with_capacity(found.len());
    for row in &found {
        let id: i64 = col(row, 0)?;
        let time: DateTime<Utc> = col(row, 2)?;
        ids.push(id);
        linked.push(ChainRow {
            seq: 0,
            time_micros: time.timestamp_micros(),
            actor: col(row, 3)?,
            activity: col(row, 4)?,
            target: col(row, 5)?,
            result: col(row, 6)?,
            reason_code: col(row, 7)?,
            channel: col(row, 8)?,
            source_address: col(row, 9)?,
            details: col(row, 10)?,
            prev_hash: String::new(),
        });
    }
    let new_head = chain::link(&lock_head(tx).await?, &mut linked);
    let seqs: Vec<i64> = linked.iter().map(|r| r.seq).collect();
    let hashes: Vec<&str> = linked.iter().map(|r| r.prev_hash.as_str()).collect();
    execute(
        tx,
        "UPDATE audit SET seq = l.seq, prev_hash = l.prev_hash \
         FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS l(id, seq, prev_hash) \
         WHERE audit.id = l.id",
        &[&ids, &seqs, &hashes],
    )
    .await?;
    set_head(tx, &new_head).await
}

/// The statement [`state`] decodes: head, checkpoint and unchained count in one snapshot.
pub(super) const STATE_SQL: &str = "SELECT head_seq, head_hash, checkpoint_seq, checkpoint_hash, \
     checkpoint_count, checkpoint_key_id, checkpoint_mac, \
     (SELECT count(*) FROM audit WHERE seq IS NULL) FROM audit_chain WHERE id = 1";

/// Decodes a row of [`STATE_SQL`].
pub(super) fn state(row: &Row) -> Result<ChainState, StoreError> {
    let checkpoint = match col::<Option<i64>>(row, 2)? {
        None => None,
        Some(seq) => Some(Checkpoint {
            seq,
            hash: col::<Option<String>>(row, 3)?.unwrap_or_default(),
            count: col::<Option<i64>>(row, 4)?.unwrap_or_default(),
            key_id: col::<Option<String>>(row, 5)?.unwrap_or_default(),
            mac: col::<Option<String>>(row, 6)?.unwrap_or_default(),
        }),
    };
    Ok(ChainState {
        head: ChainHead {
            seq: col(row, 0)?,
            hash: col(row, 1)?,
        },
        checkpoint,
        unchained: col::<i64>(row, 7)?.max(0) as u64,
    })
}

/// Prunes up to `limit` events of the chain's prefix dated before `before`, after checking
/// that they link up from the current checkpoint, and moves the checkpoint (signed with
/// `sealer`'s checkpoint key; unsigned without one, which verification reports). Holds the
/// head lock, so two nodes pruning at once take turns.
pub(super) async fn prune(
    tx: &Transaction<'_>,
    before: Timestamp,
    limit: u32,
    sealer: Option<&Sealer>,
) -> Result<u64, StoreError> {
    lock_head(tx).await?;
    let cut = to_db_time(before).timestamp_micros();
    let found = query(
        tx,
        &format!("SELECT {CHAIN_COLUMNS} FROM audit WHERE seq IS NOT NULL ORDER BY seq LIMIT $1"),
        &[&i64::from(limit)],
    )
    .await?;
    let mut prefix = Vec::new();
    for row in &found {
        let r = chain_row(row)?;
        if r.time_micros >= cut {
            break;
        }
        prefix.push(r);
    }
    let Some(last) = prefix.last() else {
        return Ok(0);
    };
    let state_rows = query(tx, STATE_SQL, &[]).await?;
    let previous = match state_rows.first() {
        Some(row) => state(row)?.checkpoint,
        None => None,
    };
    chain::check_prune(previous.as_ref(), sealer, &prefix)?;
    let deleted = execute(tx, "DELETE FROM audit WHERE seq <= $1", &[&last.seq]).await? as i64;
    let count = previous.map_or(0, |cp| cp.count) + deleted;
    let hash = last.hash();
    let (key_id, mac) = sealer
        .map(|s| s.sign_checkpoint(&Checkpoint::message(last.seq, &hash, count)))
        .unwrap_or_default();
    execute(
        tx,
        "UPDATE audit_chain SET checkpoint_seq = $1, checkpoint_hash = $2, \
         checkpoint_count = $3, checkpoint_key_id = $4, checkpoint_mac = $5 WHERE id = 1",
        &[&last.seq, &hash, &count, &key_id, &mac],
    )
    .await?;
    Ok(deleted as u64)
}
