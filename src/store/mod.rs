//! Persistence for everything tapd owns: synced users and groups, the TAP policy, TAPs (hashed),
//! registered methods, web sessions and ceremony state, audit events and sync status.
//!
//! The service layer sees only the [`Store`] trait; `sqlite` is the embedded default and
//! `postgres` implements the same trait for several nodes sharing one store. Every
//! mutation that an administrator or a sign-in causes is written in the same transaction as its
//! audit event, so an acknowledged action is never without its record (and vice versa).
//!
//! May depend on: `model`, `logging` (for [`Cause`]). Nothing here knows about HTTP, RADIUS or
//! the policy rules.

pub mod chain;
mod codec;
pub mod identity;
pub mod postgres;
pub mod retention;
pub mod seal;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::logging::Cause;

use crate::model::{
    AuditEvent, AuditFilter, Group, GroupRef, MailOutcome, ManagerLink, NewAuditEvent, OutboxMail,
    RegisteredMethod, StoredTap, SyncStatus, TapPolicy, Timestamp, User, WebCeremony, WebSession,
};

/// Errors a store backend reports.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database can't be reached or is locked beyond the busy timeout; retrying may work.
    /// The driver's error, when there is one, is the source.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The database holds something tapd can't read (bad JSON, unknown enum value…). The
    /// decoder's error, when there is one, is the source.
    #[error("store holds unreadable data: {0}")]
    Corrupt(#[source] Cause),
    /// A sync's write was refused because the sync no longer holds the lease its fencing token
    /// names (see [`Store::apply_sync`]); nothing of that write was kept.
    #[error(transparent)]
    LeaseLost(LeaseLost),
    /// The schema is newer than this binary knows.
    #[error("store schema version {found} is newer than this tapd supports ({supported})")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Highest version this binary knows.
        supported: i64,
    },
}

/// Why the code of a claimed outbox message can't be opened. Such a message can never be
/// delivered, however often it is tried: the caller fails it at once (which deletes its TAP).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UndeliverableCode {
    /// The sealed code does not open: altered in the database, moved from another row, or
    /// sealed under a key this tapd does not hold.
    #[error("the sealed code can't be opened with the current secrets key")]
    Unopenable(#[source] seal::SealError),
    /// The queued message holds no code at all (the schema forbids it; read anyway, it fails
    /// the message rather than the whole outbox).
    #[error("the queued message holds no sealed code")]
    Missing,
    /// The message itself can't be read: a column holds what tapd never writes (a timestamp
    /// out of range or of another type, …). It is claimed with what could be read of it, to be
    /// failed rather than block the queue.
    #[error("{UNREADABLE}: {0}")]
    Unreadable(String),
}

/// How a stored outbox message tapd can't read is named, in its error and its listing.
pub const UNREADABLE: &str = "the stored message can't be read";

/// The code of a claimed outbox message: opened, or why it can't be.
pub type ClaimedCode = Result<zeroize::Zeroizing<String>, UndeliverableCode>;

impl StoreError {
    /// [`StoreError::Unavailable`] detected here, with no underlying error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable(Cause::new(message))
    }

    /// [`StoreError::Unavailable`] caused by `source` (kept for the log's chain).
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Unavailable(Cause::with_source(message, source))
    }

    /// [`StoreError::Corrupt`] detected here, with no underlying error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        StoreError::Corrupt(Cause::new(message))
    }

    /// [`StoreError::Corrupt`] caused by `source` (kept for the log's chain).
    pub fn corrupt_from(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Corrupt(Cause::with_source(message, source))
    }
}

/// The directory as seen by one sync run, and the changes to bring the store in line with it.
/// Computed as a pure plan (see `crate::sync::plan`), applied in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Users to insert or replace (by id), including their effective group ids.
    pub upsert_users: Vec<User>,
    /// Ids of users to remove; their TAP and registered methods go with them.
    pub delete_user_ids: Vec<String>,
    /// Groups to insert or replace (by id).
    pub upsert_groups: Vec<Group>,
    /// Ids of groups to remove.
    pub delete_group_ids: Vec<String>,
    /// Users (by id) whose TAP is revoked because their account is now disabled.
    pub revoke_tap_user_ids: Vec<String>,
}

