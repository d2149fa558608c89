//! Full reads of an LDAP directory: every user and group through paged searches (RFC 2696),
//! either collected ([`LdapDirectory::full_read`]) or handed to the sync page by page with
//! each user's effective groups ([`LdapDirectory::full_read_streamed`]); Active Directory's
//! ranged member values; the check that no two entries share a stable id. A full read
//! replaces the [`Snapshot`] that incremental reads start from.
//!
//! May depend on: the rest of `directory::ldap`, `directory` (trait types, groups), `model`.

use std::collections::HashMap;
use std::time::Instant;

use chrono::NaiveDateTime;
use ldap3::Ldap;
use tokio::sync::mpsc;

use super::entry::LdapEntry;
use super::incremental::{next_watermark, parse_generalized_time, Watermark};
use super::schema::{ChangeMarker, GroupRecord};
use super::snapshot::{group_of, snapshot_of, Batch, ContentSync, Snapshot};
use super::{Inner, LdapDirectory};
use crate::directory::groups::GroupResolver;
use crate::directory::{DirectoryContents, DirectoryError, SkippedUser, StreamedContents};
use crate::model::User;

impl LdapDirectory {
    /// A full read. The searches run on a thread of their own with a single-threaded
    /// runtime: the connection's decoding task and the conversion into users and groups then
    /// share one thread instead of handing every entry across threads, which cost a quarter of
    /// the read's CPU in the 100,000-user benchmark. Resolving memberships happens back on the
    /// caller's thread, so its large temporary allocations are reused by the rest of the sync
    /// (done on the reader thread, they raised the peak RSS by 90 MB). Every wait is bounded by
    /// the connect and operation timeouts.
    pub(super) async fn full_read(&self) -> Result<DirectoryContents, DirectoryError> {
        let inner = self.inner.clone();
        let (batch, watermark) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    DirectoryError::unavailable_from(
                        format!("cannot start the directory reader: {e}"),
                        e,
                    )
                })?;
            runtime.block_on(inner.full_batch())
        })
        .await
        .map_err(|e| {
            DirectoryError::unavailable_from(format!("the directory reader failed: {e}"), e)
        })??;
        Ok(self.inner.install(batch, watermark).await)
    }
}

impl LdapDirectory {
    /// A full read that hands users to `out` page by page ([`Inner::streamed_batch`]), on the
    /// same kind of reader thread as [`LdapDirectory::full_read`]. The snapshot for incremental
    /// reads is replaced only when the read succeeded.
    pub(super) async fn full_read_streamed(
        &self,
        out: mpsc::Sender<Vec<User>>,
    ) -> Result<StreamedContents, DirectoryError> {
        let inner = self.inner.clone();
        let (batch, watermark, exact) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    DirectoryError::unavailable_from(
                        format!("cannot start the directory reader: {e}"),
                        e,
                    )
                })?;
            runtime.block_on(inner.streamed_batch(&out))
        })
        .await
        .map_err(|e| {
            DirectoryError::unavailable_from(format!("the directory reader failed: {e}"), e)
        })??;
        let skipped_users = batch.skipped_users.clone();
        let streamed = if exact {
            // No member lists: the planner compares a group's own attributes, and the store
            // derives its members from the users' group ids.
            StreamedContents {
                groups: batch
                    .groups
                    .iter()
                    .map(|record| group_of(record, Vec::new()))
                    .collect(),
                replanned_users: None,
                skipped_users,
            }
        } else {
            // A later entry changed what an earlier one meant: resolve it all again, and
            // have every user planned again with its final memberships.
            log::info!(
                "{}: a user entry is also a group, or a memberUid names several users; \
                 memberships resolved again after the read",
                self.inner.settings.url
            );
            let contents = snapshot_of(batch.users.clone(), batch.groups.clone(), None).contents();
            StreamedContents {
                groups: contents.groups,
                replanned_users: Some(contents.users),
                skipped_users,
            }
        };
        // Indexing 100,000 entries for the next incremental read is off the sync's critical
        // path: the lock is taken now, so an incremental read waits for the new snapshot.
        let mut snapshot = self.inner.snapshot.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let content_sync = ContentSync::after_full_read(snapshot.as_ref());
            *snapshot = Some(Snapshot {
                content_sync,
                ..snapshot_of(batch.users, batch.groups, watermark)
            });
        });
        Ok(streamed)
    }
}

