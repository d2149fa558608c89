//! Incremental reads of an LDAP directory, and the watermark readers: entries changed since
//! the largest `modifyTimestamp` seen (OpenLDAP, 389-DS), or since Active Directory's
//! `highestCommittedUSN` on the same domain controller. [`Inner::incremental_read`] tries
//! content sync first ([`super::refresh`]) and falls back to these.
//!
//! May depend on: the rest of `directory::ldap`, `directory` (trait types).

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use ldap3::Ldap;

use super::escape;
use super::snapshot::{Batch, Removed, Snapshot};
use super::Inner;
use crate::directory::{DirectoryChanges, DirectoryError};

/// GeneralizedTime as written in filters and by OpenLDAP / 389-DS.
pub(super) const GENERALIZED_TIME: &str = "%Y%m%d%H%M%SZ";

/// Where the next incremental read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Watermark {
    /// `modifyTimestamp >= this` (server time).
    Timestamp(NaiveDateTime),
    /// `uSNChanged >` this position's USN, on the same domain controller.
    Usn(UsnPosition),
}

/// Active Directory's `highestCommittedUSN` and the domain controller it was read from. USNs
/// are counted per domain controller and per restore of its database, so an incremental read
/// is only valid on the same one (Microsoft's "Polling for Changes Using the USNChanged
/// Attribute": the DC's DNS name and `invocationId` are kept with the USN, and a change of
/// either means a full sync).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UsnPosition {
    pub(super) usn: u64,
    /// The DC's `dnsHostName`.
    pub(super) host: String,
    /// The `invocationId` of the DC's NTDS Settings object (`dsServiceName`).
    pub(super) invocation_id: Vec<u8>,
}

impl UsnPosition {
    /// Whether an incremental read from `self` is valid where `now` was read.
    pub(super) fn same_database(&self, now: &UsnPosition) -> bool {
        self.host.eq_ignore_ascii_case(&now.host) && self.invocation_id == now.invocation_id
    }
}

impl Inner {
    /// Active Directory's `highestCommittedUSN` from the root DSE, with the domain controller
    /// that answered: its `dnsHostName`, and the `invocationId` of its `dsServiceName` entry.
    pub(super) async fn usn_position(
        &self,
        ldap: &mut Ldap,
    ) -> Result<UsnPosition, DirectoryError> {
        let url = &self.settings.url;
        let missing = |what: &str| {
            DirectoryError::invalid(format!(
                "{url} has no {what} in its root DSE (is it Active Directory?)"
            ))
        };
        let names = ["highestCommittedUSN", "dnsHostName", "dsServiceName"].map(str::to_owned);
        let root = self
            .connector
            .read_entry(ldap, "", &names)
            .await?
            .ok_or_else(|| missing("highestCommittedUSN"))?;
        let text = |name: &str| root.first_text(name).ok().flatten();
        let usn = text("highestCommittedUSN")
            .and_then(|usn| usn.trim().parse().ok())
            .ok_or_else(|| missing("highestCommittedUSN"))?;
        let host = text("dnsHostName").ok_or_else(|| missing("dnsHostName"))?;
        let service = text("dsServiceName").ok_or_else(|| missing("dsServiceName"))?;
        let invocation_id = self
            .connector
            .read_entry(ldap, &service, &["invocationId".to_owned()])
            .await?
            .and_then(|entry| entry.values("invocationId").next().map(<[u8]>::to_vec))
            .ok_or_else(|| {
                DirectoryError::invalid(format!(
                    "{url}: the domain controller's {service} has no invocationId"
                ))
            })?;
        Ok(UsnPosition {
            usn,
            host,
            invocation_id,
        })
    }

    /// An incremental read: by RFC 4533 content sync where the server offers it
    /// ([`Inner::refresh_read`]), else by `modifyTimestamp` / `uSNChanged`
    /// ([`Inner::timestamp_read`]). `None` without a snapshot, or without a watermark when
    /// content sync can't be used.
    pub(super) async fn incremental_read(
        &self,
    ) -> Result<Option<DirectoryChanges>, DirectoryError> {
        let mut guard = self.snapshot.lock().await;
        let Some(snapshot) = guard.as_mut() else {
            return Ok(None);
        };
        let (batch, removed) = match self.refresh_read(snapshot).await? {
            Some(refreshed) => refreshed,
            None => match self.timestamp_read(snapshot).await? {
                Some(batch) => (batch, Removed::default()),
                None => return Ok(None),
            },
        };
        let skipped_users = batch.skipped_users.clone();
        let mut changes = snapshot.merge(batch, removed);
        changes.skipped_users = skipped_users;
        log::debug!(
            "incremental read of {}: {} users and {} groups changed, {} users and {} groups gone",
            self.settings.url,
            changes.users.len(),
            changes.groups.len(),
            changes.deleted_user_ids.len(),
            changes.deleted_group_ids.len()
        );
        Ok(Some(changes))
    }

