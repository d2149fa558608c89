//! The TAP policy's own rules: which values a policy may hold (DESIGN §2, Entra's ranges) and
//! how a Graph-style partial update (`PATCH …/temporaryAccessPass`) is merged into the current
//! policy. Validation reports **every** problem at once, each naming the JSON field and the
//! allowed range, so an administrator fixes a bad request in one round trip.
//!
//! Pure: depends on `crate::model`, serde and serde_json only.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::model::{ExcludeTarget, IncludeTarget, PolicyState, TapPolicy, TargetType};

/// Shortest lifetime any policy bound or TAP may have, in minutes (Graph-wide).
pub const LIFETIME_MINUTES_MIN: i64 = 10;
/// Longest lifetime any policy bound or TAP may have, in minutes (30 days, Graph-wide).
pub const LIFETIME_MINUTES_MAX: i64 = 43_200;
/// Shortest allowed `defaultLength`.
pub const LENGTH_MIN: i64 = 8;
/// Longest allowed `defaultLength`.
pub const LENGTH_MAX: i64 = 48;
/// The `@odata.type` a PATCH body may carry (Graph requires it; tapd accepts it or its absence).
pub const POLICY_ODATA_TYPE: &str =
    "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration";
/// The singleton id of the policy, as Graph reports it.
pub const POLICY_ID: &str = "TemporaryAccessPass";

/// One thing wrong with a policy or a policy update.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// A number outside its fixed range (lifetimes 10–43200, `defaultLength` 8–48).
    #[error("{field} must be between {min} and {max}; got {value}")]
    OutOfRange {
        /// JSON field name.
        field: &'static str,
        /// The value given.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// `maximumLifetimeInMinutes` is below `minimumLifetimeInMinutes`.
    #[error(
        "maximumLifetimeInMinutes must be greater than or equal to minimumLifetimeInMinutes \
         ({minimum}); got {maximum}"
    )]
    MaximumBelowMinimum {
        /// The minimum given.
        minimum: i64,
        /// The maximum given.
        maximum: i64,
    },
    /// `defaultLifetimeInMinutes` is outside `[minimum, maximum]`.
    #[error(
        "defaultLifetimeInMinutes must be between minimumLifetimeInMinutes and \
         maximumLifetimeInMinutes ({minimum} to {maximum}); got {default}"
    )]
    DefaultOutsideLifetimeBounds {
        /// The default given.
        default: i64,
        /// The minimum in effect.
        minimum: i64,
        /// The maximum in effect.
        maximum: i64,
    },
    /// `includeTargets` is empty, so nobody could ever be in scope.
    #[error(
        "includeTargets must name at least one user or group (the group \"all_users\" \
         includes everyone)"
    )]
    NoIncludeTargets,
    /// A target's `id` is empty or blank.
    #[error("{field}[{index}].id must not be empty")]
    EmptyTargetId {
        /// `includeTargets` or `excludeTargets`.
        field: &'static str,
        /// Position in the list.
        index: usize,
    },
    /// The same user or group appears twice in one target list (ids compared case-insensitively).
    #[error("{field} names the {target_type} \"{id}\" more than once")]
    DuplicateTarget {
        /// `includeTargets` or `excludeTargets`.
        field: &'static str,
        /// `user` or `group`.
        target_type: &'static str,
        /// The repeated id, as first given.
        id: String,
    },
    /// A PATCH body carried an `@odata.type` for some other resource.
    #[error("@odata.type must be \"{want}\" when given; got \"{}\"", .0, want = POLICY_ODATA_TYPE)]
    WrongODataType(String),
    /// A PATCH body carried an `id` other than the policy's.
    #[error("id must be \"{want}\" when given; got \"{}\"", .0, want = POLICY_ID)]
    WrongId(String),
    /// The PATCH body is not JSON of the expected shape (unknown field, wrong type…).
    #[error("the request body is not a valid policy update: {0}")]
    Malformed(String),
}

/// A policy (or policy update) was refused; `problems` lists every reason, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Temporary Access Pass policy: {}", self.joined())]
pub struct PolicyValidationError {
    /// Every problem found; never empty.
    pub problems: Vec<PolicyProblem>,
}

