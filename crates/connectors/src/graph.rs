//! `graph.group_membership`: puts a user into, or takes one out of, an
//! Entra ID group through Microsoft Graph, and says whether that changed
//! anything.
//!
//! The request is `{group_id, user_id, ensure: present | absent}`. Both
//! directions are idempotent: Graph refuses to add a member twice (400
//! `Request_BadRequest`, "One or more added object references already
//! exist…") and to remove one that is not there (404
//! `Request_ResourceNotFound`), and those answers are read as success with
//! `changed: false`. A 404 on removal also means "no such group", so it is
//! read as "not a member" only once the group is known to exist.
//!
//! `$ref` takes a `directoryObjects` URL, and Graph documents only the
//! object-id form of it, so a user given by user principal name
//! (`alice@contoso.com`) is first resolved to its object id with
//! `GET /v1.0/users/{upn}?$select=id`.
//!
//! Authentication is the client-credentials grant against the tenant's
//! token endpoint. The token is shared by every clone and reused until
//! shortly before its `expires_in`; a 401 from Graph means it expired or was
//! revoked early, so it is replaced once and the call repeated once. Like
//! every connector this one never waits out a 429 itself: it reports the
//! status and the `Retry-After`, and the step's retry policy decides.
//!
//! The client secret travels only in the token request's form body, the
//! access token only in the `Authorization` header. Messages carry the
//! method, the path, the status and Graph's `code` and `message` (or the
//! first line of the identity platform's `error_description`), never a
//! body that was sent or a token that was received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{ActionShape, AttemptOutcome, FailureCause, Key, Kind};
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{base_url, retry_after_ms, transport_failure, with_path};
use crate::{Attempt, Secret, failed};

/// What `graph.group_membership` takes in a runbook's `with:`.
pub(crate) const SHAPE: ActionShape = ActionShape {
    name: "graph.group_membership",
    keys: &[
        Key::required("group_id", Kind::Checked(group_id)),
        Key::required("user_id", Kind::Checked(user_id)),
        Key::required("ensure", Kind::Choice(&["present", "absent"])),
    ],
    exclusive: &[],
    default: None,
    address: None,
};

/// A group written out: its object id.
fn group_id(id: &str) -> Result<(), domain::Refusal> {
    if is_guid(id) {
        return Ok(());
    }
    Err(domain::Refusal::new(
        format!("`{id}` is not a group's object id"),
        "give the group's object id, a GUID such as `0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d` (Entra admin center, the group's Overview), or a template",
    ))
}

/// A user written out: its object id or user principal name.
fn user_id(id: &str) -> Result<(), domain::Refusal> {
    if is_guid(id) || id.contains('@') {
        return Ok(());
    }
    Err(domain::Refusal::new(
        format!("`{id}` is neither a user's object id nor a user principal name"),
        "give a GUID, a user principal name such as `alice@contoso.com`, or a template",
    ))
}

/// Whether `text` is a GUID as Entra writes object ids
/// (`8-4-4-4-12` hex digits).
fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(index, c)| match index {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The Entra app registration `graph.group_membership` acts as. It needs
/// the `GroupMember.ReadWrite.All` application permission, and
/// `User.ReadBasic.All` to resolve users given by UPN.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// The directory (tenant) id.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    pub client_secret: Secret,
    /// The identity platform, without a path; another host for a national
    /// cloud.
    pub authority_url: String,
    /// Microsoft Graph, without a path. The token is requested for its
    /// `/.default` scope.
    pub graph_url: String,
}

impl GraphConfig {
    pub const AUTHORITY_URL: &str = "https://login.microsoftonline.com";
    pub const GRAPH_URL: &str = "https://graph.microsoft.com";
}

/// The name of Graph's config section.
pub const NAME: &str = "graph";

pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: false,
    build,
    check: crate::section::check::<Section>,
};

