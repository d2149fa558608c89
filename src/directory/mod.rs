//! Directory sources: where tapd learns who the users and groups are, and how it checks a
//! user's directory password.
//!
//! The rest of tapd sees only the [`DirectorySource`] trait. [`ldif::LdifDirectory`] reads an
//! LDIF file (the embedded demo default and offline installations); [`ldap::LdapDirectory`]
//! reads an LDAP server and checks passwords by bind. Every source returns users and groups
//! with memberships already resolved transitively ([`groups`]). This is the read side of a
//! sync only: turning what a source returned into a plan, applying it, the lease and the
//! schedule belong to the service layer ([`crate::sync`]).
//!
//! May depend on: `model`, `config` (the LDAP source's validated settings), `dn`, `tls`,
//! `logging` (for [`Cause`]).
//! Nothing here knows about the store, the policy rules, HTTP, RADIUS or the clock.

#[cfg(test)]
pub(crate) mod fake;
pub mod groups;
pub mod ldap;
pub mod ldif;
pub mod password;
pub mod user_extras;

use async_trait::async_trait;

pub use crate::logging::Cause;
use crate::model::{Group, User};

/// Everything a directory holds that tapd cares about, as read by one sync run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryContents {
    /// Users; each user's `group_ids` are its effective (transitive) group ids, sorted.
    pub users: Vec<User>,
    /// Groups; each group's `member_user_ids` are its transitive member user ids, sorted.
    pub groups: Vec<Group>,
}

/// What changed in a directory since the previous read, found by an incremental read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryChanges {
    /// New users and users whose attributes or effective groups changed; each with its
    /// effective (transitive) group ids, sorted.
    pub users: Vec<User>,
    /// New groups and groups whose attributes or transitive members changed.
    pub groups: Vec<Group>,
    /// Users found deleted (or no longer matching the user filter); only sources that can see
    /// deletions between full reads (RFC 4533 content sync) report any.
    pub deleted_user_ids: Vec<String>,
    /// Groups found deleted (or no longer matching the group filter).
    pub deleted_group_ids: Vec<String>,
    /// User entries found changed that could not be decoded; each keeps its store row as it
    /// is ([`SkippedUser`]).
    pub skipped_users: Vec<SkippedUser>,
    /// Users the directory holds now, as far as the source knows (for the sync status).
    pub total_users: usize,
    /// Groups the directory holds now.
    pub total_groups: usize,
}

/// What [`DirectorySource::read_all_streamed`] returns after the last user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamedContents {
    /// Groups. Member lists may be left empty: the planner compares a group's own attributes
    /// ([`crate::sync::plan::plan_groups`]), and the stores derive members from the users' group ids.
    pub groups: Vec<Group>,
    /// `Some` when users were handed over with memberships that a later entry changed: every
    /// user again, with its final effective group ids, to be planned again.
    pub replanned_users: Option<Vec<User>>,
    /// User entries that could not be decoded ([`SkippedUser`]): none of them is a deletion.
    pub skipped_users: Vec<SkippedUser>,
}

/// A user entry a read found but could not decode (no stable id, a value that is not UTF-8, a
/// value longer than tapd accepts…). It is left out of the read, and the sync treats the user
/// it names as present and unchanged: its store row stays exactly as it was, and it is never
/// the cause of a deletion or a revocation. The reason is the source's, naming the attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedUser {
    /// The entry's DN as the server spelled it.
    pub dn: String,
    /// Its stable id when that much could be read.
    pub id: Option<String>,
    /// Why it was skipped (never a value).
    pub reason: String,
}

/// The outcome of checking a directory password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password is the user's directory password and the account may sign in.
    Valid,
    /// Wrong password, unusable password, unknown or disabled account.
    Invalid,
    /// The password bound, but the entry it bound to is not the user tapd synced: its stable
    /// id differs or can't be read (the user was renamed and another entry now sits at the DN
    /// of the last sync). A rejection; the directory changed since that sync.
    BoundIdentityMismatch,
}

