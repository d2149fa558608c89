//! The errors the admin operations answer with keep what caused them: the message a caller
//! sees is the rule's own, unchanged, and the rule's error is its source, so a log line's chain
//! reaches it.

use std::error::Error;

use tapd::policy::{CreateTapRequest, CreationError, PolicyPatch, PolicyValidationError};
use tapd::service::ServiceError;

use crate::harness::Site;

/// The `E` in the refusal's source chain, checked to read as the refusal itself.
fn source_of<E: Error + 'static>(refused: &ServiceError) -> &E {
    assert!(
        matches!(refused, ServiceError::BadRequest(_)),
        "{refused:?}"
    );
    let mut next = refused.source();
    let kept = loop {
        let cause = next.unwrap_or_else(|| panic!("the rule's error is not kept: {refused:?}"));
        if let Some(kept) = cause.downcast_ref::<E>() {
            break kept;
        }
        next = cause.source();
    };
    assert_eq!(kept.to_string(), refused.to_string());
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_requests_keep_the_rule_that_refused_them() {
    let site = Site::new().await;
    let admin = site.admin().await;

    let patch = PolicyPatch::from_json(br#"{"id":"not-the-policy"}"#).unwrap();
    let refused = admin.patch_policy(&patch).await.unwrap_err();
    let problem = source_of::<PolicyValidationError>(&refused);
    assert_eq!(problem.problems.len(), 1, "{problem:?}");

    let request = CreateTapRequest {
        lifetime_in_minutes: Some(1),
        ..CreateTapRequest::default()
    };
    let refused = admin.create_tap("alice", &request).await.unwrap_err();
    let creation = source_of::<CreationError>(&refused);
    assert!(
        matches!(
            creation,
            CreationError::LifetimeOutOfRange { requested: 1, .. }
        ),
        "{creation:?}"
    );
}