impl Inner {
    /// Reads users and groups matching the configured filters, each further restricted by
    /// `changed_since` (an extra filter term) when given. Users first, then groups: running the
    /// two searches at once on two connections was measured four times slower against slapd.
    pub(super) async fn read_batch(
        &self,
        ldap: &mut Ldap,
        changed_since: Option<&str>,
    ) -> Result<Batch, DirectoryError> {
        let restrict = |filter: &str| match changed_since {
            Some(term) => format!("(&{filter}{term})"),
            None => filter.to_owned(),
        };
        let user_filter = restrict(&self.settings.user_filter);
        let group_filter = restrict(&self.settings.group_filter);
        let mut users = Vec::new();
        let mut skipped_users = Vec::new();
        let mut users_newest = None;
        self.connector
            .paged_search(
                ldap,
                &self.settings.user_base,
                &user_filter,
                &self.schema.user_attributes,
                self.settings.page_size,
                |entry| {
                    self.newest_of(&entry, &mut users_newest);
                    match self.decode_user(&entry) {
                        Ok(Some(user)) => users.push(user),
                        Ok(None) => {}
                        Err(skipped) => skipped_users.push(skipped),
                    }
                    Ok(())
                },
            )
            .await?;
        let (groups, groups_newest) = self.read_groups(ldap, &group_filter).await?;
        check_unique_ids(&users, &groups)?;
        Ok(Batch {
            users,
            groups,
            newest_timestamp: users_newest.max(groups_newest),
            skipped_users,
        })
    }

    /// A user entry as a [`User`]; `Ok(None)` for an entry without a username (not a user
    /// tapd can sign in, as before), `Err` for one that can't be decoded, warned about with
    /// its DN.
    pub(super) fn decode_user(&self, entry: &LdapEntry) -> Result<Option<User>, SkippedUser> {
        self.schema.user(entry).map_err(|reason| {
            log::warn!("directory user entry {} skipped: {reason}", entry.dn);
            SkippedUser {
                dn: entry.dn.clone(),
                id: self.schema.user_id(entry).ok(),
                reason,
            }
        })
    }

    /// Keeps in `newest` the latest `modifyTimestamp` seen (OpenLDAP, 389-DS).
    pub(super) fn newest_of(&self, entry: &LdapEntry, newest: &mut Option<NaiveDateTime>) {
        let marker = self.schema.change_marker;
        if marker == ChangeMarker::ModifyTimestamp {
            if let Some(time) = entry
                .first_text(marker.attribute())
                .ok()
                .flatten()
                .and_then(|text| parse_generalized_time(&text))
            {
                *newest = Some(newest.map_or(time, |n| n.max(time)));
            }
        }
    }

    /// Reads the groups matching `filter`, with every chunk of an Active Directory ranged
    /// member attribute, and the newest `modifyTimestamp` among them.
    pub(super) async fn read_groups(
        &self,
        ldap: &mut Ldap,
        filter: &str,
    ) -> Result<(Vec<GroupRecord>, Option<NaiveDateTime>), DirectoryError> {
        let member = self.schema.member_attribute().to_ascii_lowercase();
        let mut groups: Vec<GroupRecord> = Vec::new();
        let mut ranged: Vec<(usize, u64)> = Vec::new();
        let mut newest = None;
        self.connector
            .paged_search(
                ldap,
                &self.settings.group_base,
                filter,
                &self.schema.group_attributes,
                self.settings.page_size,
                |entry| {
                    self.newest_of(&entry, &mut newest);
                    let mut group = self.schema.group(&entry).map_err(DirectoryError::invalid)?;
                    if let Some(next) = take_ranged_values(&entry, &member, &mut group)? {
                        ranged.push((groups.len(), next));
                    }
                    groups.push(group);
                    Ok(())
                },
            )
            .await?;
        for (index, start) in ranged {
            if let Some(group) = groups.get_mut(index) {
                self.fetch_remaining_members(ldap, group, &member, start)
                    .await?;
            }
        }
        Ok((groups, newest))
    }

