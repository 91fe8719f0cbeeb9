//! A local Jenkins (its remote access API) for the `jenkins.build`
//! connector's contract tests.
//!
//! It answers as Jenkins does:
//!
//! - `GET /crumbIssuer/api/json` → `{"_class", "crumb", "crumbRequestField":
//!   "Jenkins-Crumb"}`, the crumb bound to the web session whose
//!   `JSESSIONID.…` cookie it sets (a new session when the request carries
//!   none it knows); 404 when CSRF protection is off.
//! - `POST /job/{name}[/job/{name}…]/buildWithParameters`, the parameters in
//!   the form body or the query → 201 with `Location: {root
//!   URL}queue/item/{n}/`. Without the crumb of the session its cookie
//!   names: 403 "No valid crumb was included in the request". Parameters the
//!   job does not define are dropped, as Jenkins has done since
//!   SECURITY-170; an unknown job is a 404.
//! - `GET /queue/item/{n}/api/json` → a `Queue$WaitingItem` (`why`) for the
//!   job's queue reads, then a `Queue$LeftItem` with `executable: {number,
//!   url}` (or `cancelled: true`); 404 once forgotten
//!   ([`JenkinsSim::forget_queue`]).
//! - `GET /job/…/{number}/api/json` → the build, `building: true` for the
//!   job's build reads, then `building: false` with its `result`.
//! - Authentication is Basic with a user's API token; a wrong one is a 401
//!   ("Invalid password/token for user: …"), none at all a 403 (anonymous
//!   may read nothing). Refusals are Jetty's HTML error pages.
//!
//! Real Jenkins exempts requests authenticated with an API token from the
//! crumb check; this one asks for the crumb all the same, as Jenkins does
//! for a password or behind a proxy that strips the exemption, so that the
//! client's crumb handling is tested.
//!
//! [`JenkinsSim::root_url`] plays a Jenkins whose configured URL is not the
//! address the client uses: `Location` and build URLs then point there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The header a crumb goes in.
pub const CRUMB_FIELD: &str = "Jenkins-Crumb";
const SESSION_COOKIE: &str = "JSESSIONID.5d3c2e1f";

/// How a job's builds go.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The parameters the job defines; others are dropped.
    pub parameters: Vec<String>,
    /// `SUCCESS`, `FAILURE`, `UNSTABLE`, `ABORTED` or `NOT_BUILT`.
    pub result: String,
    /// How many reads the queue item answers "waiting" before it starts.
    pub queue_polls: u32,
    /// How many reads the build answers `building: true`.
    pub build_polls: u32,
}

impl JobSpec {
    /// A job defining `parameters` whose builds wait one read in the queue,
    /// build for one more, and end `result`.
    pub fn new(parameters: &[&str], result: &str) -> JobSpec {
        JobSpec {
            parameters: parameters.iter().map(|name| (*name).to_owned()).collect(),
            result: result.to_owned(),
            queue_polls: 1,
            build_polls: 1,
        }
    }
}

/// A build as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub job: String,
    pub number: u64,
    /// The parameters it runs with: those the job defines.
    pub parameters: BTreeMap<String, String>,
}

/// The simulated Jenkins, shared with its server.
#[derive(Debug, Clone, Default)]
pub struct JenkinsSim {
    state: Arc<Mutex<JenkinsState>>,
}

#[derive(Debug, Default)]
struct JenkinsState {
    /// Set when the server starts unless [`JenkinsSim::root_url`] set it.
    root_url: String,
    csrf_off: bool,
    /// User → API token.
    users: HashMap<String, String>,
    jobs: BTreeMap<String, JobState>,
    /// Session id → the user it belongs to.
    sessions: HashMap<String, String>,
    queue: BTreeMap<u64, QueueItem>,
    last_queue_id: u64,
    last_session: u64,
    refuse_crumbs: u32,
    cancel_queued: bool,
    forget_queue: bool,
    crumb_requests: u32,
    calls: Vec<String>,
}

#[derive(Debug)]
struct JobState {
    spec: JobSpec,
    builds: Vec<BuildState>,
}

#[derive(Debug)]
struct BuildState {
    build: Build,
    reads_left: u32,
    queue_id: u64,
    started_ms: i64,
}

#[derive(Debug)]
struct QueueItem {
    job: String,
    parameters: BTreeMap<String, String>,
    reads_left: u32,
    in_queue_since_ms: i64,
    left: Option<Left>,
}

#[derive(Debug, Clone, Copy)]
enum Left {
    Started(u64),
    Cancelled,
}

impl JenkinsSim {
    fn state(&self) -> std::sync::MutexGuard<'_, JenkinsState> {
        self.state.lock().expect("Jenkins simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        let sim = self.clone();
        axum::Router::new().fallback(move |request: Request| {
            let sim = sim.clone();
            async move { sim.answer(request).await }
        })
    }

