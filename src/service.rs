//! The TAP service: what every front end (admin socket, web page, RADIUS, federation) calls.
//!
//! Admin operations go through an [`AdminSession`], obtained from [`TapService::admin`] for an
//! identified local caller. The session carries the resolved [`Actor`]; every operation checks
//! the role matrix (`crate::policy::roles::authorize`) against the target before it touches the
//! store, and every change is written together with its audit event. Refusals are audited too.
//!
//! May depend on: `model`, `policy`, `store` (trait), `directory` (trait), `tapcode`, `clock`,
//! `metrics` (the service owns the daemon's [`Metrics`] registry; front ends reach it through
//! [`TapService::metrics`]).
//! Knows nothing about HTTP or sockets: errors are [`ServiceError`] and the admin layer maps
//! them to status codes in one place.
//!
//! Over 800 lines on purpose: [`AdminSession`]'s methods are the admin API, one per route, each
//! checking the role matrix then writing with its audit event; split, the role checks would
//! no longer be reviewable together.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use chrono::SubsecRound;
use serde_json::json;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::directory::DirectorySource;
use crate::group_ref::GroupIndex;
use crate::logging::ErrorChain;
use crate::metrics::{AlertKind, Metrics, StoreOperation, TapIssueChannel};
use crate::model::{
    AuditEvent, AuditFilter, AuditResult, Channel, Group, NewAuditEvent, RegisteredMethod,
    StoredTap, SyncStatus, TapPolicy, Timestamp, User,
};
use crate::policy::roles::{authorize, Actor, AdminAction, AdminRole, RoleMapping, TargetUser};
use crate::policy::{self, UsabilityReason};
use crate::store::{Cause, Store, StoreError};
use crate::sync::{SyncOptions, Syncer};
use crate::tapcode::{self, HashError, Hasher};

mod bulk;
mod rules;
pub use bulk::{BulkResult, BulkRow, MAX_BULK_ROWS};

/// The request types of the admin operations, part of this service's API.
pub use crate::policy::{CreateTapRequest, PolicyPatch};

/// Reason code of a TAP creation refused by `[policy] privileged_tap = "deny"`.
pub const PRIVILEGED_TAP_DENIED: &str = "privileged_tap_denied";

/// Entra's activity names (Graph `directoryAudit.activityDisplayName`), used in audit events
/// and logs; what exactly happened is the event's `resultReason` (Entra's "status reason"),
/// kept in its details. The README's audit mapping table lists them all.
pub mod activity {
    /// An administrator created a TAP (resultReason [`TAP_CREATED_REASON`]).
    pub const TAP_CREATED: &str = "Admin registered security info";
    /// Entra's status reason of [`TAP_CREATED`].
    pub const TAP_CREATED_REASON: &str = "Admin registered temporary access pass method for user";
    /// An administrator deleted a TAP (resultReason [`TAP_DELETED_REASON`]).
    pub const TAP_DELETED: &str = "Admin deleted security info";
    /// Entra's status reason of [`TAP_DELETED`].
    pub const TAP_DELETED_REASON: &str = "Admin deleted temporary access pass method for user";
    /// An administrator deleted a registered method.
    pub const METHOD_DELETED: &str = "Admin deleted security info";
    /// The TAP policy was changed.
    pub const POLICY_UPDATED: &str = "Update authentication methods policy";
    /// The TAP policy was reset to defaults: an update in Entra's terms (resultReason
    /// "Reset to defaults").
    pub const POLICY_RESET: &str = "Update authentication methods policy";
    /// An administrator started a directory sync.
    pub const SYNC_REQUESTED: &str = "Admin started directory sync";
    /// A sign-in attempt on any channel.
    pub const SIGN_IN: &str = "User sign-in";
}

pub mod explain;

