//! The one error type at the HTTP edge.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Every error the API returns: a status, a stable `code`, a human
/// `message`. Internal errors are logged with their detail and answered
/// with a generic message, so no internal text leaks to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{message}")]
    Conflict { message: String },
    /// No credential, or one that is not valid.
    #[error("{message}")]
    Unauthorized { message: String },
    /// A valid credential whose principal may not do this.
    #[error("{message}")]
    Forbidden { message: String },
    #[error("the request body is larger than the server accepts")]
    PayloadTooLarge,
    /// A route that exists, called with a method it does not take.
    #[error("{route} does not take {method}")]
    MethodNotAllowed { method: String, route: String },
    /// A body of a media type the route does not take.
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    /// A system opsgate needs to answer is unavailable for now; the sender
    /// should try again (after `retry_after_secs`, when known).
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: Option<u64>,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = %source, "internal error answering a request");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message: self.to_string(),
                },
            }),
        )
            .into_response();
        if let ApiError::Unavailable {
            retry_after_secs: Some(secs),
            ..
        } = &self
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*secs).into());
        }
        response
    }
}

impl From<runtime::Error> for ApiError {
    fn from(error: runtime::Error) -> Self {
        match error {
            runtime::Error::UnknownRun { run_id } => ApiError::NotFound {
                what: "run",
                id: run_id,
            },
            runtime::Error::ApprovalRefused { reason } => ApiError::Forbidden { message: reason },
            runtime::Error::InvalidEvent { message } => {
                ApiError::bad_request("invalid_event", message)
            }
            runtime::Error::Source(error) => error.into(),
            runtime::Error::InvalidFreeze { message } => {
                ApiError::bad_request("invalid_freeze", message)
            }
            runtime::Error::InvalidProposal { message } => {
                ApiError::bad_request("invalid_proposal", message)
            }
            runtime::Error::ProposalRefused { reason } => ApiError::Forbidden { message: reason },
            runtime::Error::ProposalConflict { message } => ApiError::Conflict { message },
            runtime::Error::UnknownFreeze { id } => ApiError::NotFound { what: "freeze", id },
            runtime::Error::FreezeNotActive { id } => ApiError::Conflict {
                message: format!(
                    "freeze `{id}` is no longer in force: it was lifted or has expired"
                ),
            },
            runtime::Error::Engine(error) => ApiError::Conflict {
                message: error.to_string(),
            },
            error @ runtime::Error::Overloaded { .. } => ApiError::Unavailable {
                message: error.to_string(),
                retry_after_secs: Some(1),
            },
            runtime::Error::Store(error) if error.is_out_of_room() => out_of_room(),
            runtime::Error::Store(runtime::StoreError::Conflict { .. }) => ApiError::Conflict {
                message: "the run changed meanwhile; try again".to_owned(),
            },
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// A source's refusal, in the API's words: what is wrong is a 400, a
/// system that cannot be read now a 503 with its `Retry-After`.
impl From<runtime::SourceError> for ApiError {
    fn from(error: runtime::SourceError) -> Self {
        match error {
            runtime::SourceError::Invalid { code, message } => ApiError::bad_request(code, message),
            runtime::SourceError::Unavailable {
                message,
                retry_after,
            } => ApiError::Unavailable {
                message,
                retry_after_secs: retry_after.map(|after| after.as_secs().max(1)),
            },
        }
    }
}

impl From<runtime::StoreError> for ApiError {
    fn from(error: runtime::StoreError) -> Self {
        if error.is_out_of_room() {
            return out_of_room();
        }
        ApiError::Internal(Box::new(error))
    }
}

/// The database's disk is full, read-only or failing: nothing was stored,
/// and the sender should send again later, as after any 503.
fn out_of_room() -> ApiError {
    tracing::error!("the database cannot store anything: its disk is full, read-only or failing");
    ApiError::Unavailable {
        message: "opsgate's database cannot store anything now (its disk is full, read-only or \
                  failing): nothing was stored; send this again once an operator has made room \
                  or the disk writable"
            .to_owned(),
        retry_after_secs: Some(30),
    }
}

/// What every refusal and failure answers: a stable `code` and a message
/// saying what was wrong and where.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// `bad_request`, `invalid_body`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `gone`,
    /// `unsupported_media_type`, `unavailable`, `internal`, …
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// What every operation may answer besides its success, in the API's
/// error format: named once, listed by each operation.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "a description of answers, never built")]
pub(crate) enum Refusals {
    /// Refused: what was wrong, and where.
    #[response(status = "4XX")]
    Refused(#[to_schema] ErrorBody),
    /// A failure here, or of a system opsgate had to read.
    #[response(status = "5XX")]
    Failed(#[to_schema] ErrorBody),
}
