//! A local Jira: projects with their own workflows, issues, comments and
//! transitions, behind Jira Cloud's or Jira Data Center's way in.
//!
//! It speaks the wire format of the platform REST API — issues with their
//! `fields`, pages of comments (`startAt`, `maxResults`, `total`), the
//! transitions available from an issue's status, 201 for a comment and 204
//! for a transition, the `{"errorMessages": […], "errors": {…}}` envelope —
//! so that a client which passes its contract tests here passes them
//! against a site. Two things a client gets wrong most often are played
//! faithfully:
//!
//! - Transition ids belong to a workflow. Each project here has its own
//!   workflow, numbered from its own first id ([`Workflow::incident`]), so
//!   "Resolve" is `31` in one project and `731` in another and a client
//!   that remembers an id fails in the other project with Jira's 400.
//! - REST API v3 (Cloud only) takes and returns comment bodies as Atlassian
//!   Document Format; v2 as text. A [`Site::DataCenter`] has no v3 at all:
//!   its paths answer Jira's "dead link" page with a 404.
//!
//! Comments are stored as ADF whichever version wrote them; v2 reads show
//! their text. A comment with the `sd.public.comment` property
//! `{"internal": true}` is internal (`jsdPublic: false`), as in a Jira
//! Service Management project.
//!
//! The unhappy paths are switches: [`JiraSim::fail_next`] answers the next
//! calls 429 with `Retry-After` (and the `RateLimit-Reason` header of Jira
//! Cloud's burst limit) or 503; [`JiraSim::down`] answers everything 503
//! with a proxy's HTML page; [`JiraSim::cap_page_size`] makes comment pages
//! shorter than asked, as Jira may. A refused connection needs no
//! simulator: point the client at a port nothing listens on.
//!
//! Where it is stricter than Jira, it says so: `orderBy` on comments takes
//! only `created` (the one field Jira sorts comments by), and an ADF
//! document is checked only for the mistakes a client makes (not a `doc`,
//! an empty text node).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};

use crate::{base_url, json_answer};

/// Which Jira, and who may call it.
#[derive(Debug, Clone)]
pub enum Site {
    /// Jira Cloud: Basic `email:api_token`; REST API v2 and v3.
    Cloud { email: String, api_token: String },
    /// Jira Data Center: a personal access token as a bearer token; REST
    /// API v2 only.
    DataCenter { personal_access_token: String },
}

impl Site {
    /// A Cloud site with an integration account's email and API token.
    pub fn cloud() -> Site {
        Site::Cloud {
            email: "opsgate@example.com".into(),
            api_token: "ATATT3xFfGF0-api-token-Q2x7".into(),
        }
    }

    /// A Data Center with an integration account's personal access token.
    pub fn data_center() -> Site {
        Site::DataCenter {
            personal_access_token: "NjE0OTk2MzU2-personal-token-Vw9k".into(),
        }
    }

    /// The credential the site accepts, to prove none leaks.
    pub fn secret(&self) -> &str {
        match self {
            Site::Cloud { api_token, .. } => api_token,
            Site::DataCenter {
                personal_access_token,
            } => personal_access_token,
        }
    }

    fn serves(&self, version: &str) -> bool {
        match self {
            Site::Cloud { .. } => matches!(version, "2" | "3"),
            Site::DataCenter { .. } => version == "2",
        }
    }
}

/// A status category: what Jira's boards and webhooks group statuses by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    ToDo,
    InProgress,
    Done,
}