/// Errors a directory source reports.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory can't be read or reached (file missing, server down, bind refused for the
    /// service account); retrying later may work.
    #[error("directory unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The directory returned data tapd can't use (bad LDIF syntax, duplicate ids…); the
    /// message names the file and line where there is one.
    #[error("directory data invalid: {0}")]
    Invalid(#[source] Cause),
    /// The directory answered only in part (size or time limit, interrupted paging), so a sync
    /// must not treat missing entries as deleted.
    #[error("directory answered incompletely: {0}")]
    Incomplete(#[source] Cause),
}

/// The message of each kind is the text it always had; the LDAP, I/O or parser error behind
/// it, when there is one, is kept as its source for the log's chain.
impl DirectoryError {
    /// [`DirectoryError::Unavailable`] detected here.
    pub fn unavailable(message: impl Into<String>) -> Self {
        DirectoryError::Unavailable(Cause::new(message))
    }

    /// [`DirectoryError::Unavailable`] caused by `source`.
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DirectoryError::Unavailable(Cause::with_source(message, source))
    }

    /// [`DirectoryError::Invalid`] detected here.
    pub fn invalid(message: impl Into<String>) -> Self {
        DirectoryError::Invalid(Cause::new(message))
    }

    /// [`DirectoryError::Invalid`] caused by `source`.
    pub fn invalid_from(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DirectoryError::Invalid(Cause::with_source(message, source))
    }

    /// [`DirectoryError::Incomplete`] detected here.
    pub fn incomplete(message: impl Into<String>) -> Self {
        DirectoryError::Incomplete(Cause::new(message))
    }
}

/// A place users and groups come from, and that can check a user's password.
#[async_trait]
pub trait DirectorySource: Send + Sync + 'static {
    /// Reads every user and group, with memberships resolved transitively.
    async fn read_all(&self) -> Result<DirectoryContents, DirectoryError>;

    /// A full read that hands the users over in batches while it is still reading, so that the
    /// caller can plan and store them meanwhile: every user goes to `users` once, with its
    /// effective group ids. Returns the groups once every user was sent. When the source found
    /// only at the end that memberships handed over earlier were resolved too early (see
    /// [`groups::GroupResolver`]), `replanned_users` holds every user again with its final
    /// memberships. The default reads everything with [`read_all`](Self::read_all) and sends
    /// it as one batch.
    async fn read_all_streamed(
        &self,
        users: tokio::sync::mpsc::Sender<Vec<User>>,
    ) -> Result<StreamedContents, DirectoryError> {
        let contents = self.read_all().await?;
        if users.send(contents.users).await.is_err() {
            return Err(DirectoryError::unavailable(
                "the sync stopped taking users".to_owned(),
            ));
        }
        Ok(StreamedContents {
            groups: contents.groups,
            replanned_users: None,
            skipped_users: Vec::new(),
        })
    }

    /// Reads only what changed since the previous read (full or incremental): the users and
    /// groups that are new or different, memberships resolved against everything known, and
    /// those found deleted. Deletions need not be visible; the next
    /// [`read_all`](Self::read_all) catches them.
    /// `Ok(None)`: this source can't read incrementally now (no earlier read, or not supported);
    /// the caller does a full read instead.
    async fn read_changes(&self) -> Result<Option<DirectoryChanges>, DirectoryError> {
        Ok(None)
    }

    /// Which groups nest in which, as of the last read, so that an audit event can name the
    /// chain of groups through which a user holds a role or the TAP scope. `None` when the
    /// source can't tell (the event then names the group itself).
    async fn group_nesting(&self) -> Option<groups::GroupNesting> {
        None
    }

    /// Checks `password` against the directory for `user` (found by its stable id).
    ///
    /// A source that checks by binding to the DN of the last sync must confirm that the entry
    /// it bound to still has `user`'s stable id, and answer
    /// [`PasswordCheck::BoundIdentityMismatch`] when it has not.
    ///
    /// Implementations must answer [`PasswordCheck::Invalid`] for an empty or NUL-only
    /// password without contacting any backend (see [`password_is_unusable`]): an LDAP
    /// "unauthenticated bind" with an empty password succeeds on many servers.
    async fn check_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<PasswordCheck, DirectoryError>;

    /// A one-line description for logs and `check-config` ("LDIF file /etc/tapd/…").
    fn describe(&self) -> String;
}

/// True for a password that must never reach a backend: empty, or made only of NUL
/// characters (a RADIUS PAP attribute of zero blocks decodes to that).
pub fn password_is_unusable(password: &str) -> bool {
    password.chars().all(|c| c == '\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_nul_passwords_are_unusable() {
        assert!(password_is_unusable(""));
        assert!(password_is_unusable("\0"));
        assert!(password_is_unusable("\0\0\0\0"));
        assert!(!password_is_unusable(" "));
        assert!(!password_is_unusable("a\0"));
        assert!(!password_is_unusable("secret"));
    }
}
