//! Who is calling, and whether they may: every route but `/healthz` is
//! authenticated, then authorised against one table of permissions.
//!
//! Two credentials are accepted:
//! - an API token, `Authorization: Bearer og_<id>_<secret>`. The store keeps
//!   only the SHA-256 of the secret, looked up by the id and compared in
//!   constant time. The token names a principal and its one role.
//! - a webhook signature from a configured source (for senders that sign
//!   rather than carry a token): `X-Opsgate-Source: <name>`,
//!   `X-Opsgate-Timestamp: <unix seconds>` and `X-Opsgate-Signature:
//!   sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`. The timestamp must
//!   lie within the replay window, and a signature is accepted once.
//!
//! Every refusal (401, 403) is answered in the API's JSON error format and
//! written to the audit log with its reason; the credential itself never is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::{Principal, Role};
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;
use crate::routes::AppState;

/// What a route lets its caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Post events (`POST /v1/events`).
    Ingest,
    /// Post Alertmanager webhooks.
    ReceiveAlerts,
    /// Plan without acting (`POST /v1/plan`).
    DryRun,
    /// Read runs and runbooks.
    Read,
    /// Approve or deny runs.
    Decide,
    /// Cancel a run before it acts, or end a time-bound change early.
    Cancel,
    /// Ask for one's own signed approval link (a link is a credential for
    /// one person: nobody is handed another's).
    IssueLinks,
}

impl Permission {
    /// The roles granted this permission: the whole authorisation policy of
    /// the API, in one place.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::Ingest => &[Admin, Operator, Agent, Source],
            Permission::ReceiveAlerts => &[Admin, Source],
            Permission::DryRun => &[Admin, Operator, Approver, Agent, Viewer],
            Permission::Read => &[Admin, Operator, Approver, Agent, Viewer],
            Permission::Decide => &[Approver],
            Permission::Cancel => &[Admin, Operator, Approver],
            Permission::IssueLinks => &[Approver],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Ingest => "ingest",
            Permission::ReceiveAlerts => "receive_alerts",
            Permission::DryRun => "dry_run",
            Permission::Read => "read",
            Permission::Decide => "decide",
            Permission::Cancel => "cancel",
            Permission::IssueLinks => "ask for an approval link",
        }
    }
}

/// What calling a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: the public `/healthz`; the approval page, whose signed link
    /// is its own credential; and Slack's and Jira's callbacks, which carry
    /// their sender's signature instead of a token, verified (and a refusal
    /// audited) by their handler before anything else of the request is read.
    Public,
    /// An authenticated caller whose role has this permission.
    Needs(Permission),
    /// The route exists but does not take this method: answered 405
    /// before anyone is asked who they are, and no handler runs.
    MethodNotAllowed,
}

/// What `method` on `route` takes: the one table of every route and
/// method the API serves. A pair missing from it is refused (405), so a
/// route added without an entry here fails closed.
pub fn permission_for(method: &Method, route: &str) -> Access {
    use Access::{MethodNotAllowed, Needs, Public};
    match (method.as_str(), route) {
        ("GET", "/healthz") | ("GET" | "POST", "/approve/{token}") => Public,
        ("POST", crate::slack::INTERACTIONS_ROUTE | crate::jira::WEBHOOK_ROUTE) => Public,
        ("POST", "/v1/runs/{id}/approval-links") => Needs(Permission::IssueLinks),
        ("POST", "/v1/events") => Needs(Permission::Ingest),
        (
            "POST",
            "/v1/hooks/alertmanager"
            | "/v1/hooks/grafana"
            | "/v1/hooks/pagerduty"
            | "/v1/hooks/servicenow",
        ) => Needs(Permission::ReceiveAlerts),
        ("POST", "/v1/plan") => Needs(Permission::DryRun),
        ("POST", "/v1/runs/{id}/approve" | "/v1/runs/{id}/deny") => Needs(Permission::Decide),
        ("POST", "/v1/runs/{id}/cancel") => Needs(Permission::Cancel),
        ("GET", "/v1/runs" | "/v1/runs/{id}" | "/v1/runs/{id}/wait" | "/v1/runbooks") => {
            Needs(Permission::Read)
        }
        _ => MethodNotAllowed,
    }
}

/// A shared secret, kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into().into())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A webhook sender that signs its requests with its own shared secret.
#[derive(Debug, Clone)]
pub struct SignedSource {
    pub name: String,
    pub secret: Secret,
}

/// Settings of authentication.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub signed_sources: Vec<SignedSource>,
    /// How far a signature's timestamp may be from now, either way.
    pub replay_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signed_sources: Vec::new(),
            replay_window: Duration::from_secs(300),
        }
    }
}

