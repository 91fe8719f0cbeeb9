//! A local AWX (the automation controller's REST API, `/api/v2`) for the
//! `awx.job_template` connector's contract tests.
//!
//! It answers as AWX does:
//!
//! - `POST /api/v2/job_templates/{id}/launch/ {"extra_vars"}` → 201 with the
//!   job (`job`, `id`, `status: pending`, …), `ignored_fields` and a
//!   `Location`. A template without `ask_variables_on_launch` launches all
//!   the same and moves the variables it was given into
//!   `ignored_fields: {"extra_vars": {…}}`, as AWX does.
//! - `GET /api/v2/jobs/{id}/` → the job. Each read moves it on one state:
//!   `pending` → `waiting` → `running` (as many reads as the template says)
//!   → the template's ending (`successful`, `failed`, `error` with a
//!   traceback, `canceled`).
//! - `POST /api/v2/jobs/{id}/cancel/` → 202, or 405 once the job has ended
//!   ([`AwxSim::refuse_cancels`] plays that).
//! - Refusals in AWX's shape, `{"detail": "…"}`: 401 without valid
//!   credentials (bearer tokens and Basic users are both accepted), 403 for
//!   a read-only user who launches or cancels, 404 `Not found.`, 429
//!   `Request was throttled.` with `Retry-After` ([`AwxSim::throttle_next`],
//!   [`AwxSim::throttle_job_reads`]); and a proxy's 503 page, as during an
//!   upgrade ([`AwxSim::unavailable_next`]). [`AwxSim::deny_job_reads`]
//!   withdraws access to jobs already launched.
//!
//! [`AwxSim::calls`] logs every request as `METHOD /path`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

/// What a user or token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Launch and cancel jobs, read them.
    Execute,
    /// Read only: launching or cancelling gets a 403.
    ReadOnly,
}

/// How a template's jobs end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Successful,
    /// The playbook failed (a task failed, a host was unreachable).
    Failed,
    /// AWX could not run the job at all.
    Error {
        explanation: String,
        traceback: String,
    },
    /// Somebody cancelled it in AWX.
    Canceled,
}

impl Ending {
    fn status(&self) -> &'static str {
        match self {
            Ending::Successful => "successful",
            Ending::Failed => "failed",
            Ending::Error { .. } => "error",
            Ending::Canceled => "canceled",
        }
    }
}

/// A job template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    /// "Prompt on launch" for variables: without it, launch-time variables
    /// are dropped into `ignored_fields`.
    pub ask_variables_on_launch: bool,
    pub ending: Ending,
    /// How many reads a job answers `running` before it ends.
    pub running_polls: u32,
}

impl Template {
    /// A template that prompts for variables, whose jobs run for one read
    /// and end `ending`.
    pub fn new(name: &str, ending: Ending) -> Template {
        Template {
            name: name.to_owned(),
            ask_variables_on_launch: true,
            ending,
            running_polls: 1,
        }
    }
}

/// A job as the simulator holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: u64,
    pub template_id: u64,
    /// The variables the job runs with (not those it dropped).
    pub extra_vars: Map<String, Value>,
    pub status: String,
}

/// The simulated AWX, shared with its server.
#[derive(Debug, Clone, Default)]
pub struct AwxSim {
    state: Arc<Mutex<AwxState>>,
}

#[derive(Debug, Default)]
struct AwxState {
    tokens: BTreeMap<String, Access>,
    /// Username → (password, access).
    users: BTreeMap<String, (String, Access)>,
    templates: BTreeMap<u64, Template>,
    jobs: BTreeMap<u64, JobState>,
    last_template_id: u64,
    last_job_id: u64,
    refusals: Vec<Refusal>,
    refuse_cancels: bool,
    deny_job_reads: bool,
    calls: Vec<String>,
}

#[derive(Debug)]
struct JobState {
    job: Job,
    name: String,
    /// The states still to come, one per read.
    to_come: VecDeque<&'static str>,
    ending: Ending,
    launched_at: Instant,
    started: Option<String>,
    finished: Option<String>,
    elapsed: f64,
}

/// The next `remaining` requests that `scope` covers are refused.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    retry_after_secs: u64,
    remaining: u32,
    job_reads_only: bool,
}

impl JobState {
    fn is_over(&self) -> bool {
        matches!(
            self.job.status.as_str(),
            "successful" | "failed" | "error" | "canceled"
        )
    }

    /// One read: the job moves on a state.
    fn advance(&mut self) {
        if let Some(next) = self.to_come.pop_front() {
            self.enter(next);
        }
    }

