//! ServiceNow: an event source (`source.rs`: a business rule names the
//! record that changed, and opsgate reads it back), a ticket system
//! (`desk.rs`: work notes, resolution, reassignment, catalog approvals),
//! and its config section (`config.rs`). This file is the Table API client
//! both use.
//!
//! Every call either answers or fails with a [`WriteError`] saying whether
//! trying later can help (`Retryable`, with the `Retry-After` ServiceNow gave)
//! or not (`Permanent`). The client itself never waits and retries: the
//! write-back queue that calls it owns the schedule, so a rate-limited
//! instance is not hammered from inside a call. The one exception is OAuth:
//! a 401 on a bearer call means the access token expired early (an instance
//! can revoke or shorten it), so the client refreshes the token once and
//! repeats the call once.
//!
//! Credentials travel only in the `Authorization` header and the token
//! request's form body; error messages name the method, the URL without its
//! query, the status and ServiceNow's own `error.message`/`error.detail`,
//! never a body we sent or a token we received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{base_url, one_line, retry_after, with_path};
use crate::{Secret, WriteError};

mod config;
mod desk;
mod source;

pub use config::Section;

/// Its config section, its route (`/v1/hooks/servicenow`), its events'
/// source and its write-backs' system.
pub const NAME: &str = "servicenow";

/// ServiceNow, as the registry knows it.
pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: true,
    build: config::build,
    check: crate::section::check::<config::Section>,
};

/// Whether `text` is a `sys_id`, a record's key: 32 hex digits.
pub fn is_sys_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// `https://<instance>.service-now.com`, without a path.
    pub instance_url: String,
    pub auth: ServiceNowAuth,
    /// Bounds each HTTP exchange, the token request included.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum ServiceNowAuth {
    Basic {
        username: String,
        password: Secret,
    },
    /// OAuth password grant, refreshing with the refresh_token grant; a 401 on
    /// a call triggers one refresh and one retry.
    OAuth {
        client_id: String,
        client_secret: Secret,
        username: String,
        password: Secret,
    },
}

/// A ServiceNow instance, ready to call. Cheap to clone; clones share the
/// OAuth token.
#[derive(Clone)]
pub struct ServiceNow {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    instance_url: Url,
    auth: Auth,
}

enum Auth {
    Basic { username: String, password: Secret },
    OAuth(Box<OAuthClient>),
}

impl std::fmt::Debug for ServiceNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.inner.auth {
            Auth::Basic { .. } => "basic",
            Auth::OAuth(_) => "oauth",
        };
        f.debug_struct("ServiceNow")
            .field("instance_url", &self.inner.instance_url.as_str())
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

impl ServiceNow {
    pub fn new(config: ServiceNowConfig) -> crate::Result<ServiceNow> {
        let instance_url = base_url(&config.instance_url).map_err(crate::Error::InstanceUrl)?;
        crate::install_crypto_provider();
        let http = crate::outbound_client(config.timeout).build()?;
        let auth = match config.auth {
            ServiceNowAuth::Basic { username, password } => Auth::Basic { username, password },
            ServiceNowAuth::OAuth {
                client_id,
                client_secret,
                username,
                password,
            } => Auth::OAuth(Box::new(OAuthClient {
                token_url: with_path(&instance_url, &["oauth_token.do"]),
                client_id,
                client_secret,
                username,
                password,
                token: tokio::sync::Mutex::new(None),
            })),
        };
        Ok(ServiceNow {
            inner: Arc::new(Inner {
                http,
                instance_url,
                auth,
            }),
        })
    }

    /// The record of `table` whose `number` is `number` (`INC0010001`), with
    /// its database values, or `None` when there is none.
    pub async fn find_by_number(
        &self,
        table: &str,
        number: &str,
    ) -> Result<Option<Value>, WriteError> {
        let mut found = self.find_where(table, &[("number", number)], 1).await?;
        Ok((!found.is_empty()).then(|| found.swap_remove(0)))
    }

    /// Up to `limit` records of `table` whose fields equal the values given
    /// (`[("sysapproval", sys_id), ("state", "requested")]`), with their
    /// database values.
    pub async fn find_where(
        &self,
        table: &str,
        equals: &[(&str, &str)],
        limit: u32,
    ) -> Result<Vec<Value>, WriteError> {
        let call = TableCall::new(Method::GET, table, None)?;
        let mut query = String::new();
        for (field, value) in equals {
            if !query.is_empty() {
                query.push('^');
            }
            query.push_str(field);
            query.push('=');
            query.push_str(call.query_value(field, value)?);
        }
        let call = call
            .query("sysparm_query", &query)
            .query("sysparm_limit", &limit.to_string());
        match self.send(&call).await? {
            Value::Array(records) => Ok(records),
            _ => Err(WriteError::malformed(
                &call.describe(),
                "`result` is not a list",
            )),
        }
    }

