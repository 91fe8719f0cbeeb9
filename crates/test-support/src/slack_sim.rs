//! A local Slack: the Web API's `chat.postMessage`, and interaction
//! callbacks signed the way Slack signs them.
//!
//! The Web API side speaks Slack's wire format, unhappy paths included:
//! errors are HTTP 200 with `{"ok": false, "error": "<code>"}` (`not_authed`,
//! `invalid_auth`, `channel_not_found`, `no_text`, `invalid_blocks`,
//! `invalid_json`), and a rate-limited call gets `429` with `Retry-After`
//! (seconds) and `{"ok": false, "error": "ratelimited"}`. Every accepted
//! message is kept, so a test can read what was posted and click its buttons.
//! It is stricter than Slack in one way: it takes JSON bodies only (the
//! client sends JSON), and answers any other body `invalid_form_data`.
//!
//! The interaction side is [`sign_interaction`]: a `block_actions` payload,
//! form-encoded as `payload=<JSON>` and signed with Slack's v0 scheme
//! (`v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`). It is written here,
//! apart from the server's verifier, so that the tests check the scheme
//! rather than echo the server's own code.
//!
//! A payload from [`SlackSim::block_actions`] carries a `response_url` on
//! the simulator (`<url>/actions/<team>/<id>/<token>`, shaped like Slack's
//! `https://hooks.slack.com/actions/…`), where the app answers the click.
//! What is posted there is kept ([`SlackSim::responses`]); the answers are
//! those of Slack's incoming webhooks: `200 ok`, `400 invalid_payload` for
//! a body that is not JSON, `400 no_text` for one with neither `text` nor
//! `blocks`, and `404 no_service` for an address the simulator never
//! handed out.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

/// A message the simulator accepted.
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    /// The request body as the client sent it.
    pub body: Value,
}

/// An answer an app posted to a click's `response_url`.
#[derive(Debug, Clone)]
pub struct Responded {
    /// The `response_url`'s path (`/actions/T0SIMTEAM/1/…`).
    pub path: String,
    /// The request body as the app sent it.
    pub body: Value,
}

/// A Slack workspace with one bot token and some channels. Cheap to clone;
/// clones share the workspace.
#[derive(Clone)]
pub struct SlackSim {
    workspace: Arc<Mutex<Workspace>>,
}

struct Workspace {
    bot_token: String,
    channels: BTreeSet<String>,
    /// `Some(seconds)`: every call is answered 429 with this `Retry-After`.
    rate_limited: Option<u64>,
    posted: Vec<Posted>,
    calls: usize,
    /// Where the simulator listens, once started.
    url: Option<String>,
    /// The paths of the `response_url`s handed out.
    response_paths: BTreeSet<String>,
    responses: Vec<Responded>,
}

impl SlackSim {
    /// A workspace where `bot_token` may post to `channels` (ids such as
    /// `C0123ABCD`).
    pub fn new(bot_token: &str, channels: &[&str]) -> SlackSim {
        SlackSim {
            workspace: Arc::new(Mutex::new(Workspace {
                bot_token: bot_token.to_owned(),
                channels: channels
                    .iter()
                    .map(|channel| (*channel).to_owned())
                    .collect(),
                rate_limited: None,
                posted: Vec::new(),
                calls: 0,
                url: None,
                response_paths: BTreeSet::new(),
                responses: Vec::new(),
            })),
        }
    }

    fn workspace(&self) -> std::sync::MutexGuard<'_, Workspace> {
        self.workspace.lock().expect("Slack simulator lock")
    }

    /// The Web API under `/api` (clients use `<url>/api` as their base),
    /// and the `response_url`s under `/actions`.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/actions/{team}/{id}/{token}", post(respond))
            .with_state(self.clone())
    }

    pub async fn start(&self) -> std::io::Result<crate::Running> {
        let running = crate::serve(self.router()).await?;
        self.workspace().url = Some(running.url.clone());
        Ok(running)
    }

    /// A `block_actions` payload for `user_id` clicking the button
    /// `action_id` (with `value`), as [`block_actions`] builds it, whose
    /// `response_url` leads back to this simulator. It must be started.
    pub fn block_actions(&self, user_id: &str, action_id: &str, value: &str) -> Value {
        let mut payload = block_actions(user_id, action_id, value);
        let mut workspace = self.workspace();
        let url = workspace
            .url
            .clone()
            .expect("start the simulator before clicking");
        let path = format!(
            "/actions/T0SIMTEAM/{}/{}",
            workspace.response_paths.len() + 1,
            hex::encode(jiff::Timestamp::now().as_nanosecond().to_be_bytes())
        );
        payload["response_url"] = json!(format!("{url}{path}"));
        workspace.response_paths.insert(path);
        payload
    }

    /// What apps posted to the `response_url`s, in order.
    pub fn responses(&self) -> Vec<Responded> {
        self.workspace().responses.clone()
    }

    /// Rate-limits every call from now on (`Some(retry_after_seconds)`), or
    /// lifts the limit (`None`).
    pub fn rate_limit(&self, retry_after_seconds: Option<u64>) {
        self.workspace().rate_limited = retry_after_seconds;
    }

    /// The messages accepted so far, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.workspace().posted.clone()
    }

    /// Every call received, accepted or not.
    pub fn calls(&self) -> usize {
        self.workspace().calls
    }
}