    fn enter(&mut self, status: &str) {
        let now = jiff::Timestamp::now().to_string();
        if status == "running" && self.started.is_none() {
            self.started = Some(now.clone());
        }
        self.job.status = status.to_owned();
        if self.is_over() {
            self.to_come.clear();
            self.finished = Some(now);
            self.elapsed = (self.launched_at.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        }
    }

    fn json(&self) -> Value {
        let (explanation, traceback) = match (&self.ending, self.job.status.as_str()) {
            (
                Ending::Error {
                    explanation,
                    traceback,
                },
                "error",
            ) => (explanation.as_str(), traceback.as_str()),
            _ => ("", ""),
        };
        let elapsed = if self.is_over() {
            self.elapsed
        } else {
            (self.launched_at.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
        };
        json!({
            "id": self.job.id,
            "type": "job",
            "url": format!("/api/v2/jobs/{}/", self.job.id),
            "name": self.name,
            "job_template": self.job.template_id,
            "launch_type": "manual",
            "status": self.job.status,
            "failed": matches!(self.job.status.as_str(), "failed" | "error"),
            "started": self.started,
            "finished": self.finished,
            "elapsed": elapsed,
            "job_explanation": explanation,
            "result_traceback": traceback,
            "extra_vars": Value::Object(self.job.extra_vars.clone()).to_string(),
        })
    }
}

impl AwxSim {
    fn state(&self) -> std::sync::MutexGuard<'_, AwxState> {
        self.state.lock().expect("AWX simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/api/v2/job_templates/{id}/launch/", post(launch))
            .route("/api/v2/jobs/{id}/", get(read_job))
            .route("/api/v2/jobs/{id}/cancel/", post(cancel_job))
            .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not found.") })
            .layer(axum::middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }

    /// A personal access token (OAuth2, sent as `Bearer`).
    pub fn add_token(&self, token: &str, access: Access) {
        self.state().tokens.insert(token.to_owned(), access);
    }

    /// A user who signs in with Basic authentication.
    pub fn add_user(&self, username: &str, password: &str, access: Access) {
        self.state()
            .users
            .insert(username.to_owned(), (password.to_owned(), access));
    }

    /// Adds a job template and returns its id.
    pub fn add_template(&self, template: Template) -> u64 {
        let mut state = self.state();
        state.last_template_id += 1;
        let id = state.last_template_id + 6;
        state.templates.insert(id, template);
        id
    }

    /// The next `requests` API requests get 429 with `Retry-After`.
    pub fn throttle_next(&self, requests: u32, retry_after_secs: u64) {
        self.state().refusals.push(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after_secs,
            remaining: requests,
            job_reads_only: false,
        });
    }

    /// The next `requests` reads of a job get 429 with `Retry-After`.
    pub fn throttle_job_reads(&self, requests: u32, retry_after_secs: u64) {
        self.state().refusals.push(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after_secs,
            remaining: requests,
            job_reads_only: true,
        });
    }

    /// The next `requests` requests get the proxy's 503, as during an
    /// upgrade, with `Retry-After`.
    pub fn unavailable_next(&self, requests: u32, retry_after_secs: u64) {
        self.state().refusals.push(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after_secs,
            remaining: requests,
            job_reads_only: false,
        });
    }

    /// While set, cancelling gets the 405 AWX gives for a job that already
    /// ended.
    pub fn refuse_cancels(&self, refuse: bool) {
        self.state().refuse_cancels = refuse;
    }

    /// While set, reading a job gets a 403, as when the user's access to
    /// its template is withdrawn while it runs.
    pub fn deny_job_reads(&self, deny: bool) {
        self.state().deny_job_reads = deny;
    }

    /// Every job launched so far, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        self.state()
            .jobs
            .values()
            .map(|job| job.job.clone())
            .collect()
    }

    /// Every request so far, oldest first, as `METHOD /path`.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }
}

/// AWX's error shape.
fn detail(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({"detail": detail}))).into_response()
}

/// Logs the call; plays a proxy's 503, then authenticates, then throttles,
/// in the order AWX behind its web server does.
async fn gate(State(sim): State<AwxSim>, mut request: Request, next: Next) -> Response {
    let refusal = {
        let mut state = sim.state();
        let line = format!("{} {}", request.method(), request.uri().path());
        state.calls.push(line);
        let is_job_read = request.method() == axum::http::Method::GET
            && request.uri().path().starts_with("/api/v2/jobs/");
        let mut refusal = None;
        if let Some(unavailable) = state.refusals.iter_mut().find(|refusal| {
            refusal.remaining > 0 && refusal.status == StatusCode::SERVICE_UNAVAILABLE
        }) {
            unavailable.remaining -= 1;
            refusal = Some(proxy_unavailable(unavailable.retry_after_secs));
        }
        if refusal.is_none() {
            match state.authenticate(request.headers()) {
                Ok(access) => {
                    request.extensions_mut().insert(access);
                }
                Err(detail) => refusal = Some(unauthenticated(detail)),
            }
        }
        if refusal.is_none()
            && let Some(throttle) = state.refusals.iter_mut().find(|refusal| {
                refusal.remaining > 0
                    && refusal.status == StatusCode::TOO_MANY_REQUESTS
                    && (is_job_read || !refusal.job_reads_only)
            })
        {
            throttle.remaining -= 1;
            let mut response = detail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Request was throttled. Expected available in {} seconds.",
                    throttle.retry_after_secs
                ),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(throttle.retry_after_secs),
            );
            refusal = Some(response);
        }
        refusal
    };
    match refusal {
        Some(response) => response,
        None => next.run(request).await,
    }
}

