//! The HTTP face of opsgate: webhook intake, the REST API under `/v1`, and
//! `/healthz`.
//!
//! Every route but `/healthz` is authenticated and authorised in `auth.rs`
//! before its handler runs; handlers receive the caller as a
//! [`domain::Principal`].
//!
//! Handlers are thin: they parse and validate a request into the domain's
//! vocabulary, call the runtime, and shape the answer. Bodies are read as
//! bytes and parsed by the handler (not by an extractor) so that a
//! malformed body gets one stable error format saying what and where. A
//! webhook's body is read by its event source, behind the seam
//! (`/v1/hooks/{source}`, one pipeline for every sender), and a webhook
//! carrying several alerts is validated whole before any of it is stored.

pub mod api;
mod auth;
mod body;
mod buttons;
mod error;
mod links;
mod openapi;
mod refusals;
mod routes;
mod signed;
mod state;

pub use auth::{
    Access, AuthConfig, IssuedToken, Permission, SIGNATURE_HEADER, SOURCE_HEADER, SignedSource,
    TIMESTAMP_HEADER, issue_token, sign,
};
pub use error::ApiError;
pub use links::{ApprovalLink, LinkConfig, SignedPages, sign_link};
pub use routes::{Api, Config, router};

/// Serves `api` on `listener` until `shutdown` completes. Meanwhile the
/// refusal windows that end are audited; when it stops, every open one is.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = api.state.clone();
    let closer = tokio::spawn(async move {
        let period = (state.auth.refusal_window() / 4).max(std::time::Duration::from_millis(100));
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            auth::close_refusal_windows(&state, jiff::Timestamp::now(), false).await;
        }
    });
    let served = axum::serve(listener, api.router)
        .with_graceful_shutdown(shutdown)
        .await;
    closer.abort();
    auth::close_refusal_windows(&api.state, jiff::Timestamp::now(), true).await;
    served
}

#[cfg(test)]
mod tests {
    /// The server reaches the system through the runtime's services only:
    /// of opsgate's own crates it depends on `runtime` and `domain`, never
    /// on what lies below them (the store, the gate, the runbook format,
    /// the engine, the integrations).
    #[test]
    fn the_server_depends_on_the_runtime_and_the_domain_only() {
        const OURS: &[&str] = &[
            "domain",
            "runbook",
            "policy",
            "engine",
            "store",
            "connectors",
            "runtime",
        ];
        let mut section = "";
        let mut ours = Vec::new();
        for line in include_str!("../Cargo.toml").lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[dependencies]"
                && let Some((name, _)) = line.split_once(['=', '.'])
                && OURS.contains(&name.trim())
            {
                ours.push(name.trim());
            }
        }
        assert_eq!(ours, ["domain", "runtime"]);
    }
}
