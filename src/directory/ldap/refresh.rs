//! Incremental reads by RFC 4533 content sync (refreshOnly), where the server offers it:
//! the changed entries and the ids of entries that are gone, with the cookies to resume from.
//! The control encoding and decoding are in [`super::content_sync`]; this is the reader that
//! turns a refresh into a [`Batch`] for the [`Snapshot`].
//!
//! May depend on: the rest of `directory::ldap`, `directory` (trait types).

use std::collections::HashSet;
use std::time::Instant;

use ldap3::Ldap;

use super::connection::RefreshError;
use super::content_sync;
use super::entry::LdapEntry;
use super::full_read::check_unique_ids;
use super::incremental::next_watermark;
use super::schema::ChangeMarker;
use super::snapshot::{Batch, ContentSync, Cookies, Removed, Snapshot};
use super::Inner;
use crate::directory::DirectoryError;

/// One of the two configured searches.
#[derive(Clone, Copy, Debug)]
pub(super) enum Search {
    Users,
    Groups,
}

impl Inner {
    /// Reads what changed by RFC 4533 content sync (refreshOnly), when the server offers it:
    /// the changed entries and the ids of entries that are gone. `None` when it is not offered
    /// or can't be used now; the caller then reads by timestamp, and the next full read tries
    /// content sync again.
    ///
    /// The first refresh after tapd starts has no cookie, so the server sends every entry once
    /// (and the service account needs a size limit that allows it); later ones send only what
    /// changed since the cookie, and deletions either listed (a delete phase, from slapd's
    /// session log) or implied by the entries listed as present (a present phase).
    pub(super) async fn refresh_read(
        &self,
        snapshot: &mut Snapshot,
    ) -> Result<Option<(Batch, Removed)>, DirectoryError> {
        // Active Directory has DirSync instead, which tapd does not use.
        if self.schema.change_marker == ChangeMarker::UsnChanged {
            return Ok(None);
        }
        let url = &self.settings.url;
        let marker = self.schema.change_marker.attribute();
        let cookies = match &snapshot.content_sync {
            ContentSync::Unusable => return Ok(None),
            ContentSync::Offered(cookies) => cookies.clone(),
            ContentSync::Untried => {
                if !self.offers_content_sync().await? {
                    log::info!(
                        "{url} does not offer RFC 4533 content sync; incremental syncs read {marker}"
                    );
                    snapshot.content_sync = ContentSync::Unusable;
                    return Ok(None);
                }
                Cookies::default()
            }
        };
        let started = Instant::now();
        let mut attempt = self.refresh_all(&cookies, snapshot).await;
        if matches!(attempt, Err(RefreshError::CookieRejected)) && cookies != Cookies::default() {
            log::info!("{url} can no longer refresh from tapd's content sync cookie; reading every entry once");
            attempt = self.refresh_all(&Cookies::default(), snapshot).await;
        }
        match attempt {
            Ok((batch, removed, cookies)) => {
                snapshot.content_sync = ContentSync::Offered(cookies);
                // Kept moving, for when content sync stops being usable.
                snapshot.watermark = next_watermark(
                    None,
                    snapshot.watermark.as_ref(),
                    batch.newest_timestamp,
                    started.elapsed(),
                );
                Ok(Some((batch, removed)))
            }
            Err(RefreshError::Directory(e)) => Err(e),
            Err(RefreshError::CookieRejected) => {
                self.refuse_content_sync(snapshot, "a refresh without a cookie was rejected");
                Ok(None)
            }
            Err(RefreshError::Unusable(reason)) => {
                self.refuse_content_sync(snapshot, &reason);
                Ok(None)
            }
        }
    }

    /// Falls back to timestamps until the next full read, saying why: as a warning the first
    /// time a reason comes up, then at info level (every full sync tries again).
    pub(super) fn refuse_content_sync(&self, snapshot: &mut Snapshot, reason: &str) {
        snapshot.content_sync = ContentSync::Unusable;
        let url = &self.settings.url;
        let marker = self.schema.change_marker.attribute();
        let message = format!(
            "RFC 4533 content sync with {url} can't be used ({reason}); incremental syncs read \
             {marker} until the next full sync tries again. A size limit means the service \
             account must be allowed to read every user or group in one search (OpenLDAP: \
             limits dn.exact=\"<bind_dn>\" size=unlimited)"
        );
        let mut last = self
            .content_sync_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.as_deref() == Some(reason) {
            log::info!("{message}");
        } else {
            log::warn!("{message}");
            *last = Some(reason.to_owned());
        }
    }

    /// Whether the root DSE lists the Sync Request control.
    pub(super) async fn offers_content_sync(&self) -> Result<bool, DirectoryError> {
        let mut ldap = self.open().await?;
        let root = self
            .connector
            .read_entry(&mut ldap, "", &["supportedControl".to_owned()])
            .await;
        let _ = ldap.unbind().await;
        Ok(root?.is_some_and(|root| {
            root.values("supportedControl")
                .any(|oid| oid == content_sync::SYNC_REQUEST_OID.as_bytes())
        }))
    }

