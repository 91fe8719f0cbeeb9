//! Jira: an event source (`source.rs`: the issue webhook → an event), a
//! ticket system (`desk.rs`), its config section (`config.rs`), and —
//! this file — the client that reads issues and writes progress
//! back to them: comments, and transitions to another status.
//!
//! Jira Cloud and Jira Data Center speak different versions of the same
//! REST API, and the way in decides which one: an email and an API token
//! (Basic) is Jira Cloud, which opsgate calls through REST API v3, where a
//! comment's body is an Atlassian Document Format (ADF) document; a personal
//! access token (Bearer) is Data Center, which has no v3 and takes comment
//! bodies as wiki-markup text through v2. Every other shape — issues,
//! comment pages, transitions, the error envelope — is the same in both.
//!
//! Like [`crate::servicenow`], every call either answers or fails with a
//! [`WriteError`] saying whether trying later can help (`Retryable`, with
//! the `Retry-After` Jira gave on a 429 or 503) or not (`Permanent`), and
//! the client never waits and retries itself: the write-back queue owns the
//! schedule.
//!
//! A transition is looked up by the status it leads to (or its own name) on
//! every call, never by a remembered id: transition ids belong to a
//! workflow, and two projects' "Resolve" have different ones.
//!
//! Credentials travel only in the `Authorization` header; error messages
//! name the method, the URL without its query, the status and Jira's own
//! `errorMessages` and `errors`, never a token.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{base_url, one_line, retry_after, with_path};
use crate::{Secret, WriteError};

mod config;
mod desk;
mod signature;
mod source;

pub use config::Section;

/// Its config section, its events' source and its write-backs' system.
pub const NAME: &str = "jira";

/// Jira, as the registry knows it.
pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: true,
    build: config::build,
    check: crate::section::check::<config::Section>,
};

#[derive(Debug, Clone)]
pub struct JiraConfig {
    /// `https://<site>.atlassian.net`, or a Data Center's base URL with its
    /// context path (`https://jira.example.com/jira`).
    pub base_url: String,
    pub auth: JiraAuth,
    /// Bounds each HTTP exchange.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum JiraAuth {
    /// Jira Cloud: an Atlassian account's email and one of its API tokens,
    /// sent as Basic credentials. Calls go to REST API v3.
    Basic { email: String, api_token: Secret },
    /// Jira Data Center: a personal access token, sent as a bearer token.
    /// Calls go to REST API v2, the latest a Data Center has.
    Bearer { token: Secret },
}

/// An issue as [`Jira::get_issue`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// The numeric id, which stays when the issue moves to another project.
    pub id: String,
    pub key: String,
    pub summary: String,
    /// The name of its status (`Work in progress`).
    pub status: String,
    /// Every field Jira returned, as Jira shapes it.
    pub fields: Value,
}

/// What [`Jira::transition_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    /// The issue was in the wanted status already; nothing was posted.
    AlreadyThere,
    /// The issue took the transition `transition_id` (`transition_name`)
    /// and is now in `status`.
    Moved {
        transition_id: String,
        transition_name: String,
        status: String,
    },
}

/// How many comments one page asks for. Jira may answer fewer; the client
/// pages on by the number it got.
const COMMENT_PAGE: usize = 100;

/// The comment property that makes a Jira Service Management comment an
/// internal note, seen by agents and not by the customer (the counterpart
/// of ServiceNow's work notes). Projects of other kinds store it and
/// ignore it.
const INTERNAL_COMMENT_PROPERTY: &str = "sd.public.comment";

/// A Jira site, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Jira {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    auth: JiraAuth,
}

impl std::fmt::Debug for Jira {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.inner.auth {
            JiraAuth::Basic { .. } => "basic",
            JiraAuth::Bearer { .. } => "bearer",
        };
        f.debug_struct("Jira")
            .field("base_url", &self.inner.base_url.as_str())
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

impl Jira {
    pub fn new(config: JiraConfig) -> crate::Result<Jira> {
        let base_url = base_url(&config.base_url).map_err(crate::Error::JiraUrl)?;
        crate::install_crypto_provider();
        let http = crate::outbound_client(config.timeout).build()?;
        Ok(Jira {
            inner: Arc::new(Inner {
                http,
                base_url,
                auth: config.auth,
            }),
        })
    }

