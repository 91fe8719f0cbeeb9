//! `jenkins.build`: starts a parameterized Jenkins job and waits for its
//! build to end.
//!
//! The request is `{base_url, job, parameters, credential, poll_every_ms}`;
//! `job` is the job's full name, folders separated by `/` (`team/deploy` is
//! `/job/team/job/deploy`). The steps are Jenkins' remote access API:
//!
//! 1. `GET /crumbIssuer/api/json` → `{"crumbRequestField", "crumb"}`, the
//!    CSRF token; 404 means CSRF protection is off. Jenkins binds a crumb to
//!    the web session it was issued in, so the session cookie it sets is
//!    kept by hand for the rest of the call (one call, one session: a jar
//!    shared by concurrent calls would let one call's session replace
//!    another's).
//! 2. `POST /job/{job}/buildWithParameters`, the parameters form-encoded,
//!    the crumb in its header → 201 with `Location: …/queue/item/{n}/`. A 403
//!    "No valid crumb was included in the request" (the session expired in
//!    between) gets a new session and crumb, and the POST is repeated once.
//! 3. `GET /queue/item/{n}/api/json` until it has `executable: {number,
//!    url}`, or `cancelled: true` (nothing ran).
//! 4. `GET /job/{job}/{number}/api/json` until `building: false`: `result`
//!    SUCCESS succeeds; FAILURE, UNSTABLE, ABORTED and NOT_BUILT fail, naming
//!    the result and the build's URL.
//!
//! Only the queue item's number is read from `Location`: Jenkins writes it
//! on its configured root URL, which need not be the address opsgate
//! reaches it at, and the credential is only ever sent to `base_url`.
//!
//! As for AWX ([`crate::awx`]), a refusal before the build is queued is an
//! ordinary failure whose cause is the status; after it, trouble reading the
//! queue or the build is waited out (no connection, 429, 5xx) or makes the
//! outcome unknown (401, 403, 404), and so does the step's timeout, from the
//! moment the build is asked for: a retry would queue a second build.

use std::time::{Duration, Instant};