impl SyncPlan {
    /// True when applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.upsert_users.is_empty()
            && self.delete_user_ids.is_empty()
            && self.upsert_groups.is_empty()
            && self.delete_group_ids.is_empty()
            && self.revoke_tap_user_ids.is_empty()
    }
}

/// The end of a streamed sync ([`Store::apply_sync_streamed`]): the rest of the plan (its
/// `upsert_users` are applied after every streamed batch) and the audit events to record with it.
#[derive(Clone, Debug, Default)]
pub struct SyncPlanEnd {
    /// Everything not streamed: deletions, groups, revocations, late upserts.
    pub plan: SyncPlan,
    /// Recorded in the same transaction.
    pub audit: Vec<NewAuditEvent>,
}

/// [`Store::apply_sync_streamed`] by collecting every batch and the end, then one
/// [`Store::apply_sync`]: for backends (or configurations) that can't hold a transaction open
/// while batches arrive.
pub async fn apply_sync_collected<S: Store + ?Sized>(
    store: &S,
    fence: &SyncFence,
    mut upserts: tokio::sync::mpsc::Receiver<Vec<User>>,
    end: tokio::sync::oneshot::Receiver<SyncPlanEnd>,
) -> Result<bool, StoreError> {
    let mut users = Vec::new();
    while let Some(mut batch) = upserts.recv().await {
        users.append(&mut batch);
    }
    let Ok(mut end) = end.await else {
        return Ok(false);
    };
    users.append(&mut end.plan.upsert_users);
    end.plan.upsert_users = users;
    store.apply_sync(fence, &end.plan, &end.audit).await?;
    Ok(true)
}

/// Applies `plan` under a sync lease taken for the purpose, as a unit test that builds a store
/// by hand needs.
#[cfg(test)]
pub(crate) async fn apply_sync_leased<S: Store + ?Sized>(
    store: &S,
    plan: &SyncPlan,
) -> Result<(), StoreError> {
    let granted = store
        .try_sync_lease("test", Duration::from_secs(60))
        .await?
        .granted()
        .ok_or_else(|| StoreError::unavailable("the sync lease is held elsewhere".to_owned()))?;
    store.apply_sync(&granted.fence(), plan, &[]).await
}

/// Who may run directory syncs, and until when (see [`Store::try_sync_lease`]). Times are the
/// database's clock, never a node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncLease {
    /// The node holding it (the identity it asked with).
    pub holder: String,
    /// When it lapses unless its holder renews it.
    pub expires: Timestamp,
    /// The fencing token: raised by every grant to a new holder, or to the same one after its
    /// lease lapsed or was released; kept while the holder renews.
    pub epoch: u64,
}

impl SyncLease {
    /// What the holder's writes carry to prove they are still covered by this lease.
    pub fn fence(&self) -> SyncFence {
        SyncFence {
            holder: self.holder.clone(),
            epoch: self.epoch,
        }
    }
}

/// The fencing token a sync's writes carry ([`Store::apply_sync`], [`Store::put_sync_status`]):
/// the store checks, inside the write's own transaction and by the database's clock, that
/// `holder` still holds an unexpired lease of this `epoch`, and refuses the write otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFence {
    /// The node the lease was granted to.
    pub holder: String,
    /// The lease epoch it was granted under.
    pub epoch: u64,
}