impl PolicyValidationError {
    fn joined(&self) -> String {
        self.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The numbers and lists of a policy, widened to `i64` so a patch can carry out-of-range
/// (even negative) values and still get a range message rather than a serde error.
struct Candidate<'a> {
    minimum: i64,
    maximum: i64,
    default: i64,
    length: i64,
    include: &'a [IncludeTarget],
    exclude: &'a [ExcludeTarget],
}

impl<'a> Candidate<'a> {
    fn of(policy: &'a TapPolicy) -> Self {
        Candidate {
            minimum: i64::from(policy.minimum_lifetime_in_minutes),
            maximum: i64::from(policy.maximum_lifetime_in_minutes),
            default: i64::from(policy.default_lifetime_in_minutes),
            length: i64::from(policy.default_length),
            include: &policy.include_targets,
            exclude: &policy.exclude_targets,
        }
    }

    fn problems(&self) -> Vec<PolicyProblem> {
        let mut problems = Vec::new();
        let range = |field, value, min, max, problems: &mut Vec<PolicyProblem>| {
            if !(min..=max).contains(&value) {
                problems.push(PolicyProblem::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        };
        let (lo, hi) = (LIFETIME_MINUTES_MIN, LIFETIME_MINUTES_MAX);
        range(
            "minimumLifetimeInMinutes",
            self.minimum,
            lo,
            hi,
            &mut problems,
        );
        range(
            "maximumLifetimeInMinutes",
            self.maximum,
            lo,
            hi,
            &mut problems,
        );
        if self.maximum < self.minimum {
            problems.push(PolicyProblem::MaximumBelowMinimum {
                minimum: self.minimum,
                maximum: self.maximum,
            });
        }
        if !(lo..=hi).contains(&self.default) {
            range(
                "defaultLifetimeInMinutes",
                self.default,
                lo,
                hi,
                &mut problems,
            );
        } else if !(self.minimum..=self.maximum).contains(&self.default) {
            problems.push(PolicyProblem::DefaultOutsideLifetimeBounds {
                default: self.default,
                minimum: self.minimum,
                maximum: self.maximum,
            });
        }
        range(
            "defaultLength",
            self.length,
            LENGTH_MIN,
            LENGTH_MAX,
            &mut problems,
        );
        if self.include.is_empty() {
            problems.push(PolicyProblem::NoIncludeTargets);
        }
        target_problems(
            "includeTargets",
            self.include.iter().map(|t| (t.id.as_str(), t.target_type)),
            &mut problems,
        );
        target_problems(
            "excludeTargets",
            self.exclude.iter().map(|t| (t.id.as_str(), t.target_type)),
            &mut problems,
        );
        problems
    }
}

fn target_type_name(t: TargetType) -> &'static str {
    match t {
        TargetType::User => "user",
        TargetType::Group => "group",
    }
}

fn target_problems<'t>(
    field: &'static str,
    targets: impl Iterator<Item = (&'t str, TargetType)>,
    problems: &mut Vec<PolicyProblem>,
) {
    let mut seen = BTreeSet::new();
    let mut reported = BTreeSet::new();
    for (index, (id, target_type)) in targets.enumerate() {
        let trimmed = id.trim();
        if trimmed.is_empty() {
            problems.push(PolicyProblem::EmptyTargetId { field, index });
            continue;
        }
        let key = (target_type_name(target_type), trimmed.to_ascii_lowercase());
        if !seen.insert(key.clone()) && reported.insert(key) {
            problems.push(PolicyProblem::DuplicateTarget {
                field,
                target_type: target_type_name(target_type),
                id: id.to_owned(),
            });
        }
    }
}

/// Checks every rule of DESIGN §2's policy table and reports all violations at once:
/// lifetimes 10–43200 minutes, maximum ≥ minimum, default within [minimum, maximum],
/// `defaultLength` 8–48, at least one include target, no blank target ids, no target twice in
/// one list (ids compared case-insensitively per target type). A user or group in both lists is
/// fine: exclusion wins.
pub fn validate_policy(p: &TapPolicy) -> Result<(), PolicyValidationError> {
    let problems = Candidate::of(p).problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyValidationError { problems })
    }
}