use domain::{ActionShape, AttemptOutcome, FailureCause, Key, Kind, Refusal};
use reqwest::header::{ACCEPT, COOKIE, HeaderName, HeaderValue, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::credentials::{Credentials, Ready};
use crate::http::{base_url, one_line, retry_after_ms, transport_failure, with_path};
use crate::poll::{Follow, Reply, poll_every};
use crate::text::truncate;
use crate::{Attempt, Launched, failed};

/// What `jenkins.build` takes in a runbook's `with:`.
pub(crate) const SHAPE: ActionShape = ActionShape {
    name: "jenkins.build",
    keys: &[
        Key::required("base_url", Kind::BaseUrl),
        Key::required("job", Kind::PathOfNames(job)),
        Key::optional("parameters", Kind::Map),
        Key::required("credential", Kind::Credential),
        Key::optional(
            "poll_every",
            Kind::Duration {
                into: "poll_every_ms",
            },
        ),
    ],
    exclusive: &[],
    default: None,
    address: Some("base_url"),
};

/// A job written out: its full name, folders and job separated by `/`.
fn job(job: &str) -> Result<(), Refusal> {
    if job.split('/').all(|name| !name.trim().is_empty()) {
        return Ok(());
    }
    Err(Refusal::new(
        format!("`{job}` is not a job's full name"),
        "give the job's name, with its folders separated by `/` (`team/deploy`), without a leading or trailing `/`",
    ))
}

/// What Jenkins' CSRF filter answers a POST without a valid crumb.
const NO_VALID_CRUMB: &str = "No valid crumb was included in the request";

/// Runs one `jenkins.build` call.
pub(crate) async fn run(
    http: &reqwest::Client,
    credentials: &Credentials,
    request: &Value,
    launched: &Launched,
) -> AttemptOutcome {
    let build = match Build::read(request) {
        Ok(build) => build,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let credential = match credentials
        .required(request, "jenkins.build")
        .and_then(|credential| credential.allows(&build.base).map(|()| credential))
    {
        Ok(credential) => credential,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let mut jenkins = Jenkins {
        http: credential.client(http),
        credential,
        base: build.base.clone(),
        crumb: None,
        cookies: Vec::new(),
    };
    match jenkins.build_and_wait(&build, launched).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// The request, checked.
struct Build {
    base: Url,
    /// The job's full name, `team/deploy`.
    job: String,
    /// Its path below `base_url`: `job/team/job/deploy`.
    job_path: Vec<String>,
    parameters: Vec<(String, String)>,
    poll_every: Duration,
}

impl Build {
    fn read(request: &Value) -> Result<Build, String> {
        let text = |key: &str| match &request[key] {
            Value::String(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Value::Null => Err(format!("the request has no `{key}`")),
            other => Err(format!("`{key}` must be a non-empty string, not {other}")),
        };
        let base =
            base_url(&text("base_url")?).map_err(|reason| format!("`base_url`: {reason}"))?;
        let job = text("job")?;
        let names: Vec<&str> = job.split('/').map(str::trim).collect();
        if names.iter().any(|name| name.is_empty()) {
            return Err(format!(
                "`job` `{job}` is not a job's full name (folders and job separated by single `/`)"
            ));
        }
        let job_path = names
            .iter()
            .flat_map(|name| ["job".to_owned(), (*name).to_owned()])
            .collect();
        let parameters = match &request["parameters"] {
            Value::Null => Vec::new(),
            Value::Object(parameters) => parameters
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        Value::String(text) => text.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (name.clone(), value)
                })
                .collect(),
            other => return Err(format!("`parameters` must be a map, not {other}")),
        };
        Ok(Build {
            base,
            job: names.join("/"),
            job_path,
            parameters,
            poll_every: poll_every(request)?,
        })
    }
}

/// A Jenkins instance, as one credential in one web session sees it.
struct Jenkins<'a> {
    http: &'a reqwest::Client,
    credential: &'a Ready,
    base: Url,
    /// The crumb header, when CSRF protection is on.
    crumb: Option<(HeaderName, HeaderValue)>,
    /// The session's cookies, name and value.
    cookies: Vec<(String, String)>,
}

/// A Jenkins answer.
struct Answer {
    /// `POST /job/deploy/buildWithParameters`, for messages.
    what: String,
    status: StatusCode,
    retry_after_ms: Option<u64>,
    location: Option<String>,
    body: Value,
    text: String,
}

impl Answer {
    /// What Jenkins says about a refusal: the title of its error page
    /// (`Error 401 Invalid password/token for user: bob`) without the
    /// status, or the start of the body.
    fn says(&self) -> String {
        let title = self
            .text
            .split_once("<title>")
            .and_then(|(_, rest)| rest.split_once("</title>"))
            .map(|(title, _)| title.trim());
        let said = match title {
            Some(title) => {
                let status = format!("Error {} ", self.status.as_u16());
                title.strip_prefix(&status).unwrap_or(title).to_owned()
            }
            None => self.text.clone(),
        };
        truncate(&one_line(Some(&said)), 300)
    }

    fn failure(&self, message: String) -> AttemptOutcome {
        AttemptOutcome::Failed {
            cause: FailureCause::Status(self.status.as_u16()),
            error: message,
            response: Some(json!({"status": self.status.as_u16(), "message": self.says()})),
            retry_after_ms: self.retry_after_ms,
        }
    }

    fn refused(&self) -> AttemptOutcome {
        self.failure(format!(
            "{} answered {}: {}",
            self.what,
            self.status,
            self.says()
        ))
    }
}

impl Reply for Answer {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }

    fn what(&self) -> &str {
        &self.what
    }
}

impl Jenkins<'_> {
    fn url(&self, segments: &[&str]) -> Url {
        with_path(&self.base, segments)
    }

    fn job_url(&self, build: &Build, below: &[&str]) -> Url {
        let mut segments: Vec<&str> = build.job_path.iter().map(String::as_str).collect();
        segments.extend(below);
        self.url(&segments)
    }

    async fn send(
        &mut self,
        method: Method,
        url: Url,
        form: Option<&[(String, String)]>,
    ) -> Attempt<Answer> {
        let what = format!("Jenkins {method} {}", url.path());
        let mut request = self
            .credential
            .sign(self.http.request(method.clone(), url))
            .header(ACCEPT, "application/json");
        if !self.cookies.is_empty() {
            let cookies = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header(COOKIE, cookies);
        }
        if method == Method::POST
            && let Some((name, value)) = &self.crumb
        {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request
            .send()
            .await
            .map_err(|error| transport_failure(&what, error))?;
        for set_cookie in response.headers().get_all(SET_COOKIE) {
            self.keep_cookie(set_cookie);
        }
        let status = response.status();
        let retry_after_ms = retry_after_ms(&response);
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|error| transport_failure(&what, error))?;
        let text = self.credential.scrub(&text);
        Ok(Answer {
            what,
            status,
            retry_after_ms,
            location,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        })
    }

    /// Keeps the `name=value` of a `Set-Cookie`, replacing an older value.
    fn keep_cookie(&mut self, set_cookie: &HeaderValue) {
        let Ok(text) = set_cookie.to_str() else {
            return;
        };
        let pair = text.split(';').next().unwrap_or_default();
        let Some((name, value)) = pair.split_once('=') else {
            return;
        };
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        self.cookies.retain(|(kept, _)| *kept != name);
        self.cookies.push((name, value));
    }

    /// Starts a new session and gets its crumb; none when CSRF protection
    /// is off.
    async fn fetch_crumb(&mut self) -> Attempt<()> {
        self.cookies.clear();
        self.crumb = None;
        let url = self.url(&["crumbIssuer", "api", "json"]);
        let answer = self.send(Method::GET, url, None).await?;
        match answer.status {
            StatusCode::OK => {
                let field = answer.body["crumbRequestField"].as_str();
                let crumb = answer.body["crumb"].as_str();
                let header = field
                    .and_then(|field| HeaderName::from_bytes(field.as_bytes()).ok())
                    .zip(crumb.and_then(|crumb| HeaderValue::from_str(crumb).ok()));
                let Some(header) = header else {
                    return Err(failed(
                        FailureCause::Other,
                        format!(
                            "{}: malformed answer: no `crumbRequestField` and `crumb`",
                            answer.what
                        ),
                    ));
                };
                self.crumb = Some(header);
                Ok(())
            }
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(answer.refused()),
        }
    }

    async fn build_and_wait(
        &mut self,
        build: &Build,
        launched: &Launched,
    ) -> Attempt<AttemptOutcome> {
        self.fetch_crumb().await?;
        let url = self.job_url(build, &["buildWithParameters"]);
        // Once sent, the POST may queue a build even if its answer never
        // comes.
        launched.record(format!(
            "the answer to the build request of `{}` (a build may have been queued)",
            build.job
        ));
        let mut answer = self
            .send(Method::POST, url.clone(), Some(&build.parameters))
            .await?;
        if answer.status == StatusCode::FORBIDDEN && answer.text.contains(NO_VALID_CRUMB) {
            tracing::info!(job = %build.job, "Jenkins refused the crumb; starting a new session");
            self.fetch_crumb().await?;
            answer = self
                .send(Method::POST, url, Some(&build.parameters))
                .await?;
        }
        match answer.status {
            StatusCode::CREATED => {}
            StatusCode::NOT_FOUND => {
                return Err(answer.failure(format!(
                    "Jenkins at {} has no job `{}` that credential `{}` can see ({} answered {})",
                    self.base,
                    build.job,
                    self.credential.name(),
                    answer.what,
                    answer.status
                )));
            }
            _ => return Err(answer.refused()),
        }
        let location = answer.location.clone().unwrap_or_default();
        let Some(item) = queue_item(&self.base, &location) else {
            return Err(AttemptOutcome::Unknown {
                reason: format!(
                    "{} queued a build of `{}`, but its Location `{location}` names no queue item to follow; the build may run",
                    answer.what, build.job
                ),
            });
        };
        launched.record(format!("Jenkins queue item {item} (job `{}`)", build.job));
        let started = Instant::now();
        let (number, build_url) = self.wait_for_executable(build, item, launched).await?;
        self.wait_for_result(build, item, number, &build_url, launched, started)
            .await
    }

    /// Reads `url` after `poll_every`, again while Jenkins cannot answer
    /// (`poll.rs`): the body of a success. A refusal makes the outcome
    /// unknown, since `running` (what was started) goes on.
    async fn next_reading(
        &mut self,
        url: &Url,
        poll_every: Duration,
        running: &str,
        launched: &Launched,
    ) -> Attempt<Value> {
        let mut follow = Follow::new(
            poll_every,
            launched,
            |trouble: &str| format!("{running}; its last poll failed: {trouble}"),
            |answer: &Answer| {
                format!(
                    "{running} cannot be followed: {} answered {}: {}; it may still run",
                    answer.what,
                    answer.status,
                    answer.says()
                )
            },
        );
        loop {
            follow.due().await;
            let reading = self.send(Method::GET, url.clone(), None).await;
            if let Some(answer) = follow.judge(reading)? {
                return Ok(answer.body);
            }
        }
    }

    /// Polls the queue item until it became a build: its number and URL.
    async fn wait_for_executable(
        &mut self,
        build: &Build,
        item: u64,
        launched: &Launched,
    ) -> Attempt<(u64, String)> {
        let url = self.url(&["queue", "item", &item.to_string(), "api", "json"]);
        let running = format!("Jenkins queue item {item} (job `{}`)", build.job);
        loop {
            let body = self
                .next_reading(&url, build.poll_every, &running, launched)
                .await?;
            if body["cancelled"] == json!(true) {
                return Err(AttemptOutcome::Failed {
                    cause: FailureCause::Other,
                    error: format!(
                        "Jenkins queue item {item} of job `{}` was cancelled before it started: no build ran",
                        build.job
                    ),
                    response: Some(
                        json!({"job": build.job, "queue_item": item, "cancelled": true}),
                    ),
                    retry_after_ms: None,
                });
            }
            if let Some(number) = body["executable"]["number"].as_u64() {
                let build_url = match body["executable"]["url"].as_str() {
                    Some(url) => url.to_owned(),
                    None => self.job_url(build, &[&number.to_string(), ""]).to_string(),
                };
                return Ok((number, build_url));
            }
            let why = one_line(body["why"].as_str());
            launched.record(format!("{running}, waiting: {why}"));
        }
    }

    /// Polls the build until it is over.
    async fn wait_for_result(
        &mut self,
        build: &Build,
        item: u64,
        number: u64,
        build_url: &str,
        launched: &Launched,
        started: Instant,
    ) -> Attempt<AttemptOutcome> {
        let url = self.job_url(build, &[&number.to_string(), "api", "json"]);
        let running = format!("Jenkins build `{}` #{number} ({build_url})", build.job);
        launched.record(running.clone());
        loop {
            let body = self
                .next_reading(&url, build.poll_every, &running, launched)
                .await?;
            let result = body["result"]
                .as_str()
                .filter(|_| body["building"] == json!(false));
            let Some(result) = result else {
                launched.record(running.clone());
                continue;
            };
            let url = body["url"].as_str().unwrap_or(build_url);
            let response = json!({
                "job": build.job,
                "number": number,
                "url": url,
                "result": result,
                "duration_ms": body["duration"],
                "queue_item": item,
                "waited_ms": started.elapsed().as_millis() as u64,
            });
            if result == "SUCCESS" {
                return Ok(AttemptOutcome::Succeeded { response });
            }
            return Ok(AttemptOutcome::Failed {
                // The build ran and ended badly: trying again is a
                // person's call.
                cause: FailureCause::Other,
                error: format!(
                    "Jenkins build `{}` #{number} ended {result}: {url}",
                    build.job
                ),
                response: Some(response),
                retry_after_ms: None,
            });
        }
    }
}

