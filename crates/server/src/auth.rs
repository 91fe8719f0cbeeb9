//! Who is calling, and whether they may: every route but `/healthz` and
//! `/readyz` is authenticated, then authorised against one table of
//! permissions.
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
//! A source speaks only for itself: its webhook route (`/v1/hooks/<name>`)
//! admits the source of that name alone, whichever credential it holds —
//! a rule of [`Permission`], so no handler has to remember it.
//!
//! Once means once across every instance sharing the database: every
//! signature verifier (this one, and `signed.rs` for the schemes an
//! integration checks: Slack's, Jira's) goes through [`SignatureUse`], which records a verified
//! signature by its decoded bytes — never the header's text, whose hex
//! digits could be re-cased — in the store's `used_signatures`, where an
//! insert tells the first use atomically. An answer of 5xx (opsgate failed,
//! the sender will retry) releases the signature, so the retry is
//! accepted; any other answer keeps it used.
//!
//! Every refusal (401, 403) is answered in the API's JSON error format and
//! audited with its reason (the credential itself never is) — the first of
//! a kind in full, repeats counted (`refusals.rs`), so that refused requests
//! cannot grow the audit log without bound.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::{Principal, Role};
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;
use crate::access::Access;
use crate::refusals::{RefusalKind, RefusalRecord};
use crate::state::AppState;

/// A verified webhook signature, named by its verifier and its decoded
/// bytes: what the replay rule remembers. Every verifier makes one and
/// goes through [`SignatureUse::claim`] before acting on the request.
#[derive(Debug)]
pub(crate) struct SignatureUse {
    key: String,
}

impl SignatureUse {
    /// `verifier` tells apart the schemes (`opsgate`, and each scheme an
    /// integration signs with: `x-hub-signature`, `slack-v0`), never the
    /// senders, so that two senders sharing a secret cannot each take the
    /// other's request once more; `signature` is the signature's bytes, as
    /// decoded from hex.
    pub(crate) fn new(verifier: &str, signature: &[u8]) -> SignatureUse {
        SignatureUse {
            key: format!("{verifier}:{}", hex::encode(signature)),
        }
    }

    /// The replay rule, the same for every verifier: the first use of a
    /// signature is recorded in the store, shared by every instance, until
    /// its timestamp can no longer pass the window check; any other use is
    /// refused (401). The caller audits the refusal.
    pub(crate) async fn claim(&self, state: &AppState, now: Timestamp) -> Result<(), ApiError> {
        let window = state.auth.config.replay_window;
        let remembered =
            jiff::SignedDuration::try_from(window * 2).unwrap_or(jiff::SignedDuration::MAX);
        let expires_at = now.saturating_add(remembered).unwrap_or(Timestamp::MAX);
        let first = state
            .runtime
            .tokens()
            .use_signature(&self.key, expires_at, now)
            .await?;
        if first {
            Ok(())
        } else {
            Err(ApiError::Unauthorized {
                message: "this signature was already used (replay)".to_owned(),
            })
        }
    }

    /// After the request was answered `status`: a 5xx (opsgate failed, the
    /// sender retries) releases the signature so the retry is accepted.
    async fn settle(self, state: &AppState, status: StatusCode) {
        if status.is_server_error() {
            self.release(state).await;
        }
    }

    async fn release(self, state: &AppState) {
        if let Err(error) = state.runtime.tokens().release_signature(&self.key).await {
            tracing::error!(error = %error, "could not release a signature after a failed request; its retry will be refused as a replay");
        }
    }

    /// Holds the claimed signature while the request is handled: a request
    /// whose sender gave up (the connection closed, so the handler is
    /// dropped before it answers) gives the signature back, or the
    /// sender's retry of it would be refused as a replay and the
    /// notification lost.
    pub(crate) fn held(self, state: &AppState) -> HeldSignature {
        HeldSignature {
            signature: Some(self),
            state: state.clone(),
        }
    }
}

/// A claimed signature, given back if its request is dropped unanswered.
pub(crate) struct HeldSignature {
    signature: Option<SignatureUse>,
    state: AppState,
}

impl HeldSignature {
    /// The request was answered `status`: see [`SignatureUse::settle`].
    pub(crate) async fn settle(mut self, status: StatusCode) {
        if let Some(signature) = self.signature.take() {
            signature.settle(&self.state, status).await;
        }
    }
}