/// Authentication state shared by all requests.
pub(crate) struct Authenticator {
    config: AuthConfig,
    body_limit: usize,
    /// Signatures accepted within the replay window, with when they lapse.
    seen_signatures: Mutex<HashMap<String, Timestamp>>,
}

impl Authenticator {
    pub(crate) fn new(config: AuthConfig, body_limit: usize) -> Authenticator {
        Authenticator {
            config,
            body_limit,
            seen_signatures: Mutex::new(HashMap::new()),
        }
    }

    /// How far a signature's timestamp may be from now, either way.
    pub(crate) fn replay_window(&self) -> Duration {
        self.config.replay_window
    }

    /// Whether `signature` was accepted before, within the replay window.
    pub(crate) fn has_been_used(&self, signature: &str, now: Timestamp) -> bool {
        let seen = self.seen_signatures.lock().expect("replay cache lock");
        seen.get(signature).is_some_and(|lapses| *lapses > now)
    }

    /// Remembers `signature` until it can no longer pass the timestamp
    /// check; `false` when it was already seen (a replay).
    pub(crate) fn first_use(&self, signature: String, now: Timestamp) -> bool {
        let window = self.config.replay_window.as_secs() as i64;
        let mut seen = self.seen_signatures.lock().expect("replay cache lock");
        seen.retain(|_, lapses| *lapses > now);
        let lapses = now
            .saturating_add(jiff::SignedDuration::from_secs(2 * window))
            .unwrap_or(Timestamp::MAX);
        seen.insert(signature, lapses).is_none()
    }
}

/// A token as handed to its holder once: `og_<id>_<secret>`.
pub struct IssuedToken {
    pub token: String,
    pub row: store::TokenRow,
}

/// Makes a new token for `principal` with `role`: the store gets its row,
/// the caller shows `token` once.
pub fn issue_token(principal: &str, role: Role, now: Timestamp) -> IssuedToken {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    IssuedToken {
        token: format!("og_{id}_{secret}"),
        row: store::TokenRow {
            id,
            principal: principal.to_owned(),
            role,
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            created_at: now,
            revoked_at: None,
        },
    }
}

/// Why a request was refused.
struct Refusal {
    error: ApiError,
    /// Who it was, when that much is known.
    actor: Option<String>,
}

impl Refusal {
    fn unauthenticated(message: impl Into<String>) -> Refusal {
        Refusal {
            error: ApiError::Unauthorized {
                message: message.into(),
            },
            actor: None,
        }
    }
}

