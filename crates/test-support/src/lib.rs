//! Stand-ins for the outside world, speaking over real loopback HTTP.
//!
//! - [`endpoint_sim`]: a small endpoint-management and mailbox API whose
//!   services can be stopped and restarted and whose health can be probed;
//!   the demo and the end-to-end tests run their scenarios against it.
//! - [`scripted`]: an HTTP server that answers each path from a script
//!   (503 then 200, a `Retry-After`, a slow answer) and counts every call,
//!   so tests can prove what opsgate did and did not repeat.
//! - [`servicenow_sim`]: a local ServiceNow instance (Table API, Basic and
//!   OAuth, work notes in the journal) that can also go down, rate limit
//!   and expire tokens, for the ServiceNow client's contract tests.
//! - [`freshservice_sim`]: a local Freshservice (API v2: tickets, notes and
//!   conversations, agent groups, requesters) with Freshservice's
//!   validation envelope, empty 404s, rate-limit headers, 429s and outages,
//!   for the Freshservice client's contract tests.
//! - [`jira_sim`]: a local Jira (Cloud or Data Center): projects with
//!   their own workflows and transition ids, issues, comments as ADF, and
//!   Jira's error envelope, rate limit and outages, for the Jira client's
//!   contract tests; and [`jira_sim::webhook_signature`], Jira's webhook
//!   signature.
//! - [`slack_sim`]: a local Slack Web API (`chat.postMessage`, its error
//!   envelope and rate limit), and interaction callbacks signed as Slack
//!   signs them.
//! - [`graph_sim`]: a local Microsoft Graph tenant (users, groups, their
//!   members) behind the identity platform's token endpoint, with Graph's
//!   status codes and error envelopes, throttling and expiring tokens.
//! - [`awx_sim`]: a local AWX (job templates that prompt or not for
//!   variables, jobs that move on at each read, AWX's `{"detail"}` refusals,
//!   throttling); [`jenkins_sim`]: a local Jenkins (crumbs bound to a
//!   session cookie, queue items that become builds, Jetty's error pages).
//! - [`jira_sim`]: a local Jira (Cloud or Data Center): projects with
//!   their own workflows and transition ids, issues, comments as ADF, and
//!   Jira's error envelope, rate limit and outages, for the Jira client's
//!   contract tests; and [`jira_sim::webhook_signature`], Jira's webhook
//!   signature.
//! - [`chat_completions_sim`]: a local model endpoint speaking the
//!   chat-completions wire format (bearer key, strict JSON-schema
//!   answers, the error envelope), answering from a script or switched to
//!   malformed content, a refusal, a cut-off answer, 429 with
//!   `Retry-After`, a slow answer or a 500; it records every request.
//! - [`postgres`]: fresh PostgreSQL databases, dropped after use.
//!
//! The demo ships in the `opsgate` binary, so this crate is an ordinary
//! dependency of `cli` (see ARCHITECTURE.md); everything in it binds to
//! 127.0.0.1 only.

pub mod awx_sim;
pub mod chat_completions_sim;
pub mod endpoint_sim;
pub mod freshservice_sim;
pub mod graph_sim;
pub mod jenkins_sim;
pub mod jira_sim;
pub mod postgres;
pub mod scripted;
pub mod servicenow_sim;
pub mod slack_sim;
pub mod teams_sim;

/// A server running in the background; dropping the handle stops it.
pub struct Running {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Serves `app` on a free loopback port.
pub async fn serve(app: axum::Router) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Running {
        url,
        shutdown: Some(shutdown),
    })
}

/// The user and password of `Basic` credentials (the part after `Basic `):
/// standard base64 of `user:password`. `None` when they do not decode.
pub(crate) fn decode_basic(encoded: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(bytes).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The simulator's own address, for the links it puts in answers (`self`,
/// reference links), as the client reached it.
pub(crate) fn base_url(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A JSON answer as the Atlassian and ServiceNow APIs send one.
pub(crate) fn json_answer(
    status: axum::http::StatusCode,
    body: serde_json::Value,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json;charset=UTF-8",
        )],
        body.to_string(),
    )
        .into_response()
}

/// A well-mixed 64-bit number from `seed`, for the ids and secrets the
/// simulators mint: distinct, and stable for one seed.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_credentials_decode() {
        let check = |encoded: &str, expect: Option<(&str, &str)>| {
            let decoded = super::decode_basic(encoded);
            let decoded = decoded
                .as_ref()
                .map(|(user, pass)| (user.as_str(), pass.as_str()));
            assert_eq!(decoded, expect, "{encoded}");
        };
        check("b3BzZ2F0ZTpwdw==", Some(("opsgate", "pw")));
        check(" b3BzZ2F0ZTpwdw== ", Some(("opsgate", "pw")));
        check("b3BzZ2F0ZTo=", Some(("opsgate", "")));
        check("YWJj", None);
        check("not base64!", None);
    }
}