impl Drop for HeldSignature {
    fn drop(&mut self) {
        if let Some(signature) = self.signature.take() {
            let state = self.state.clone();
            tokio::spawn(async move { signature.release(&state).await });
        }
    }
}

/// A token as handed to its holder once: `og_<id>_<secret>`.
pub struct IssuedToken {
    pub token: String,
    pub row: runtime::TokenRow,
}

/// Makes a new token for `principal` with `role`: the store gets its row,
/// the caller shows `token` once.
pub fn issue_token(principal: &str, role: Role, now: Timestamp) -> IssuedToken {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    IssuedToken {
        token: format!("og_{id}_{secret}"),
        row: runtime::TokenRow {
            id,
            principal: principal.to_owned(),
            role,
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            created_at: now,
            revoked_at: None,
            scope: None,
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

/// Where every event source's route lies.
const HOOKS: &str = "/v1/hooks";

/// The middleware: authenticates, authorises, uses a signature once, and
/// hands the handler the [`Principal`] as a request extension.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let pattern = route.map_or_else(
        || request.uri().path().to_owned(),
        |route| route.as_str().to_owned(),
    );
    let method = request.method().clone();
    let permission = state.routes.access(&method, &pattern);
    // The event source a hook route names, when it is configured.
    let source = match request.uri().path().rsplit_once('/') {
        Some((HOOKS, name)) if pattern == crate::access::HOOK_ROUTE => {
            state.runtime.intake().source(name)
        }
        _ => None,
    };
    // A source whose sender signs its own way is verified by its scheme,
    // in the pipeline (`signed.rs`), not here.
    if source
        .as_ref()
        .is_some_and(|source| !matches!(source.verification(), runtime::Verification::Sender))
    {
        return next.run(request).await;
    }
    // A refusal there names the source (a made-up name stays the route's
    // pattern, so a burst of them is one kind of refusal).
    let route = match &source {
        Some(_) => request.uri().path().to_owned(),
        None => pattern.clone(),
    };
    let permission = match permission {
        Access::Public => return next.run(request).await,
        Access::Needs(permission) => permission,
        Access::MethodNotAllowed => {
            let allowed = state.routes.methods_served(&pattern);
            let mut response = ApiError::MethodNotAllowed {
                method: method.to_string(),
                route,
            }
            .into_response();
            if let Ok(allow) = header::HeaderValue::from_str(&allowed) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return response;
        }
    };
    let refused = |refusal: Refusal| {
        let state = state.clone();
        let (method, route) = (method.clone(), route.clone());
        async move {
            let actor = refusal.actor.as_deref().unwrap_or(ANONYMOUS);
            audit_refusal(&state, &method, &route, actor, &refusal.error).await;
            refusal.error.into_response()
        }
    };
    let (principal, mut request, signature) = match identify(&state, request).await {
        Ok(identified) => identified,
        Err(refusal) => return refused(refusal).await,
    };
    if let Some(message) = permission.refusal(&principal, request.uri().path()) {
        return refused(Refusal {
            error: ApiError::Forbidden { message },
            actor: Some(principal.actor()),
        })
        .await;
    }
    if let Some(signature) = &signature
        && let Err(error) = signature.claim(&state, Timestamp::now()).await
    {
        return refused(Refusal {
            error,
            actor: Some(principal.actor()),
        })
        .await;
    }
    request.extensions_mut().insert(principal);
    let held = signature.map(|signature| signature.held(&state));
    let response = next.run(request).await;
    if let Some(held) = held {
        held.settle(response.status()).await;
    }
    response
}

/// Logs a refused request and audits it: the first of its kind in a
/// window as an `api.refused` record, repeats counted (`refusals.rs`).
pub(crate) async fn audit_refusal(
    state: &AppState,
    method: &Method,
    route: &str,
    actor: &str,
    error: &ApiError,
) {
    let (status, code) = error.status_and_code();
    tracing::warn!(method = %method, route = %route, actor, code, "request refused");
    let refusal = Refused {
        record: domain::RecordKind::ApiRefused,
        run_id: None,
        method,
        route,
        status: status.as_u16(),
        actor,
    };
    note_refusal(state, refusal, &error.to_string()).await;
}

/// A refusal to audit through the ledger (`refusals.rs`).
pub(crate) struct Refused<'a> {
    pub(crate) record: domain::RecordKind,
    pub(crate) run_id: Option<&'a str>,
    pub(crate) method: &'a Method,
    pub(crate) route: &'a str,
    pub(crate) status: u16,
    pub(crate) actor: &'a str,
}