fn proxy_unavailable(retry_after_secs: u64) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html")],
        "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

impl AwxState {
    /// What the caller may do, or the `detail` of AWX's 401.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Access, &'static str> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if let Some(encoded) = presented.strip_prefix("Basic ") {
            let (username, password) = crate::decode_basic(encoded).unwrap_or_default();
            return match self.users.get(&username) {
                Some((known, access)) if *known == password => Ok(*access),
                _ => Err("Invalid username/password."),
            };
        }
        if let Some(token) = presented.strip_prefix("Bearer ")
            && let Some(access) = self.tokens.get(token.trim())
        {
            return Ok(*access);
        }
        // AWX reads an unknown token as no credentials at all.
        Err(
            "Authentication credentials were not provided. To establish a login session, visit /api/login/.",
        )
    }
}

fn unauthenticated(message: &str) -> Response {
    let mut response = detail(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=api authorization_url=/api/o/authorize/"),
    );
    response
}

fn forbidden() -> Response {
    detail(
        StatusCode::FORBIDDEN,
        "You do not have permission to perform this action.",
    )
}

async fn launch(
    State(sim): State<AwxSim>,
    Path(template_id): Path<String>,
    access: axum::Extension<Access>,
    body: Bytes,
) -> Response {
    let mut state = sim.state();
    let Some(template) = template_id
        .parse()
        .ok()
        .and_then(|id| state.templates.get(&id))
        .cloned()
    else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    let template_id: u64 = template_id.parse().expect("checked above");
    if *access == Access::ReadOnly {
        return forbidden();
    }
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(error) => {
                return detail(
                    StatusCode::BAD_REQUEST,
                    &format!("JSON parse error - {error}"),
                );
            }
        }
    };
    let extra_vars = match &body["extra_vars"] {
        Value::Null => Map::new(),
        Value::Object(vars) => vars.clone(),
        // AWX also takes the variables as JSON or YAML text.
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(vars)) => vars,
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"extra_vars": ["Must be a valid JSON or YAML dictionary."]})),
                )
                    .into_response();
            }
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"extra_vars": ["Must be a valid JSON or YAML dictionary."]})),
            )
                .into_response();
        }
    };
    let mut ignored_fields = Map::new();
    let extra_vars = if template.ask_variables_on_launch || extra_vars.is_empty() {
        extra_vars
    } else {
        ignored_fields.insert("extra_vars".to_owned(), Value::Object(extra_vars));
        Map::new()
    };
    state.last_job_id += 1;
    let id = state.last_job_id + 100;
    let mut to_come = VecDeque::from(["waiting"]);
    to_come.extend(std::iter::repeat_n(
        "running",
        template.running_polls.max(1) as usize,
    ));
    to_come.push_back(template.ending.status());
    let job = JobState {
        job: Job {
            id,
            template_id,
            extra_vars,
            status: "pending".to_owned(),
        },
        name: template.name.clone(),
        to_come,
        ending: template.ending.clone(),
        launched_at: Instant::now(),
        started: None,
        finished: None,
        elapsed: 0.0,
    };
    let mut answer = Map::new();
    answer.insert("job".to_owned(), json!(id));
    answer.insert("ignored_fields".to_owned(), Value::Object(ignored_fields));
    if let Value::Object(fields) = job.json() {
        answer.extend(fields);
    }
    state.jobs.insert(id, job);
    let location = format!("/api/v2/jobs/{id}/");
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Value::Object(answer)),
    )
        .into_response()
}

async fn read_job(State(sim): State<AwxSim>, Path(id): Path<String>) -> Response {
    let mut state = sim.state();
    if state.deny_job_reads {
        return forbidden();
    }
    let Some(job) = id.parse().ok().and_then(|id: u64| state.jobs.get_mut(&id)) else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    job.advance();
    Json(job.json()).into_response()
}

async fn cancel_job(
    State(sim): State<AwxSim>,
    Path(id): Path<String>,
    access: axum::Extension<Access>,
) -> Response {
    let mut state = sim.state();
    let refuse = state.refuse_cancels;
    let Some(job) = id.parse().ok().and_then(|id: u64| state.jobs.get_mut(&id)) else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    if *access == Access::ReadOnly {
        return forbidden();
    }
    if refuse || job.is_over() {
        return detail(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method \"POST\" not allowed.",
        );
    }
    job.enter("canceled");
    StatusCode::ACCEPTED.into_response()
}