/// The number of the queue item a `Location` names
/// (`https://ci.example.com/queue/item/42/`), whatever its host.
fn queue_item(base: &Url, location: &str) -> Option<u64> {
    let url = base.join(location).ok()?;
    let segments: Vec<&str> = url
        .path_segments()?
        .filter(|segment| !segment.is_empty())
        .collect();
    match segments.as_slice() {
        [.., "queue", "item", number] => number.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_in_folders_become_nested_paths() {
        let build = Build::read(&json!({
            "base_url": "https://ci.example.com/jenkins",
            "job": "platform/deploy web",
            "parameters": {"TICKET": "INC0012345", "DRY_RUN": false, "COUNT": 3},
        }))
        .expect("a valid request");
        assert_eq!(build.job, "platform/deploy web");
        let mut segments: Vec<&str> = build.job_path.iter().map(String::as_str).collect();
        segments.push("buildWithParameters");
        assert_eq!(
            with_path(&build.base, &segments).as_str(),
            "https://ci.example.com/jenkins/job/platform/job/deploy%20web/buildWithParameters"
        );
        assert_eq!(
            build.parameters,
            [
                ("COUNT".to_owned(), "3".to_owned()),
                ("DRY_RUN".to_owned(), "false".to_owned()),
                ("TICKET".to_owned(), "INC0012345".to_owned()),
            ]
        );
    }

    #[test]
    fn bad_requests_are_refused_before_anything_is_sent() {
        let check = |request: Value, expect: &str| {
            let error = Build::read(&request).err().expect("refused");
            assert_eq!(error, expect, "{request}");
        };
        let base = "https://ci.example.com";
        check(
            json!({"base_url": base, "job": "team//deploy"}),
            "`job` `team//deploy` is not a job's full name (folders and job separated by single `/`)",
        );
        check(
            json!({"base_url": base, "job": "/deploy"}),
            "`job` `/deploy` is not a job's full name (folders and job separated by single `/`)",
        );
        check(
            json!({"base_url": base, "job": "deploy", "parameters": "A=1"}),
            "`parameters` must be a map, not \"A=1\"",
        );
        check(json!({"base_url": base}), "the request has no `job`");
    }

    #[test]
    fn only_the_queue_items_number_is_read_from_the_location() {
        let base = Url::parse("http://10.0.0.5:8080/").unwrap();
        let check = |location: &str, expect: Option<u64>| {
            assert_eq!(queue_item(&base, location), expect, "{location}");
        };
        check("https://ci.example.com/queue/item/42/", Some(42));
        check("http://10.0.0.5:8080/jenkins/queue/item/7", Some(7));
        check("/queue/item/9/", Some(9));
        check("https://ci.example.com/job/deploy/", None);
        check("", None);
    }
}