    /// Refreshes the users and then the groups from `cookies`, on a connection of its own (a
    /// refresh abandoned half-way leaves its messages on it): the changed entries, the ids in
    /// `snapshot` that are gone, and the cookies to continue from.
    pub(super) async fn refresh_all(
        &self,
        cookies: &Cookies,
        snapshot: &Snapshot,
    ) -> Result<(Batch, Removed, Cookies), RefreshError> {
        let mut ldap = self.open().await.map_err(RefreshError::Directory)?;
        let result = self.refresh_on(&mut ldap, cookies, snapshot).await;
        let _ = ldap.unbind().await;
        result
    }

    pub(super) async fn refresh_on(
        &self,
        ldap: &mut Ldap,
        cookies: &Cookies,
        snapshot: &Snapshot,
    ) -> Result<(Batch, Removed, Cookies), RefreshError> {
        let invalid = |e: String| RefreshError::Directory(DirectoryError::invalid(e));
        let mut users = Vec::new();
        let mut skipped_users = HashSet::new();
        let mut undecoded = Vec::new();
        let mut users_newest = None;
        let user_refresh = self
            .refresh_search(ldap, Search::Users, cookies.users.clone(), |entry, uuid| {
                self.newest_of(&entry, &mut users_newest);
                let known_id = || {
                    snapshot
                        .users
                        .keys()
                        .find(|id| content_sync::uuid_of_id(id) == Some(uuid))
                        .cloned()
                };
                match self.decode_user(&entry) {
                    Ok(Some(user)) => {
                        self.check_sync_uuid(&user.id, &entry.dn, uuid)?;
                        users.push(user);
                    }
                    // No longer a usable user: gone, as a full read would find.
                    Ok(None) => {
                        skipped_users.insert(uuid);
                    }
                    // Listed as present, so not gone: its snapshot entry and store row stay.
                    Err(mut skipped) => {
                        if skipped.id.is_none() {
                            skipped.id = known_id();
                        }
                        undecoded.push(skipped);
                    }
                }
                Ok(())
            })
            .await?;
        let mut groups = Vec::new();
        let mut groups_newest = None;
        let group_refresh = self
            .refresh_search(
                ldap,
                Search::Groups,
                cookies.groups.clone(),
                |entry, uuid| {
                    self.newest_of(&entry, &mut groups_newest);
                    let group = self.schema.group(&entry).map_err(invalid)?;
                    self.check_sync_uuid(&group.raw.id, &entry.dn, uuid)?;
                    groups.push(group);
                    Ok(())
                },
            )
            .await?;
        check_unique_ids(&users, &groups).map_err(RefreshError::Directory)?;
        let gone = |id: &String, refresh: &content_sync::Refresh, skipped: &HashSet<_>| {
            content_sync::uuid_of_id(id)
                .is_some_and(|uuid| refresh.removes(&uuid) || skipped.contains(&uuid))
        };
        let removed = Removed {
            users: snapshot
                .users
                .keys()
                .filter(|id| gone(id, &user_refresh, &skipped_users))
                .cloned()
                .collect(),
            groups: snapshot
                .groups
                .keys()
                .filter(|id| gone(id, &group_refresh, &HashSet::new()))
                .cloned()
                .collect(),
        };
        let cookies = Cookies {
            users: user_refresh.cookie.or_else(|| cookies.users.clone()),
            groups: group_refresh.cookie.or_else(|| cookies.groups.clone()),
        };
        Ok((
            Batch {
                users,
                groups,
                newest_timestamp: users_newest.max(groups_newest),
                skipped_users: undecoded,
            },
            removed,
            cookies,
        ))
    }

    /// [`Connector::refresh`] of the configured user or group search.
    pub(super) async fn refresh_search(
        &self,
        ldap: &mut Ldap,
        search: Search,
        cookie: Option<Vec<u8>>,
        on_entry: impl FnMut(LdapEntry, content_sync::SyncUuid) -> Result<(), RefreshError>,
    ) -> Result<content_sync::Refresh, RefreshError> {
        let (base, filter, attributes) = match search {
            Search::Users => (
                &self.settings.user_base,
                &self.settings.user_filter,
                &self.schema.user_attributes,
            ),
            Search::Groups => (
                &self.settings.group_base,
                &self.settings.group_filter,
                &self.schema.group_attributes,
            ),
        };
        self.connector
            .refresh(ldap, base, filter, attributes, cookie, on_entry)
            .await
    }

    /// Refuses content sync when the entry's id is not the sync UUID the server names it by:
    /// deletions would then be matched to the wrong ids.
    pub(super) fn check_sync_uuid(
        &self,
        id: &str,
        dn: &str,
        uuid: content_sync::SyncUuid,
    ) -> Result<(), RefreshError> {
        if content_sync::uuid_of_id(id) == Some(uuid) {
            return Ok(());
        }
        Err(RefreshError::Unusable(format!(
            "{dn}: its id {id} is not the sync UUID the server sends; content sync needs the \
             id attribute to be entryUUID (OpenLDAP) or nsUniqueId (389-DS)"
        )))
    }
}