    pub async fn start(&self) -> std::io::Result<crate::Running> {
        let running = crate::serve(self.router()).await?;
        let mut state = self.state();
        if state.root_url.is_empty() {
            state.root_url = format!("{}/", running.url);
        }
        Ok(running)
    }

    /// The URL Jenkins is configured with (Manage Jenkins → System), which
    /// `Location` headers and build URLs are written on.
    pub fn root_url(&self, url: &str) {
        self.state().root_url = format!("{}/", url.trim_end_matches('/'));
    }

    /// Turns CSRF protection off: the crumb issuer answers 404.
    pub fn csrf_off(&self) {
        self.state().csrf_off = true;
    }

    pub fn add_user(&self, user: &str, api_token: &str) {
        self.state()
            .users
            .insert(user.to_owned(), api_token.to_owned());
    }

    /// Adds a job by its full name (`team/deploy` is in folder `team`).
    pub fn add_job(&self, full_name: &str, spec: JobSpec) {
        self.state().jobs.insert(
            full_name.to_owned(),
            JobState {
                spec,
                builds: Vec::new(),
            },
        );
    }

    /// The next `posts` POSTs are refused for want of a valid crumb, and
    /// their sessions forgotten, as when the session expired between the
    /// crumb and the POST.
    pub fn refuse_next_crumbs(&self, posts: u32) {
        self.state().refuse_crumbs = posts;
    }

    /// While set, queue items are cancelled instead of starting a build.
    pub fn cancel_queued(&self, cancel: bool) {
        self.state().cancel_queued = cancel;
    }

    /// While set, queue items are forgotten (404), as Jenkins forgets an
    /// item some minutes after it left the queue.
    pub fn forget_queue(&self, forget: bool) {
        self.state().forget_queue = forget;
    }

    /// The builds of `job` so far, oldest first.
    pub fn builds(&self, job: &str) -> Vec<Build> {
        self.state()
            .jobs
            .get(job)
            .map(|job| job.builds.iter().map(|build| build.build.clone()).collect())
            .unwrap_or_default()
    }

    pub fn crumb_requests(&self) -> u32 {
        self.state().crumb_requests
    }

    /// Every request so far, oldest first, as `METHOD /path`.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    async fn answer(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let mut state = self.state();
        let path = parts.uri.path().to_owned();
        state.calls.push(format!("{} {path}", parts.method));
        let user = match state.caller(&parts.headers) {
            Caller::User(user) => user,
            // Anonymous may read nothing.
            Caller::Anonymous => {
                let mut refusal =
                    jetty_error(StatusCode::FORBIDDEN, "Authentication required", &path);
                refusal.headers_mut().insert(
                    "X-You-Are-Authenticated-As",
                    HeaderValue::from_static("anonymous"),
                );
                return refusal;
            }
            Caller::WrongToken(user) => {
                let mut refusal = jetty_error(
                    StatusCode::UNAUTHORIZED,
                    &format!("Invalid password/token for user: {user}"),
                    &path,
                );
                refusal.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Jenkins\""),
                );
                return refusal;
            }
        };
        let segments: Vec<String> = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, ["crumbIssuer", "api", "json"]) => {
                state.issue_crumb(&parts.headers, &user, &path)
            }
            (&Method::GET, ["queue", "item", id, "api", "json"]) => {
                state.read_queue_item(id, &path)
            }
            (&Method::POST, [job @ .., "buildWithParameters"]) => {
                let Some(job) = job_name(job) else {
                    return not_found(&path);
                };
                if let Some(refusal) = state.check_crumb(&parts.headers, &user, &path) {
                    return refusal;
                }
                let mut parameters: Vec<(String, String)> =
                    serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
                        .unwrap_or_default();
                parameters.extend(
                    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
                        .unwrap_or_default(),
                );
                state.queue_build(&job, parameters, &path)
            }
            (&Method::GET, [job @ .., number, "api", "json"]) => {
                match (job_name(job), number.parse::<u64>()) {
                    (Some(job), Ok(number)) => state.read_build(&job, number, &path),
                    _ => not_found(&path),
                }
            }
            _ => not_found(&path),
        }
    }
}

enum Caller {
    User(String),
    Anonymous,
    WrongToken(String),
}

/// `["job", "team", "job", "deploy"]` → `team/deploy`.
fn job_name(segments: &[&str]) -> Option<String> {
    if segments.is_empty() || !segments.len().is_multiple_of(2) {
        return None;
    }
    segments
        .chunks(2)
        .map(|pair| (pair[0] == "job").then_some(pair[1]))
        .collect::<Option<Vec<&str>>>()
        .map(|names| names.join("/"))
}