/// Errors of service operations; the admin layer maps each to one HTTP status.
///
/// Every variant's `Display` is the message the caller sees. A variant that can come from an
/// underlying error (a policy or patch the rules refuse, a role check, a sync the lease keeps
/// from running, the store) holds a [`Cause`]: that message, with the underlying error as its
/// source, so the log's chain reaches it. A rule detected here is a `Cause` without a source
/// (`message.into()`). `NotFound` only ever reports a lookup that found nothing, so it is a
/// plain message.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or breaks a rule; nothing changed.
    #[error("{0}")]
    BadRequest(#[source] Cause),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(#[source] Cause),
    /// The user, TAP or method does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. a sync already running).
    #[error("{0}")]
    Conflict(#[source] Cause),
    /// The store or directory can't be reached; retrying later may work. The message is the
    /// underlying error's, which is kept as the source.
    #[error("{0}")]
    Unavailable(#[source] Cause),
    /// Too much hashing work queued; retry shortly.
    #[error("{0}")]
    Overloaded(String),
    /// A bug or corrupt data; details are logged, not shown. The underlying error, when there
    /// is one, is the source.
    #[error("{0}")]
    Internal(#[source] Cause),
}

impl ServiceError {
    /// A request a rule refused: the rule's error is the message and the source.
    pub(crate) fn refused(refused: impl std::error::Error + Send + Sync + 'static) -> Self {
        ServiceError::BadRequest(Cause::with_source(refused.to_string(), refused))
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                ServiceError::Unavailable(Cause::with_source(e.to_string(), e))
            }
            other => ServiceError::Internal(Cause::with_source(other.to_string(), other)),
        }
    }
}

impl From<HashError> for ServiceError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => ServiceError::Overloaded(e.to_string()),
            other => ServiceError::Internal(Cause::with_source(other.to_string(), other)),
        }
    }
}

/// Result of service operations.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A local process talking to the admin socket, as identified by SO_PEERCRED.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid, informational only (pids are reused).
    pub pid: Option<i32>,
    /// The local account name of `uid`, if it has one.
    pub local_username: Option<String>,
}

impl Caller {
    fn source(&self) -> String {
        match self.pid {
            Some(pid) => format!("uid={} pid={pid}", self.uid),
            None => format!("uid={}", self.uid),
        }
    }
}

/// A TAP with its usability evaluated now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapDetails {
    /// The stored TAP (hash inside; never rendered).
    pub tap: StoredTap,
    /// Whether the user could sign in with it now.
    pub is_usable: bool,
    /// Why (not).
    pub reason: UsabilityReason,
}

/// A freshly created TAP: the only moment the code exists in clear.
#[derive(Debug)]
pub struct CreatedTap {
    /// The TAP and its usability.
    pub details: TapDetails,
    /// The code, shown once.
    pub code: Zeroizing<String>,
    /// Id of the TAP this one replaced.
    pub replaced: Option<String>,
}

/// A user with the groups and roles that apply to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserDetails {
    /// The synced user.
    pub user: User,
    /// Effective groups (nested resolved).
    pub groups: Vec<Group>,
    /// Admin roles from `[admin.roles]`.
    pub roles: BTreeSet<AdminRole>,
    /// Whether the TAP policy covers the user now.
    pub in_tap_scope: bool,
    /// The user's manager (the synced user `user.manager_id` names), when there is one.
    pub manager: Option<User>,
}

/// Everything known about a user's authentication methods.
#[derive(Clone, Debug)]
pub struct UserMethods {
    /// The user.
    pub user: User,
    /// Registered strong methods.
    pub registered: Vec<RegisteredMethod>,
    /// The TAP, if any.
    pub tap: Option<TapDetails>,
}

/// Settings of the service that come from the configuration and may change on reload.
#[derive(Clone, Debug, Default)]
pub struct ServiceSettings {
    /// Directory groups granting each admin role.
    pub roles: RoleMapping,
    /// Whether uid 0 is a break-glass global administrator.
    pub root_is_global_administrator: bool,
    /// Group references written elsewhere in the configuration, as (where, reference), that
    /// each sync checks for ambiguity (`crate::group_ref`).
    pub group_references: Vec<(String, String)>,
    /// `[policy] privileged_tap`: what creating a TAP for an administrator does.
    pub privileged_tap: crate::config::PrivilegedTap,
    /// `[web] registration_interrupt_groups`, shown by `tap explain`.
    pub registration_interrupt_groups: Vec<String>,
    /// An `[smtp]` server is configured, so TAPs can be mailed (bulk issuance).
    pub mail_delivery: bool,
    /// `[[onboarding.rules]]`, evaluated after each successful sync.
    pub onboarding_rules: Vec<crate::config::OnboardingRule>,
}

