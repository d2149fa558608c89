//! The admin API's one mapping of errors to HTTP: every status code and Graph-style error code
//! the API answers with is chosen here, from a [`ServiceError`], a rejected path, query or body,
//! or an unknown route. Internal errors are logged with their cause chain and answered with a
//! generic message; refusals (403) are logged at info, and other answers whose error keeps a
//! cause beneath its message at debug, each with the chain.
//!
//! May depend on: `service` (its error), `logging`.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::server::MAX_BODY_BYTES;
use crate::logging::ErrorChain;
use crate::service::ServiceError;

/// An API error: status, Graph-style code and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "badRequest",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = match &e {
            ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "badRequest"),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "accessDenied"),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "notFound"),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "serviceUnavailable"),
            ServiceError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "serviceUnavailable"),
            ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internalServerError"),
        };
        let message = match &e {
            ServiceError::Internal(_) => {
                log::error!("admin API internal error: {}", ErrorChain(&e));
                "internal error; see the tapd log".to_owned()
            }
            // A role refusal is something an operator wants to see.
            ServiceError::Forbidden(_) => {
                log::info!("admin API refused ({status}): {}", ErrorChain(&e));
                e.to_string()
            }
            // The answer carries the message; the error beneath it (the rule, the lease) is
            // only in the log.
            other if kept_cause(other).is_some() => {
                log::debug!("admin API answered {status}: {}", ErrorChain(other));
                other.to_string()
            }
            other => other.to_string(),
        };
        ApiError {
            status,
            code,
            message,
        }
    }
}

/// The error beneath `e`'s message, when it keeps one.
fn kept_cause(e: &ServiceError) -> Option<&(dyn std::error::Error + 'static)> {
    std::error::Error::source(e).and_then(std::error::Error::source)
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        ApiError {
            status: e.status(),
            code: if too_large {
                "requestTooLarge"
            } else {
                "badRequest"
            },
            message: if too_large {
                format!("request body is larger than {MAX_BODY_BYTES} bytes")
            } else {
                e.body_text()
            },
        }
    }
}

/// The answer to a path the API does not have.
pub(super) async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "notFound",
        message: "no such admin API path; see DESIGN §3 or `tapctl --help`".into(),
    }
}

/// The answer to a method a path does not support.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "methodNotAllowed",
        message: "this method is not supported on this path".into(),
    }
}