impl Category {
    fn render(self, base: &str) -> Value {
        let (id, key, color, name) = match self {
            Category::ToDo => (2, "new", "blue-gray", "To Do"),
            Category::InProgress => (4, "indeterminate", "yellow", "In Progress"),
            Category::Done => (3, "done", "green", "Done"),
        };
        json!({
            "self": format!("{base}/rest/api/3/statuscategory/{id}"),
            "id": id, "key": key, "colorName": color, "name": name,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Status {
    pub id: String,
    pub name: String,
    pub category: Category,
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub id: String,
    pub name: String,
    /// The statuses (by name) it leaves from; empty for a global transition,
    /// available from every status.
    pub from: Vec<String>,
    /// The status (by name) it leads to.
    pub to: String,
    /// Fields its screen requires (`resolution`); a transition posted
    /// without them is refused with a 400 naming them.
    pub required_fields: Vec<String>,
}

/// The statuses of a project and the transitions between them. The first
/// status is where new issues start.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub statuses: Vec<Status>,
    pub transitions: Vec<Transition>,
}

impl Workflow {
    /// The incident workflow of an IT service project: Open, Work in
    /// progress, Pending, Resolved, Closed. Its transitions are numbered
    /// from `first_transition_id` in steps of ten, as Jira numbers a
    /// workflow's transitions; give each project its own first id.
    pub fn incident(first_transition_id: u32) -> Workflow {
        let status = |id: &str, name: &str, category| Status {
            id: id.into(),
            name: name.into(),
            category,
        };
        let statuses = vec![
            status("1", "Open", Category::ToDo),
            status("10001", "Work in progress", Category::InProgress),
            status("10002", "Pending", Category::InProgress),
            status("5", "Resolved", Category::Done),
            status("6", "Closed", Category::Done),
        ];
        let transitions = [
            ("Start work", &["Open"][..], "Work in progress"),
            ("Pending", &["Work in progress"], "Pending"),
            ("Resume work", &["Pending"], "Work in progress"),
            (
                "Resolve",
                &["Open", "Work in progress", "Pending"],
                "Resolved",
            ),
            ("Close", &["Resolved"], "Closed"),
            ("Reopen", &["Resolved", "Closed"], "Open"),
        ]
        .into_iter()
        .zip(0..)
        .map(|((name, from, to), index)| Transition {
            id: (first_transition_id + 10 * index).to_string(),
            name: name.into(),
            from: from.iter().map(|status| status.to_string()).collect(),
            to: to.into(),
            required_fields: Vec::new(),
        })
        .collect();
        Workflow {
            statuses,
            transitions,
        }
    }

    /// The same workflow with `field` required on the screen of the
    /// transition named `transition`.
    pub fn requiring(mut self, transition: &str, field: &str) -> Workflow {
        for candidate in &mut self.transitions {
            if candidate.name == transition {
                candidate.required_fields.push(field.to_owned());
            }
        }
        self
    }

    fn status(&self, name: &str) -> Option<&Status> {
        self.statuses.iter().find(|status| status.name == name)
    }
}

/// An issue to seed.
#[derive(Debug, Clone)]
pub struct NewIssue {
    /// The project's key; the project must exist.
    pub project: String,
    pub summary: String,
    /// The workflow's first status when `None`.
    pub status: Option<String>,
    pub issue_type: String,
    pub priority: Option<String>,
    pub labels: Vec<String>,
    /// The reporter's display name.
    pub reporter: Option<String>,
}

impl NewIssue {
    pub fn incident(project: &str, summary: &str) -> NewIssue {
        NewIssue {
            project: project.into(),
            summary: summary.into(),
            status: None,
            issue_type: "Incident".into(),
            priority: Some("High".into()),
            labels: Vec::new(),
            reporter: Some("Kim Lee".into()),
        }
    }
}

/// A comment as the site stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub id: String,
    pub author: String,
    /// The body, as an ADF document.
    pub body: Value,
    /// The body's text, as a person reads it.
    pub text: String,
    /// An internal note (`sd.public.comment` `{"internal": true}`), hidden
    /// from the customer.
    pub internal: bool,
    pub created: String,
}

/// How the next calls fail.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// 429, with `Retry-After` and the headers of Jira Cloud's burst limit.
    RateLimited { retry_after_secs: u64 },
    /// 503, as when Jira reaches a resource limit, with a `Retry-After`
    /// when given.
    Unavailable { retry_after_secs: Option<u64> },
}

/// The simulated site, shared with its server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JiraSim {
    site: Arc<Mutex<SiteState>>,
}