/// A Graph-style partial update of the policy: every field is optional and an absent (or
/// `null`) field keeps its current value. Unknown fields are refused. Numbers are taken as
/// `i64` so that `-5` yields "must be between 10 and 43200; got -5", not a parse error.
/// `@odata.type` and `id` are accepted (and ignored) when they name this policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPatch {
    /// Must be [`POLICY_ODATA_TYPE`] (leading `#` optional, case-insensitive) when present.
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    /// Must be [`POLICY_ID`] (case-insensitive) when present.
    pub id: Option<String>,
    /// New state.
    pub state: Option<PolicyState>,
    /// New minimum lifetime.
    pub minimum_lifetime_in_minutes: Option<i64>,
    /// New maximum lifetime.
    pub maximum_lifetime_in_minutes: Option<i64>,
    /// New default lifetime.
    pub default_lifetime_in_minutes: Option<i64>,
    /// New code length.
    pub default_length: Option<i64>,
    /// New one-time rule.
    pub is_usable_once: Option<bool>,
    /// Replaces the include list as a whole.
    pub include_targets: Option<Vec<IncludeTarget>>,
    /// Replaces the exclude list as a whole.
    pub exclude_targets: Option<Vec<ExcludeTarget>>,
}

impl PolicyPatch {
    /// Parses a PATCH body, turning any serde error (unknown field, wrong type, bad enum
    /// value) into a [`PolicyProblem::Malformed`] so the caller answers 400 with one error type.
    pub fn from_json(body: &[u8]) -> Result<Self, PolicyValidationError> {
        serde_json::from_slice(body).map_err(|e| PolicyValidationError {
            problems: vec![PolicyProblem::Malformed(e.to_string())],
        })
    }
}

fn odata_type_matches(given: &str) -> bool {
    let want = POLICY_ODATA_TYPE.trim_start_matches('#');
    given.trim_start_matches('#').eq_ignore_ascii_case(want)
}

/// Narrows an already validated number; the error arm is unreachable after validation but
/// keeps this free of panics.
fn narrow(
    field: &'static str,
    value: i64,
    min: i64,
    max: i64,
) -> Result<u32, PolicyValidationError> {
    u32::try_from(value).map_err(|_| PolicyValidationError {
        problems: vec![PolicyProblem::OutOfRange {
            field,
            value,
            min,
            max,
        }],
    })
}