impl JenkinsState {
    /// Who a request is made as, by its Basic credentials.
    fn caller(&self, headers: &HeaderMap) -> Caller {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "));
        let Some(encoded) = presented else {
            return Caller::Anonymous;
        };
        let (user, token) = crate::decode_basic(encoded).unwrap_or_default();
        match self.users.get(&user) {
            Some(known) if *known == token => Caller::User(user),
            _ => Caller::WrongToken(user),
        }
    }

    /// The session the request's cookie names, if it is one of ours.
    fn session(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, id)| id.to_owned())
            .filter(|id| self.sessions.contains_key(id))
    }

    fn crumb(session: &str, user: &str) -> String {
        hex::encode(Sha256::digest(format!("{user};{session};salt").as_bytes()))
    }

    fn issue_crumb(&mut self, headers: &HeaderMap, user: &str, path: &str) -> Response {
        self.crumb_requests += 1;
        if self.csrf_off {
            return not_found(path);
        }
        let (session, new) = match self.session(headers) {
            Some(session) => (session, false),
            None => {
                self.last_session += 1;
                let id = format!(
                    "node0{}.node0",
                    &hex::encode(Sha256::digest(self.last_session.to_be_bytes()))[..24]
                );
                self.sessions.insert(id.clone(), user.to_owned());
                (id, true)
            }
        };
        let mut response = (
            StatusCode::OK,
            axum::Json(json!({
                "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                "crumb": JenkinsState::crumb(&session, user),
                "crumbRequestField": CRUMB_FIELD,
            })),
        )
            .into_response();
        if new {
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly"))
                    .expect("a cookie is a header value"),
            );
        }
        response
    }

    /// The 403 for a POST without its session's crumb, if it is one.
    fn check_crumb(&mut self, headers: &HeaderMap, user: &str, path: &str) -> Option<Response> {
        if self.csrf_off {
            return None;
        }
        let refusal = || {
            jetty_error(
                StatusCode::FORBIDDEN,
                "No valid crumb was included in the request",
                path,
            )
        };
        let session = self.session(headers);
        if self.refuse_crumbs > 0 {
            self.refuse_crumbs -= 1;
            if let Some(session) = session {
                self.sessions.remove(&session);
            }
            return Some(refusal());
        }
        let presented = headers
            .get(CRUMB_FIELD)
            .and_then(|value| value.to_str().ok());
        let valid = session
            .is_some_and(|session| presented == Some(JenkinsState::crumb(&session, user).as_str()));
        (!valid).then(refusal)
    }

    fn queue_build(
        &mut self,
        job: &str,
        parameters: Vec<(String, String)>,
        path: &str,
    ) -> Response {
        let Some(job_state) = self.jobs.get(job) else {
            return not_found(path);
        };
        let defined = &job_state.spec.parameters;
        let parameters: BTreeMap<String, String> = parameters
            .into_iter()
            .filter(|(name, _)| defined.contains(name))
            .collect();
        let reads_left = job_state.spec.queue_polls;
        self.last_queue_id += 1;
        let id = self.last_queue_id + 40;
        self.queue.insert(
            id,
            QueueItem {
                job: job.to_owned(),
                parameters,
                reads_left,
                in_queue_since_ms: jiff::Timestamp::now().as_millisecond(),
                left: None,
            },
        );
        let location = format!("{}queue/item/{id}/", self.root_url);
        (
            StatusCode::CREATED,
            [(
                header::LOCATION,
                HeaderValue::from_str(&location).expect("a URL is a header value"),
            )],
        )
            .into_response()
    }

    fn job_url(&self, job: &str) -> String {
        let path: Vec<String> = job
            .split('/')
            .map(|name| format!("job/{}/", percent_encode(name)))
            .collect();
        format!("{}{}", self.root_url, path.concat())
    }

    fn read_queue_item(&mut self, id: &str, path: &str) -> Response {
        let Ok(id) = id.parse::<u64>() else {
            return not_found(path);
        };
        let cancel = self.cancel_queued;
        let Some(item) = self.queue.get_mut(&id).filter(|_| !self.forget_queue) else {
            return not_found(path);
        };
        if item.left.is_none() {
            if item.reads_left > 0 {
                item.reads_left -= 1;
            } else if cancel {
                item.left = Some(Left::Cancelled);
            } else {
                let job = self.jobs.get_mut(&item.job).expect("queued jobs exist");
                let number = job.builds.len() as u64 + 1;
                job.builds.push(BuildState {
                    build: Build {
                        job: item.job.clone(),
                        number,
                        parameters: item.parameters.clone(),
                    },
                    reads_left: job.spec.build_polls,
                    queue_id: id,
                    started_ms: jiff::Timestamp::now().as_millisecond(),
                });
                item.left = Some(Left::Started(number));
            }
        }
        let item = &self.queue[&id];
        let job_url = self.job_url(&item.job);
        let task_name = item.job.rsplit('/').next().unwrap_or_default();
        let parameters: Vec<Value> = item
            .parameters
            .iter()
            .map(|(name, value)| json!({"_class": "hudson.model.StringParameterValue", "name": name, "value": value}))
            .collect();
        let mut answer = json!({
            "actions": [{"_class": "hudson.model.ParametersAction", "parameters": parameters}],
            "blocked": false,
            "buildable": false,
            "id": id,
            "inQueueSince": item.in_queue_since_ms,
            "params": item.parameters.iter().map(|(name, value)| format!("\n{name}={value}")).collect::<String>(),
            "stuck": false,
            "task": {"_class": "hudson.model.FreeStyleProject", "name": task_name, "url": job_url, "color": "blue"},
            "url": format!("queue/item/{id}/"),
            "why": null,
        });
        match item.left {
            None => {
                answer["_class"] = json!("hudson.model.Queue$WaitingItem");
                answer["why"] = json!("In the quiet period. Expires in 4.9 sec");
                answer["timestamp"] = json!(item.in_queue_since_ms + 5_000);
            }
            Some(Left::Started(number)) => {
                answer["_class"] = json!("hudson.model.Queue$LeftItem");
                answer["cancelled"] = json!(false);
                answer["executable"] = json!({
                    "_class": "hudson.model.FreeStyleBuild",
                    "number": number,
                    "url": format!("{job_url}{number}/"),
                });
            }
            Some(Left::Cancelled) => {
                answer["_class"] = json!("hudson.model.Queue$LeftItem");
                answer["cancelled"] = json!(true);
                answer["executable"] = Value::Null;
            }
        }
        axum::Json(answer).into_response()
    }

    fn read_build(&mut self, job: &str, number: u64, path: &str) -> Response {
        let job_url = self.job_url(job);
        let Some(job_state) = self.jobs.get_mut(job) else {
            return not_found(path);
        };
        let result = job_state.spec.result.clone();
        let Some(build) = job_state
            .builds
            .iter_mut()
            .find(|build| build.build.number == number)
        else {
            return not_found(path);
        };
        let building = build.reads_left > 0;
        build.reads_left = build.reads_left.saturating_sub(1);
        let parameters: Vec<Value> = build
            .build
            .parameters
            .iter()
            .map(|(name, value)| json!({"_class": "hudson.model.StringParameterValue", "name": name, "value": value}))
            .collect();
        let now = jiff::Timestamp::now().as_millisecond();
        axum::Json(json!({
            "_class": "hudson.model.FreeStyleBuild",
            "actions": [{"_class": "hudson.model.ParametersAction", "parameters": parameters}],
            "building": building,
            "displayName": format!("#{number}"),
            "duration": if building { 0 } else { now - build.started_ms },
            "estimatedDuration": 1_000,
            "fullDisplayName": format!("{} #{number}", job.replace('/', " » ")),
            "id": number.to_string(),
            "number": number,
            "queueId": build.queue_id,
            "result": if building { Value::Null } else { json!(result) },
            "timestamp": build.started_ms,
            "url": format!("{job_url}{number}/"),
        }))
        .into_response()
    }
}

