//! The policy engine: every TAP and admin-role rule of DESIGN §2 as pure functions, so each
//! path (admin API, web sign-in, RADIUS, federation) decides the same way and the rules can be
//! tested to the second without a clock, a store or a socket.
//!
//! - [`settings`]: which values a policy may hold, and merging a Graph-style PATCH;
//! - [`scope`]: who the policy applies to;
//! - [`lifecycle`]: a TAP's creation terms, usability at an instant, web sign-in outcome and
//!   the reason codes / messages of every path;
//! - [`roles`]: admin roles from group membership and the authorization matrix.
//!
//! May depend on `crate::model` and serde only: no I/O, no clock (`now` is always a
//! parameter), no store. The service layer looks things up, calls these, and acts.

pub mod lifecycle;
pub mod roles;
pub mod scope;
pub mod settings;

pub use lifecycle::{
    creation_terms, rfc3339, usability, web_sign_in_check, CreateTapRequest, CreationError,
    SignInFailure, TapTerms, UsabilityReason, MAX_START_AHEAD, START_CLOCK_SKEW,
};
pub use roles::{authorize, Actor, AdminAction, AdminRole, Denied, RoleMapping, TargetUser};
pub use scope::{in_scope, scope_check, target_matches, OutOfScope};
pub use settings::{
    apply_patch, validate_policy, PolicyPatch, PolicyProblem, PolicyValidationError, LENGTH_MAX,
    LENGTH_MIN, LIFETIME_MINUTES_MAX, LIFETIME_MINUTES_MIN, POLICY_ID, POLICY_ODATA_TYPE,
};
