//! The audit chain on SQLite ([`crate::store::chain`]): the one audit insert, which numbers and
//! links each event under the chain head inside the writer's transaction (SQLite has one
//! writer, so the head can't move underneath it), the linking of events stored before the
//! chain existed, chain-checked retention pruning with its signed checkpoint, and the reads
//! verification needs.
//!
//! May depend on: rusqlite, the store's types and `chain`.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{map_err, rows};
use crate::model::{NewAuditEvent, Timestamp};
use crate::store::chain::{self, ChainHead, ChainRow, ChainState, Checkpoint};
use crate::store::seal::Sealer;
use crate::store::StoreError;

/// The columns a [`ChainRow`] is read from, in this order.
const CHAIN_COLUMNS: &str = "seq, time, actor, activity, target, result, reason_code, channel, \
     source_address, details, prev_hash";

fn chain_row(row: &Row<'_>) -> rusqlite::Result<ChainRow> {
    Ok(ChainRow {
        seq: row.get(0)?,
        time_micros: row.get(1)?,
        actor: row.get(2)?,
        activity: row.get(3)?,
        target: row.get(4)?,
        result: row.get(5)?,
        reason_code: row.get(6)?,
        channel: row.get(7)?,
        source_address: row.get(8)?,
        details: row.get(9)?,
        prev_hash: row.get::<_, Option<String>>(10)?.unwrap_or_default(),
    })
}

fn head(conn: &Connection) -> Result<ChainHead, StoreError> {
    conn.prepare_cached("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1")
        .and_then(|mut stmt| {
            stmt.query_row([], |row| {
                Ok(ChainHead {
                    seq: row.get(0)?,
                    hash: row.get(1)?,
                })
            })
            .optional()
        })
        .map_err(map_err)?
        .ok_or_else(|| StoreError::corrupt("the audit chain head row is missing"))
}

fn set_head(tx: &Transaction<'_>, head: &ChainHead) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE audit_chain SET head_seq = ?1, head_hash = ?2 WHERE id = 1")
        .and_then(|mut stmt| stmt.execute(params![head.seq, head.hash]))
        .map_err(map_err)?;
    Ok(())
}

/// The row `event` is stored as (before linking).
fn row_of(event: &NewAuditEvent) -> Result<ChainRow, StoreError> {
    Ok(ChainRow {
        seq: 0,
        time_micros: rows::to_micros(event.time),
        actor: event.actor.clone(),
        activity: event.activity.clone(),
        target: event.target.clone(),
        result: rows::result_str(event.result).to_owned(),
        reason_code: event.reason_code.clone(),
        channel: event.channel.as_str().to_owned(),
        source_address: event.source_address.clone(),
        details: rows::to_json(&event.details)?,
        prev_hash: String::new(),
    })
}

/// Inserts `events`, in order, as the next links of the chain: the one place an audit row is
/// written on SQLite.
pub(super) fn insert(tx: &Transaction<'_>, events: &[NewAuditEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut linked = events.iter().map(row_of).collect::<Result<Vec<_>, _>>()?;
    let new_head = chain::link(&head(tx)?, &mut linked);
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO audit (seq, time, actor, activity, target, result, reason_code, \
             channel, source_address, details, prev_hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(map_err)?;
    for r in &linked {
        stmt.execute(params![
            r.seq,
            r.time_micros,
            r.actor,
            r.activity,
            r.target,
            r.result,
            r.reason_code,
            r.channel,
            r.source_address,
            r.details,
            r.prev_hash,
        ])
        .map_err(map_err)?;
    }
    set_head(tx, &new_head)
}

/// Numbers and links the events stored before the chain existed, in the order they were
/// written; run once, by the migration that adds the chain.
pub(super) fn link_existing(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let unchained: Vec<(i64, ChainRow)> = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT id, {CHAIN_COLUMNS} FROM audit WHERE seq IS NULL ORDER BY id"
            ))
            .map_err(map_err)?;
        let found = stmt
            .query_map([], |row| {
                let id: i64 = row.get(0)?;
                // The chain columns start at index 1 here.
                Ok((
                    id,
                    ChainRow {
                        seq: 0,
                        time_micros: row.get(2)?,
                        actor: row.get(3)?,
                        activity: row.get(4)?,
                        target: row.get(5)?,
                        result: row.get(6)?,
                        reason_code: row.get(7)?,
                        channel: row.get(8)?,
                        source_address: row.get(9)?,
                        details: row.get(10)?,
                        prev_hash: String::new(),
                    },
                ))
            })
            .map_err(map_err)?;
        found.collect::<Result<_, _>>().map_err(map_err)?
    };
    let mut linked: Vec<ChainRow> = unchained.iter().map(|(_, r)| r.clone()).collect();
    let new_head = chain::link(&head(tx)?, &mut linked);
    for ((id, _), r) in unchained.iter().zip(&linked) {
        tx.execute(
            "UPDATE audit SET seq = ?1, prev_hash = ?2 WHERE id = ?3",
            params![r.seq, r.prev_hash, id],
        )
        .map_err(map_err)?;
    }
    set_head(tx, &new_head)
}

