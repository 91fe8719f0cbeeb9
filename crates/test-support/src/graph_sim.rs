//! A local Microsoft Graph tenant (users, groups and their members) and
//! the Microsoft identity platform's token endpoint in front of it, for the
//! `graph.group_membership` connector's contract tests.
//!
//! It answers as the real services do. The token endpoint
//! (`POST /{tenant}/oauth2/v2.0/token`) takes the client-credentials form
//! and answers `{"token_type": "Bearer", "expires_in": 3599,
//! "access_token"}`, or refuses with the identity platform's envelope
//! `{"error", "error_description": "AADSTS…: …\r\nTrace ID: …", "error_codes",
//! …}`. Graph calls need a bearer token it issued and answer with Graph's
//! status codes and its envelope `{"error": {"code", "message",
//! "innerError": {"date", "request-id", "client-request-id"}}}`:
//!
//! - `POST /v1.0/groups/{id}/members/$ref` → 204; already a member → 400
//!   `Request_BadRequest` "One or more added object references already
//!   exist…". `@odata.id` must name an object id: a UPN there gets a 400.
//! - `DELETE /v1.0/groups/{id}/members/{user-id}/$ref` → 204; not a member
//!   → 404 `Request_ResourceNotFound`.
//! - `GET /v1.0/users/{id or UPN}` and `GET /v1.0/groups/{id}` → the
//!   object's `id`, or 404 `Request_ResourceNotFound`.
//!
//! Switches play the failures a client must handle: [`GraphSim::throttle_next`]
//! (429 with `Retry-After`), [`GraphSim::expire_tokens`] and
//! [`GraphSim::issue_expired_tokens`] (401 `InvalidAuthenticationToken`),
//! [`GraphSim::deny_writes`] (403 `Authorization_RequestDenied`, an app
//! without `GroupMember.ReadWrite.All`). [`GraphSim::calls`] logs every
//! request as `METHOD /path?query`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

/// How long an access token lives, as Entra issues them by default.
pub const TOKEN_LIFETIME_SECS: u64 = 3599;

/// The app registration the tenant knows.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Default for Credentials {
    fn default() -> Self {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64;
        Credentials {
            tenant_id: guid(seed, 1),
            client_id: guid(seed, 2),
            // Entra's secret values look like this: 40 characters with a `~`.
            client_secret: format!(
                "Qx8~{:016x}{:016x}{:04x}",
                crate::splitmix64(seed ^ 3),
                crate::splitmix64(seed ^ 4),
                crate::splitmix64(seed ^ 5) & 0xffff
            ),
        }
    }
}

/// The simulated tenant, shared with its server.
#[derive(Debug, Clone)]
pub struct GraphSim {
    tenant: Arc<Mutex<Tenant>>,
}

#[derive(Debug)]
struct Tenant {
    credentials: Credentials,
    seed: u64,
    minted: u64,
    /// User object id → user principal name.
    users: BTreeMap<String, String>,
    /// Group object id → member object ids.
    groups: BTreeMap<String, BTreeSet<String>>,
    tokens: Vec<IssuedToken>,
    issue_expired_tokens: bool,
    token_requests: u32,
    throttled_requests: u32,
    retry_after_secs: u64,
    deny_writes: bool,
    calls: Vec<String>,
}

#[derive(Debug)]
struct IssuedToken {
    token: String,
    expired: bool,
}

impl Tenant {
    /// A new object id, distinct within the tenant.
    fn mint(&mut self) -> String {
        self.minted += 1;
        guid(self.seed, self.minted + 100)
    }

