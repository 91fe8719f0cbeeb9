//! The HTTP face of opsgate: webhook intake, the REST API under `/v1`, and
//! `/healthz`.
//!
//! Every route but `/healthz` is authenticated and authorised in `auth.rs`
//! before its handler runs; handlers receive the caller as a
//! [`domain::Principal`].
//!
//! Handlers are thin: they parse and validate a request into the domain's
//! vocabulary, call the runtime, and shape the answer. Bodies are read as
//! bytes and parsed here (not by an extractor) so that a malformed body gets
//! one stable error format saying what and where, and a webhook carrying
//! several alerts is validated whole before any of it is stored.

mod alertmanager;
mod auth;
mod error;
mod jira;
mod links;
mod pagerduty;
mod routes;
mod servicenow;
mod slack;

pub use auth::{
    Access, AuthConfig, IssuedToken, Permission, SIGNATURE_HEADER, SOURCE_HEADER, Secret,
    SignedSource, TIMESTAMP_HEADER, issue_token, permission_for, sign,
};
pub use error::ApiError;
pub use jira::JiraHookConfig;
pub use links::{ApprovalLink, LinkConfig, SignedPages, sign_link};
pub use routes::{Config, router};
pub use slack::{SLACK_SIGNATURE_HEADER, SLACK_TIMESTAMP_HEADER, SlackConfig, slack_signature};

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
