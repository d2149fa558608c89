//! The tamper-evident audit chain: every stored audit event carries a sequence number (1, 2, …,
//! no gaps) and the SHA-256 of its predecessor's canonical encoding, so changing, deleting or
//! inserting a row breaks the chain at that row. The chain head (last sequence number and its
//! hash) is kept in the store next to the events and written to the journal every minute and
//! at shutdown ([`head_loop`]), so even a rewrite of the whole table (head included) disagrees
//! with the journal.
//!
//! **Canonical encoding** (version 1) of a stored row, the input of its SHA-256:
//!
//! ```text
//! "tapd-audit-v1" 0x00
//! seq            i64, 8 bytes big-endian
//! time           i64 microseconds since the Unix epoch, 8 bytes big-endian
//! actor, activity, target, result, reason_code, channel, source_address, details, prev_hash
//!                each: 0x00 when absent (NULL), else 0x01, u32 big-endian byte length, UTF-8
//! ```
//!
//! The text fields are hashed exactly as stored (`result` and `channel` in their column
//! spelling, `details` as its JSON text), so the hash depends only on the row, never on how a
//! later tapd names an activity. `prev_hash` is 64 lowercase hex digits; the first event's
//! predecessor hash is 64 zeros ([`GENESIS`]).
//!
//! Every backend assigns `seq` and `prev_hash` at its one audit insert, inside the transaction
//! that writes the event, holding the chain head: SQLite has one writer; PostgreSQL locks the
//! head row (`SELECT … FOR UPDATE`), so nodes writing at once queue on it and the chain has
//! neither gaps nor forks. A rollback rolls the head back with the event.
//!
//! **Upgrade**: the migration that adds the chain numbers the events already stored in the
//! order they were written (`id`) and links them, inside the migration's transaction.
//!
//! **Retention**: pruning deletes a prefix of the chain (by sequence number, stopping at the
//! first event not older than the cut) after checking that prefix's links, and records a
//! checkpoint: the last pruned sequence number, its hash and how many events were pruned in
//! all, signed with HMAC-SHA256 under a key derived from `[store] secrets_key_file`
//! ([`crate::store::seal::Sealer::sign_checkpoint`]). Verification starts after the checkpoint
//! once its signature holds, and fails when it does not.
//!
//! May depend on: `store` (its types), `model`, `clock`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::logging::ErrorChain;
use crate::store::{Store, StoreError};

/// The predecessor hash of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How often the chain head is written to the journal.
pub const HEAD_INTERVAL: Duration = Duration::from_secs(60);

/// Rows read per page while verifying.
const PAGE: u32 = 1_000;

/// One stored audit row, as the chain sees it (every column but the backend's own `id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Microseconds since the Unix epoch, as stored.
    pub time_micros: i64,
    pub actor: String,
    pub activity: String,
    pub target: Option<String>,
    /// As stored (`success` / `failure`).
    pub result: String,
    pub reason_code: Option<String>,
    /// As stored (`Channel::as_str`).
    pub channel: String,
    pub source_address: Option<String>,
    /// The details' JSON text, as stored.
    pub details: String,
    /// The SHA-256 (hex) of the predecessor's canonical encoding.
    pub prev_hash: String,
}

fn put_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            // A stored text longer than 4 GiB can't exist in either backend.
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

impl ChainRow {
    /// The canonical encoding (see the module documentation).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.details.len());
        out.extend_from_slice(b"tapd-audit-v1\0");
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_micros.to_be_bytes());
        put_text(&mut out, Some(&self.actor));
        put_text(&mut out, Some(&self.activity));
        put_text(&mut out, self.target.as_deref());
        put_text(&mut out, Some(&self.result));
        put_text(&mut out, self.reason_code.as_deref());
        put_text(&mut out, Some(&self.channel));
        put_text(&mut out, self.source_address.as_deref());
        put_text(&mut out, Some(&self.details));
        put_text(&mut out, Some(&self.prev_hash));
        out
    }

    /// SHA-256 of [`ChainRow::canonical`], lowercase hex.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.canonical()))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last event of the chain: its sequence number (0 when nothing was ever written) and