    /// One record with every field as `{value, display_value}` (reference
    /// fields add `link`).
    pub async fn get(&self, table: &str, sys_id: &str) -> Result<Value, WriteError> {
        let call =
            TableCall::new(Method::GET, table, Some(sys_id))?.query("sysparm_display_value", "all");
        match self.send(&call).await? {
            record @ Value::Object(_) => Ok(record),
            _ => Err(WriteError::malformed(
                &call.describe(),
                "`result` is not a record",
            )),
        }
    }

    /// Sets `fields` (an object of field → value, such as `{"state": "6",
    /// "close_code": …, "close_notes": …}`; a `work_notes` value appends a
    /// work note). ServiceNow answers with the record's `sys_id` only.
    pub async fn update(
        &self,
        table: &str,
        sys_id: &str,
        fields: &Value,
    ) -> Result<(), WriteError> {
        let call = TableCall::new(Method::PATCH, table, Some(sys_id))?
            .query("sysparm_fields", "sys_id")
            .body(fields);
        if !fields.is_object() {
            return Err(WriteError::Permanent {
                message: format!(
                    "{}: the fields to set must be a JSON object",
                    call.describe()
                ),
            });
        }
        self.send(&call).await.map(drop)
    }

    /// Whether the work notes of the record `sys_id` already hold a note
    /// containing `marker`. Write-backs post a note only when its marker is
    /// not there yet, which makes them safe to repeat. `LIKE` is a contains
    /// match in which `%` and `_` may act as wildcards: a marker without
    /// them means exactly itself.
    pub async fn has_work_note(&self, sys_id: &str, marker: &str) -> Result<bool, WriteError> {
        let call = TableCall::new(Method::GET, "sys_journal_field", None)?;
        let query = format!(
            "element_id={}^element=work_notes^valueLIKE{}",
            call.query_value("sys_id", sys_id)?,
            call.query_value("marker", marker)?,
        );
        let call = call
            .query("sysparm_query", &query)
            .query("sysparm_limit", "1")
            .query("sysparm_fields", "sys_id");
        match self.send(&call).await? {
            Value::Array(notes) => Ok(!notes.is_empty()),
            _ => Err(WriteError::malformed(
                &call.describe(),
                "`result` is not a list",
            )),
        }
    }

    /// Sends `call` and returns the `result` of its answer.
    async fn send(&self, call: &TableCall<'_>) -> Result<Value, WriteError> {
        let url = call.url(&self.inner.instance_url);
        let what = call.describe_at(&url);
        let mut credential = self.credential(None).await?;
        let mut refreshed = false;
        loop {
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), url.clone())
                .header(ACCEPT, "application/json");
            if let Some(body) = call.body {
                request = request.json(body);
            }
            request = match &credential {
                Credential::Basic { username, password } => {
                    request.basic_auth(username, Some(password.expose()))
                }
                Credential::Bearer(token) => request.bearer_auth(token.expose()),
            };
            let response = request
                .send()
                .await
                .map_err(|error| WriteError::unanswered(&what, error))?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !refreshed
                && let Credential::Bearer(rejected) = &credential
            {
                tracing::info!(call = %what, "ServiceNow refused the access token, refreshing it");
                credential = self.credential(Some(rejected)).await?;
                refreshed = true;
                continue;
            }
            return read_result(&what, response).await;
        }
    }

    /// What to authenticate the next request with. `rejected` is an access
    /// token ServiceNow just refused.
    async fn credential(&self, rejected: Option<&Secret>) -> Result<Credential<'_>, WriteError> {
        match &self.inner.auth {
            Auth::Basic { username, password } => Ok(Credential::Basic { username, password }),
            Auth::OAuth(client) => client
                .access_token(&self.inner.http, rejected)
                .await
                .map(Credential::Bearer),
        }
    }
}

enum Credential<'a> {
    Basic {
        username: &'a str,
        password: &'a Secret,
    },
    Bearer(Secret),
}

/// A Table API call: `/api/now/table/{table}[/{sys_id}]?{query}`.
struct TableCall<'a> {
    method: Method,
    table: &'a str,
    sys_id: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Option<&'a Value>,
}