    /// The searches of a full read whose users are handed to `out` page by page, each with its
    /// effective groups: groups first (there are far fewer), their nesting resolved, then the
    /// users ([`GroupResolver`]). Returns the batch for the snapshot, and each group's
    /// transitive members (index-aligned with the batch's groups) when the early resolution
    /// proved exact.
    pub(super) async fn streamed_batch(
        &self,
        out: &mpsc::Sender<Vec<User>>,
    ) -> Result<(Batch, Option<Watermark>, bool), DirectoryError> {
        let started = Instant::now();
        let mut ldap = self.open().await?;
        let result = async {
            let usn = match self.schema.change_marker {
                ChangeMarker::UsnChanged => Some(self.usn_position(&mut ldap).await?),
                ChangeMarker::ModifyTimestamp => None,
            };
            let (groups, groups_newest) = self
                .read_groups(&mut ldap, &self.settings.group_filter)
                .await?;
            let mut resolver = GroupResolver::new(groups.iter().map(|g| &g.raw));
            let mut users: Vec<User> = Vec::new();
            let mut skipped_users = Vec::new();
            let mut users_newest = None;
            let mut cookie = Vec::new();
            let mut page = 0;
            loop {
                page += 1;
                let mut resolved: Vec<User> =
                    Vec::with_capacity(usize::try_from(self.settings.page_size).unwrap_or(0));
                cookie = self
                    .connector
                    .search_page(
                        &mut ldap,
                        &self.settings.user_base,
                        &self.settings.user_filter,
                        &self.schema.user_attributes,
                        self.settings.page_size,
                        (cookie, page),
                        |entry| {
                            self.newest_of(&entry, &mut users_newest);
                            match self.decode_user(&entry) {
                                Ok(Some(user)) => {
                                    let group_ids =
                                        resolver.user_group_ids(&user.dn, &user.username);
                                    resolved.push(User {
                                        group_ids,
                                        ..user.clone()
                                    });
                                    users.push(user);
                                }
                                Ok(None) => {}
                                Err(skipped) => skipped_users.push(skipped),
                            }
                            Ok(())
                        },
                    )
                    .await?;
                if !resolved.is_empty() && out.send(resolved).await.is_err() {
                    return Err(DirectoryError::unavailable(
                        "the sync stopped taking users".to_owned(),
                    ));
                }
                if cookie.is_empty() {
                    break;
                }
            }
            check_unique_ids(&users, &groups)?;
            let exact = resolver.is_exact();
            let batch = Batch {
                users,
                groups,
                newest_timestamp: users_newest.max(groups_newest),
                skipped_users,
            };
            Ok::<_, DirectoryError>((usn, batch, exact))
        }
        .await;
        let _ = ldap.unbind().await;
        let (usn, batch, exact) = result?;
        let watermark = next_watermark(usn, None, batch.newest_timestamp, started.elapsed());
        Ok((batch, watermark, exact))
    }

    /// Active Directory returns at most 1,500 (MaxValRange) values of a multi-valued attribute
    /// per entry as `member;range=0-1499`; the rest is read chunk by chunk.
    pub(super) async fn fetch_remaining_members(
        &self,
        ldap: &mut Ldap,
        group: &mut GroupRecord,
        member: &str,
        mut start: u64,
    ) -> Result<(), DirectoryError> {
        // Bounded: each round must advance, and no group has more than this many chunks.
        for _ in 0..100_000 {
            let request = vec![format!("{member};range={start}-*")];
            let Some(entry) = self
                .connector
                .read_entry(ldap, &group.raw.dn, &request)
                .await?
            else {
                return Err(DirectoryError::incomplete(format!(
                    "group {} disappeared while its members were read",
                    group.raw.dn
                )));
            };
            match take_ranged_values(&entry, member, group)? {
                Some(next) if next > start => start = next,
                Some(_) => {
                    return Err(DirectoryError::incomplete(format!(
                        "{} returned no progress reading the members of {}",
                        self.settings.url, group.raw.dn
                    )))
                }
                None => return Ok(()),
            }
        }
        Err(DirectoryError::incomplete(format!(
            "too many member ranges in {}",
            group.raw.dn
        )))
    }