#[derive(Debug)]
struct SiteState {
    site: Site,
    projects: BTreeMap<String, Project>,
    issues: Vec<Issue>,
    next_issue_id: u64,
    next_comment_id: u64,
    failing: Option<(u32, Failure)>,
    down: bool,
    page_size_cap: Option<usize>,
    /// Every request, as "METHOD path?query".
    calls: Vec<String>,
}

#[derive(Debug)]
struct Project {
    id: String,
    name: String,
    workflow: Workflow,
    issues_numbered: u64,
}

#[derive(Debug, Clone)]
struct Issue {
    id: String,
    key: String,
    project: String,
    summary: String,
    status: String,
    issue_type: String,
    priority: Option<String>,
    labels: Vec<String>,
    reporter: Option<String>,
    created: String,
    updated: String,
    comments: Vec<Comment>,
}

/// The display name comments posted through the API are authored by.
const INTEGRATION_USER: &str = "opsgate integration";

/// The longest comment Jira takes, in characters.
const COMMENT_LIMIT: usize = 32_767;

const NO_ISSUE: &str = "Issue does not exist or you do not have permission to see it.";

impl JiraSim {
    pub fn new(site: Site) -> JiraSim {
        JiraSim {
            site: Arc::new(Mutex::new(SiteState {
                site,
                projects: BTreeMap::new(),
                issues: Vec::new(),
                next_issue_id: 10_000,
                next_comment_id: 10_000,
                failing: None,
                down: false,
                page_size_cap: None,
                calls: Vec::new(),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SiteState> {
        self.site.lock().expect("Jira simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/rest/api/{version}/issue/{issue}", get(show_issue))
            .route(
                "/rest/api/{version}/issue/{issue}/comment",
                get(list_comments).post(add_comment),
            )
            .route(
                "/rest/api/{version}/issue/{issue}/transitions",
                get(list_transitions).post(do_transition),
            )
            .fallback(dead_link)
            .layer(axum::middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    /// Starts the simulator on a free loopback port.
    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }

    /// Adds a project (`OPS`, "IT Operations") whose issues follow
    /// `workflow`.
    pub fn add_project(&self, key: &str, name: &str, workflow: Workflow) {
        let mut state = self.state();
        let id = (10_000 + state.projects.len()).to_string();
        state.projects.insert(
            key.to_owned(),
            Project {
                id,
                name: name.to_owned(),
                workflow,
                issues_numbered: 0,
            },
        );
    }

    /// Creates an issue and returns its key (`OPS-1`, `OPS-2`, …).
    pub fn seed_issue(&self, new: NewIssue) -> String {
        let mut state = self.state();
        let state = &mut *state;
        let project = state
            .projects
            .get_mut(&new.project)
            .unwrap_or_else(|| panic!("no project {}", new.project));
        let status = match new.status {
            Some(status) => {
                assert!(
                    project.workflow.status(&status).is_some(),
                    "{status} is not a status of {}",
                    new.project
                );
                status
            }
            None => project.workflow.statuses[0].name.clone(),
        };
        project.issues_numbered += 1;
        let key = format!("{}-{}", new.project, project.issues_numbered);
        state.next_issue_id += 1;
        let now = now();
        state.issues.push(Issue {
            id: state.next_issue_id.to_string(),
            key: key.clone(),
            project: new.project,
            summary: new.summary,
            status,
            issue_type: new.issue_type,
            priority: new.priority,
            labels: new.labels,
            reporter: new.reporter,
            created: now.clone(),
            updated: now,
            comments: Vec::new(),
        });
        key
    }

    /// Adds a comment by `author` whose body is the ADF `document`.
    pub fn seed_comment(&self, key: &str, author: &str, document: Value) {
        let mut state = self.state();
        state.next_comment_id += 1;
        let id = state.next_comment_id.to_string();
        let issue = state
            .issue_mut(key)
            .unwrap_or_else(|| panic!("no issue {key}"));
        issue.comments.push(Comment {
            id,
            author: author.to_owned(),
            text: document_text(&document),
            body: document,
            internal: false,
            created: now(),
        });
    }

    /// Moves the issue to `status` as a person working it in Jira would,
    /// without a webhook: what opsgate learns of it, it reads back.
    pub fn set_status(&self, key: &str, status: &str) {
        let mut state = self.state();
        let issue = state
            .issue_mut(key)
            .unwrap_or_else(|| panic!("no issue {key}"));
        issue.status = status.to_owned();
        issue.updated = now();
    }

    /// The issue's status, or `None` when there is no such issue.
    pub fn status(&self, key: &str) -> Option<String> {
        self.state().issue(key).map(|issue| issue.status.clone())
    }

    /// The issue's comments, oldest first.
    pub fn comments(&self, key: &str) -> Vec<Comment> {
        self.state()
            .issue(key)
            .map(|issue| issue.comments.clone())
            .unwrap_or_default()
    }

    /// The text of the issue's comments, oldest first.
    pub fn comment_texts(&self, key: &str) -> Vec<String> {
        self.comments(key)
            .into_iter()
            .map(|comment| comment.text)
            .collect()
    }

    /// Every request so far, as "METHOD path?query".
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The next `requests` authenticated API requests fail as `failure` says.
    pub fn fail_next(&self, requests: u32, failure: Failure) {
        self.state().failing = Some((requests, failure));
    }

    /// While down, every request gets a 503 with a proxy's HTML page.
    pub fn down(&self, down: bool) {
        self.state().down = down;
    }

    /// Pages of comments hold at most `comments`, whatever `maxResults`
    /// asks for.
    pub fn cap_page_size(&self, comments: usize) {
        self.state().page_size_cap = Some(comments.max(1));
    }
}

/// The signature Jira sends in `X-Hub-Signature` for a webhook registered
/// with `secret`: `sha256=<hex HMAC-SHA256 of the body>`. Written here,
/// apart from the server's verifier, so that tests check the scheme rather
/// than echo the server's own code.
pub fn webhook_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl SiteState {
    /// An issue by key (ignoring case, as Jira does) or by id.
    fn issue(&self, key_or_id: &str) -> Option<&Issue> {
        self.issues
            .iter()
            .find(|issue| issue.key.eq_ignore_ascii_case(key_or_id) || issue.id == key_or_id)
    }

    fn issue_mut(&mut self, key_or_id: &str) -> Option<&mut Issue> {
        self.issues
            .iter_mut()
            .find(|issue| issue.key.eq_ignore_ascii_case(key_or_id) || issue.id == key_or_id)
    }

    fn workflow(&self, issue: &Issue) -> &Workflow {
        &self.projects[&issue.project].workflow
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some((scheme, credentials)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
        else {
            return false;
        };
        match &self.site {
            Site::Cloud { email, api_token } if scheme.eq_ignore_ascii_case("basic") => {
                crate::decode_basic(credentials)
                    .is_some_and(|(user, token)| user == *email && token == *api_token)
            }
            Site::DataCenter {
                personal_access_token,
            } if scheme.eq_ignore_ascii_case("bearer") => {
                credentials.trim() == personal_access_token
            }
            _ => false,
        }
    }
}

/// A status as issues and transitions show it.
fn render_status(status: &Status, base: &str) -> Value {
    json!({
        "self": format!("{base}/rest/api/3/status/{}", status.id),
        "description": "",
        "iconUrl": format!("{base}/images/icons/statuses/generic.png"),
        "name": status.name,
        "id": status.id,
        "statusCategory": status.category.render(base),
    })
}

impl SiteState {
    /// The issue as `GET /issue/{key}` shows it, with `wanted` fields (all
    /// when `None`).
    fn render_issue(
        &self,
        issue: &Issue,
        version: &str,
        base: &str,
        wanted: Option<&[&str]>,
    ) -> Value {
        let project = &self.projects[&issue.project];
        let status = project
            .workflow
            .status(&issue.status)
            .expect("an issue's status is in its workflow");
        let person = |name: &Option<String>| match name {
            Some(name) => json!({
                "accountId": account_id(name),
                "displayName": name,
                "active": true,
                "accountType": "atlassian",
            }),
            None => Value::Null,
        };
        let resolution = if status.category == Category::Done {
            json!({"id": "10000", "name": "Done"})
        } else {
            Value::Null
        };
        let all = [
            ("summary", json!(issue.summary)),
            ("status", render_status(status, base)),
            (
                "project",
                json!({
                    "self": format!("{base}/rest/api/{version}/project/{}", project.id),
                    "id": project.id,
                    "key": issue.project,
                    "name": project.name,
                    "projectTypeKey": "service_desk",
                }),
            ),
            (
                "issuetype",
                json!({"id": "10004", "name": issue.issue_type, "subtask": false}),
            ),
            (
                "priority",
                issue
                    .priority
                    .as_ref()
                    .map_or(Value::Null, |name| json!({"id": "2", "name": name})),
            ),
            ("labels", json!(issue.labels)),
            ("reporter", person(&issue.reporter)),
            ("resolution", resolution),
            ("created", json!(issue.created)),
            ("updated", json!(issue.updated)),
        ];
        let fields: Map<String, Value> = all
            .into_iter()
            .filter(|(name, _)| wanted.is_none_or(|wanted| wanted.contains(name)))
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        json!({
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue.id,
            "self": format!("{base}/rest/api/{version}/issue/{}", issue.id),
            "key": issue.key,
            "fields": fields,
        })
    }
}

/// Logs the call, then plays the site's state: down, unauthenticated,
/// failing.
async fn gate(State(sim): State<JiraSim>, request: Request, next: Next) -> Response {
    let refusal = {
        let mut state = sim.state();
        let uri = request.uri();
        let call = match uri.query() {
            Some(query) => format!("{} {}?{query}", request.method(), uri.path()),
            None => format!("{} {}", request.method(), uri.path()),
        };
        state.calls.push(call);
        // `/rest/api/{version}/…`: a Data Center has no v3.
        let version = uri
            .path()
            .strip_prefix("/rest/api/")
            .and_then(|rest| rest.split('/').next());
        if state.down {
            Some(unavailable_page())
        } else if version.is_some_and(|version| !state.site.serves(version)) {
            Some(dead_link_page())
        } else if !state.authenticated(request.headers()) {
            Some(not_authenticated(&state.site))
        } else {
            match state.failing {
                Some((remaining, failure)) if remaining > 0 => {
                    state.failing = Some((remaining - 1, failure));
                    Some(failed(failure))
                }
                _ => None,
            }
        }
    };
    match refusal {
        Some(response) => response,
        None => next.run(request).await,
    }
}

async fn show_issue(
    State(sim): State<JiraSim>,
    Path((version, key)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let state = sim.state();
    let Some(issue) = state.issue(&key) else {
        return no_issue();
    };
    let wanted: Option<Vec<&str>> = params
        .get("fields")
        .filter(|list| !list.is_empty() && *list != "*all")
        .map(|list| list.split(',').map(str::trim).collect());
    json_answer(
        StatusCode::OK,
        state.render_issue(issue, &version, &base_url(&headers), wanted.as_deref()),
    )
}

async fn list_comments(
    State(sim): State<JiraSim>,
    Path((version, key)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let state = sim.state();
    let Some(issue) = state.issue(&key) else {
        return no_issue();
    };
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match params.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("The '{name}' parameter must be a number, found '{text}'.")),
        }
    };
    let (start_at, max_results) = match (number("startAt", 0), number("maxResults", 5000)) {
        (Ok(start_at), Ok(max_results)) => (start_at, max_results),
        (Err(message), _) | (_, Err(message)) => {
            return envelope(StatusCode::BAD_REQUEST, &[&message], &[]);
        }
    };
    let max_results = state
        .page_size_cap
        .map_or(max_results, |cap| max_results.min(cap));
    let newest_first = match params.get("orderBy").map(String::as_str) {
        None | Some("created" | "+created") => false,
        Some("-created") => true,
        Some(other) => {
            return envelope(
                StatusCode::BAD_REQUEST,
                &[&format!(
                    "The simulator orders comments by created only, not '{other}'."
                )],
                &[],
            );
        }
    };
    let mut ordered: Vec<&Comment> = issue.comments.iter().collect();
    if newest_first {
        ordered.reverse();
    }
    let base = base_url(&headers);
    let page: Vec<Value> = ordered
        .into_iter()
        .skip(start_at)
        .take(max_results)
        .map(|comment| render_comment(issue, comment, &version, &base))
        .collect();
    json_answer(
        StatusCode::OK,
        json!({
            "startAt": start_at,
            "maxResults": max_results,
            "total": issue.comments.len(),
            "comments": page,
        }),
    )
}

async fn add_comment(
    State(sim): State<JiraSim>,
    Path((version, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = sim.state();
    if state.issue(&key).is_none() {
        return no_issue();
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return envelope(
            StatusCode::BAD_REQUEST,
            &["Unexpected character: the request body is not a JSON object."],
            &[],
        );
    };
    let document = match (version.as_str(), request.get("body")) {
        ("3", Some(document)) => {
            if document["type"] != "doc" || !document["content"].is_array() {
                return comment_refused(
                    "Operation value must be an Atlassian Document (see the Atlassian Document Format)",
                );
            }
            if !well_formed(document) {
                return envelope(StatusCode::BAD_REQUEST, &["INVALID_INPUT"], &[]);
            }
            document.clone()
        }
        ("2", Some(Value::String(text))) => text_document(text),
        _ => return comment_refused("Comment body can not be empty!"),
    };
    let text = document_text(&document);
    if text.trim().is_empty() {
        return comment_refused("Comment body can not be empty!");
    }
    if text.chars().count() > COMMENT_LIMIT {
        return comment_refused(
            "The entered text is too long. It exceeds the allowed limit of 32,767 characters.",
        );
    }
    let internal = request
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|property| {
            property["key"] == "sd.public.comment" && property["value"]["internal"] == true
        });
    state.next_comment_id += 1;
    let comment = Comment {
        id: state.next_comment_id.to_string(),
        author: INTEGRATION_USER.to_owned(),
        body: document,
        text,
        internal,
        created: now(),
    };
    let issue = state.issue_mut(&key).expect("the issue was found above");
    issue.updated = now();
    issue.comments.push(comment.clone());
    let rendered = render_comment(issue, &comment, &version, &base_url(&headers));
    json_answer(StatusCode::CREATED, rendered)
}

async fn list_transitions(
    State(sim): State<JiraSim>,
    Path((_version, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let state = sim.state();
    let Some(issue) = state.issue(&key) else {
        return no_issue();
    };
    let workflow = state.workflow(issue);
    let base = base_url(&headers);
    let transitions: Vec<Value> = available(workflow, &issue.status)
        .map(|transition| {
            let to = workflow
                .status(&transition.to)
                .expect("a transition leads to a status of its workflow");
            json!({
                "id": transition.id,
                "name": transition.name,
                "to": render_status(to, &base),
                "hasScreen": !transition.required_fields.is_empty(),
                "isGlobal": transition.from.is_empty(),
                "isInitial": false,
                "isAvailable": true,
                "isConditional": false,
                "isLooped": false,
            })
        })
        .collect();
    json_answer(
        StatusCode::OK,
        json!({"expand": "transitions", "transitions": transitions}),
    )
}

async fn do_transition(
    State(sim): State<JiraSim>,
    Path((_version, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut state = sim.state();
    let Some(issue) = state.issue(&key) else {
        return no_issue();
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = match &request["transition"]["id"] {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        Value::Null => {
            return envelope(
                StatusCode::BAD_REQUEST,
                &["Missing 'transition' identifier"],
                &[],
            );
        }
        _ => {
            return envelope(
                StatusCode::BAD_REQUEST,
                &["'transition' identifier must be an integer"],
                &[],
            );
        }
    };
    if id.parse::<u64>().is_err() {
        return envelope(
            StatusCode::BAD_REQUEST,
            &["'transition' identifier must be an integer"],
            &[],
        );
    }
    let workflow = state.workflow(issue);
    let Some(transition) = available(workflow, &issue.status).find(|found| found.id == id) else {
        return envelope(
            StatusCode::BAD_REQUEST,
            &[&format!(
                "Transition id '{id}' is not valid for this issue."
            )],
            &[],
        );
    };
    let missing: Vec<(String, String)> = transition
        .required_fields
        .iter()
        .filter(|field| request["fields"][field.as_str()].is_null())
        .map(|field| {
            (
                field.clone(),
                format!("{} is required.", capitalised(field)),
            )
        })
        .collect();
    if !missing.is_empty() {
        let errors: Vec<(&str, &str)> = missing
            .iter()
            .map(|(field, message)| (field.as_str(), message.as_str()))
            .collect();
        return envelope(StatusCode::BAD_REQUEST, &[], &errors);
    }
    let to = transition.to.clone();
    let issue = state.issue_mut(&key).expect("the issue was found above");
    issue.status = to;
    issue.updated = now();
    StatusCode::NO_CONTENT.into_response()
}

/// The transitions an issue in `status` may take: those leaving from it,
/// and the global ones that lead elsewhere.
fn available<'w>(workflow: &'w Workflow, status: &'w str) -> impl Iterator<Item = &'w Transition> {
    workflow.transitions.iter().filter(move |transition| {
        if transition.from.is_empty() {
            transition.to != status
        } else {
            transition.from.iter().any(|from| from == status)
        }
    })
}

fn render_comment(issue: &Issue, comment: &Comment, version: &str, base: &str) -> Value {
    let author = json!({
        "accountId": account_id(&comment.author),
        "displayName": comment.author,
        "active": true,
        "accountType": "atlassian",
    });
    let body = if version == "3" {
        comment.body.clone()
    } else {
        json!(comment.text.trim_end())
    };
    json!({
        "self": format!("{base}/rest/api/{version}/issue/{}/comment/{}", issue.id, comment.id),
        "id": comment.id,
        "author": author,
        "body": body,
        "updateAuthor": author,
        "created": comment.created,
        "updated": comment.created,
        "jsdPublic": !comment.internal,
    })
}

/// A stable fake account id for a display name.
fn account_id(name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("557058:{hash:016x}")
}

/// The mistakes a client makes in ADF: a node without a type, a text node
/// without text (ADF forbids empty text nodes).
fn well_formed(node: &Value) -> bool {
    match node["type"].as_str() {
        None => false,
        Some("text") => node["text"].as_str().is_some_and(|text| !text.is_empty()),
        Some(_) => node["content"]
            .as_array()
            .is_none_or(|children| children.iter().all(well_formed)),
    }
}

/// Text (a v2 body) as the ADF Jira stores: a paragraph per line.
fn text_document(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| json!({"type": "paragraph", "content": [{"type": "text", "text": line}]}))
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

/// An ADF document's text: its text nodes, a line break after each block.
fn document_text(node: &Value) -> String {
    fn walk(node: &Value, text: &mut String) {
        match node["type"].as_str() {
            Some("text") => text.push_str(node["text"].as_str().unwrap_or_default()),
            Some("hardBreak") => text.push('\n'),
            Some("mention" | "emoji") => {
                text.push_str(node["attrs"]["text"].as_str().unwrap_or_default());
            }
            _ => {
                for child in node["content"].as_array().into_iter().flatten() {
                    walk(child, text);
                }
                if node["type"] != "doc" && !text.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    let mut text = String::new();
    walk(node, &mut text);
    text
}

fn capitalised(field: &str) -> String {
    let mut chars = field.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Jira's error envelope.
fn envelope(status: StatusCode, messages: &[&str], errors: &[(&str, &str)]) -> Response {
    let errors: Map<String, Value> = errors
        .iter()
        .map(|(field, message)| ((*field).to_owned(), json!(message)))
        .collect();
    json_answer(status, json!({"errorMessages": messages, "errors": errors}))
}

fn no_issue() -> Response {
    envelope(StatusCode::NOT_FOUND, &[NO_ISSUE], &[])
}

fn comment_refused(message: &str) -> Response {
    envelope(StatusCode::BAD_REQUEST, &[], &[("comment", message)])
}

/// What each kind of site answers a missing or wrong credential: Cloud's
/// edge a line of text, a Data Center its error envelope.
fn not_authenticated(site: &Site) -> Response {
    let mut response = match site {
        Site::Cloud { .. } => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Body::from(
                "Client must be authenticated to access this resource.",
            ))
            .expect("a static response builds"),
        Site::DataCenter { .. } => envelope(
            StatusCode::UNAUTHORIZED,
            &["You are not authenticated. Authentication required to perform this operation."],
            &[],
        ),
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"protected-area\""),
    );
    response
}

fn failed(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            let reset = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(retry_after_secs as i64))
                .expect("a reset within range")
                .strftime("%Y-%m-%dT%H:%MZ")
                .to_string();
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, retry_after_secs)
                .header("X-RateLimit-Limit", 100)
                .header("X-RateLimit-Remaining", 0)
                .header("X-RateLimit-Reset", reset)
                .header("RateLimit-Reason", "jira-burst-based")
                .body(Body::empty())
                .expect("a rate-limit response builds")
        }
        Failure::Unavailable { retry_after_secs } => {
            let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
            if let Some(seconds) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

fn unavailable_page() -> Response {
    let page = "<html><head><title>503 Service Unavailable</title></head><body>\
                <h1>Service Unavailable</h1><p>The server is temporarily unable to \
                service your request. Please try again later.</p></body></html>";
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "text/html;charset=UTF-8")
        .body(Body::from(page))
        .expect("a static response builds")
}

/// Jira's page for a path it does not serve.
fn dead_link_page() -> Response {
    let page = "<html><head><title>Oops, you've found a dead link. - Jira</title></head>\
                <body><h1>Oops, you've found a dead link.</h1></body></html>";
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/html;charset=UTF-8")
        .body(Body::from(page))
        .expect("a static response builds")
}

async fn dead_link() -> Response {
    dead_link_page()
}

/// Dates as Jira shows them: `2026-11-20T10:00:00.000+0000`.
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%3f+0000")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_project_numbers_its_own_transitions() {
        let ids = |workflow: Workflow| -> Vec<(String, String)> {
            workflow
                .transitions
                .into_iter()
                .map(|transition| (transition.name, transition.id))
                .collect()
        };
        let ops = ids(Workflow::incident(11));
        let itsm = ids(Workflow::incident(711));
        assert_eq!(ops[3], ("Resolve".to_owned(), "41".to_owned()));
        assert_eq!(itsm[3], ("Resolve".to_owned(), "741".to_owned()));
    }

    #[test]
    fn global_transitions_are_available_everywhere_but_their_target() {
        let mut workflow = Workflow::incident(11);
        workflow.transitions.push(Transition {
            id: "900".into(),
            name: "Cancel".into(),
            from: Vec::new(),
            to: "Closed".into(),
            required_fields: Vec::new(),
        });
        let names = |status: &str| -> Vec<String> {
            available(&workflow, status)
                .map(|transition| transition.name.clone())
                .collect()
        };
        assert_eq!(names("Open"), ["Start work", "Resolve", "Cancel"]);
        assert_eq!(names("Closed"), ["Reopen"]);
    }

    #[test]
    fn webhook_signatures_are_hmac_sha256_of_the_body() {
        // The example GitHub publishes for the same scheme, checked with
        // `openssl dgst -sha256 -hmac`.
        assert_eq!(
            webhook_signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn document_text_and_checks() {
        let document = json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [
                {"type": "text", "text": "Restarted "},
                {"type": "text", "text": "vpnagent", "marks": [{"type": "code"}]},
            ]},
            {"type": "paragraph", "content": [{"type": "text", "text": "tunnel up"}]},
        ]});
        assert_eq!(document_text(&document), "Restarted vpnagent\ntunnel up\n");
        assert!(well_formed(&document));
        assert!(!well_formed(&json!({"type": "doc", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": ""}]},
        ]})));
        assert_eq!(document_text(&text_document("a\n\nb")), "a\nb\n");
    }
}