impl<'a> TableCall<'a> {
    /// Table names and sys_ids become path segments: they are checked so
    /// that a value from a ticket cannot point the call somewhere else.
    fn new(method: Method, table: &'a str, sys_id: Option<&'a str>) -> Result<Self, WriteError> {
        let call = TableCall {
            method,
            table,
            sys_id,
            query: Vec::new(),
            body: None,
        };
        let is_name = |text: &str, extra: char| {
            !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == extra)
        };
        if !is_name(table, '_') {
            return Err(WriteError::Permanent {
                message: format!("{}: `{table}` is not a table name", call.describe()),
            });
        }
        if let Some(sys_id) = sys_id
            && !is_name(sys_id, '-')
        {
            return Err(WriteError::Permanent {
                message: format!("{}: `{sys_id}` is not a sys_id", call.describe()),
            });
        }
        Ok(call)
    }

    /// A value for the encoded query. `^` separates conditions and cannot be
    /// escaped reliably, so a value holding one is refused rather than
    /// allowed to add a condition of its own.
    fn query_value<'v>(&self, name: &str, value: &'v str) -> Result<&'v str, WriteError> {
        if value.is_empty() || value.contains(['^', '\n', '\r']) {
            return Err(WriteError::Permanent {
                message: format!(
                    "{}: the {name} `{value}` is empty or holds `^` or a line break",
                    self.describe()
                ),
            });
        }
        Ok(value)
    }

    fn query(mut self, name: &'static str, value: &str) -> Self {
        self.query.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: &'a Value) -> Self {
        self.body = Some(body);
        self
    }

    fn url(&self, instance_url: &Url) -> Url {
        let mut segments = vec!["api", "now", "table", self.table];
        segments.extend(self.sys_id);
        let mut url = with_path(instance_url, &segments);
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        url
    }

    /// `PATCH incident/<sys_id>`, for messages made before the URL exists.
    fn describe(&self) -> String {
        match self.sys_id {
            Some(sys_id) => format!("ServiceNow {} {}/{sys_id}", self.method, self.table),
            None => format!("ServiceNow {} {}", self.method, self.table),
        }
    }

    /// `PATCH https://…/api/now/table/incident/<sys_id>`: the query is left
    /// out, it would only repeat what the caller asked for.
    fn describe_at(&self, url: &Url) -> String {
        let mut url = url.clone();
        url.set_query(None);
        format!("ServiceNow {} {url}", self.method)
    }
}

/// The OAuth credentials and the cached token, shared by every clone.
struct OAuthClient {
    token_url: Url,
    client_id: String,
    client_secret: Secret,
    username: String,
    password: Secret,
    /// Held across the token request, so concurrent calls that find the
    /// token expired wait for one refresh instead of each making their own.
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    access: Secret,
    refresh: Option<Secret>,
    /// A little before the access token expires, so a call is not sent with
    /// a token about to lapse in flight; `None` when ServiceNow gave no
    /// lifetime, and the token is used until it is refused.
    renew_at: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Grant<'a> {
    Password,
    RefreshToken(&'a Secret),
}

impl Grant<'_> {
    fn name(self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::RefreshToken(_) => "refresh_token",
        }
    }
}