    /// The 401 for a request without a valid token, if it is one.
    fn refuse_unauthenticated(&self, headers: &HeaderMap) -> Option<Response> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if presented.is_empty() {
            return Some(self.error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token is empty.",
            ));
        }
        match self.tokens.iter().find(|issued| issued.token == presented) {
            Some(issued) if !issued.expired => None,
            Some(_) => Some(self.error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )),
            None => Some(self.error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, there are no dots (.).",
            )),
        }
    }

    /// Graph's error envelope, with a fresh request id.
    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        let request_id = guid(self.seed ^ 0xE77, self.calls.len() as u64);
        let client_request_id = guid(self.seed ^ 0xC11, self.calls.len() as u64);
        let date = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": date,
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                },
            }})
            .to_string(),
        )
            .into_response();
        response.headers_mut().insert(
            "request-id",
            HeaderValue::from_str(&request_id).expect("a GUID is a header value"),
        );
        response
    }

    fn not_found(&self, id: &str) -> Response {
        self.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    fn insufficient_privileges(&self) -> Response {
        self.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    /// A user by object id or by user principal name (case-insensitive, as
    /// UPNs are).
    fn find_user(&self, key: &str) -> Option<String> {
        self.users
            .iter()
            .find(|(id, upn)| id.as_str() == key || upn.eq_ignore_ascii_case(key))
            .map(|(id, _)| id.clone())
    }
}

impl Default for GraphSim {
    fn default() -> Self {
        GraphSim::new(Credentials::default())
    }
}

impl GraphSim {
    pub fn new(credentials: Credentials) -> GraphSim {
        GraphSim {
            tenant: Arc::new(Mutex::new(Tenant {
                credentials,
                seed: jiff::Timestamp::now().as_nanosecond() as u64,
                minted: 0,
                users: BTreeMap::new(),
                groups: BTreeMap::new(),
                tokens: Vec::new(),
                issue_expired_tokens: false,
                token_requests: 0,
                throttled_requests: 0,
                retry_after_secs: 0,
                deny_writes: false,
                calls: Vec::new(),
            })),
        }
    }

    fn tenant(&self) -> std::sync::MutexGuard<'_, Tenant> {
        self.tenant.lock().expect("Graph simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(issue_token))
            .route("/v1.0/users/{user}", get(get_user))
            .route("/v1.0/groups/{group}", get(get_group))
            .route("/v1.0/groups/{group}/members/$ref", post(add_member))
            .route(
                "/v1.0/groups/{group}/members/{member}/$ref",
                delete(remove_member),
            )
            .fallback(no_such_path)
            .layer(axum::middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    /// Starts the simulator on a free loopback port. Its URL serves as both
    /// the authority URL and the Graph URL.
    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }

    /// Adds a user and returns its object id.
    pub fn add_user(&self, user_principal_name: &str) -> String {
        let mut tenant = self.tenant();
        let id = tenant.mint();
        tenant
            .users
            .insert(id.clone(), user_principal_name.to_owned());
        id
    }

    /// Adds a security group without members and returns its object id.
    pub fn add_group(&self) -> String {
        let mut tenant = self.tenant();
        let id = tenant.mint();
        tenant.groups.insert(id.clone(), BTreeSet::new());
        id
    }

    /// The member object ids of `group`, sorted.
    pub fn members(&self, group: &str) -> Vec<String> {
        self.tenant()
            .groups
            .get(group)
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The next `requests` Graph requests get a 429 with
    /// `Retry-After: retry_after_secs` (token requests are not throttled).
    pub fn throttle_next(&self, requests: u32, retry_after_secs: u64) {
        let mut tenant = self.tenant();
        tenant.throttled_requests = requests;
        tenant.retry_after_secs = retry_after_secs;
    }

    /// Every access token issued so far stops working, as when one expires
    /// or is revoked before the client expected.
    pub fn expire_tokens(&self) {
        for issued in &mut self.tenant().tokens {
            issued.expired = true;
        }
    }

    /// While set, every access token issued is refused at once.
    pub fn issue_expired_tokens(&self, expired: bool) {
        self.tenant().issue_expired_tokens = expired;
    }

    /// While set, membership changes get a 403: the app lacks the
    /// `GroupMember.ReadWrite.All` permission.
    pub fn deny_writes(&self, deny: bool) {
        self.tenant().deny_writes = deny;
    }

    /// How many token requests were made, refused ones included.
    pub fn token_requests(&self) -> u32 {
        self.tenant().token_requests
    }

    /// Every access token issued so far, to prove none leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.tenant()
            .tokens
            .iter()
            .map(|issued| issued.token.clone())
            .collect()
    }

    /// Every request so far, oldest first, as `METHOD /path?query`.
    pub fn calls(&self) -> Vec<String> {
        self.tenant().calls.clone()
    }
}

/// Logs the call, then authenticates and throttles Graph requests; the
/// token endpoint checks its own form.
async fn gate(State(sim): State<GraphSim>, request: Request, next: Next) -> Response {
    let refusal = {
        let mut tenant = sim.tenant();
        let uri = request.uri();
        let line = match uri.query() {
            Some(query) => format!("{} {}?{query}", request.method(), uri.path()),
            None => format!("{} {}", request.method(), uri.path()),
        };
        tenant.calls.push(line);
        if !uri.path().starts_with("/v1.0/") {
            None
        } else if let Some(refusal) = tenant.refuse_unauthenticated(request.headers()) {
            Some(refusal)
        } else if tenant.throttled_requests > 0 {
            tenant.throttled_requests -= 1;
            let mut response = tenant.error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests have been made. Please retry again later.",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(tenant.retry_after_secs),
            );
            Some(response)
        } else {
            None
        }
    };
    match refusal {
        Some(response) => response,
        None => next.run(request).await,
    }
}

async fn issue_token(
    State(sim): State<GraphSim>,
    Path(tenant_in_path): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let mut tenant = sim.tenant();
    tenant.token_requests += 1;
    let seed = tenant.seed ^ u64::from(tenant.token_requests);
    let Ok(Form(form)) = form else {
        return identity_refusal(
            seed,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let known = tenant.credentials.clone();
    if tenant_in_path != known.tenant_id {
        return identity_refusal(
            seed,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if field("grant_type") != "client_credentials" {
        return identity_refusal(
            seed,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != known.client_id {
        return identity_refusal(
            seed,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                field("client_id"),
                known.tenant_id
            ),
        );
    }
    if field("client_secret") != known.client_secret {
        return identity_refusal(
            seed,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                known.client_id
            ),
        );
    }
    let scope = field("scope");
    if !scope.ends_with("/.default") {
        return identity_refusal(
            seed,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    // Access tokens are JWTs: three dot-separated parts.
    let token = format!(
        "eyJ0eXAiOiJKV1QifQ.{}{}.{}",
        tenant.mint().replace('-', ""),
        tenant.mint().replace('-', ""),
        tenant.mint().replace('-', "")
    );
    let expired = tenant.issue_expired_tokens;
    tenant.tokens.push(IssuedToken {
        token: token.clone(),
        expired,
    });
    (
        StatusCode::OK,
        Json(json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "access_token": token,
        })),
    )
        .into_response()
}

/// The identity platform's error answer: `error_description` starts with
/// the AADSTS code and ends with trace and correlation ids and a timestamp,
/// on lines of their own.
fn identity_refusal(
    seed: u64,
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> Response {
    let trace_id = guid(seed, 7);
    let correlation_id = guid(seed, 8);
    let timestamp = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string();
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })),
    )
        .into_response()
}

async fn get_user(State(sim): State<GraphSim>, Path(user): Path<String>) -> Response {
    let tenant = sim.tenant();
    match tenant.find_user(&user) {
        Some(id) => Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id)/$entity",
            "id": id,
        }))
        .into_response(),
        None => tenant.not_found(&user),
    }
}