/// Audits a refusal that said `said`: the first of its kind in a window in
/// full, repeats counted. An anonymous sender's refusals are grouped with
/// what they quote of the request left out (a refusal quotes the sender's
/// own text in backticks: a made-up source name, a timestamp), so such a
/// sender cannot make every request a kind of its own.
pub(crate) async fn note_refusal(state: &AppState, refusal: Refused<'_>, said: &str) {
    let said = bounded_reason(said.to_owned());
    let reason = if refusal.actor == ANONYMOUS {
        without_quotes(&said)
    } else {
        said.clone()
    };
    let kind = RefusalKind {
        record: refusal.record,
        run_id: refusal.run_id.map(str::to_owned),
        method: refusal.method.as_str().to_owned(),
        route: refusal.route.to_owned(),
        status: refusal.status,
        actor: refusal.actor.to_owned(),
        reason,
    };
    let records = state.auth.ledger().note(kind, &said, Timestamp::now());
    write_refusal_records(state, records).await;
}

/// `text` with every backtick-quoted part replaced by `…`.
fn without_quotes(text: &str) -> String {
    let mut parts = text.split('`');
    let mut out = parts.next().unwrap_or_default().to_owned();
    while let Some(_quoted) = parts.next() {
        out.push_str("`…`");
        out.push_str(parts.next().unwrap_or_default());
    }
    out
}