    /// `GET /rest/api/{v}/issue/{key}`: the issue with all its fields.
    pub async fn get_issue(&self, key: &str) -> Result<Issue, WriteError> {
        let call = IssueCall::new(self, Method::GET, key, &[])?;
        read_issue(&call, self.send(&call).await?)
    }

    /// Whether a comment on the issue contains `marker`. Write-backs post a
    /// comment only when its marker is not there yet, which makes them safe
    /// to repeat. Pages through every comment, newest first, since the
    /// marker looked for is most often the one posted last; the text is
    /// searched as a person reads it (ADF's text nodes joined), so a marker
    /// someone made bold is still found.
    pub async fn has_comment(&self, key: &str, marker: &str) -> Result<bool, WriteError> {
        if marker.is_empty() {
            return Err(WriteError::Permanent {
                message: format!("Jira comments of {key}: the marker to look for is empty"),
            });
        }
        let mut start_at = 0;
        loop {
            let call = IssueCall::new(self, Method::GET, key, &["comment"])?
                .query("startAt", start_at.to_string())
                .query("maxResults", COMMENT_PAGE.to_string())
                .query("orderBy", "-created".to_owned());
            let answer = self.send(&call).await?;
            let page: CommentPage = decode(&call, answer, "a page of comments")?;
            if page
                .comments
                .iter()
                .any(|comment| comment_text(&comment.body).contains(marker))
            {
                return Ok(true);
            }
            start_at = page.start_at + page.comments.len();
            if page.comments.is_empty() || start_at >= page.total {
                return Ok(false);
            }
        }
    }

    /// `POST /rest/api/{v}/issue/{key}/comment`: adds `text` as an internal
    /// comment, one paragraph per line, and returns the comment's id.
    pub async fn add_comment(&self, key: &str, text: &str) -> Result<String, WriteError> {
        let body = json!({
            "body": self.comment_body(text),
            "properties": [{"key": INTERNAL_COMMENT_PROPERTY, "value": {"internal": true}}],
        });
        let call = IssueCall::new(self, Method::POST, key, &["comment"])?.body(body);
        let answer = self.send(&call).await?;
        let added: AddedComment = decode(&call, answer, "the comment added")?;
        Ok(added.id)
    }

    /// Moves the issue to the status named `target` (ignoring case), or
    /// through the transition named `target` when no transition leads to a
    /// status of that name. The issue's own status is read first: an issue
    /// there already is left alone, so a repeated call changes nothing. The
    /// transition's id is looked up on the issue, never assumed.
    ///
    /// An issue with no such transition from where it is fails for good,
    /// naming the transitions it has.
    pub async fn transition_to(&self, key: &str, target: &str) -> Result<Transitioned, WriteError> {
        let target = target.trim();
        let issue_call =
            IssueCall::new(self, Method::GET, key, &[])?.query("fields", "status".to_owned());
        if target.is_empty() {
            return Err(WriteError::Permanent {
                message: format!("{}: the status to move to is empty", issue_call.describe()),
            });
        }
        let status = read_status(&issue_call, self.send(&issue_call).await?)?;
        if same_name(&status, target) {
            return Ok(Transitioned::AlreadyThere);
        }

        let list_call = IssueCall::new(self, Method::GET, key, &["transitions"])?;
        let answer = self.send(&list_call).await?;
        let transitions: TransitionList = decode(&list_call, answer, "the transitions")?;
        let chosen = transitions
            .transitions
            .iter()
            .find(|transition| same_name(&transition.to.name, target))
            .or_else(|| {
                transitions
                    .transitions
                    .iter()
                    .find(|transition| same_name(&transition.name, target))
            });
        let Some(chosen) = chosen else {
            let available: Vec<String> = transitions
                .transitions
                .iter()
                .map(|transition| format!("`{}` → {}", transition.name, transition.to.name))
                .collect();
            let available = if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            };
            return Err(WriteError::Permanent {
                message: format!(
                    "Jira: {key} is `{status}` and has no transition to `{target}`; \
                     its transitions: {available}"
                ),
            });
        };

        let move_call = IssueCall::new(self, Method::POST, key, &["transitions"])?
            .body(json!({"transition": {"id": chosen.id}}));
        self.send(&move_call).await?;
        Ok(Transitioned::Moved {
            transition_id: chosen.id.clone(),
            transition_name: chosen.name.clone(),
            status: chosen.to.name.clone(),
        })
    }

