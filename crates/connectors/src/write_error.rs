//! How the clients that write outside any runbook step (ServiceNow, Jira,
//! Slack, Teams) report a failure: whether trying later can help.

use std::time::Duration;

use reqwest::StatusCode;

use crate::http::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying later: connection refused or timed out, 5xx, 429 (with
    /// the `Retry-After` it gave).
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help: 400, 403, 404 (record gone), a 401 after a
    /// refresh, a malformed answer. The message carries the peer's own words.
    #[error("{message}")]
    Permanent { message: String },
}

impl WriteError {
    /// Sorts a peer's refusal, `message`, by its status: rate limits,
    /// timeouts and server errors pass (retry, after `retry_after` when the
    /// peer said), the rest (400, 401, 403, 404, …) stay until someone
    /// changes something.
    pub(crate) fn refused(
        status: StatusCode,
        message: String,
        retry_after: Option<Duration>,
    ) -> WriteError {
        let passing = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        if passing {
            WriteError::Retryable {
                message,
                retry_after,
            }
        } else {
            WriteError::Permanent { message }
        }
    }

    /// A request that got no answer: `what` names the call and its URL, so
    /// the error's own copy of the URL is left out. Only a request that
    /// could not even be built is permanent.
    pub(crate) fn unanswered(what: &str, error: reqwest::Error) -> WriteError {
        let error = error.without_url();
        let message = format!("{what} failed: {}", error_chain(&error));
        if error.is_builder() {
            WriteError::Permanent { message }
        } else {
            WriteError::Retryable {
                message,
                retry_after: None,
            }
        }
    }

    /// An answer that is not what the peer's API promises.
    pub(crate) fn malformed(what: &str, problem: &str) -> WriteError {
        WriteError::Permanent {
            message: format!("{what}: malformed answer: {problem}"),
        }
    }
}