/// hash ([`GENESIS`] then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// What retention pruned: every event up to `seq` (whose hash was `hash`), `count` in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub count: i64,
    /// Id of the secrets key whose derived key signed it (empty when unsigned).
    pub key_id: String,
    /// HMAC-SHA256 over [`Checkpoint::message`], hex (empty when unsigned).
    pub mac: String,
}

impl Checkpoint {
    /// The signed message: `"tapd-audit-checkpoint-v1" 0x00`, seq and count as i64 big-endian,
    /// then the hash's 64 hex digits.
    pub fn message(seq: i64, hash: &str, count: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(100);
        out.extend_from_slice(b"tapd-audit-checkpoint-v1\0");
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(hash.as_bytes());
        out
    }
}

/// The chain's stored state: its head, the retention checkpoint, and how many rows carry no
/// sequence number (written around tapd).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    pub head: ChainHead,
    pub checkpoint: Option<Checkpoint>,
    pub unchained: u64,
}

/// Links `events` (in order) after `head`: fills each row's `seq` and `prev_hash` and returns
/// the new head. The one place a backend numbers the events it inserts.
pub fn link(head: &ChainHead, rows: &mut [ChainRow]) -> ChainHead {
    let mut head = head.clone();
    for row in rows {
        row.seq = head.seq + 1;
        row.prev_hash = std::mem::take(&mut head.hash);
        head = ChainHead {
            seq: row.seq,
            hash: row.hash(),
        };
    }
    head
}

/// Where the chain first breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainBreak {
    /// The first broken or missing sequence number.
    pub sequence: i64,
    /// What is wrong there, in words.
    pub problem: String,
}

/// How the retention checkpoint was used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointUse {
    /// Last pruned sequence number.
    pub sequence: i64,
    /// Events pruned in all.
    pub pruned: i64,
    /// Whether its signature holds under the secrets key.
    pub signature_valid: bool,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// True when the whole checked range links up and matches the head.
    pub valid: bool,
    /// First sequence number checked.
    pub from: i64,
    /// Events checked.
    pub checked: u64,
    /// The stored head.
    pub head: ChainHead,
    /// The retention checkpoint verification started from, when it did.
    pub checkpoint: Option<CheckpointUse>,
    /// The first break, when there is one.
    pub first_break: Option<ChainBreak>,
}

/// Follows the chain row by row.
struct Walker {
    expected_seq: i64,
    /// The hash the next row must name as predecessor; `None` to trust it (`--from`).
    expected_prev: Option<String>,
    last: Option<ChainRow>,
    checked: u64,
}

impl Walker {
    fn step(&mut self, row: ChainRow) -> Result<(), ChainBreak> {
        if row.seq > self.expected_seq {
            return Err(ChainBreak {
                sequence: self.expected_seq,
                problem: format!(
                    "sequence {} is missing (the next stored event is {})",
                    self.expected_seq, row.seq
                ),
            });
        }
        if row.seq < self.expected_seq {
            return Err(ChainBreak {
                sequence: row.seq,
                problem: format!("sequence {} appears twice", row.seq),
            });
        }
        if let Some(expected) = &self.expected_prev {
            if &row.prev_hash != expected {
                return Err(match &self.last {
                    Some(prev) => ChainBreak {
                        sequence: prev.seq,
                        problem: format!(
                            "event {} was changed: its hash no longer matches the predecessor \
                             hash event {} recorded",
                            prev.seq, row.seq
                        ),
                    },
                    None => ChainBreak {
                        sequence: row.seq,
                        problem: format!(
                            "event {} does not follow its predecessor (the retention checkpoint \
                             or genesis): its predecessor hash differs",
                            row.seq
                        ),
                    },
                });
            }
        }
        self.expected_prev = Some(row.hash());
        self.expected_seq = row.seq + 1;
        self.checked += 1;
        self.last = Some(row);
        Ok(())
    }