    /// The REST API version this site is called through.
    fn api_version(&self) -> &'static str {
        match self.inner.auth {
            JiraAuth::Basic { .. } => "3",
            JiraAuth::Bearer { .. } => "2",
        }
    }

    /// A comment's body as this API version takes it.
    fn comment_body(&self, text: &str) -> Value {
        match self.inner.auth {
            JiraAuth::Basic { .. } => adf_document(text),
            JiraAuth::Bearer { .. } => json!(text),
        }
    }

    /// Sends `call` and returns Jira's answer, `None` for an empty one (a
    /// transition's 204).
    async fn send(&self, call: &IssueCall) -> Result<Option<Value>, WriteError> {
        let what = call.describe();
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        request = match &self.inner.auth {
            JiraAuth::Basic { email, api_token } => {
                request.basic_auth(email, Some(api_token.expose()))
            }
            JiraAuth::Bearer { token } => request.bearer_auth(token.expose()),
        };
        let response = request
            .send()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        read_answer(&what, response).await
    }
}

/// One call on an issue: `/rest/api/{v}/issue/{key}/{rest…}?{query}`.
struct IssueCall {
    method: Method,
    url: Url,
    body: Option<Value>,
}

impl IssueCall {
    /// The key becomes a path segment: it is checked first, so that a value
    /// from a ticket cannot point the call somewhere else.
    fn new(jira: &Jira, method: Method, key: &str, rest: &[&str]) -> Result<Self, WriteError> {
        if !is_issue_key_or_id(key) {
            return Err(WriteError::Permanent {
                message: format!("Jira {method}: `{key}` is not an issue key (`OPS-154`) or id"),
            });
        }
        let mut segments = vec!["rest", "api", jira.api_version(), "issue", key];
        segments.extend(rest);
        Ok(IssueCall {
            method,
            url: with_path(&jira.inner.base_url, &segments),
            body: None,
        })
    }

    fn query(mut self, name: &str, value: String) -> Self {
        self.url.query_pairs_mut().append_pair(name, &value);
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// `GET https://…/rest/api/3/issue/OPS-1/comment`: the query is left
    /// out, it would only repeat what the caller asked for.
    fn describe(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        format!("Jira {} {url}", self.method)
    }
}

/// Status and transition names compare ignoring case, in any script
/// (`Résolu`, `RÉSOLU`).
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// Whether `text` is an issue key: a project key (a letter, then letters,
/// digits or `_`), a dash and a number (`OPS-154`).
pub fn is_issue_key(text: &str) -> bool {
    let Some((project, number)) = text.rsplit_once('-') else {
        return false;
    };
    let mut project = project.bytes();
    project
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && project.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && is_number(number)
}

/// An issue key, or an issue's numeric id.
fn is_issue_key_or_id(text: &str) -> bool {
    is_number(text) || is_issue_key(text)
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Deserialize)]
struct IssueAnswer {
    id: String,
    key: String,
    fields: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommentPage {
    start_at: usize,
    total: usize,
    comments: Vec<CommentAnswer>,
}

#[derive(Deserialize)]
struct CommentAnswer {
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
struct AddedComment {
    id: String,
}

#[derive(Deserialize)]
struct TransitionList {
    transitions: Vec<TransitionAnswer>,
}

#[derive(Deserialize)]
struct TransitionAnswer {
    id: String,
    name: String,
    to: StatusAnswer,
}

#[derive(Deserialize)]
struct StatusAnswer {
    name: String,
}

fn read_issue(call: &IssueCall, answer: Option<Value>) -> Result<Issue, WriteError> {
    let issue: IssueAnswer = decode(call, answer, "an issue")?;
    let text = |field: &str, value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                WriteError::malformed(&call.describe(), &format!("the issue has no `{field}`"))
            })
    };
    let summary = text("fields.summary", issue.fields.get("summary"))?;
    let status = text(
        "fields.status.name",
        issue
            .fields
            .get("status")
            .and_then(|status| status.get("name")),
    )?;
    Ok(Issue {
        id: issue.id,
        key: issue.key,
        summary,
        status,
        fields: Value::Object(issue.fields),
    })
}