fn checkpoint(conn: &Connection) -> Result<Option<Checkpoint>, StoreError> {
    conn.prepare_cached(
        "SELECT checkpoint_seq, checkpoint_hash, checkpoint_count, checkpoint_key_id, \
         checkpoint_mac FROM audit_chain WHERE id = 1 AND checkpoint_seq IS NOT NULL",
    )
    .and_then(|mut stmt| {
        stmt.query_row([], |row| {
            Ok(Checkpoint {
                seq: row.get(0)?,
                hash: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                count: row.get::<_, Option<i64>>(2)?.unwrap_or_default(),
                key_id: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                mac: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
            })
        })
        .optional()
    })
    .map_err(map_err)
}

/// The chain's head, checkpoint and unchained rows, read in one statement (one snapshot).
pub(super) fn state(conn: &Connection) -> Result<ChainState, StoreError> {
    conn.prepare_cached(
        "SELECT head_seq, head_hash, checkpoint_seq, checkpoint_hash, checkpoint_count, \
         checkpoint_key_id, checkpoint_mac, (SELECT count(*) FROM audit WHERE seq IS NULL) \
         FROM audit_chain WHERE id = 1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([], |row| {
            let checkpoint = match row.get::<_, Option<i64>>(2)? {
                None => None,
                Some(seq) => Some(Checkpoint {
                    seq,
                    hash: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    count: row.get::<_, Option<i64>>(4)?.unwrap_or_default(),
                    key_id: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    mac: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
                }),
            };
            Ok(ChainState {
                head: ChainHead {
                    seq: row.get(0)?,
                    hash: row.get(1)?,
                },
                checkpoint,
                unchained: row.get::<_, i64>(7)?.max(0) as u64,
            })
        })
        .optional()
    })
    .map_err(map_err)?
    .ok_or_else(|| StoreError::corrupt("the audit chain head row is missing"))
}

/// Up to `limit` chained rows from `from_seq` to `to_seq`.
pub(super) fn chain_rows(
    conn: &Connection,
    from_seq: i64,
    to_seq: i64,
    limit: u32,
) -> Result<Vec<ChainRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {CHAIN_COLUMNS} FROM audit WHERE seq >= ?1 AND seq <= ?2 \
             ORDER BY seq LIMIT ?3"
        ))
        .map_err(map_err)?;
    let found = stmt
        .query_map(params![from_seq, to_seq, limit], chain_row)
        .map_err(map_err)?;
    found.collect::<Result<_, _>>().map_err(map_err)
}

/// Prunes up to `limit` events of the chain's prefix dated before `before`, after checking
/// that they link up from the current checkpoint, and moves the checkpoint (signed with
/// `sealer`'s checkpoint key; unsigned without one, which verification reports).
pub(super) fn prune(
    tx: &Transaction<'_>,
    before: Timestamp,
    limit: u32,
    sealer: Option<&Sealer>,
) -> Result<u64, StoreError> {
    let cut = rows::to_micros(before);
    let prefix: Vec<ChainRow> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {CHAIN_COLUMNS} FROM audit WHERE seq IS NOT NULL ORDER BY seq LIMIT ?1"
            ))
            .map_err(map_err)?;
        let found = stmt.query_map([limit], chain_row).map_err(map_err)?;
        let all: Vec<ChainRow> = found.collect::<Result<_, _>>().map_err(map_err)?;
        all.into_iter()
            .take_while(|r| r.time_micros < cut)
            .collect()
    };
    let Some(last) = prefix.last() else {
        return Ok(0);
    };
    let previous = checkpoint(tx)?;
    chain::check_prune(previous.as_ref(), sealer, &prefix)?;
    let deleted = tx
        .prepare_cached("DELETE FROM audit WHERE seq <= ?1")
        .and_then(|mut stmt| stmt.execute([last.seq]))
        .map_err(map_err)? as i64;
    let count = previous.map_or(0, |cp| cp.count) + deleted;
    let hash = last.hash();
    let (key_id, mac) = sealer
        .map(|s| s.sign_checkpoint(&Checkpoint::message(last.seq, &hash, count)))
        .unwrap_or_default();
    tx.prepare_cached(
        "UPDATE audit_chain SET checkpoint_seq = ?1, checkpoint_hash = ?2, \
         checkpoint_count = ?3, checkpoint_key_id = ?4, checkpoint_mac = ?5 WHERE id = 1",
    )
    .and_then(|mut stmt| stmt.execute(params![last.seq, hash, count, key_id, mac]))
    .map_err(map_err)?;
    Ok(deleted as u64)
}