async fn get_group(State(sim): State<GraphSim>, Path(group): Path<String>) -> Response {
    let tenant = sim.tenant();
    if tenant.groups.contains_key(&group) {
        Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups(id)/$entity",
            "id": group,
        }))
        .into_response()
    } else {
        tenant.not_found(&group)
    }
}

async fn add_member(
    State(sim): State<GraphSim>,
    Path(group): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let mut tenant = sim.tenant();
    let Ok(Json(body)) = body else {
        return tenant.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Write requests (excluding DELETE) must contain the Content-Type header declaration.",
        );
    };
    let Some(reference) = body["@odata.id"].as_str() else {
        return tenant.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "The request body must contain an '@odata.id' with the URL of the object to add.",
        );
    };
    // `…/directoryObjects/{id}` or `…/users/{id}`, and an object id only.
    let member = ["/directoryObjects/", "/users/"]
        .iter()
        .find_map(|collection| reference.rsplit_once(collection))
        .map(|(_, id)| id.to_owned())
        .unwrap_or_default();
    if !is_guid(&member) {
        return tenant.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!("Invalid object identifier '{member}'."),
        );
    }
    if !tenant.groups.contains_key(&group) {
        return tenant.not_found(&group);
    }
    if tenant.deny_writes {
        return tenant.insufficient_privileges();
    }
    if !tenant.users.contains_key(&member) {
        return tenant.not_found(&member);
    }
    let members = tenant.groups.get_mut(&group).expect("checked above");
    if !members.insert(member) {
        return tenant.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified properties: 'members'.",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_member(
    State(sim): State<GraphSim>,
    Path((group, member)): Path<(String, String)>,
) -> Response {
    let mut tenant = sim.tenant();
    if !tenant.groups.contains_key(&group) {
        return tenant.not_found(&group);
    }
    if tenant.deny_writes {
        return tenant.insufficient_privileges();
    }
    let members = tenant.groups.get_mut(&group).expect("checked above");
    if !members.remove(&member) {
        return tenant.not_found(&member);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn no_such_path(State(sim): State<GraphSim>, request: Request) -> Response {
    let segment = request
        .uri()
        .path()
        .trim_start_matches("/v1.0/")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    sim.tenant().error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("Resource not found for the segment '{segment}'."),
    )
}

fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(index, c)| match index {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A GUID derived from `seed` and `n`, as Entra's object ids look.
fn guid(seed: u64, n: u64) -> String {
    let high = crate::splitmix64(seed ^ n.wrapping_mul(0x9E37_79B9));
    let low = crate::splitmix64(high ^ n);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xfff,
        0x8000 | ((low >> 48) & 0x3fff),
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_look_like_object_ids() {
        for n in 0..50 {
            let id = guid(42, n);
            assert!(is_guid(&id), "{id}");
        }
        assert_ne!(guid(42, 1), guid(42, 2));
        assert!(!is_guid("alice@contoso.com"));
    }
}