fn read_status(call: &IssueCall, answer: Option<Value>) -> Result<String, WriteError> {
    let issue: IssueAnswer = decode(call, answer, "an issue")?;
    issue
        .fields
        .get("status")
        .and_then(|status| status.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            WriteError::malformed(&call.describe(), "the issue has no `fields.status.name`")
        })
}

fn decode<T: serde::de::DeserializeOwned>(
    call: &IssueCall,
    answer: Option<Value>,
    expected: &str,
) -> Result<T, WriteError> {
    let problem = || format!("the answer is not {expected}");
    let answer = answer.ok_or_else(|| WriteError::malformed(&call.describe(), &problem()))?;
    serde_json::from_value(answer).map_err(|_| WriteError::malformed(&call.describe(), &problem()))
}

/// Jira's error envelope: `{"errorMessages": [...], "errors": {field: message}}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    error_messages: Vec<String>,
    #[serde(default)]
    errors: Map<String, Value>,
    /// What Atlassian's edge answers instead of the envelope, such as a
    /// refused credential (`{"message": …, "status-code": 401}`).
    #[serde(default)]
    message: Option<String>,
}

/// The longest plain-text answer quoted in an error message.
const QUOTED_TEXT_LIMIT: usize = 300;

/// Reads the answer: the JSON of a 2xx (`None` when empty), else a
/// [`WriteError`] quoting what Jira said.
async fn read_answer(what: &str, response: reqwest::Response) -> Result<Option<Value>, WriteError> {
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = retry_after(&response);
    let content_type =
        header(CONTENT_TYPE.as_str()).unwrap_or_else(|| "no content type".to_owned());
    // Which of Jira Cloud's limits refused the call (`jira-burst-based`,
    // `jira-per-issue-on-write`, …): it tells an operator what to slow down.
    let rate_limit_reason = header("ratelimit-reason");
    let text = response
        .text()
        .await
        .map_err(|error| WriteError::unanswered(what, error))?;
    if !status.is_success() {
        let mut said = refusal_text(&text, &content_type);
        if let Some(reason) = rate_limit_reason {
            said.push_str(&format!(" (RateLimit-Reason: {})", one_line(Some(&reason))));
        }
        return Err(WriteError::refused(
            status,
            format!("{what} answered {status}{said}"),
            retry_after,
        ));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&text).map(Some).map_err(|_| {
        WriteError::malformed(
            what,
            &format!("answered {status} with {content_type}, not JSON"),
        )
    })
}

/// What Jira said when it refused: its error envelope, or a short plain
/// text; an HTML page (a proxy's, or Jira's "dead link" page) is only
/// described.
fn refusal_text(text: &str, content_type: &str) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    if let Ok(envelope) = serde_json::from_str::<Envelope>(text) {
        let mut parts: Vec<String> = envelope
            .error_messages
            .iter()
            .map(|message| one_line(Some(message)))
            .collect();
        parts.extend(envelope.errors.iter().map(|(field, message)| {
            let message = message
                .as_str()
                .map_or_else(|| message.to_string(), str::to_owned);
            format!("{field}: {}", one_line(Some(&message)))
        }));
        parts.extend(
            envelope
                .message
                .as_deref()
                .map(|message| one_line(Some(message))),
        );
        parts.retain(|part| !part.is_empty());
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    if content_type.starts_with("text/plain") && text.len() <= QUOTED_TEXT_LIMIT {
        return format!(": {}", one_line(Some(text)));
    }
    format!(" ({content_type}, {} bytes)", text.len())
}

/// A comment's text as a person reads it: v2 gives it as text, v3 as an
/// ADF document.
fn comment_text(body: &Value) -> String {
    match body {
        Value::String(text) => text.clone(),
        document => adf_text(document),
    }
}

/// `text` as an ADF document: one paragraph per line that is not blank.
/// (ADF has no empty text nodes, and a paragraph already sets its line
/// apart.)
fn adf_document(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| json!({"type": "paragraph", "content": [{"type": "text", "text": line}]}))
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