/// Why a fenced write was refused: the lease as the store holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLost {
    /// The epoch the refused write carried.
    pub token: u64,
    /// The lease's epoch now (0 when none was ever granted).
    pub current: u64,
    /// Who holds it now (`None` when none was ever granted).
    pub holder: Option<String>,
    /// Whether the current lease has lapsed or was released (by the database's clock).
    pub lapsed: bool,
}

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sync lease lost (fencing token {}, ", self.token)?;
        match &self.holder {
            Some(holder) => write!(f, "current {} held by node {holder}", self.current)?,
            None => write!(f, "no lease granted")?,
        }
        if self.lapsed {
            write!(f, ", lapsed")?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for LeaseLost {}

impl LeaseLost {
    /// Compares `fence` with the lease the store holds (`None`: never granted); `Err` when the
    /// fence no longer covers a write. Both backends decide with this one function.
    pub fn check(fence: &SyncFence, current: Option<(String, u64, bool)>) -> Result<(), Self> {
        match current {
            Some((holder, epoch, lapsed)) => {
                if holder == fence.holder && epoch == fence.epoch && !lapsed {
                    Ok(())
                } else {
                    Err(LeaseLost {
                        token: fence.epoch,
                        current: epoch,
                        holder: Some(holder),
                        lapsed,
                    })
                }
            }
            None => Err(LeaseLost {
                token: fence.epoch,
                current: 0,
                holder: None,
                lapsed: true,
            }),
        }
    }
}

/// The answer to [`Store::try_sync_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncLeaseOutcome {
    /// The asking node holds the lease: it may sync.
    Granted(SyncLease),
    /// Another node holds an unexpired lease: the asking node must not sync.
    HeldElsewhere(SyncLease),
}

impl SyncLeaseOutcome {
    /// The lease when it was granted.
    pub fn granted(self) -> Option<SyncLease> {
        match self {
            SyncLeaseOutcome::Granted(lease) => Some(lease),
            SyncLeaseOutcome::HeldElsewhere(_) => None,
        }
    }
}

/// What the store must do for tapd. Every method is one atomic operation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- policy ----

    /// The TAP policy; Entra's defaults when none was ever stored.
    async fn policy(&self) -> Result<TapPolicy, StoreError>;

    /// Replaces the policy and records `audit`, atomically.
    async fn put_policy(&self, policy: &TapPolicy, audit: &NewAuditEvent)
        -> Result<(), StoreError>;

    // ---- directory ----

    /// The one user `key` names: an exact stable id, or a sign-in name (username or
    /// userPrincipalName, case-folded) as [`identity::choose`] resolves it: its only claimant, or
    /// the holder of a contested name; none when a contested name has no holder. Every name
    /// lookup of every front end comes here.
    async fn user(&self, key: &str) -> Result<Option<User>, StoreError>;

    /// Users quarantined by an identity conflict ([`User::identity_conflict`]), by username.
    async fn quarantined_users(&self) -> Result<Vec<User>, StoreError>;

    /// Users whose username, UPN, display name or mail contains `search`
    /// (case-insensitive), or all users; sorted by username.
    async fn users(&self, search: Option<&str>) -> Result<Vec<User>, StoreError>;

    /// All groups, sorted by display name.
    async fn groups(&self) -> Result<Vec<Group>, StoreError>;

    /// Groups by id (the ones a user's `group_ids` name); unknown ids are skipped.
    async fn groups_by_id(&self, ids: &[String]) -> Result<Vec<Group>, StoreError>;

    /// [`Store::user`] together with the groups its `group_ids` name ([`Store::groups_by_id`]),
    /// which every admin action on a user and every sign-in needs. A backend that can read both
    /// in one round trip and one snapshot should; this default reads them one after the other.
    async fn user_with_groups(&self, key: &str) -> Result<Option<(User, Vec<Group>)>, StoreError> {
        let Some(user) = self.user(key).await? else {
            return Ok(None);
        };
        let groups = self.groups_by_id(&user.group_ids).await?;
        Ok(Some((user, groups)))
    }

    /// [`Store::user`] together with references to the groups its `group_ids` name (no member
    /// lists), sorted like [`Store::groups_by_id`]: what a sign-in needs, in one round trip and
    /// one snapshot where the backend can. This default derives it from
    /// [`Store::user_with_groups`].
    async fn user_with_group_refs(
        &self,
        key: &str,
    ) -> Result<Option<(User, Vec<GroupRef>)>, StoreError> {
        Ok(self
            .user_with_groups(key)
            .await?
            .map(|(user, groups)| (user, groups.iter().map(GroupRef::from).collect())))
    }

    /// Applies a sync plan and its audit events in one transaction. A deleted user's TAP and
    /// registered methods are removed; a revoked user's TAP is removed. In the same
    /// transaction, the sign-in names the plan wrote (and those of quarantined users) are
    /// checked for conflicts ([`identity`]): users are quarantined or released and each change
    /// is audited, stamped like the last of `audit`.
    ///
    /// Fenced: the same transaction checks, by the database's clock, that `fence` still holds
    /// an unexpired lease ([`Store::try_sync_lease`]); if not, nothing is changed and the answer
    /// is [`StoreError::LeaseLost`]. So a node that stalled past its lease (a GC pause, SIGSTOP,
    /// a frozen VM) can't commit over the sync of the node that took over.
    async fn apply_sync(
        &self,
        fence: &SyncFence,
        plan: &SyncPlan,
        audit: &[NewAuditEvent],
    ) -> Result<(), StoreError>;

    /// Applies a sync plan whose user upserts arrive in batches while the directory is still
    /// being read, so that writing overlaps reading: the batches from `upserts` and then, once
    /// `upserts` is closed, the rest of the plan from `end`, all in one transaction, as
    /// [`Store::apply_sync`] would apply them together (a later upsert of the same id wins).
    /// Commits only when `end` delivers; when `end` is dropped instead (the read failed, the
    /// deletion guard refused, the run was cancelled) nothing is changed and the answer is
    /// `Ok(false)`. Fenced as [`Store::apply_sync`], checked before the commit.
    ///
    /// This default collects everything and calls [`Store::apply_sync`]; a backend that can
    /// keep a transaction open while batches arrive should.
    async fn apply_sync_streamed(
        &self,
        fence: &SyncFence,
        upserts: tokio::sync::mpsc::Receiver<Vec<User>>,
        end: tokio::sync::oneshot::Receiver<SyncPlanEnd>,
    ) -> Result<bool, StoreError> {
        apply_sync_collected(self, fence, upserts, end).await
    }

    /// The last sync status (default when none ran).
    async fn sync_status(&self) -> Result<SyncStatus, StoreError>;

    /// Records a sync status and the run's audit events in one transaction, fenced as
    /// [`Store::apply_sync`].
    async fn put_sync_status(
        &self,
        fence: &SyncFence,
        status: &SyncStatus,
        audit: &[NewAuditEvent],
    ) -> Result<(), StoreError>;

    /// Takes or renews the directory sync lease for `node` for `ttl`, by the database's clock
    /// (no node's clock takes part in any lease decision). Granted when no node holds it, when
    /// the holder's lease lapsed or was released, or when `node` holds it already; one
    /// conditional write, so of several nodes asking at once exactly one is granted. A grant
    /// to a new holder, or after a lapse or release, raises the epoch (the fencing token,
    /// [`SyncLease::fence`]); a renewal keeps it. `node` must be unique per running process.
    ///
    /// A backend that only one node can use (SQLite) grants every request, taking the lease
    /// over from an earlier holder, but keeps the epoch and expiry all the same, so the
    /// fencing contract is the same on both backends.
    async fn try_sync_lease(
        &self,
        node: &str,
        ttl: Duration,
    ) -> Result<SyncLeaseOutcome, StoreError>;

    /// Extends the lease `fence` names by `ttl` from now (the database's clock), only while it
    /// is still held under that token and unexpired; otherwise [`StoreError::LeaseLost`]. Never
    /// grants a new lease: a run that lost its lease does not get a new token half-way.
    async fn renew_sync_lease(
        &self,
        fence: &SyncFence,
        ttl: Duration,
    ) -> Result<SyncLease, StoreError>;

    /// Gives the lease up if `fence` still holds it, so that any node may take it next; the
    /// epoch is kept, so the next grant raises it.
    async fn release_sync_lease(&self, fence: &SyncFence) -> Result<(), StoreError>;

    // ---- temporary access passes ----

    /// The user's TAP, if any (there is at most one).
    async fn tap_for_user(&self, user_id: &str) -> Result<Option<StoredTap>, StoreError>;

    /// Stores `tap` as the user's only TAP, deleting any previous one, and records `audit`;
    /// returns the id of the TAP that was replaced.
    async fn replace_tap(
        &self,
        tap: &StoredTap,
        audit: &NewAuditEvent,
    ) -> Result<Option<String>, StoreError>;

    /// Deletes the user's TAP with this id and records `audit`; false when there was none.
    async fn delete_tap(
        &self,
        user_id: &str,
        tap_id: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// Marks the one-time TAP `tap_id` used at `now` if and only if it is still unused: a single
    /// conditional update, so of N concurrent callers (on any number of nodes) exactly one gets
    /// `true`. Records `audit` in the same transaction when it succeeds.
    async fn consume_one_time_tap(
        &self,
        tap_id: &str,
        now: Timestamp,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    // ---- onboarding outbox ----

    /// Stores `tap` as the user's only TAP (as [`Store::replace_tap`]), queues `mail` with
    /// `code` sealed under the store's secrets key (bound to the message's id), and records
    /// `audit`, in one transaction. Messages still queued for the same user are failed with
    /// "replaced", their codes erased: their pass no longer exists. With `grant = Some(rule)`
    /// it also records that `rule` gave this user a pass; when it already had, nothing is
    /// changed and the answer is `Ok(false)`. Refused without a secrets key: a code is never
    /// stored in clear.
    async fn issue_tap_by_mail(
        &self,
        tap: &StoredTap,
        mail: &OutboxMail,
        code: &str,
        grant: Option<&str>,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// Claims for `node`, until `now + lease`, the queued message due longest (its
    /// `next_attempt` at or before `now`) that no other node holds an unexpired claim on, and
    /// returns it with its code opened. One conditional write: of several nodes asking at once
    /// each message goes to exactly one; a claim that lapsed (its node died) is taken over.
    /// A code that can't be opened does not undo the claim: the message comes back with
    /// [`UndeliverableCode`], for the caller to fail with [`Store::finish_mail`].
    async fn claim_mail(
        &self,
        node: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Option<(OutboxMail, ClaimedCode)>, StoreError>;

    /// Records how `node`'s delivery of message `id` ended, with `audit`, only while `node`
    /// still holds its claim (false otherwise: another node took it over). Accepted: sent, the
    /// code erased. Retry: queued for `next_attempt`, the claim released. Failed: the code
    /// erased and the message's TAP deleted, in the same transaction.
    async fn finish_mail(
        &self,
        id: &str,
        node: &str,
        now: Timestamp,
        outcome: &MailOutcome,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// The newest `limit` messages (every state), newest first; never a code.
    async fn mails(&self, limit: u32) -> Result<Vec<OutboxMail>, StoreError>;

    /// Records `user_ids` as already served by `rule` without issuing anything (the members a
    /// rule finds when it is first evaluated are not new), in one transaction; ids already
    /// recorded are kept as they are.
    async fn onboarding_baseline(
        &self,
        rule: &str,
        user_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Every user's id, DN and manager link (see [`ManagerLink`]), for the resolution of
    /// managers after a sync.
    async fn manager_links(&self) -> Result<Vec<ManagerLink>, StoreError>;

    /// Sets each listed user's `manager_id` (`None` clears it), in one transaction. Users no
    /// longer stored are passed over.
    async fn set_manager_ids(&self, changes: &[(String, Option<String>)])
        -> Result<(), StoreError>;

    /// Of `user_ids`, those `rule` already gave a pass to (or recorded as a baseline).
    async fn onboarding_granted(
        &self,
        rule: &str,
        user_ids: &[String],
    ) -> Result<Vec<String>, StoreError>;

    /// Records that `rule` can't serve `user_id` for `reason` (the failure as the caller words
    /// it) and, when that is news (nothing was recorded for them, or another reason was),
    /// records `audit` with it in one transaction and answers true. The same failure again,
    /// after a restart or on another node, is no news: false, nothing written. The record is
    /// cleared when the rule serves the user ([`Store::issue_tap_by_mail`] with its grant).
    async fn note_onboarding_failure(
        &self,
        rule: &str,
        user_id: &str,
        reason: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// The ids of the users whose date `attribute` (lower case, a key of `User::dates`) lies
    /// in `from..=to` (both included), sorted; what a date rule looks at in each sync, without
    /// reading every user. A stored date that is no date is [`StoreError::Corrupt`].
    async fn users_dated_between(
        &self,
        attribute: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<String>, StoreError>;

    // ---- registered methods ----

    /// The user's registered methods, oldest first.
    async fn methods(&self, user_id: &str) -> Result<Vec<RegisteredMethod>, StoreError>;

    /// Adds a method and records `audit`.
    async fn add_method(
        &self,
        method: &RegisteredMethod,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError>;

    /// Replaces a method's opaque data (e.g. a WebAuthn signature counter); false when gone.
    async fn update_method_data(&self, method_id: &str, data: &str) -> Result<bool, StoreError>;

    /// Deletes the user's method with this id and records `audit`; false when there was none.
    async fn delete_method(
        &self,
        user_id: &str,
        method_id: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// One method by id, whoever owns it.
    async fn method(&self, method_id: &str) -> Result<Option<RegisteredMethod>, StoreError>;

    /// Replaces a method's data with `data` only if it still equals `expected`: a single
    /// conditional update, so of concurrent callers holding the same `expected` exactly one gets
    /// `true` (a TOTP code is accepted once; a WebAuthn counter only moves forward).
    async fn swap_method_data(
        &self,
        method_id: &str,
        expected: &str,
        data: &str,
    ) -> Result<bool, StoreError>;

    // ---- web sessions and ceremonies ----

    /// Stores a new web session and records `audit` (the sign-in it results from) in the same
    /// transaction, first removing every session (and its ceremonies) that has expired at
    /// `now`, so the table stays bounded by the live sessions.
    async fn create_web_session(
        &self,
        session: &WebSession,
        audit: Option<&NewAuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The session whose id hashes to `id_hash`, expired or not (the caller checks).
    async fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>, StoreError>;

    /// Replaces the stored fields of the session with `session.id_hash`; false when gone.
    async fn update_web_session(&self, session: &WebSession) -> Result<bool, StoreError>;

    /// Deletes a session and its ceremonies (sign-out); false when there was none.
    async fn delete_web_session(&self, id_hash: &str) -> Result<bool, StoreError>;

    /// Stores a ceremony, first removing every ceremony that has expired at `now`.
    async fn put_web_ceremony(
        &self,
        ceremony: &WebCeremony,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Removes and returns the ceremony with this id: a single conditional delete, so of
    /// concurrent callers exactly one gets it (a challenge is answered once). Expired ones are
    /// returned too; the caller checks.
    async fn take_web_ceremony(&self, id: &str) -> Result<Option<WebCeremony>, StoreError>;

    // ---- audit ----

    /// Records an event that goes with no other change (a refused action, a failed sign-in).
    async fn append_audit(&self, event: &NewAuditEvent) -> Result<(), StoreError>;

    /// Records several such events in one transaction: all or none. Sign-in decisions are
    /// written this way in batches (group commit, see `crate::audit::AuditWriter`), so that a
    /// busy RADIUS server pays one durable commit per batch rather than per request.
    async fn append_audits(&self, events: &[NewAuditEvent]) -> Result<(), StoreError>;

    /// Events matching `filter`, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// Deletes up to `limit` of the oldest events dated before `before`, in one short
    /// transaction, and returns how many it deleted (`[audit] retention`: the caller repeats,
    /// with a pause, while a whole batch went, so pruning never holds the store for long).
    /// Only a prefix of the audit chain goes (by sequence number, up to the first event not
    /// before the cut), after its links are checked; the retention checkpoint moves to the
    /// last pruned event and is signed again ([`chain`]). A broken prefix is not pruned.
    async fn prune_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// The audit chain's head, retention checkpoint and unchained row count ([`chain`]).
    async fn audit_chain(&self) -> Result<chain::ChainState, StoreError>;

    /// Up to `limit` stored events with sequence numbers from `from_seq` to `to_seq`, in
    /// order.
    async fn audit_chain_rows(
        &self,
        from_seq: i64,
        to_seq: i64,
        limit: u32,
    ) -> Result<Vec<chain::ChainRow>, StoreError>;

    /// Whether the checkpoint's signature holds under the store's secrets key; false without
    /// a key.
    fn checkpoint_signature_holds(&self, checkpoint: &chain::Checkpoint) -> bool;
}