    /// Compares the end of the walk with the stored head.
    fn finish(&self, head: &ChainHead) -> Result<(), ChainBreak> {
        let last_seq = self.expected_seq - 1;
        if head.seq > last_seq {
            return Err(ChainBreak {
                sequence: last_seq + 1,
                problem: format!(
                    "sequence {} is missing (the chain head is at {})",
                    last_seq + 1,
                    head.seq
                ),
            });
        }
        if let (Some(last), Some(hash)) = (&self.last, &self.expected_prev) {
            if hash != &head.hash {
                return Err(ChainBreak {
                    sequence: last.seq,
                    problem: format!(
                        "event {} was changed: its hash no longer matches the chain head",
                        last.seq
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Recomputes the chain from the retention checkpoint (or the first event), or from `from`
/// when given, to the head; names the first broken or missing sequence number.
pub async fn verify(store: &dyn Store, from: Option<i64>) -> Result<Verification, StoreError> {
    let state = store.audit_chain().await?;
    let mut result = Verification {
        valid: false,
        from: 1,
        checked: 0,
        head: state.head.clone(),
        checkpoint: None,
        first_break: None,
    };
    let mut walker = Walker {
        expected_seq: 1,
        expected_prev: Some(GENESIS.to_owned()),
        last: None,
        checked: 0,
    };
    if let Some(cp) = &state.checkpoint {
        let signature_valid = !cp.mac.is_empty() && store.checkpoint_signature_holds(cp);
        result.checkpoint = Some(CheckpointUse {
            sequence: cp.seq,
            pruned: cp.count,
            signature_valid,
        });
        if !signature_valid {
            result.first_break = Some(ChainBreak {
                sequence: cp.seq + 1,
                problem: if cp.mac.is_empty() {
                    "the retention checkpoint is not signed (no secrets key when it was written)"
                        .to_owned()
                } else {
                    format!(
                        "the retention checkpoint (events up to {}, {} pruned) is forged or \
                         altered: its signature does not verify under the secrets key",
                        cp.seq, cp.count
                    )
                },
            });
            return Ok(result);
        }
        walker.expected_seq = cp.seq + 1;
        walker.expected_prev = Some(cp.hash.clone());
    }
    if let Some(from) = from {
        if from > state.head.seq {
            result.from = from;
            result.first_break = Some(ChainBreak {
                sequence: from,
                problem: format!(
                    "sequence {from} does not exist yet (the chain head is at {})",
                    state.head.seq
                ),
            });
            return Ok(result);
        }
        if from < walker.expected_seq {
            if state.checkpoint.is_some() {
                result.first_break = Some(ChainBreak {
                    sequence: from,
                    problem: format!(
                        "sequence {from} was pruned by retention (the checkpoint covers up to {})",
                        walker.expected_seq - 1
                    ),
                });
                return Ok(result);
            }
        } else {
            walker.expected_seq = from;
            walker.expected_prev = None;
        }
    }
    result.from = walker.expected_seq;
    if state.unchained > 0 {
        result.first_break = Some(ChainBreak {
            sequence: walker.expected_seq,
            problem: format!(
                "{} stored event(s) carry no sequence number: written around tapd",
                state.unchained
            ),
        });
        return Ok(result);
    }
    let mut next = walker.expected_seq;
    loop {
        let rows = store.audit_chain_rows(next, state.head.seq, PAGE).await?;
        let full = rows.len() == PAGE as usize;
        for row in rows {
            next = row.seq + 1;
            if let Err(broken) = walker.step(row) {
                result.checked = walker.checked;
                result.first_break = Some(broken);
                return Ok(result);
            }
        }
        if !full {
            break;
        }
    }
    result.checked = walker.checked;
    match walker.finish(&state.head) {
        Ok(()) => result.valid = true,
        Err(broken) => result.first_break = Some(broken),
    }
    Ok(result)
}

/// Checks that `rows` (about to be pruned, in order) link up after the current checkpoint (or
/// genesis) `after`; the break when they don't.
pub fn check_prefix(after: &ChainHead, rows: &[ChainRow]) -> Result<(), ChainBreak> {
    let mut walker = Walker {
        expected_seq: after.seq + 1,
        expected_prev: Some(after.hash.clone()),
        last: None,
        checked: 0,
    };
    rows.iter().cloned().try_for_each(|row| walker.step(row))
}

/// Whether `prefix` (the events about to be pruned, in order) may go, on either backend: the
/// current checkpoint `previous`, when a key is there to check it, must carry its signature,
/// and `prefix` must link up after it (or after genesis). Pruning never signs over a forgery or
/// a broken chain.
pub fn check_prune(
    previous: Option<&Checkpoint>,
    sealer: Option<&crate::store::seal::Sealer>,
    prefix: &[ChainRow],
) -> Result<(), StoreError> {
    let after = previous
        .map(|cp| ChainHead {
            seq: cp.seq,
            hash: cp.hash.clone(),
        })
        .unwrap_or_default();
    if let (Some(cp), Some(sealer)) = (previous, sealer) {
        let message = Checkpoint::message(cp.seq, &cp.hash, cp.count);
        if !sealer.checkpoint_signature_holds(&message, &cp.key_id, &cp.mac) {
            return Err(StoreError::corrupt(
                "audit retention refuses to prune: the retention checkpoint's signature does \
                 not verify (forged or altered)",
            ));
        }
    }
    check_prefix(&after, prefix).map_err(|broken| {
        StoreError::corrupt(format!(
            "audit retention refuses to prune a broken chain: at sequence {}: {}",
            broken.sequence, broken.problem
        ))
    })
}

/// Writes the chain head to the log (and so the journal: fields `AUDIT_CHAIN_SEQ`,
/// `AUDIT_CHAIN_HASH`).
pub async fn log_head(store: &dyn Store) {
    match store.audit_chain().await {
        Ok(state) => log::info!(
            target: "tapd::audit_chain",
            audit_chain_seq = state.head.seq,
            audit_chain_hash = state.head.hash.as_str();
            "audit chain head: seq {} hash {}",
            state.head.seq,
            state.head.hash
        ),
        Err(e) => log::warn!("audit chain head: can't read it: {}", ErrorChain(&e)),
    }
}

/// Writes the chain head to the journal every `interval` until `shutdown` (the daemon writes
/// the last one itself after every other task has stopped).
pub async fn head_loop(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    loop {
        log_head(&*store).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn row(n: u8) -> ChainRow {
        ChainRow {
            seq: 0,
            time_micros: i64::from(n) * 1_000_000,
            actor: "root".into(),
            activity: format!("activity {n}"),
            target: None,
            result: "success".into(),
            reason_code: None,
            channel: "admin".into(),
            source_address: None,
            details: "{}".into(),
            prev_hash: String::new(),
        }
    }

    #[test]
    fn linking_numbers_from_the_head_and_every_field_counts() {
        let mut rows = vec![row(1), row(2)];
        let head = link(&ChainHead::default(), &mut rows);
        assert_eq!(rows[0].seq, 1);
        assert_eq!(rows[0].prev_hash, GENESIS);
        assert_eq!(rows[1].prev_hash, rows[0].hash());
        assert_eq!(head.seq, 2);
        assert_eq!(head.hash, rows[1].hash());
        // An absent field and an empty one encode differently.
        let mut a = rows[0].clone();
        a.target = Some(String::new());
        assert_ne!(a.hash(), rows[0].hash());
        // Moving bytes between fields changes the hash.
        let mut b = rows[0].clone();
        b.actor = "roo".into();
        b.activity = format!("t{}", rows[0].activity);
        assert_ne!(b.hash(), rows[0].hash());
        assert!(check_prefix(&ChainHead::default(), &rows).is_ok());
        let broken = check_prefix(&ChainHead::default(), &rows[1..]).unwrap_err();
        assert_eq!(broken.sequence, 1);
    }
}