/// Merges `patch` into `current` and validates the result as a whole (so raising the minimum
/// above the current default is reported). Returns the new policy, or every problem found,
/// including a wrong `@odata.type` or `id`.
pub fn apply_patch(
    current: &TapPolicy,
    patch: &PolicyPatch,
) -> Result<TapPolicy, PolicyValidationError> {
    let mut problems = Vec::new();
    if let Some(t) = &patch.odata_type {
        if !odata_type_matches(t) {
            problems.push(PolicyProblem::WrongODataType(t.clone()));
        }
    }
    if let Some(id) = &patch.id {
        if !id.eq_ignore_ascii_case(POLICY_ID) {
            problems.push(PolicyProblem::WrongId(id.clone()));
        }
    }
    let base = Candidate::of(current);
    let candidate = Candidate {
        minimum: patch.minimum_lifetime_in_minutes.unwrap_or(base.minimum),
        maximum: patch.maximum_lifetime_in_minutes.unwrap_or(base.maximum),
        default: patch.default_lifetime_in_minutes.unwrap_or(base.default),
        length: patch.default_length.unwrap_or(base.length),
        include: patch
            .include_targets
            .as_deref()
            .unwrap_or(&current.include_targets),
        exclude: patch
            .exclude_targets
            .as_deref()
            .unwrap_or(&current.exclude_targets),
    };
    problems.extend(candidate.problems());
    if !problems.is_empty() {
        return Err(PolicyValidationError { problems });
    }
    let (lo, hi) = (LIFETIME_MINUTES_MIN, LIFETIME_MINUTES_MAX);
    Ok(TapPolicy {
        state: patch.state.unwrap_or(current.state),
        minimum_lifetime_in_minutes: narrow("minimumLifetimeInMinutes", candidate.minimum, lo, hi)?,
        maximum_lifetime_in_minutes: narrow("maximumLifetimeInMinutes", candidate.maximum, lo, hi)?,
        default_lifetime_in_minutes: narrow("defaultLifetimeInMinutes", candidate.default, lo, hi)?,
        default_length: narrow("defaultLength", candidate.length, LENGTH_MIN, LENGTH_MAX)?,
        is_usable_once: patch.is_usable_once.unwrap_or(current.is_usable_once),
        include_targets: candidate.include.to_vec(),
        exclude_targets: candidate.exclude.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use PolicyProblem as P;

    fn range(field: &'static str, value: i64) -> PolicyProblem {
        let (min, max) = if field == "defaultLength" {
            (LENGTH_MIN, LENGTH_MAX)
        } else {
            (LIFETIME_MINUTES_MIN, LIFETIME_MINUTES_MAX)
        };
        P::OutOfRange {
            field,
            value,
            min,
            max,
        }
    }

    fn patch(body: &str) -> Result<TapPolicy, PolicyValidationError> {
        let p = PolicyPatch::from_json(body.as_bytes())?;
        apply_patch(&TapPolicy::default(), &p)
    }

    #[test]
    fn defaults_are_entras_and_valid() {
        let p = TapPolicy::default();
        assert_eq!(p.state, PolicyState::Disabled);
        assert_eq!(p.minimum_lifetime_in_minutes, 60);
        assert_eq!(p.maximum_lifetime_in_minutes, 480);
        assert_eq!(p.default_lifetime_in_minutes, 60);
        assert_eq!(p.default_length, 8);
        assert!(!p.is_usable_once);
        assert_eq!(p.include_targets.len(), 1);
        assert_eq!(p.include_targets[0].id, crate::model::ALL_USERS);
        assert_eq!(p.include_targets[0].target_type, TargetType::Group);
        assert!(p.exclude_targets.is_empty());
        assert_eq!(validate_policy(&p), Ok(()));
        // An empty patch keeps everything.
        assert_eq!(patch("{}"), Ok(p));
    }

    /// Every field of DESIGN §2's table at min-1 / min / max / max+1 (and a few more), applied as
    /// a PATCH to the default policy (min 60, max 480, default 60, length 8).
    #[test]
    fn policy_table_bounds() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<PolicyProblem>)> = vec![
            // minimumLifetimeInMinutes: 10..=43200
            (r#"{"minimumLifetimeInMinutes": 9}"#, vec![range("minimumLifetimeInMinutes", 9)]),
            (r#"{"minimumLifetimeInMinutes": 10}"#, vec![]),
            (r#"{"minimumLifetimeInMinutes": 0}"#, vec![range("minimumLifetimeInMinutes", 0)]),
            (r#"{"minimumLifetimeInMinutes": -1}"#, vec![range("minimumLifetimeInMinutes", -1)]),
            (r#"{"minimumLifetimeInMinutes": 43200, "maximumLifetimeInMinutes": 43200, "defaultLifetimeInMinutes": 43200}"#, vec![]),
            (r#"{"minimumLifetimeInMinutes": 43201, "maximumLifetimeInMinutes": 43200, "defaultLifetimeInMinutes": 43200}"#, vec![
                range("minimumLifetimeInMinutes", 43201),
                P::MaximumBelowMinimum { minimum: 43201, maximum: 43200 },
                P::DefaultOutsideLifetimeBounds { default: 43200, minimum: 43201, maximum: 43200 },
            ]),
            (r#"{"minimumLifetimeInMinutes": 61}"#, vec![
                P::DefaultOutsideLifetimeBounds { default: 60, minimum: 61, maximum: 480 },
            ]),
            // maximumLifetimeInMinutes: 10..=43200 and >= minimum
            (r#"{"minimumLifetimeInMinutes": 10, "maximumLifetimeInMinutes": 9, "defaultLifetimeInMinutes": 10}"#, vec![
                range("maximumLifetimeInMinutes", 9),
                P::MaximumBelowMinimum { minimum: 10, maximum: 9 },
                P::DefaultOutsideLifetimeBounds { default: 10, minimum: 10, maximum: 9 },
            ]),
            (r#"{"minimumLifetimeInMinutes": 10, "maximumLifetimeInMinutes": 10, "defaultLifetimeInMinutes": 10}"#, vec![]),
            (r#"{"maximumLifetimeInMinutes": 43200}"#, vec![]),
            (r#"{"maximumLifetimeInMinutes": 43201}"#, vec![range("maximumLifetimeInMinutes", 43201)]),
            (r#"{"maximumLifetimeInMinutes": -480}"#, vec![
                range("maximumLifetimeInMinutes", -480),
                P::MaximumBelowMinimum { minimum: 60, maximum: -480 },
                P::DefaultOutsideLifetimeBounds { default: 60, minimum: 60, maximum: -480 },
            ]),
            (r#"{"maximumLifetimeInMinutes": 59}"#, vec![
                P::MaximumBelowMinimum { minimum: 60, maximum: 59 },
                P::DefaultOutsideLifetimeBounds { default: 60, minimum: 60, maximum: 59 },
            ]),
            (r#"{"maximumLifetimeInMinutes": 60}"#, vec![]),
            // defaultLifetimeInMinutes: within [minimum, maximum] (and 10..=43200)
            (r#"{"defaultLifetimeInMinutes": 59}"#, vec![
                P::DefaultOutsideLifetimeBounds { default: 59, minimum: 60, maximum: 480 },
            ]),
            (r#"{"defaultLifetimeInMinutes": 60}"#, vec![]),
            (r#"{"defaultLifetimeInMinutes": 480}"#, vec![]),
            (r#"{"defaultLifetimeInMinutes": 481}"#, vec![
                P::DefaultOutsideLifetimeBounds { default: 481, minimum: 60, maximum: 480 },
            ]),
            (r#"{"defaultLifetimeInMinutes": 9}"#, vec![range("defaultLifetimeInMinutes", 9)]),
            (r#"{"minimumLifetimeInMinutes": 10, "defaultLifetimeInMinutes": 10}"#, vec![]),
            (r#"{"maximumLifetimeInMinutes": 43200, "defaultLifetimeInMinutes": 43200}"#, vec![]),
            (r#"{"maximumLifetimeInMinutes": 43200, "defaultLifetimeInMinutes": 43201}"#, vec![
                range("defaultLifetimeInMinutes", 43201),
            ]),
            (r#"{"defaultLifetimeInMinutes": -60}"#, vec![range("defaultLifetimeInMinutes", -60)]),
            // defaultLength: 8..=48
            (r#"{"defaultLength": 7}"#, vec![range("defaultLength", 7)]),
            (r#"{"defaultLength": 8}"#, vec![]),
            (r#"{"defaultLength": 48}"#, vec![]),
            (r#"{"defaultLength": 49}"#, vec![range("defaultLength", 49)]),
            (r#"{"defaultLength": -8}"#, vec![range("defaultLength", -8)]),
            // state, isUsableOnce
            (r#"{"state": "enabled"}"#, vec![]),
            (r#"{"state": "disabled"}"#, vec![]),
            (r#"{"isUsableOnce": true}"#, vec![]),
            (r#"{"isUsableOnce": false}"#, vec![]),
            // includeTargets: non-empty, ids non-empty, no duplicates
            (r#"{"includeTargets": []}"#, vec![P::NoIncludeTargets]),
            (r#"{"includeTargets": [{"id": "staff", "targetType": "group"}]}"#, vec![]),
            (r#"{"includeTargets": [{"id": "alice", "targetType": "user", "isRegistrationRequired": false}]}"#, vec![]),
            (r#"{"includeTargets": [{"id": "", "targetType": "group"}]}"#, vec![
                P::EmptyTargetId { field: "includeTargets", index: 0 },
            ]),
            (r#"{"includeTargets": [{"id": "staff", "targetType": "group"}, {"id": "  ", "targetType": "user"}]}"#, vec![
                P::EmptyTargetId { field: "includeTargets", index: 1 },
            ]),
            (r#"{"includeTargets": [{"id": "staff", "targetType": "group"}, {"id": "STAFF", "targetType": "group"}, {"id": "Staff", "targetType": "group"}]}"#, vec![
                P::DuplicateTarget { field: "includeTargets", target_type: "group", id: "STAFF".into() },
            ]),
            (r#"{"includeTargets": [{"id": "staff", "targetType": "group"}, {"id": "staff", "targetType": "user"}]}"#, vec![]),
            // excludeTargets: may be empty, ids non-empty, no duplicates; overlap with include is fine
            (r#"{"excludeTargets": []}"#, vec![]),
            (r#"{"excludeTargets": [{"id": "all_users", "targetType": "group"}]}"#, vec![]),
            (r#"{"excludeTargets": [{"id": "", "targetType": "user"}]}"#, vec![
                P::EmptyTargetId { field: "excludeTargets", index: 0 },
            ]),
            (r#"{"excludeTargets": [{"id": "bob", "targetType": "user"}, {"id": "BOB", "targetType": "user"}]}"#, vec![
                P::DuplicateTarget { field: "excludeTargets", target_type: "user", id: "BOB".into() },
            ]),
            // @odata.type and id: accepted when right, refused otherwise
            (r##"{"@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration", "state": "enabled"}"##, vec![]),
            (r#"{"@odata.type": "microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration"}"#, vec![]),
            (r##"{"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration"}"##, vec![
                P::WrongODataType("#microsoft.graph.fido2AuthenticationMethodConfiguration".into()),
            ]),
            (r#"{"id": "TemporaryAccessPass"}"#, vec![]),
            (r#"{"id": "temporaryAccessPass"}"#, vec![]),
            (r#"{"id": "Fido2"}"#, vec![P::WrongId("Fido2".into())]),
            // null keeps the current value
            (r#"{"state": null, "defaultLength": null, "includeTargets": null}"#, vec![]),
            // every problem at once
            (r#"{"@odata.type": "x", "id": "y", "minimumLifetimeInMinutes": 5, "maximumLifetimeInMinutes": 50000, "defaultLifetimeInMinutes": 1, "defaultLength": 100, "includeTargets": [], "excludeTargets": [{"id": "", "targetType": "group"}]}"#, vec![
                P::WrongODataType("x".into()),
                P::WrongId("y".into()),
                range("minimumLifetimeInMinutes", 5),
                range("maximumLifetimeInMinutes", 50000),
                range("defaultLifetimeInMinutes", 1),
                range("defaultLength", 100),
                P::NoIncludeTargets,
                P::EmptyTargetId { field: "excludeTargets", index: 0 },
            ]),
        ];
        for (body, want) in cases {
            let got = patch(body);
            if want.is_empty() {
                let p = got.unwrap_or_else(|e| panic!("{body}: {e}"));
                assert_eq!(validate_policy(&p), Ok(()), "{body}");
            } else {
                assert_eq!(got, Err(PolicyValidationError { problems: want }), "{body}");
            }
        }
    }

    #[test]
    fn malformed_bodies_are_one_clear_problem() {
        for body in [
            r#"{"state": "on"}"#,
            r#"{"isUsableOnce": "yes"}"#,
            r#"{"defaultLength": 8.5}"#,
            r#"{"minimumLifetimeInMinutes": "60"}"#,
            r#"{"lifetime": 60}"#,
            r#"{"includeTargets": [{"id": "x", "targetType": "device"}]}"#,
            r#"{"includeTargets": [{"id": "x", "targetType": "group", "extra": 1}]}"#,
            r#"{"excludeTargets": [{"id": "x", "targetType": "group", "isRegistrationRequired": true}]}"#,
            "not json",
            "[]",
        ] {
            let err = PolicyPatch::from_json(body.as_bytes()).expect_err(body);
            assert_eq!(err.problems.len(), 1, "{body}");
            assert!(matches!(err.problems[0], P::Malformed(_)), "{body}: {err}");
        }
        let err = PolicyPatch::from_json(br#"{"lifetime": 60}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `lifetime`"),
            "{err}"
        );
    }

    #[test]
    fn patch_merges_every_field() {
        let body = r#"{
            "state": "enabled",
            "minimumLifetimeInMinutes": 15,
            "maximumLifetimeInMinutes": 1440,
            "defaultLifetimeInMinutes": 120,
            "defaultLength": 12,
            "isUsableOnce": true,
            "includeTargets": [{"id": "staff", "targetType": "group", "isRegistrationRequired": true}],
            "excludeTargets": [{"id": "bob", "targetType": "user"}]
        }"#;
        let p = patch(body).unwrap();
        assert_eq!(
            p,
            TapPolicy {
                state: PolicyState::Enabled,
                minimum_lifetime_in_minutes: 15,
                maximum_lifetime_in_minutes: 1440,
                default_lifetime_in_minutes: 120,
                default_length: 12,
                is_usable_once: true,
                include_targets: vec![IncludeTarget {
                    id: "staff".into(),
                    target_type: TargetType::Group,
                    is_registration_required: true,
                }],
                exclude_targets: vec![ExcludeTarget {
                    id: "bob".into(),
                    target_type: TargetType::User,
                }],
            }
        );
        // A later partial patch keeps what it does not name.
        let p2 = apply_patch(
            &p,
            &PolicyPatch::from_json(br#"{"state": "disabled"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(
            p2,
            TapPolicy {
                state: PolicyState::Disabled,
                ..p.clone()
            }
        );
        // A refused patch reports against the merged result: raising the minimum above the
        // current default is named even though the default was not in the patch.
        let err = apply_patch(
            &p,
            &PolicyPatch {
                minimum_lifetime_in_minutes: Some(121),
                ..PolicyPatch::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![P::DefaultOutsideLifetimeBounds {
                default: 120,
                minimum: 121,
                maximum: 1440
            }]
        );
    }

    #[test]
    fn validate_policy_reports_every_problem_with_field_and_range() {
        let p = TapPolicy {
            minimum_lifetime_in_minutes: 5,
            maximum_lifetime_in_minutes: 4,
            default_lifetime_in_minutes: 60,
            default_length: 49,
            include_targets: vec![],
            ..TapPolicy::default()
        };
        let err = validate_policy(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid Temporary Access Pass policy: \
             minimumLifetimeInMinutes must be between 10 and 43200; got 5; \
             maximumLifetimeInMinutes must be between 10 and 43200; got 4; \
             maximumLifetimeInMinutes must be greater than or equal to minimumLifetimeInMinutes (5); got 4; \
             defaultLifetimeInMinutes must be between minimumLifetimeInMinutes and maximumLifetimeInMinutes (5 to 4); got 60; \
             defaultLength must be between 8 and 48; got 49; \
             includeTargets must name at least one user or group (the group \"all_users\" includes everyone)"
        );
    }

    #[test]
    fn validate_policy_numeric_bounds_directly() {
        type Set = fn(&mut TapPolicy, u32);
        #[rustfmt::skip]
        let fields: [(&str, Set, u32, u32); 4] = [
            ("minimumLifetimeInMinutes", |p, v| { p.minimum_lifetime_in_minutes = v; p.default_lifetime_in_minutes = v; p.maximum_lifetime_in_minutes = v.max(480) }, 10, 43200),
            ("maximumLifetimeInMinutes", |p, v| { p.maximum_lifetime_in_minutes = v; p.minimum_lifetime_in_minutes = v.min(10); p.default_lifetime_in_minutes = v.min(10) }, 10, 43200),
            ("defaultLifetimeInMinutes", |p, v| { p.default_lifetime_in_minutes = v; p.minimum_lifetime_in_minutes = 10; p.maximum_lifetime_in_minutes = 43200 }, 10, 43200),
            ("defaultLength", |p, v| p.default_length = v, 8, 48),
        ];
        for (field, set, min, max) in fields {
            for (value, ok) in [(min - 1, false), (min, true), (max, true), (max + 1, false)] {
                let mut p = TapPolicy::default();
                set(&mut p, value);
                let got = validate_policy(&p);
                if ok {
                    assert_eq!(got, Ok(()), "{field}={value}");
                } else {
                    let err = got.unwrap_err();
                    assert!(
                        err.problems.contains(&range(field, i64::from(value))),
                        "{field}={value}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn messages_name_field_and_range() {
        assert_eq!(
            range("defaultLength", 7).to_string(),
            "defaultLength must be between 8 and 48; got 7"
        );
        assert_eq!(
            P::EmptyTargetId {
                field: "includeTargets",
                index: 2
            }
            .to_string(),
            "includeTargets[2].id must not be empty"
        );
        assert_eq!(
            P::DuplicateTarget {
                field: "excludeTargets",
                target_type: "user",
                id: "bob".into()
            }
            .to_string(),
            "excludeTargets names the user \"bob\" more than once"
        );
        assert_eq!(
            P::WrongId("x".into()).to_string(),
            "id must be \"TemporaryAccessPass\" when given; got \"x\""
        );
        assert_eq!(
            P::WrongODataType("x".into()).to_string(),
            "@odata.type must be \"#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration\" when given; got \"x\""
        );
    }
}