/// Who sent a request nobody could be found behind.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// A reason as audited: a sender can put text of its own into one (an
/// unknown source's name), so it is cut to a bounded length.
fn bounded_reason(mut reason: String) -> String {
    const LONGEST: usize = 300;
    if reason.len() > LONGEST {
        let mut end = LONGEST;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// Audits the summaries of refusal windows that ended by `now`, or of
/// every window when `closing_all` (the server stops).
pub(crate) async fn close_refusal_windows(state: &AppState, now: Timestamp, closing_all: bool) {
    let records = if closing_all {
        state.auth.ledger().close_all()
    } else {
        state.auth.ledger().close_due(now)
    };
    write_refusal_records(state, records).await;
}

async fn write_refusal_records(state: &AppState, records: Vec<RefusalRecord>) {
    // One append per run the records belong to (most belong to none): a
    // window closing with many kinds is a few transactions, not one each.
    let mut by_run: std::collections::BTreeMap<Option<String>, Vec<runtime::AuditEntry>> =
        std::collections::BTreeMap::new();
    for record in records {
        let (run_id, entry) = match record {
            RefusalRecord::Refused { kind, said } => (
                kind.run_id,
                runtime::AuditEntry::new(
                    kind.record,
                    kind.actor,
                    serde_json::json!({
                        "method": kind.method, "route": kind.route, "status": kind.status,
                        "reason": said,
                    }),
                ),
            ),
            RefusalRecord::Repeated {
                kind,
                count,
                first_at,
                last_at,
            } => {
                let (run_id, actor, mut detail) = match kind {
                    Some(kind) => (
                        kind.run_id,
                        kind.actor,
                        serde_json::json!({
                            "of": kind.record, "method": kind.method, "route": kind.route,
                            "status": kind.status, "reason": kind.reason,
                        }),
                    ),
                    None => (
                        None,
                        "*".to_owned(),
                        serde_json::json!({
                            "method": "*", "route": "*", "status": "*",
                            "reason": "refusals of more kinds than are counted apart",
                        }),
                    ),
                };
                detail["count"] = serde_json::json!(count);
                detail["first_at"] = serde_json::json!(first_at.to_string());
                detail["last_at"] = serde_json::json!(last_at.to_string());
                (
                    run_id,
                    runtime::AuditEntry::new(domain::RecordKind::ApiRefusedRepeated, actor, detail),
                )
            }
        };
        by_run.entry(run_id).or_default().push(entry);
    }
    for (run_id, entries) in by_run {
        if let Err(error) = state
            .runtime
            .audit_log()
            .append(run_id.as_deref(), &entries)
            .await
        {
            tracing::error!(error = %error, records = entries.len(), "could not audit refused requests");
        }
    }
}

/// Finds out who sent `request`: by its bearer token, or by its signature
/// (then also the signature, to be used once).
async fn identify(
    state: &AppState,
    request: Request,
) -> Result<(Principal, Request, Option<SignatureUse>), Refusal> {
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
        return Ok((principal, request, None));
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
        .reads()
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
        scope: row.scope,
        ..Principal::new(row.principal, row.role)
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

/// Verifies a signed webhook on its raw body, and hands the body back
/// with the signature, which the caller uses once.
async fn verify_signature(
    state: &AppState,
    request: Request,
) -> Result<(Principal, Request, Option<SignatureUse>), Refusal> {
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
    let principal = Principal::new(source.name.clone(), Role::Source);
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
    if now.as_second().abs_diff(timestamp) > window.unsigned_abs() {
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
    let mac = signature_mac(source.secret.expose_bytes(), timestamp, &body);
    if mac.verify_slice(&presented).is_err() {
        return Err(refuse("the signature does not match the body".to_owned()));
    }
    // Named by its bytes alone, not its source: the source's name is not
    // signed, so two sources sharing a secret could otherwise each take
    // the other's request once more.
    let signature = SignatureUse::new("opsgate", &presented);
    Ok((
        principal,
        Request::from_parts(parts, Body::from(body)),
        Some(signature),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Permission;

    #[test]
    fn the_route_table_takes_only_what_was_declared() {
        let table = crate::routes::api_routes().table;
        let read = Access::Needs(Permission::Read);
        for (method, route, access) in [
            (Method::GET, "/v1/runs", read),
            (Method::HEAD, "/v1/runs", read),
            (Method::POST, "/v1/runs", Access::MethodNotAllowed),
            (Method::DELETE, "/v1/runs/{id}", Access::MethodNotAllowed),
            (Method::GET, "/healthz", Access::Public),
            (Method::GET, "/readyz", Access::Public),
            (Method::POST, "/approve/{token}", Access::Public),
            (Method::GET, "/v1/not-a-route", Access::MethodNotAllowed),
        ] {
            assert_eq!(table.access(&method, route), access, "{method} {route}");
        }
        assert_eq!(table.methods_served("/approve/{token}"), "GET, HEAD, POST");
    }

    #[test]
    fn an_anonymous_refusal_is_grouped_without_what_it_quotes() {
        for (said, grouped) in [
            ("unknown source `made-up-1`", "unknown source `…`"),
            (
                "`x-opsgate-timestamp` must be unix seconds, found `0x`",
                "`…` must be unix seconds, found `…`",
            ),
            ("unknown token", "unknown token"),
            ("an odd ` count", "an odd `…`"),
        ] {
            assert_eq!(without_quotes(said), grouped);
        }
    }

    /// Checks `name` in `role` calling `path`, registered as `route`.
    fn check(method: &str, path: &str, name: &str, role: Role, expected: Option<&str>) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let route = if path.starts_with("/v1/hooks/") {
            "/v1/hooks/{source}"
        } else {
            path
        };
        let routes = crate::routes::api_routes();
        let Access::Needs(permission) = routes.table.access(&method, route) else {
            panic!("{method} {route} is not a guarded route");
        };
        let principal = Principal::new(name.to_owned(), role);
        let refusal = permission.refusal(&principal, path);
        match (expected, &refusal) {
            (None, None) => {}
            (Some(expected), Some(refusal)) if refusal.contains(expected) => {}
            _ => panic!("{route} for {name} ({role}): {refusal:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn a_source_posts_its_own_webhooks_only() {
        let foreign = Some("speaks only for itself");
        for sender in [
            "alertmanager",
            "grafana",
            "pagerduty",
            "servicenow",
            "freshservice",
        ] {
            let route = format!("/v1/hooks/{sender}");
            check("POST", &route, sender, Role::Source, None);
            check("POST", &route, "admin", Role::Admin, None);
            check("POST", &route, "jira-x", Role::Source, foreign);
            check(
                "POST",
                &route,
                sender,
                Role::Operator,
                Some("role operator"),
            );
        }
        check(
            "POST",
            "/v1/hooks/alertmanager",
            "grafana",
            Role::Source,
            foreign,
        );
        // Events carry their source in the body: the handler checks it.
        check("POST", "/v1/events", "jira-x", Role::Source, None);
    }

    #[test]
    fn a_signature_is_named_by_its_bytes_not_its_spelling() {
        let lower = hex::decode("ab01cd").unwrap();
        let upper = hex::decode("AB01CD").unwrap();
        assert_eq!(
            SignatureUse::new("slack", &lower).key,
            SignatureUse::new("slack", &upper).key
        );
        assert_ne!(
            SignatureUse::new("slack", &lower).key,
            SignatureUse::new("jira", &lower).key
        );
    }
}