/// The `graph:` section: the tenant `graph.group_membership` steps act in.
///
/// ```yaml
/// graph:
///   tenant_id: 7f3c…
///   client_id: 1b2d…
///   client_secret: env:GRAPH_CLIENT_SECRET
///   # authority_url: https://login.microsoftonline.com
///   # graph_url: https://graph.microsoft.com
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    tenant_id: String,
    client_id: String,
    /// By reference (`env:NAME`, `file:PATH`).
    client_secret: String,
    /// Default `https://login.microsoftonline.com`.
    authority_url: Option<String>,
    /// Default `https://graph.microsoft.com`.
    graph_url: Option<String>,
}

fn build(section: &serde_json::Value) -> crate::Result<crate::seam::Parts> {
    let section: Section = crate::section::read(NAME, section)?;
    let config = GraphConfig {
        tenant_id: section.tenant_id,
        client_id: section.client_id,
        client_secret: crate::section::secret("graph.client_secret", &section.client_secret)?,
        authority_url: section
            .authority_url
            .unwrap_or_else(|| GraphConfig::AUTHORITY_URL.to_owned()),
        graph_url: section
            .graph_url
            .unwrap_or_else(|| GraphConfig::GRAPH_URL.to_owned()),
    };
    Ok(crate::seam::Parts {
        action: Some(group_membership(&config)?),
        ..crate::seam::Parts::default()
    })
}

/// `graph.group_membership`, acting in the tenant of `config`: what the
/// `graph:` section plugs in, in place of the action that refuses every
/// call for want of a tenant.
pub fn group_membership(
    config: &GraphConfig,
) -> crate::Result<std::sync::Arc<dyn crate::seam::StepAction>> {
    let http = crate::outbound_client(std::time::Duration::from_secs(60)).build()?;
    Ok(std::sync::Arc::new(crate::actions::GroupMembership {
        graph: Some(Graph::new(config)?),
        http,
    }))
}

/// A tenant, ready to call. Cheap to clone; clones share the token.
#[derive(Clone)]
pub(crate) struct Graph {
    inner: Arc<Inner>,
}