    /// The searches of a full read: every user and group, and where the next incremental
    /// read starts.
    pub(super) async fn full_batch(&self) -> Result<(Batch, Option<Watermark>), DirectoryError> {
        let started = Instant::now();
        let mut ldap = self.open().await?;
        let result = async {
            let usn = match self.schema.change_marker {
                ChangeMarker::UsnChanged => Some(self.usn_position(&mut ldap).await?),
                ChangeMarker::ModifyTimestamp => None,
            };
            let batch = self.read_batch(&mut ldap, None).await?;
            Ok::<_, DirectoryError>((usn, batch))
        }
        .await;
        let _ = ldap.unbind().await;
        let (usn, batch) = result?;
        let watermark = next_watermark(usn, None, batch.newest_timestamp, started.elapsed());
        Ok((batch, watermark))
    }

    /// Replaces the snapshot with a full read's entries and returns them resolved.
    pub(super) async fn install(
        &self,
        batch: Batch,
        watermark: Option<Watermark>,
    ) -> DirectoryContents {
        let mut snapshot = snapshot_of(batch.users, batch.groups, watermark);
        let contents = snapshot.contents();
        let mut current = self.snapshot.lock().await;
        snapshot.content_sync = ContentSync::after_full_read(current.as_ref());
        *current = Some(snapshot);
        contents
    }
}

/// Refuses a read in which two entries (users or groups) share a stable id.
pub(super) fn check_unique_ids(
    users: &[User],
    groups: &[GroupRecord],
) -> Result<(), DirectoryError> {
    let mut ids: HashMap<&str, &str> = HashMap::with_capacity(users.len() + groups.len());
    let entries = users.iter().map(|u| (u.id.as_str(), u.dn.as_str())).chain(
        groups
            .iter()
            .map(|g| (g.raw.id.as_str(), g.raw.dn.as_str())),
    );
    for (id, dn) in entries {
        if let Some(other) = ids.insert(id, dn) {
            return Err(DirectoryError::invalid(format!(
                "{dn} has the same id {id} as {other}"
            )));
        }
    }
    Ok(())
}

/// Moves the values of a ranged member attribute (`member;range=0-1499`) into `group` and
/// returns where the next chunk starts, `None` when there is no more.
pub(super) fn take_ranged_values(
    entry: &LdapEntry,
    member: &str,
    group: &mut GroupRecord,
) -> Result<Option<u64>, DirectoryError> {
    let mut next = None;
    for attribute in &entry.attributes {
        if attribute.name != member {
            continue;
        }
        let Some((_, high)) = attribute.range() else {
            continue;
        };
        for value in &attribute.values {
            let text = std::str::from_utf8(value).map_err(|_| {
                DirectoryError::invalid(format!("{}: a {member} value is not UTF-8", entry.dn))
            })?;
            group.raw.member_dns.push(text.to_owned());
        }
        next = high.map(|high| high.saturating_add(1));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn ranged_member_values_are_collected_with_the_next_start() {
        use crate::directory::ldap::entry::EntryAttribute;
        let entry = LdapEntry {
            dn: "cn=big,dc=example,dc=org".to_owned(),
            attributes: vec![EntryAttribute {
                name: "member".to_owned(),
                options: vec!["range=0-1".to_owned()],
                values: vec![b"cn=a".to_vec(), b"cn=b".to_vec()],
            }],
        };
        let mut group = GroupRecord {
            raw: crate::directory::groups::RawGroup {
                dn: entry.dn.clone(),
                id: "g".to_owned(),
                cn: "big".to_owned(),
                member_dns: Vec::new(),
                member_uids: Vec::new(),
            },
            display_name: "big".to_owned(),
        };
        assert_eq!(
            take_ranged_values(&entry, "member", &mut group).unwrap(),
            Some(2)
        );
        assert_eq!(group.raw.member_dns, vec!["cn=a", "cn=b"]);
    }
}