/// The text of an ADF node as a person reads it: text nodes and the text
/// of mentions, emoji and status lozenges, a line break after each block.
fn adf_text(node: &Value) -> String {
    fn walk(node: &Value, text: &mut String) {
        match node["type"].as_str() {
            Some("text") => text.push_str(node["text"].as_str().unwrap_or_default()),
            Some("hardBreak") => text.push('\n'),
            Some("mention" | "emoji" | "status") => {
                text.push_str(node["attrs"]["text"].as_str().unwrap_or_default());
            }
            _ => {
                let Some(children) = node["content"].as_array() else {
                    return;
                };
                for child in children {
                    walk(child, text);
                }
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    let mut text = String::new();
    walk(node, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_keys_and_ids() {
        for accepted in ["OPS-154", "ops-1", "IT_OPS2-10", "10002"] {
            assert!(is_issue_key_or_id(accepted), "{accepted}");
        }
        for refused in [
            "",
            "OPS",
            "OPS-",
            "-1",
            "1OPS-1",
            "OPS-1/../../myself",
            "OPS-1?fields=x",
            "OPS 1",
            "..",
        ] {
            assert!(!is_issue_key_or_id(refused), "{refused}");
        }
    }

    #[test]
    fn names_compare_ignoring_case_in_any_script() {
        assert!(same_name("Résolu", "RÉSOLU"));
        assert!(same_name("Work in progress", "work IN progress"));
        assert!(!same_name("Resolved", "Resolve"));
    }

    #[test]
    fn comments_become_adf_paragraphs_and_read_back_as_text() {
        let text = "Automation started: run 01J9Z3K8QW.\n\n  \nRestarted vpnagent → running. [opsgate 01J9Z3K8QW #4-7]";
        let document = adf_document(text);
        assert_eq!(
            document,
            json!({"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "Automation started: run 01J9Z3K8QW."}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "Restarted vpnagent → running. [opsgate 01J9Z3K8QW #4-7]"}]},
            ]})
        );
        assert_eq!(
            adf_text(&document),
            "Automation started: run 01J9Z3K8QW.\nRestarted vpnagent → running. [opsgate 01J9Z3K8QW #4-7]\n"
        );
        assert_eq!(
            adf_document(""),
            json!({"type": "doc", "version": 1, "content": []})
        );
    }

    #[test]
    fn text_split_by_marks_mentions_and_breaks_reads_as_one() {
        // What Jira's editor makes of a comment someone formatted by hand.
        let document = json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [
                {"type": "mention", "attrs": {"id": "557058:f58131cb", "text": "@Kim Lee"}},
                {"type": "text", "text": " see "},
                {"type": "text", "text": "[opsgate 01J9Z3K8QW ", "marks": [{"type": "strong"}]},
                {"type": "text", "text": "#4-7]", "marks": [{"type": "code"}]},
                {"type": "hardBreak"},
                {"type": "emoji", "attrs": {"shortName": ":tada:", "text": "🎉"}},
            ]},
            {"type": "bulletList", "content": [
                {"type": "listItem", "content": [
                    {"type": "paragraph", "content": [{"type": "text", "text": "tunnel up"}]},
                ]},
            ]},
        ]});
        assert_eq!(
            adf_text(&document),
            "@Kim Lee see [opsgate 01J9Z3K8QW #4-7]\n🎉\ntunnel up\n"
        );
    }

    #[test]
    fn refusals_quote_jira_and_describe_the_rest() {
        let check = |text: &str, content_type: &str, expect: &str| {
            assert_eq!(refusal_text(text, content_type), expect, "{text}");
        };
        check(
            r#"{"errorMessages":["Issue does not exist or you do not have permission to see it."],"errors":{}}"#,
            "application/json;charset=UTF-8",
            ": Issue does not exist or you do not have permission to see it.",
        );
        check(
            r#"{"errorMessages":[],"errors":{"resolution":"Resolution is required.","comment":"Comment\n body can not be empty!"}}"#,
            "application/json",
            ": comment: Comment body can not be empty!; resolution: Resolution is required.",
        );
        check(
            r#"{"message":"Client must be authenticated to access this resource.","status-code":401}"#,
            "application/json",
            ": Client must be authenticated to access this resource.",
        );
        check(
            "Client must be authenticated to access this resource.",
            "text/plain;charset=UTF-8",
            ": Client must be authenticated to access this resource.",
        );
        check(
            "<html><title>Oops, you've found a dead link.</title></html>",
            "text/html;charset=UTF-8",
            " (text/html;charset=UTF-8, 59 bytes)",
        );
        check("", "no content type", "");
    }
}