    /// Reads the entries changed since the snapshot's watermark, and moves the watermark on.
    /// `None` without a watermark, or when Active Directory's USNs can't be compared with it
    /// (another domain controller answered, or the same one restored from a backup): a full
    /// read is due.
    pub(super) async fn timestamp_read(
        &self,
        snapshot: &mut Snapshot,
    ) -> Result<Option<Batch>, DirectoryError> {
        let Some(watermark) = snapshot.watermark.clone() else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut ldap = self.open().await?;
        let result = async {
            let (term, position) = match &watermark {
                Watermark::Timestamp(since) => (
                    format!(
                        "(modifyTimestamp>={})",
                        escape::escape_filter_value(&since.format(GENERALIZED_TIME).to_string())
                    ),
                    None,
                ),
                Watermark::Usn(last) => {
                    let now = self.usn_position(&mut ldap).await?;
                    if !last.same_database(&now) {
                        log::info!(
                            "{}: the last read was on domain controller {} (invocationId {}), \
                             this one is {} (invocationId {}); its USNs can't be compared, so a \
                             full sync runs instead",
                            self.settings.url,
                            last.host,
                            hex(&last.invocation_id),
                            now.host,
                            hex(&now.invocation_id)
                        );
                        return Ok(None);
                    }
                    (
                        format!("(uSNChanged>={})", last.usn.saturating_add(1)),
                        Some(now),
                    )
                }
            };
            let batch = self.read_batch(&mut ldap, Some(&term)).await?;
            Ok::<_, DirectoryError>(Some((position, batch)))
        }
        .await;
        let _ = ldap.unbind().await;
        let Some((position, batch)) = result? else {
            return Ok(None);
        };
        snapshot.watermark = next_watermark(
            position,
            Some(&watermark),
            batch.newest_timestamp,
            started.elapsed(),
        );
        Ok(Some(batch))
    }
}

/// Where the next incremental read starts after a read that took `elapsed`: Active
/// Directory's USN `position` read before it, else the newest `modifyTimestamp` it saw backed
/// off by [`safe_timestamp`] but never earlier than a `previous` timestamp watermark; else
/// `previous` as it was.
pub(super) fn next_watermark(
    position: Option<UsnPosition>,
    previous: Option<&Watermark>,
    newest: Option<NaiveDateTime>,
    elapsed: Duration,
) -> Option<Watermark> {
    if let Some(position) = position {
        return Some(Watermark::Usn(position));
    }
    let Some(newest) = newest else {
        return previous.cloned();
    };
    let candidate = safe_timestamp(newest, elapsed);
    Some(Watermark::Timestamp(match previous {
        Some(Watermark::Timestamp(old)) => (*old).max(candidate),
        _ => candidate,
    }))
}

/// Octets as lower-case hex, for messages.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A watermark no later than the server's time when a read that took `elapsed` started, given
/// the newest `modifyTimestamp` it saw (one-second resolution, so one more second off).
pub(super) fn safe_timestamp(newest: NaiveDateTime, elapsed: Duration) -> NaiveDateTime {
    let margin = chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
        + chrono::Duration::seconds(1);
    newest - margin
}

/// Parses GeneralizedTime as directories write `modifyTimestamp`: `20240102030405Z`,
/// optionally with fractional seconds (`20240102030405.0Z`, Active Directory).
pub(super) fn parse_generalized_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim().strip_suffix('Z')?;
    let whole = text.split(['.', ',']).next()?;
    // By hand rather than with a chrono format string: a full sync reads one timestamp per
    // entry, and the general-purpose parser cost as much as decoding the rest of the entry.
    let digits: [u8; 14] = whole.as_bytes().try_into().ok()?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |from: usize, to: usize| {
        digits
            .iter()
            .take(to)
            .skip(from)
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)).ok()?,
        number(4, 6),
        number(6, 8),
    )?
    .and_hms_opt(number(8, 10), number(10, 12), number(12, 14))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn generalized_time_with_and_without_fractions() {
        let t = parse_generalized_time("20240102030405Z").unwrap();
        assert_eq!(t.format(GENERALIZED_TIME).to_string(), "20240102030405Z");
        assert_eq!(parse_generalized_time("20240102030405.0Z"), Some(t));
        assert_eq!(parse_generalized_time("20240102030405"), None);
        assert_eq!(parse_generalized_time("garbage"), None);
        assert_eq!(parse_generalized_time("20241302030405Z"), None);
        assert_eq!(parse_generalized_time("2024010203040Z"), None);
        assert_eq!(parse_generalized_time("2024010203040xZ"), None);
        assert_eq!(
            parse_generalized_time(" 19991231235959.123Z ").map(|t| t.to_string()),
            Some("1999-12-31 23:59:59".to_owned())
        );
    }

    #[test]
    fn watermark_backs_off_by_the_read_time_and_a_second() {
        let newest = parse_generalized_time("20240102030405Z").unwrap();
        let safe = safe_timestamp(newest, Duration::from_millis(2_500));
        assert_eq!(safe.format(GENERALIZED_TIME).to_string(), "20240102030401Z");
    }

    #[test]
    fn next_watermark_never_moves_back() {
        let at = |text: &str| parse_generalized_time(text).unwrap();
        let second = Duration::from_millis(0);
        let previous = Watermark::Timestamp(at("20240102030405Z"));
        assert_eq!(
            next_watermark(None, Some(&previous), Some(at("20240102030400Z")), second),
            Some(previous.clone()),
            "an older change does not move it back"
        );
        assert_eq!(
            next_watermark(None, Some(&previous), None, second),
            Some(previous.clone())
        );
        assert_eq!(
            next_watermark(None, Some(&previous), Some(at("20240102030409Z")), second),
            Some(Watermark::Timestamp(at("20240102030408Z")))
        );
        let position = UsnPosition {
            usn: 7,
            host: "dc1".to_owned(),
            invocation_id: vec![1],
        };
        assert_eq!(
            next_watermark(Some(position.clone()), Some(&previous), None, second),
            Some(Watermark::Usn(position))
        );
        assert_eq!(next_watermark(None, None, None, second), None);
    }
}