fn refusal(error: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"ok": false, "error": error})),
    )
        .into_response()
}

async fn post_message(State(sim): State<SlackSim>, headers: HeaderMap, body: Bytes) -> Response {
    let mut workspace = sim.workspace();
    workspace.calls += 1;
    if let Some(seconds) = workspace.rate_limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            axum::Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        None => return refusal("not_authed"),
        Some(token) if token != workspace.bot_token => return refusal("invalid_auth"),
        Some(_) => {}
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return refusal("invalid_form_data");
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return refusal("invalid_json");
    };
    let channel = message["channel"].as_str().unwrap_or_default().to_owned();
    if !workspace.channels.contains(&channel) {
        return refusal("channel_not_found");
    }
    let text = message["text"].as_str().filter(|text| !text.is_empty());
    let blocks = message.get("blocks");
    if blocks.is_some_and(|blocks| !blocks.is_array()) {
        return refusal("invalid_blocks");
    }
    if text.is_none() && blocks.is_none() {
        return refusal("no_text");
    }
    let ts = format!(
        "{}.{:06}",
        jiff::Timestamp::now().as_second(),
        workspace.posted.len() + 1
    );
    workspace.posted.push(Posted {
        channel: channel.clone(),
        ts: ts.clone(),
        body: message.clone(),
    });
    axum::Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": {
            "type": "message", "subtype": "bot_message", "bot_id": "B0SIMBOT",
            "text": text.unwrap_or_default(), "blocks": blocks.cloned().unwrap_or(json!([])),
            "ts": ts,
        },
    }))
    .into_response()
}

/// `POST /actions/{team}/{id}/{token}`: an app answering a click.
async fn respond(
    State(sim): State<SlackSim>,
    uri: axum::http::Uri,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut workspace = sim.workspace();
    let path = uri.path().to_owned();
    if !workspace.response_paths.contains(&path) {
        return (StatusCode::NOT_FOUND, "no_service");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let text = body["text"].as_str().is_some_and(|text| !text.is_empty());
    if !text && body.get("blocks").is_none() {
        return (StatusCode::BAD_REQUEST, "no_text");
    }
    workspace.responses.push(Responded { path, body });
    (StatusCode::OK, "ok")
}

/// A `block_actions` payload as Slack sends it when `user_id` clicks the
/// button `action_id` (with `value`) on a message the bot posted.
pub fn block_actions(user_id: &str, action_id: &str, value: &str) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({
        "type": "block_actions",
        "team": {"id": "T0SIMTEAM", "domain": "opsgate-tests"},
        "user": {"id": user_id, "username": format!("user-{user_id}"), "team_id": "T0SIMTEAM"},
        "api_app_id": "A0SIMAPP",
        "token": "legacy-verification-token-unused",
        "container": {"type": "message", "message_ts": format!("{now}.000100"), "channel_id": "C0SIMCHAN", "is_ephemeral": false},
        "trigger_id": format!("{now}.1234.abcdef"),
        "channel": {"id": "C0SIMCHAN", "name": "approvals"},
        "message": {"type": "message", "ts": format!("{now}.000100"), "text": "Approval needed"},
        "response_url": "https://hooks.slack.com/actions/T0SIMTEAM/1/unused",
        "actions": [{
            "type": "button", "action_id": action_id, "block_id": "opsgate-approval",
            "text": {"type": "plain_text", "text": action_id}, "value": value,
            "action_ts": format!("{now}.200000"),
        }],
    })
}

/// An interaction callback ready to post: the form body and the two
/// headers Slack adds.
#[derive(Debug, Clone)]
pub struct SignedInteraction {
    /// `payload=<url-encoded JSON>`, sent as
    /// `application/x-www-form-urlencoded`.
    pub body: String,
    /// `X-Slack-Request-Timestamp`.
    pub timestamp: String,
    /// `X-Slack-Signature`.
    pub signature: String,
}

/// `payload`, form-encoded and signed with `signing_secret` at `timestamp`
/// (unix seconds), as Slack delivers it to an app's interactivity URL.
pub fn sign_interaction(
    signing_secret: &str,
    timestamp: i64,
    payload: &Value,
) -> SignedInteraction {
    let body = serde_urlencoded::to_string([("payload", payload.to_string())])
        .expect("a string pair form-encodes");
    let timestamp = timestamp.to_string();
    let signature = signature(signing_secret, &timestamp, body.as_bytes());
    SignedInteraction {
        body,
        timestamp,
        signature,
    }
}

/// `v0=<hex HMAC-SHA256(signing_secret, "v0:<timestamp>:<body>")>`.
pub fn signature(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}