fn not_found(path: &str) -> Response {
    jetty_error(StatusCode::NOT_FOUND, "Not Found", path)
}

/// Jetty's error page, which Jenkins answers refusals with.
fn jetty_error(status: StatusCode, message: &str, path: &str) -> Response {
    let code = status.as_u16();
    let page = format!(
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n\
         <title>Error {code} {message}</title>\n</head>\n<body><h2>HTTP ERROR {code} {message}</h2>\n<table>\n\
         <tr><th>URI:</th><td>{path}</td></tr>\n<tr><th>STATUS:</th><td>{code}</td></tr>\n\
         <tr><th>MESSAGE:</th><td>{message}</td></tr>\n<tr><th>SERVLET:</th><td>Stapler</td></tr>\n</table>\n\
         <hr/><a href=\"https://eclipse.org/jetty\">Powered by Jetty:// 12.0.16</a><hr/>\n\n</body>\n</html>\n"
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=iso-8859-1")],
        page,
    )
        .into_response();
    response
        .headers_mut()
        .insert("X-Jenkins", HeaderValue::from_static("2.492.3"));
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = (bytes[index] == b'%')
            .then(|| segment.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match hex {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_jobs_in_folders() {
        assert_eq!(job_name(&["job", "deploy"]).as_deref(), Some("deploy"));
        assert_eq!(
            job_name(&["job", "team", "job", "deploy"]).as_deref(),
            Some("team/deploy")
        );
        assert_eq!(job_name(&["view", "all"]), None);
        assert_eq!(job_name(&["job"]), None);
        assert_eq!(percent_decode("deploy%20web"), "deploy web");
        assert_eq!(percent_encode("deploy web"), "deploy%20web");
    }
}