/// The middleware: authenticates, authorises, and hands the handler the
/// [`Principal`] as a request extension.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = route.map_or_else(
        || request.uri().path().to_owned(),
        |route| route.as_str().to_owned(),
    );
    let method = request.method().clone();
    let permission = match permission_for(&method, &route) {
        Access::Public => return next.run(request).await,
        Access::Needs(permission) => permission,
        Access::MethodNotAllowed => {
            return ApiError::MethodNotAllowed {
                method: method.to_string(),
                route,
            }
            .into_response();
        }
    };
    let outcome = match identify(&state, request).await {
        Ok((principal, mut request)) if permission.roles().contains(&principal.role) => {
            request.extensions_mut().insert(principal);
            return next.run(request).await;
        }
        Ok((principal, _)) => Refusal {
            error: ApiError::Forbidden {
                message: format!(
                    "{} has the role {}, which may not {} (allowed: {})",
                    principal.actor(),
                    principal.role,
                    permission.as_str().replace('_', " "),
                    permission
                        .roles()
                        .iter()
                        .map(|role| role.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            actor: Some(principal.actor()),
        },
        Err(refusal) => refusal,
    };
    let actor = outcome.actor.as_deref().unwrap_or("anonymous");
    audit_refusal(&state, &method, &route, actor, &outcome.error).await;
    outcome.error.into_response()
}

/// Logs a refused request and writes its `api.refused` audit record.
pub(crate) async fn audit_refusal(
    state: &AppState,
    method: &Method,
    route: &str,
    actor: &str,
    error: &ApiError,
) {
    let (status, code) = error.status_and_code();
    tracing::warn!(method = %method, route = %route, actor, code, "request refused");
    let record = store::AuditEntry::new(
        "api.refused",
        actor,
        serde_json::json!({
            "method": method.as_str(), "route": route, "status": status.as_u16(),
            "reason": error.to_string(),
        }),
    );
    if let Err(error) = state
        .runtime
        .store()
        .append_audit(None, &[record], Timestamp::now())
        .await
    {
        tracing::error!(error = %error, "could not audit a refused request");
    }
}

/// Finds out who sent `request`: by its bearer token, or by its signature.
async fn identify(state: &AppState, request: Request) -> Result<(Principal, Request), Refusal> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|authorization| {
            authorization
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(|token| token.trim().to_owned())
        });
    if let Some(token) = bearer {
        let token = token.ok_or_else(|| {
            Refusal::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
        let principal = principal_for_token(state, &token).await?;
        return Ok((principal, request));
    }
    if request.headers().contains_key(SIGNATURE_HEADER) {
        return verify_signature(state, request).await;
    }
    Err(Refusal::unauthenticated(
        "authentication required: send `Authorization: Bearer <token>` or a signed webhook",
    ))
}

async fn principal_for_token(state: &AppState, token: &str) -> Result<Principal, Refusal> {
    let malformed = || Refusal::unauthenticated("malformed token: expected og_<id>_<secret>");
    let (id, secret) = token
        .strip_prefix("og_")
        .and_then(|rest| rest.split_once('_'))
        .ok_or_else(malformed)?;
    let row = state
        .runtime
        .store()
        .token(id)
        .await
        .map_err(|error| Refusal {
            error: ApiError::Internal(Box::new(error)),
            actor: None,
        })?
        .ok_or_else(|| Refusal::unauthenticated("unknown token"))?;
    let presented = hex::encode(Sha256::digest(secret.as_bytes()));
    if !bool::from(presented.as_bytes().ct_eq(row.secret_sha256.as_bytes())) {
        return Err(Refusal::unauthenticated("unknown token"));
    }
    let principal = Principal {
        name: row.principal,
        role: row.role,
    };
    if row.revoked_at.is_some() {
        return Err(Refusal {
            error: ApiError::Unauthorized {
                message: "this token was revoked".to_owned(),
            },
            actor: Some(principal.actor()),
        });
    }
    Ok(principal)
}

pub const SOURCE_HEADER: &str = "x-opsgate-source";
pub const TIMESTAMP_HEADER: &str = "x-opsgate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-opsgate-signature";

/// The signature a source sends for `body` at `timestamp` (unix seconds):
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mac = signature_mac(secret, timestamp, body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The HMAC over what a source signs, ready to finalise or verify.
fn signature_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> hmac::Hmac<Sha256> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies a signed webhook on its raw body, and hands the body back.
async fn verify_signature(
    state: &AppState,
    request: Request,
) -> Result<(Principal, Request), Refusal> {
    let auth = &state.auth;
    let (source_name, timestamp_text, signature_text) = {
        let header_text = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Refusal::unauthenticated(format!("a signed webhook needs the `{name}` header"))
                })
        };
        (
            header_text(SOURCE_HEADER)?,
            header_text(TIMESTAMP_HEADER)?,
            header_text(SIGNATURE_HEADER)?,
        )
    };
    let source = auth
        .config
        .signed_sources
        .iter()
        .find(|source| source.name == source_name)
        .ok_or_else(|| Refusal::unauthenticated(format!("unknown source `{source_name}`")))?;
    let principal = Principal {
        name: source.name.clone(),
        role: Role::Source,
    };
    let refuse = |message: String| Refusal {
        error: ApiError::Unauthorized { message },
        actor: Some(principal.actor()),
    };
    let timestamp: i64 = timestamp_text.parse().map_err(|_| {
        refuse(format!(
            "`{TIMESTAMP_HEADER}` must be unix seconds, found `{timestamp_text}`"
        ))
    })?;
    let now = Timestamp::now();
    let window = auth.config.replay_window.as_secs() as i64;
    if (now.as_second() - timestamp).abs() > window {
        return Err(refuse(format!(
            "the signature's timestamp is outside the {window} s replay window"
        )));
    }
    let presented = signature_text
        .strip_prefix("sha256=")
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or_else(|| refuse(format!("`{SIGNATURE_HEADER}` must be sha256=<hex>")))?;
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, auth.body_limit).await {
        Ok(body) => body,
        Err(_) => {
            return Err(Refusal {
                error: ApiError::PayloadTooLarge,
                actor: Some(principal.actor()),
            });
        }
    };
    // `verify_slice` compares in constant time.
    let mac = signature_mac(source.secret.bytes(), timestamp, &body);
    if mac.verify_slice(&presented).is_err() {
        return Err(refuse("the signature does not match the body".to_owned()));
    }
    if !auth.first_use(signature_text, now) {
        return Err(refuse(
            "this signature was already used (replay)".to_owned(),
        ));
    }
    Ok((principal, Request::from_parts(parts, Body::from(body))))
}