impl OAuthClient {
    async fn access_token(
        &self,
        http: &reqwest::Client,
        rejected: Option<&Secret>,
    ) -> Result<Secret, WriteError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let was_rejected =
                rejected.is_some_and(|rejected| rejected.expose() == token.access.expose());
            if !was_rejected
                && token
                    .renew_at
                    .is_none_or(|renew_at| Instant::now() < renew_at)
            {
                return Ok(token.access.clone());
            }
        }
        let refresh_token = cached.as_ref().and_then(|token| token.refresh.clone());
        let fresh = match refresh_token {
            Some(refresh_token) => {
                match self
                    .request_token(http, Grant::RefreshToken(&refresh_token))
                    .await
                {
                    // The refresh token expired or was revoked: log in again.
                    Err(WriteError::Permanent { message }) => {
                        tracing::warn!(error = %message, "ServiceNow refused the refresh token, requesting a new one with the password grant");
                        self.request_token(http, Grant::Password).await?
                    }
                    Err(retryable) => return Err(retryable),
                    Ok(mut token) => {
                        // ServiceNow may answer a refresh without a new refresh token.
                        token.refresh.get_or_insert(refresh_token);
                        token
                    }
                }
            }
            None => self.request_token(http, Grant::Password).await?,
        };
        let access = fresh.access.clone();
        *cached = Some(fresh);
        Ok(access)
    }

    /// `POST /oauth_token.do`, form-encoded as ServiceNow requires.
    async fn request_token(
        &self,
        http: &reqwest::Client,
        grant: Grant<'_>,
    ) -> Result<Token, WriteError> {
        let what = format!(
            "ServiceNow POST {} (grant_type={})",
            self.token_url,
            grant.name()
        );
        let mut form = vec![
            ("grant_type", grant.name()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        match grant {
            Grant::Password => form.extend([
                ("username", self.username.as_str()),
                ("password", self.password.expose()),
            ]),
            Grant::RefreshToken(refresh_token) => {
                form.push(("refresh_token", refresh_token.expose()))
            }
        }
        tracing::debug!(
            grant_type = grant.name(),
            "requesting a ServiceNow access token"
        );
        let requested_at = Instant::now();
        let response = http
            .post(self.token_url.clone())
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let text = response
            .text()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        if !status.is_success() {
            // The OAuth error answer is `{"error", "error_description"}`;
            // nothing else of it is repeated, in case it echoes the request.
            let said = serde_json::from_str::<OAuthRefusal>(&text)
                .ok()
                .map(|refusal| {
                    let error = one_line(refusal.error.as_deref());
                    let description = one_line(refusal.error_description.as_deref());
                    if description.is_empty() {
                        format!(": {error}")
                    } else {
                        format!(": {error} ({description})")
                    }
                })
                .unwrap_or_default();
            return Err(failure(&what, status, retry_after, &said));
        }
        // Never quote a token answer: it holds the tokens.
        let answer: TokenAnswer = serde_json::from_str(&text).map_err(|_| {
            WriteError::malformed(&what, "the token answer is not the expected JSON")
        })?;
        let renew_at = answer
            .expires_in
            .and_then(|value| value.seconds())
            .map(|seconds| {
                let lifetime = Duration::from_secs(seconds);
                requested_at + lifetime - (lifetime / 10).min(Duration::from_secs(60))
            });
        Ok(Token {
            access: Secret::new(answer.access_token),
            refresh: answer.refresh_token.map(Secret::new),
            renew_at,
        })
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<Seconds>,
}

/// `expires_in` is a number, but a string of digits is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    fn seconds(&self) -> Option<u64> {
        match self {
            Seconds::Number(seconds) => Some(*seconds),
            Seconds::Text(text) => text.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct OAuthRefusal {
    error: Option<String>,
    error_description: Option<String>,
}

/// ServiceNow's error envelope: `{"error": {"message", "detail"}, "status": "failure"}`.
#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeError,
}

#[derive(Deserialize)]
struct EnvelopeError {
    message: Option<String>,
    detail: Option<String>,
}

/// Reads the answer: the `result` of a 2xx, else a [`WriteError`].
async fn read_result(what: &str, response: reqwest::Response) -> Result<Value, WriteError> {
    let status = response.status();
    let retry_after = retry_after(&response);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("no content type")
        .to_owned();
    let text = response
        .text()
        .await
        .map_err(|error| WriteError::unanswered(what, error))?;
    if !status.is_success() {
        let said = match serde_json::from_str::<Envelope>(&text) {
            Ok(Envelope { error }) => {
                let message = one_line(error.message.as_deref());
                let detail = one_line(error.detail.as_deref());
                match (message.is_empty(), detail.is_empty()) {
                    (false, false) => format!(": {message} ({detail})"),
                    (false, true) => format!(": {message}"),
                    (true, false) => format!(": {detail}"),
                    (true, true) => String::new(),
                }
            }
            // A load balancer's or a maintenance page's HTML: not worth quoting.
            Err(_) => format!(" ({content_type}, {} bytes)", text.len()),
        };
        return Err(failure(what, status, retry_after, &said));
    }
    let mut answer: Value = serde_json::from_str(&text).map_err(|_| {
        WriteError::malformed(
            what,
            &format!("answered {status} with {content_type}, not JSON"),
        )
    })?;
    match answer.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(WriteError::malformed(
            what,
            &format!("answered {status} without a `result`"),
        )),
    }
}

fn failure(
    what: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    said: &str,
) -> WriteError {
    WriteError::refused(
        status,
        format!("{what} answered {status}{said}"),
        retry_after,
    )
}

#[cfg(test)]
mod tests {
    use super::is_sys_id;

    #[test]
    fn a_sys_id_is_32_hex_digits() {
        let check = |text: &str, expect: bool| assert_eq!(is_sys_id(text), expect, "{text}");
        check("9d385017c611228701d22104cc95c371", true);
        check("9D385017C611228701D22104CC95C371", true);
        check("9d385017c611228701d22104cc95c37", false);
        check("9d385017c611228701d22104cc95c3711", false);
        check("9d385017c611228701d22104cc95c37g", false);
        check("INC0012345", false);
    }
}