struct Inner {
    token_url: Url,
    graph_url: Url,
    scope: String,
    client_id: String,
    client_secret: Secret,
    /// Held across the token request, so concurrent calls that find the
    /// token expired wait for one request instead of each making their own.
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    access: Secret,
    /// A little before the token expires, so that no call is sent with a
    /// token about to lapse in flight; `None` when no lifetime was given,
    /// and the token is used until it is refused.
    renew_at: Option<Instant>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("token_url", &self.inner.token_url.as_str())
            .field("graph_url", &self.inner.graph_url.as_str())
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Runs one `graph.group_membership` call; `graph` is `None` when no tenant
/// is configured.
pub(crate) async fn run(
    graph: Option<&Graph>,
    http: &reqwest::Client,
    request: &Value,
) -> AttemptOutcome {
    let Some(graph) = graph else {
        return failed(
            FailureCause::Other,
            "`graph.group_membership` needs a Microsoft Graph tenant, and none is configured (`graph:` in the config file)".to_owned(),
        );
    };
    let membership = match Membership::read(request) {
        Ok(membership) => membership,
        Err(error) => return failed(FailureCause::Other, error),
    };
    match graph.ensure(http, &membership).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// The request, checked.
struct Membership {
    group_id: String,
    user_id: String,
    ensure: Ensure,
}

#[derive(Clone, Copy)]
enum Ensure {
    Present,
    Absent,
}

impl Ensure {
    fn as_str(self) -> &'static str {
        match self {
            Ensure::Present => "present",
            Ensure::Absent => "absent",
        }
    }
}

impl Membership {
    fn read(request: &Value) -> Result<Membership, String> {
        let text = |key: &str| match &request[key] {
            Value::String(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Value::Null => Err(format!("the request has no `{key}`")),
            other => Err(format!("`{key}` must be a non-empty string, not {other}")),
        };
        let group_id = text("group_id")?;
        if !is_guid(&group_id) {
            return Err(format!(
                "`group_id` `{group_id}` is not a group's object id (a GUID)"
            ));
        }
        let user_id = text("user_id")?;
        if !is_guid(&user_id) && !user_id.contains('@') {
            return Err(format!(
                "`user_id` `{user_id}` is neither a user's object id (a GUID) nor a user principal name"
            ));
        }
        let ensure = match text("ensure")?.as_str() {
            "present" => Ensure::Present,
            "absent" => Ensure::Absent,
            other => {
                return Err(format!(
                    "`ensure` must be `present` or `absent`, not `{other}`"
                ));
            }
        };
        Ok(Membership {
            group_id,
            user_id,
            ensure,
        })
    }
}

impl Graph {
    pub(crate) fn new(config: &GraphConfig) -> crate::Result<Graph> {
        let authority_url = base_url(&config.authority_url)
            .map_err(|reason| crate::Error::Graph(format!("`authority_url`: {reason}")))?;
        let graph_url = base_url(&config.graph_url)
            .map_err(|reason| crate::Error::Graph(format!("`graph_url`: {reason}")))?;
        for (name, value) in [
            ("tenant_id", &config.tenant_id),
            ("client_id", &config.client_id),
        ] {
            if value.trim().is_empty() || value.contains(['/', '?', '#']) {
                return Err(crate::Error::Graph(format!(
                    "`{name}` `{value}` is not an id"
                )));
            }
        }
        let scope = format!("{}/.default", graph_url.as_str().trim_end_matches('/'));
        Ok(Graph {
            inner: Arc::new(Inner {
                token_url: with_path(
                    &authority_url,
                    &[config.tenant_id.trim(), "oauth2", "v2.0", "token"],
                ),
                graph_url,
                scope,
                client_id: config.client_id.trim().to_owned(),
                client_secret: config.client_secret.clone(),
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }

    async fn ensure(
        &self,
        http: &reqwest::Client,
        membership: &Membership,
    ) -> Attempt<AttemptOutcome> {
        let group_id = membership.group_id.as_str();
        let member_id = if is_guid(&membership.user_id) {
            membership.user_id.clone()
        } else {
            self.resolve_user(http, &membership.user_id).await?
        };
        let (answer, changed) = match membership.ensure {
            Ensure::Present => {
                let url = self.url(&["groups", group_id, "members", "$ref"]);
                let member = self.url(&["directoryObjects", &member_id]);
                let body = json!({"@odata.id": member.as_str()});
                let answer = self.send(http, Method::POST, url, Some(&body)).await?;
                let changed = match answer.status {
                    status if status.is_success() => true,
                    StatusCode::BAD_REQUEST
                        if answer.code() == "Request_BadRequest"
                            && answer.message().contains("already exist") =>
                    {
                        false
                    }
                    _ => return Err(answer.failure()),
                };
                (answer, changed)
            }
            Ensure::Absent => {
                let url = self.url(&["groups", group_id, "members", &member_id, "$ref"]);
                let answer = self.send(http, Method::DELETE, url, None).await?;
                let changed = match answer.status {
                    status if status.is_success() => true,
                    StatusCode::NOT_FOUND if answer.code() == "Request_ResourceNotFound" => {
                        self.require_group(http, group_id).await?;
                        false
                    }
                    _ => return Err(answer.failure()),
                };
                (answer, changed)
            }
        };
        Ok(AttemptOutcome::Succeeded {
            response: json!({
                "changed": changed,
                "ensure": membership.ensure.as_str(),
                "group_id": group_id,
                "user_id": membership.user_id,
                "member_id": member_id,
                "status": answer.status.as_u16(),
            }),
        })
    }

    /// The object id of the user whose principal name is `upn`.
    async fn resolve_user(&self, http: &reqwest::Client, upn: &str) -> Attempt<String> {
        let mut url = self.url(&["users", upn]);
        url.set_query(Some("$select=id"));
        let answer = self.send(http, Method::GET, url, None).await?;
        if !answer.status.is_success() {
            return Err(answer.failure());
        }
        match answer.body["id"].as_str() {
            Some(id) if is_guid(id) => Ok(id.to_owned()),
            _ => Err(failed(
                FailureCause::Other,
                format!(
                    "Microsoft Graph {}: malformed answer: no object id for `{upn}`",
                    answer.what
                ),
            )),
        }
    }

    /// Succeeds when the group exists; a 404 `Request_ResourceNotFound` on
    /// removal is then about the member.
    async fn require_group(&self, http: &reqwest::Client, group_id: &str) -> Attempt<()> {
        let mut url = self.url(&["groups", group_id]);
        url.set_query(Some("$select=id"));
        let answer = self.send(http, Method::GET, url, None).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.failure())
        }
    }

    /// `{graph_url}/v1.0/{segments}`.
    fn url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["v1.0"];
        all.extend(segments);
        with_path(&self.inner.graph_url, &all)
    }

    /// Sends one Graph request; a 401 gets a new token and one more try.
    async fn send(
        &self,
        http: &reqwest::Client,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Attempt<Answer> {
        let what = match url.query() {
            Some(query) => format!("{method} {}?{query}", url.path()),
            None => format!("{method} {}", url.path()),
        };
        let mut token = self.access_token(http, None).await?;
        let mut refreshed = false;
        loop {
            let mut request = http
                .request(method.clone(), url.clone())
                .header(ACCEPT, "application/json")
                .bearer_auth(token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|error| transport_failure(&format!("Microsoft Graph {what}"), error))?;
            if response.status() == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::info!(call = %what, "Microsoft Graph refused the access token, requesting a new one");
                token = self.access_token(http, Some(&token)).await?;
                refreshed = true;
                continue;
            }
            return Answer::read(what, response).await;
        }
    }

    /// The cached access token, or a new one when it is about to expire or
    /// is `rejected` (Graph just refused it).
    async fn access_token(
        &self,
        http: &reqwest::Client,
        rejected: Option<&Secret>,
    ) -> Attempt<Secret> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let was_rejected =
                rejected.is_some_and(|rejected| rejected.expose() == token.access.expose());
            let fresh = token
                .renew_at
                .is_none_or(|renew_at| Instant::now() < renew_at);
            if fresh && !was_rejected {
                return Ok(token.access.clone());
            }
        }
        let token = self.request_token(http).await?;
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }

    /// `POST {authority}/{tenant}/oauth2/v2.0/token`, the client-credentials
    /// grant, form-encoded.
    async fn request_token(&self, http: &reqwest::Client) -> Attempt<Token> {
        let inner = &self.inner;
        let what = format!(
            "Microsoft identity platform POST {}",
            inner.token_url.path()
        );
        tracing::debug!(client_id = %inner.client_id, "requesting a Microsoft Graph access token");
        let requested_at = Instant::now();
        let response = http
            .post(inner.token_url.clone())
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", inner.client_id.as_str()),
                ("client_secret", inner.client_secret.expose()),
                ("scope", inner.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|error| transport_failure(&what, error))?;
        let status = response.status();
        let retry_after_ms = retry_after_ms(&response);
        let text = response
            .text()
            .await
            .map_err(|error| transport_failure(&what, error))?;
        if !status.is_success() {
            // `{"error", "error_description": "AADSTS…: …\r\nTrace ID: …"}`:
            // the first line says what is wrong, the rest is for support.
            let refusal = serde_json::from_str::<Refusal>(&text).unwrap_or_default();
            let description = refusal
                .error_description
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let said = match (refusal.error.is_empty(), description.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!(": {}", refusal.error),
                (_, false) => format!(": {description}"),
            };
            // The identity platform does not echo secrets; this makes sure.
            let scrub = |text: String| text.replace(inner.client_secret.expose(), "***");
            return Err(AttemptOutcome::Failed {
                cause: FailureCause::Status(status.as_u16()),
                error: scrub(format!(
                    "{what} refused the token request with {status}{said}"
                )),
                response: Some(json!({
                    "status": status.as_u16(),
                    "error": scrub(refusal.error),
                    "error_description": scrub(description),
                })),
                retry_after_ms,
            });
        }
        // Never quote a token answer: it holds the token.
        let answer: TokenAnswer = serde_json::from_str(&text).map_err(|_| {
            failed(
                FailureCause::Other,
                format!("{what}: malformed answer: not the expected token JSON"),
            )
        })?;
        let renew_at = answer.expires_in.map(|seconds| {
            let lifetime = Duration::from_secs(seconds);
            requested_at + lifetime - (lifetime / 10).min(Duration::from_secs(60))
        });
        Ok(Token {
            access: Secret::new(answer.access_token),
            renew_at,
        })
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// The identity platform's error answer (it has more fields, unread).
#[derive(Deserialize, Default)]
struct Refusal {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Graph's error envelope: `{"error": {"code", "message", "innerError":
/// {"date", "request-id", "client-request-id"}}}`.
#[derive(Deserialize)]
struct Envelope {
    error: GraphError,
}

#[derive(Deserialize, Default)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(rename = "innerError", default)]
    inner_error: Option<InnerError>,
}

#[derive(Deserialize)]
struct InnerError {
    #[serde(rename = "request-id")]
    request_id: Option<String>,
}

/// A Graph answer, read: the body of a success, the envelope of a refusal.
struct Answer {
    /// `POST /v1.0/groups/…/members/$ref`, for messages.
    what: String,
    status: StatusCode,
    retry_after_ms: Option<u64>,
    body: Value,
    error: GraphError,
}

impl Answer {
    async fn read(what: String, response: reqwest::Response) -> Attempt<Answer> {
        let status = response.status();
        let retry_after_ms = retry_after_ms(&response);
        let text = response
            .text()
            .await
            .map_err(|error| transport_failure(&format!("Microsoft Graph {what}"), error))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = if status.is_success() {
            GraphError::default()
        } else {
            serde_json::from_value::<Envelope>(body.clone())
                .map(|envelope| envelope.error)
                .unwrap_or_default()
        };
        Ok(Answer {
            what,
            status,
            retry_after_ms,
            body,
            error,
        })
    }

    fn code(&self) -> &str {
        &self.error.code
    }

    fn message(&self) -> &str {
        &self.error.message
    }

    /// The refusal as a failed attempt whose cause is the status, so that a
    /// policy retries on 429 or 503 and not on 403.
    fn failure(&self) -> AttemptOutcome {
        let message = self
            .error
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let said = match (self.error.code.is_empty(), message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(": {}", self.error.code),
            (true, false) => format!(": {message}"),
            (false, false) => format!(": {}: {message}", self.error.code),
        };
        let request_id = self
            .error
            .inner_error
            .as_ref()
            .and_then(|inner| inner.request_id.clone());
        AttemptOutcome::Failed {
            cause: FailureCause::Status(self.status.as_u16()),
            error: format!(
                "Microsoft Graph {} answered {}{said}",
                self.what, self.status
            ),
            response: Some(json!({
                "status": self.status.as_u16(),
                "code": self.error.code,
                "message": message,
                "request_id": request_id,
            })),
            retry_after_ms: self.retry_after_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let check = |request: Value, expect: Result<(), &str>| {
            let read = Membership::read(&request).map(drop);
            assert_eq!(read, expect.map_err(str::to_owned), "{request}");
        };
        let group = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        check(
            json!({"group_id": group, "user_id": "alice@contoso.com", "ensure": "present"}),
            Ok(()),
        );
        check(
            json!({"group_id": group, "user_id": group, "ensure": "absent"}),
            Ok(()),
        );
        check(
            json!({"group_id": "Sales", "user_id": "alice@contoso.com", "ensure": "present"}),
            Err("`group_id` `Sales` is not a group's object id (a GUID)"),
        );
        check(
            json!({"group_id": group, "user_id": "alice", "ensure": "present"}),
            Err(
                "`user_id` `alice` is neither a user's object id (a GUID) nor a user principal name",
            ),
        );
        check(
            json!({"group_id": group, "user_id": "alice@contoso.com", "ensure": "gone"}),
            Err("`ensure` must be `present` or `absent`, not `gone`"),
        );
        check(
            json!({"group_id": group, "ensure": "present"}),
            Err("the request has no `user_id`"),
        );
        check(
            json!({"group_id": 42, "user_id": "a@b", "ensure": "present"}),
            Err("`group_id` must be a non-empty string, not 42"),
        );
    }

    #[test]
    fn ids_become_single_path_segments() {
        let base = Url::parse("https://graph.microsoft.com").unwrap();
        let url = with_path(&base, &["v1.0", "users", "a/b?c@contoso.com"]);
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/users/a%2Fb%3Fc@contoso.com"
        );
    }
}