/// The TAP service.
pub struct TapService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: Hasher,
    syncer: Arc<Syncer>,
    settings: RwLock<ServiceSettings>,
    metrics: Arc<Metrics>,
    /// (rule, "") for each rule whose group names nothing, logged once per process.
    onboarding_notes: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// (rule, user) → the failure the store holds as noted for them (so a lasting failure
    /// costs the store no write at every sync; the store decides what is news).
    onboarding_failures: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

impl TapService {
    /// Builds the service over its store, directory, clock and hashing pool.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn DirectorySource>,
        clock: Arc<dyn Clock>,
        hasher: Hasher,
        settings: ServiceSettings,
        sync_options: SyncOptions,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let syncer = Syncer::new(
            store.clone(),
            directory,
            clock.clone(),
            sync_options,
            metrics.clone(),
        );
        syncer.set_roles(settings.roles.clone());
        syncer.set_group_references(settings.group_references.clone());
        let syncer = Arc::new(syncer);
        TapService {
            store,
            clock,
            hasher,
            syncer,
            settings: RwLock::new(settings),
            metrics,
            onboarding_notes: std::sync::Mutex::default(),
            onboarding_failures: std::sync::Mutex::default(),
        }
    }

    /// The metrics registry every front end increments (and `/metrics` renders).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store (for front ends that need read access).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The directory sync runner.
    pub fn syncer(&self) -> &Arc<Syncer> {
        &self.syncer
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The argon2 pool.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Replaces the reloadable settings (role mapping, break-glass rule).
    pub fn update_settings(&self, settings: ServiceSettings) {
        self.syncer.set_roles(settings.roles.clone());
        self.syncer
            .set_group_references(settings.group_references.clone());
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    fn settings(&self) -> ServiceSettings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Roles a user holds through their effective groups.
    pub async fn roles_of(&self, user: &User) -> Result<(Vec<Group>, BTreeSet<AdminRole>)> {
        let groups = self.store.groups_by_id(&user.group_ids).await?;
        let roles = self.roles_in(&groups);
        Ok((groups, roles))
    }

    /// Roles granted by these (a user's effective) groups.
    fn roles_in(&self, groups: &[Group]) -> BTreeSet<AdminRole> {
        let index = self.group_index();
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .roles
            .roles_of(groups, &index)
    }

    /// The index of every synced group that group references are resolved against
    /// (`crate::group_ref`), as of the last sync this node ran or saw.
    pub fn group_index(&self) -> Arc<GroupIndex> {
        self.syncer.group_index().current()
    }

    /// Identifies the caller and returns a session that can act with the caller's roles.
    /// Unmapped callers get `Forbidden` (and the refusal is audited).
    pub async fn admin(self: &Arc<Self>, caller: Caller) -> Result<AdminSession> {
        let settings = self.settings();
        if caller.uid == 0 && settings.root_is_global_administrator {
            return Ok(AdminSession {
                service: self.clone(),
                actor: Actor::BreakGlassRoot,
                actor_name: "root (uid 0)".to_owned(),
                source: caller.source(),
            });
        }
        let name = caller
            .local_username
            .clone()
            .unwrap_or_else(|| format!("uid {}", caller.uid));
        let found = match &caller.local_username {
            Some(username) => self.store.user_with_groups(username).await?,
            None => None,
        };
        let Some((user, groups)) = found.filter(|(u, _)| u.username.eq_ignore_ascii_case(&name))
        else {
            let message = format!(
                "local account {name} is not mapped to a directory user and may not use the admin API"
            );
            self.audit_refusal(&name, &caller.source(), "Admin API access", None, &message)
                .await;
            return Err(ServiceError::Forbidden(message.into()));
        };
        let roles = self.roles_in(&groups);
        if roles.is_empty() || !user.account_enabled {
            let message = format!(
                "{} holds no tapd administrator role",
                user.user_principal_name
            );
            self.audit_refusal(
                &user.user_principal_name,
                &caller.source(),
                "Admin API access",
                None,
                &message,
            )
            .await;
            return Err(ServiceError::Forbidden(message.into()));
        }
        Ok(AdminSession {
            service: self.clone(),
            actor_name: user.user_principal_name.clone(),
            actor: Actor::DirectoryUser {
                user_id: user.id,
                roles,
            },
            source: caller.source(),
        })
    }

    async fn audit_refusal(
        &self,
        actor: &str,
        source: &str,
        activity: &str,
        target: Option<&str>,
        message: &str,
    ) {
        self.audit_failure(actor, source, activity, target, "forbidden", message)
            .await;
    }

    /// Records (store and journal) an admin action that was refused or failed validation.
    async fn audit_failure(
        &self,
        actor: &str,
        source: &str,
        activity: &str,
        target: Option<&str>,
        reason_code: &str,
        message: &str,
    ) {
        let event = NewAuditEvent {
            time: self.clock.now(),
            actor: actor.to_owned(),
            activity: activity.to_owned(),
            target: target.map(str::to_owned),
            result: AuditResult::Failure,
            reason_code: Some(reason_code.to_owned()),
            channel: Channel::Admin,
            source_address: Some(source.to_owned()),
            details: json!({ "message": message }),
        };
        crate::audit::log(&event);
        if let Err(e) = self.store.append_audit(&event).await {
            log::error!(
                "could not record audit event for refused admin action: {}",
                ErrorChain(&e)
            );
        }
    }

    /// The user's TAP with its usability evaluated now.
    pub async fn tap_details(&self, user: &User, tap: StoredTap) -> Result<TapDetails> {
        let groups = self.store.groups_by_id(&user.group_ids).await?;
        self.tap_details_in_groups(user, &groups, tap).await
    }

    /// [`Self::tap_details`] for a caller that already read the user's effective groups.
    async fn tap_details_in_groups(
        &self,
        user: &User,
        groups: &[Group],
        tap: StoredTap,
    ) -> Result<TapDetails> {
        let policy = self.store.policy().await?;
        Ok(evaluate_tap(
            &policy,
            user,
            groups,
            &self.group_index(),
            tap,
            self.clock.now(),
        ))
    }
}

/// A TAP's usability under `policy` at `now`.
fn evaluate_tap(
    policy: &TapPolicy,
    user: &User,
    groups: &[Group],
    index: &GroupIndex,
    tap: StoredTap,
    now: Timestamp,
) -> TapDetails {
    let (is_usable, reason) = policy::usability(policy, user, groups, index, &tap, now);
    TapDetails {
        tap,
        is_usable,
        reason,
    }
}

/// How many of a user's newest audit events `tap explain` reads for the last attempts.
const EXPLAIN_AUDIT_EVENTS: u32 = 500;

/// An identified administrator; every method checks the role matrix first.
pub struct AdminSession {
    service: Arc<TapService>,
    actor: Actor,
    actor_name: String,
    source: String,
}

impl AdminSession {
    /// Who is acting, as recorded in audit events.
    pub fn actor_name(&self) -> &str {
        &self.actor_name
    }

    /// The resolved actor.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.service.store
    }

    fn event(
        &self,
        activity: &str,
        target: Option<&str>,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            time: self.service.clock.now(),
            actor: self.actor_name.clone(),
            activity: activity.to_owned(),
            target: target.map(str::to_owned),
            result: AuditResult::Success,
            reason_code: None,
            channel: Channel::Admin,
            source_address: Some(self.source.clone()),
            details,
        }
    }

    /// Checks `action` (on `target`, if any), auditing a refusal.
    async fn check(
        &self,
        action: AdminAction,
        activity: &str,
        target: Option<&User>,
    ) -> Result<()> {
        match target {
            Some(user) => {
                let groups = self.store().groups_by_id(&user.group_ids).await?;
                self.check_target(action, activity, user, &groups).await
            }
            None => self.decide(action, activity, None).await,
        }
    }

    /// Checks `action` on `target`, whose effective groups the caller already read.
    /// `[policy] privileged_tap` for a TAP about to be created for `user`: the admin roles
    /// the user holds when an alert is due (`alert`, or `deny`, which is also refused here,
    /// audited, with 403 naming the rule); `None` for a user without roles or under `allow`.
    async fn privileged_target(
        &self,
        user: &User,
        groups: &[Group],
    ) -> Result<Option<Vec<&'static str>>> {
        use crate::config::PrivilegedTap;
        let rule = self.service.settings().privileged_tap;
        let roles: Vec<&'static str> = self
            .service
            .roles_in(groups)
            .into_iter()
            .map(AdminRole::as_str)
            .collect();
        if roles.is_empty() || rule == PrivilegedTap::Allow {
            return Ok(None);
        }
        if rule == PrivilegedTap::Deny {
            self.alert_privileged_tap(user, &roles, "refused");
            let message = format!(
                "creating a TAP for {}, who holds admin role(s) {}, is refused by the rule \
                 [policy] privileged_tap = \"deny\"",
                user.user_principal_name,
                roles.join(", ")
            );
            self.service
                .audit_failure(
                    &self.actor_name,
                    &self.source,
                    activity::TAP_CREATED,
                    Some(&user.user_principal_name),
                    PRIVILEGED_TAP_DENIED,
                    &message,
                )
                .await;
            return Err(ServiceError::Forbidden(message.into()));
        }
        Ok(Some(roles))
    }

    /// The privileged-target alert: a warning with the journal field `TAPD_ALERT=privileged_tap`
    /// (the `tapd_alert` key), counted in `tapd_alerts_total{kind="privileged_tap"}`.
    fn alert_privileged_tap(&self, user: &User, roles: &[&str], outcome: &str) {
        self.service.metrics.alerts.inc(AlertKind::PrivilegedTap);
        let roles = roles.join(",");
        log::warn!(
            target: "tapd::alert",
            tapd_alert = "privileged_tap",
            tapd_user = user.user_principal_name.as_str(),
            tapd_actor = self.actor_name.as_str(),
            admin_roles = roles.as_str(),
            outcome = outcome;
            "ALERT privileged_tap: a TAP for {}, who holds admin role(s) {roles}, requested by \
             {}: {outcome}",
            user.user_principal_name,
            self.actor_name
        );
    }

    async fn check_target(
        &self,
        action: AdminAction,
        activity: &str,
        target: &User,
        groups: &[Group],
    ) -> Result<()> {
        let roles = self.service.roles_in(groups);
        self.decide(action, activity, Some((target, &roles))).await
    }

    /// Applies the role matrix to `action` on a target with the given roles, auditing a refusal.
    async fn decide(
        &self,
        action: AdminAction,
        activity: &str,
        target: Option<(&User, &BTreeSet<AdminRole>)>,
    ) -> Result<()> {
        let target_ref = target.map(|(user, roles)| TargetUser {
            user_id: &user.id,
            roles,
        });
        if let Err(denied) = authorize(&self.actor, action, target_ref) {
            let message = denied.to_string();
            self.service
                .audit_refusal(
                    &self.actor_name,
                    &self.source,
                    activity,
                    target.map(|(u, _)| u.user_principal_name.as_str()),
                    &message,
                )
                .await;
            return Err(ServiceError::Forbidden(Cause::with_source(message, denied)));
        }
        Ok(())
    }

    /// Audits an action refused for bad input and returns the error for the caller, `refused`
    /// as its source.
    async fn invalid(
        &self,
        activity: &str,
        target: Option<&User>,
        reason_code: &str,
        refused: impl std::error::Error + Send + Sync + 'static,
    ) -> ServiceError {
        let message = refused.to_string();
        self.service
            .audit_failure(
                &self.actor_name,
                &self.source,
                activity,
                target.map(|u| u.user_principal_name.as_str()),
                reason_code,
                &message,
            )
            .await;
        ServiceError::refused(refused)
    }

    /// The user named by `key` and their effective groups, read together.
    async fn find_user_with_groups(&self, key: &str) -> Result<(User, Vec<Group>)> {
        self.store().user_with_groups(key).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("user {key:?} was not found in the directory"))
        })
    }

    // ---- policy ----

    /// The TAP policy.
    pub async fn policy(&self) -> Result<TapPolicy> {
        self.check(
            AdminAction::ReadPolicy,
            "Read authentication methods policy",
            None,
        )
        .await?;
        Ok(self.store().policy().await?)
    }

    /// Applies a partial update; all-or-nothing.
    pub async fn patch_policy(&self, patch: &PolicyPatch) -> Result<TapPolicy> {
        self.check(AdminAction::EditPolicy, activity::POLICY_UPDATED, None)
            .await?;
        let current = self.store().policy().await?;
        let updated = match policy::apply_patch(&current, patch) {
            Ok(updated) => updated,
            Err(e) => {
                return Err(self
                    .invalid(activity::POLICY_UPDATED, None, "invalid_policy", e)
                    .await)
            }
        };
        let event = self.event(
            activity::POLICY_UPDATED,
            None,
            json!({ "old": current, "new": updated }),
        );
        self.store().put_policy(&updated, &event).await?;
        crate::audit::log(&event);
        Ok(updated)
    }

    /// Resets the policy to Entra's defaults.
    pub async fn reset_policy(&self) -> Result<TapPolicy> {
        self.check(AdminAction::EditPolicy, activity::POLICY_RESET, None)
            .await?;
        let current = self.store().policy().await?;
        let updated = TapPolicy::default();
        let event = self.event(
            activity::POLICY_RESET,
            None,
            json!({ "resultReason": "Reset to defaults", "old": current, "new": updated }),
        );
        self.store().put_policy(&updated, &event).await?;
        crate::audit::log(&event);
        Ok(updated)
    }

    // ---- TAPs ----

    /// Creates the user's TAP (replacing any existing one) and returns the code, once.
    pub async fn create_tap(
        &self,
        user_key: &str,
        request: &CreateTapRequest,
    ) -> Result<CreatedTap> {
        let (user, groups) = self.find_user_with_groups(user_key).await?;
        self.check_target(
            AdminAction::CreateTap,
            activity::TAP_CREATED,
            &user,
            &groups,
        )
        .await?;
        let privileged = self.privileged_target(&user, &groups).await?;
        if let Some(conflict) = &user.identity_conflict {
            let message = format!(
                "user {} is quarantined by an identity conflict and can't receive a TAP until \
                 the directory is fixed: {}",
                user.username,
                conflict.describe()
            );
            self.service
                .audit_failure(
                    &self.actor_name,
                    &self.source,
                    activity::TAP_CREATED,
                    Some(&user.user_principal_name),
                    crate::store::identity::IDENTITY_CONFLICT_REASON,
                    &message,
                )
                .await;
            return Err(ServiceError::Conflict(message.into()));
        }
        // Stores keep microseconds; cut here so the create response and later reads agree.
        let now = self.service.clock.now().trunc_subsecs(6);
        let current_policy = self.store().policy().await?;
        let terms = match policy::creation_terms(&current_policy, request, now) {
            Ok(terms) => terms,
            Err(e) => {
                return Err(self
                    .invalid(activity::TAP_CREATED, Some(&user), e.code(), e)
                    .await)
            }
        };
        let code = tapcode::generate(current_policy.default_length);
        let code_hash = self.service.hasher.hash(code.clone()).await?;
        let tap = StoredTap {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            code_hash,
            created: now,
            start: terms.start.trunc_subsecs(6),
            lifetime_in_minutes: terms.lifetime_in_minutes,
            is_usable_once: terms.is_usable_once,
            used_at: None,
            code_length: Some(current_policy.default_length),
        };
        let event = self.event(
            activity::TAP_CREATED,
            Some(&user.user_principal_name),
            json!({
                "category": "UserManagement",
                "resultReason": activity::TAP_CREATED_REASON,
                "TemporaryAccessPass.Id": tap.id,
                "TemporaryAccessPass.StartDateTime": tap.start,
                "TemporaryAccessPass.EndDateTime": tap.expires(),
                "TemporaryAccessPass.AccessPassUsage": if tap.is_usable_once { "Once" } else { "Multiple" },
            }),
        );
        let replaced = self
            .service
            .metrics
            .time_store(
                StoreOperation::ReplaceTap,
                self.store().replace_tap(&tap, &event),
            )
            .await?;
        self.service.metrics.taps_issued.inc(TapIssueChannel::Admin);
        crate::audit::log(&event);
        if let Some(roles) = &privileged {
            self.alert_privileged_tap(&user, roles, "created");
        }
        // Usability under the policy the terms were computed from, at the creation instant.
        let index = self.service.group_index();
        let details = evaluate_tap(&current_policy, &user, &groups, &index, tap, now);
        Ok(CreatedTap {
            details,
            code,
            replaced,
        })
    }

    /// The user's TAP (0 or 1), never with a code.
    pub async fn taps(&self, user_key: &str) -> Result<Vec<TapDetails>> {
        let (user, groups) = self.find_user_with_groups(user_key).await?;
        self.check_target(
            AdminAction::ReadTap,
            "Read temporary access pass method",
            &user,
            &groups,
        )
        .await?;
        match self.store().tap_for_user(&user.id).await? {
            Some(tap) => Ok(vec![
                self.service
                    .tap_details_in_groups(&user, &groups, tap)
                    .await?,
            ]),
            None => Ok(Vec::new()),
        }
    }

    /// One TAP by id.
    pub async fn tap(&self, user_key: &str, tap_id: &str) -> Result<TapDetails> {
        self.taps(user_key)
            .await?
            .into_iter()
            .find(|t| t.tap.id == tap_id)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "user {user_key:?} has no temporary access pass with id {tap_id:?}"
                ))
            })
    }

    /// Why the user's TAP does or doesn't work now, with the evidence ([`explain`]). A read:
    /// whoever may see the user's TAP may explain it; no code exists to show.
    pub async fn explain_tap(&self, user_key: &str) -> Result<explain::Explanation> {
        let (user, groups) = self.find_user_with_groups(user_key).await?;
        self.check_target(
            AdminAction::ReadTap,
            "Explain temporary access pass method",
            &user,
            &groups,
        )
        .await?;
        let policy = self.store().policy().await?;
        let tap = self.store().tap_for_user(&user.id).await?;
        let audit = self
            .store()
            .audit(&AuditFilter {
                user: Some(user.user_principal_name.clone()),
                limit: EXPLAIN_AUDIT_EVENTS,
                ..AuditFilter::default()
            })
            .await?;
        let index = self.service.group_index();
        let nesting = self.service.syncer.nesting();
        let interrupt_groups = self.service.settings().registration_interrupt_groups;
        Ok(explain::walk(&explain::Inputs {
            user: &user,
            groups: &groups,
            index: &index,
            nesting: nesting.as_ref(),
            policy: &policy,
            tap: tap.as_ref(),
            interrupt_groups: &interrupt_groups,
            audit: &audit,
            now: self.service.clock.now(),
        }))
    }

    /// Deletes the user's TAP.
    pub async fn delete_tap(&self, user_key: &str, tap_id: &str) -> Result<()> {
        let (user, groups) = self.find_user_with_groups(user_key).await?;
        self.check_target(
            AdminAction::DeleteTap,
            activity::TAP_DELETED,
            &user,
            &groups,
        )
        .await?;
        let event = self.event(
            activity::TAP_DELETED,
            Some(&user.user_principal_name),
            json!({
                "category": "UserManagement",
                "resultReason": activity::TAP_DELETED_REASON,
                "TemporaryAccessPass.Id": tap_id,
            }),
        );
        if !self.store().delete_tap(&user.id, tap_id, &event).await? {
            return Err(ServiceError::NotFound(format!(
                "user {user_key:?} has no temporary access pass with id {tap_id:?}"
            )));
        }
        crate::audit::log(&event);
        Ok(())
    }

    // ---- methods ----

    /// The user's registered methods and TAP.
    pub async fn methods(&self, user_key: &str) -> Result<UserMethods> {
        let (user, groups) = self.find_user_with_groups(user_key).await?;
        self.check_target(
            AdminAction::ReadMethods,
            "Read authentication methods",
            &user,
            &groups,
        )
        .await?;
        let registered = self.store().methods(&user.id).await?;
        let tap = match self.store().tap_for_user(&user.id).await? {
            Some(tap) => Some(
                self.service
                    .tap_details_in_groups(&user, &groups, tap)
                    .await?,
            ),
            None => None,
        };
        Ok(UserMethods {
            user,
            registered,
            tap,
        })
    }

    /// Deletes a registered method (or, given the TAP's id, the TAP).
    pub async fn delete_method(&self, user_key: &str, method_id: &str) -> Result<()> {
        let (user, groups) = self.find_user_with_groups(user_key).await?;
        if method_id == crate::model::PASSWORD_METHOD_ID {
            return Err(ServiceError::BadRequest(
                "the directory password can't be deleted here; change it in the directory".into(),
            ));
        }
        if let Some(tap) = self.store().tap_for_user(&user.id).await? {
            if tap.id == method_id {
                return self.delete_tap(user_key, method_id).await;
            }
        }
        self.check_target(
            AdminAction::DeleteMethod,
            activity::METHOD_DELETED,
            &user,
            &groups,
        )
        .await?;
        let event = self.event(
            activity::METHOD_DELETED,
            Some(&user.user_principal_name),
            json!({
                "category": "UserManagement",
                "resultReason": "Admin deleted authentication method for user",
                "methodId": method_id,
            }),
        );
        if !self
            .store()
            .delete_method(&user.id, method_id, &event)
            .await?
        {
            return Err(ServiceError::NotFound(format!(
                "user {user_key:?} has no authentication method with id {method_id:?}"
            )));
        }
        crate::audit::log(&event);
        Ok(())
    }

    // ---- directory ----

    /// Users matching `search`.
    pub async fn users(&self, search: Option<&str>) -> Result<Vec<User>> {
        self.check(AdminAction::ReadDirectory, "Read users", None)
            .await?;
        Ok(self.store().users(search).await?)
    }

    /// One user with groups, roles and TAP scope.
    pub async fn user(&self, key: &str) -> Result<UserDetails> {
        self.check(AdminAction::ReadDirectory, "Read users", None)
            .await?;
        let (user, groups) = self.find_user_with_groups(key).await?;
        let roles = self.service.roles_in(&groups);
        let policy = self.store().policy().await?;
        let in_tap_scope = policy::in_scope(&policy, &user, &groups, &self.service.group_index());
        let manager = match &user.manager_id {
            Some(id) => self.store().user(id).await?.filter(|m| m.id == *id),
            None => None,
        };
        Ok(UserDetails {
            user,
            groups,
            roles,
            in_tap_scope,
            manager,
        })
    }

    /// All groups.
    pub async fn groups(&self) -> Result<Vec<Group>> {
        self.check(AdminAction::ReadDirectory, "Read groups", None)
            .await?;
        Ok(self.store().groups().await?)
    }

    /// Runs a directory sync now and returns its status.
    pub async fn run_sync(&self, allow_deletes: bool) -> Result<SyncStatus> {
        self.check(AdminAction::RunSync, activity::SYNC_REQUESTED, None)
            .await?;
        let event = self.event(
            activity::SYNC_REQUESTED,
            None,
            json!({ "allowDeletes": allow_deletes }),
        );
        self.store().append_audit(&event).await?;
        crate::audit::log(&event);
        let status = self
            .service
            .syncer
            .run(allow_deletes, &self.actor_name)
            .await
            .map_err(|e| match e {
                crate::sync::SyncError::AlreadyRunning
                | crate::sync::SyncError::HeldElsewhere { .. }
                | crate::sync::SyncError::LeaseLost(_) => {
                    ServiceError::Conflict(Cause::with_source(e.to_string(), e))
                }
                crate::sync::SyncError::Store(s) => ServiceError::from(s),
            })?;
        self.service.run_onboarding_rules().await;
        self.with_conflicts(status).await
    }

    /// `status` with the users quarantined now, one line each.
    async fn with_conflicts(&self, mut status: SyncStatus) -> Result<SyncStatus> {
        status.identity_conflicts = self
            .store()
            .quarantined_users()
            .await?
            .iter()
            .map(|u| {
                let why = u
                    .identity_conflict
                    .as_ref()
                    .map(crate::model::IdentityConflict::describe)
                    .unwrap_or_default();
                format!("{} ({}): {why}", u.username, u.dn)
            })
            .collect();
        Ok(status)
    }

    /// The last sync status.
    pub async fn sync_status(&self) -> Result<SyncStatus> {
        self.check(
            AdminAction::ReadSyncStatus,
            "Read directory sync status",
            None,
        )
        .await?;
        let status = self.store().sync_status().await?;
        self.with_conflicts(status).await
    }

    // ---- audit ----

    /// Audit events.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        self.check(AdminAction::ReadAudit, "Read audit logs", None)
            .await?;
        Ok(self.store().audit(filter).await?)
    }

    /// Recomputes the audit chain from the retention checkpoint (or `from`) to its head
    /// (reader role or above: the same right as reading the audit).
    pub async fn verify_audit_chain(
        &self,
        from: Option<i64>,
    ) -> Result<crate::store::chain::Verification> {
        self.check(AdminAction::ReadAudit, "Verify the audit chain", None)
            .await?;
        Ok(crate::store::chain::verify(&**self.store(), from).await?)
    }
}
