//! `awx.job_template`: launches an AWX job template (the automation
//! controller of Ansible Automation Platform, once Ansible Tower) and waits
//! for its job to end.
//!
//! The request is `{base_url, template_id, extra_vars, credential,
//! poll_every_ms}`. `POST /api/v2/job_templates/{id}/launch/` with
//! `{"extra_vars"}` answers 201 with the new job's id in `job`. A template
//! that does not prompt for variables launches all the same and lists what
//! it dropped in `ignored_fields`: a job running without the variables the
//! runbook gave is not the job that was approved, so it is cancelled at once
//! and the attempt fails naming them. Otherwise `GET /api/v2/jobs/{id}/`
//! every `poll_every_ms` until the status is terminal (`successful`;
//! `failed`, `error`, `canceled`). The REST API has nothing to wait on, so
//! the job is polled, with a sleep in between.
//!
//! Before the launch is accepted, a refusal is an ordinary failure whose
//! cause is the status: 429 and 503 with their `Retry-After`, 401 and 403
//! with AWX's `detail`. Once it is accepted a job exists, and no failure may
//! be one a retry policy repeats, since a retry launches a second job: a
//! status that cannot be read for good (401, 403, 404) makes the outcome
//! unknown, a passing trouble (no connection, 429, 5xx) is read again at the
//! next poll, and the step's timeout ending the wait makes the outcome
//! unknown too ([`Launched`]), as it does while the launch is unanswered.
//! The job is not cancelled then: it may still be running, and the run
//! waits for a person.

use std::time::{Duration, Instant};

use domain::{ActionShape, AttemptOutcome, FailureCause, Key, Kind};
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

use crate::credentials::{Credentials, Ready};
use crate::http::{base_url, one_line, retry_after_ms, transport_failure, with_path};
use crate::poll::{Follow, Reply, poll_every};
use crate::text::{tail, truncate};
use crate::{Attempt, Launched, failed, message};

/// What `awx.job_template` takes in a runbook's `with:`.
pub(crate) const SHAPE: ActionShape = ActionShape {
    name: "awx.job_template",
    keys: &[
        Key::required("base_url", Kind::BaseUrl),
        Key::required(
            "template_id",
            Kind::Number {
                what: "a job template's id",
                hint: "AWX names job templates by number: the id in the template's URL (`/#/templates/job_template/42`)",
            },
        ),
        Key::optional("extra_vars", Kind::Map),
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

/// How much of AWX's `job_explanation` and `result_traceback` is kept.
const EXPLANATION_LIMIT: usize = 1_000;
const TERMINAL_FAILURES: &[&str] = &["failed", "error", "canceled"];

/// Runs one `awx.job_template` call.
pub(crate) async fn run(
    http: &reqwest::Client,
    credentials: &Credentials,
    request: &Value,
    launched: &Launched,
) -> AttemptOutcome {
    let launch = match Launch::read(request) {
        Ok(launch) => launch,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let credential = match credentials
        .required(request, "awx.job_template")
        .and_then(|credential| credential.allows(&launch.base).map(|()| credential))
    {
        Ok(credential) => credential,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let awx = Awx {
        http: credential.client(http),
        credential,
        base: launch.base.clone(),
    };
    match awx.launch_and_wait(&launch, launched).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// The request, checked.
struct Launch {
    base: Url,
    template_id: u64,
    extra_vars: Map<String, Value>,
    poll_every: Duration,
}

impl Launch {
    fn read(request: &Value) -> Result<Launch, String> {
        let base = match &request["base_url"] {
            Value::String(text) => {
                base_url(text).map_err(|reason| format!("`base_url`: {reason}"))?
            }
            Value::Null => return Err("the request has no `base_url`".to_owned()),
            other => return Err(format!("`base_url` must be a string, not {other}")),
        };
        // A rendered template gives the id as text.
        let template_id = match &request["template_id"] {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse().ok(),
            Value::Null => return Err("the request has no `template_id`".to_owned()),
            _ => None,
        }
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            format!(
                "`template_id` must be a job template's id (a positive whole number), not {}",
                request["template_id"]
            )
        })?;
        let extra_vars = match &request["extra_vars"] {
            Value::Object(vars) => vars.clone(),
            Value::Null => Map::new(),
            other => return Err(format!("`extra_vars` must be a map, not {other}")),
        };
        Ok(Launch {
            base,
            template_id,
            extra_vars,
            poll_every: poll_every(request)?,
        })
    }
}

/// An AWX instance, as one credential sees it.
struct Awx<'a> {
    http: &'a reqwest::Client,
    credential: &'a Ready,
    base: Url,
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

/// An AWX answer: the status and the JSON body (`Null` when the body is not
/// JSON, as a proxy's error page), and its first words for messages.
struct Answer {
    /// `POST /api/v2/job_templates/42/launch/`, for messages.
    what: String,
    status: StatusCode,
    retry_after_ms: Option<u64>,
    body: Value,
    text: String,
}

impl Answer {
    /// What AWX says about a refusal: its `detail`, or its field errors
    /// (`extra_vars: …`), or the start of a body that is not AWX's.
    fn says(&self) -> String {
        let said = match &self.body {
            Value::Object(fields) => match fields.get("detail") {
                Some(Value::String(detail)) => detail.clone(),
                _ => fields
                    .iter()
                    .map(|(field, errors)| format!("{field}: {}", plain(errors)))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            _ => self.text.clone(),
        };
        truncate(&one_line(Some(&said)), 500)
    }

    /// The refusal as a failed attempt whose cause is the status.
    fn failure(&self, message: String) -> AttemptOutcome {
        AttemptOutcome::Failed {
            cause: FailureCause::Status(self.status.as_u16()),
            error: message,
            response: Some(json!({"status": self.status.as_u16(), "detail": self.says()})),
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// An error value as words: a string, the strings of a list, or JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

impl Awx<'_> {
    /// `{base}/api/v2/{segments}/`: AWX's paths end with a slash.
    fn url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["api", "v2"];
        all.extend(segments);
        all.push("");
        with_path(&self.base, &all)
    }

    async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> Attempt<Answer> {
        let what = format!("AWX {method} {}", url.path());
        let mut request = self
            .credential
            .sign(self.http.request(method, url))
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| transport_failure(&what, error))?;
        let status = response.status();
        let retry_after_ms = retry_after_ms(&response);
        let text = response
            .text()
            .await
            .map_err(|error| transport_failure(&what, error))?;
        let text = self.credential.scrub(&text);
        Ok(Answer {
            what,
            status,
            retry_after_ms,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        })
    }

    async fn launch_and_wait(
        &self,
        launch: &Launch,
        launched: &Launched,
    ) -> Attempt<AttemptOutcome> {
        let template_id = launch.template_id.to_string();
        let url = self.url(&["job_templates", &template_id, "launch"]);
        // Without variables, none are sent: a template that does not prompt
        // for them would list even an empty map as ignored.
        let body = if launch.extra_vars.is_empty() {
            json!({})
        } else {
            json!({"extra_vars": launch.extra_vars})
        };
        // Once sent, the launch may take effect even if its answer never
        // comes.
        launched.record(format!(
            "the answer to the launch of AWX job template {template_id} (a job may have started)"
        ));
        let answer = self.send(Method::POST, url, Some(&body)).await?;
        match answer.status {
            StatusCode::CREATED => {}
            StatusCode::NOT_FOUND => {
                return Err(answer.failure(format!(
                    "AWX at {} has no job template {template_id} that credential `{}` can see ({} answered {}: {})",
                    self.base,
                    self.credential.name(),
                    answer.what,
                    answer.status,
                    answer.says()
                )));
            }
            status => {
                return Err(answer.failure(format!(
                    "{} answered {status}: {}",
                    answer.what,
                    answer.says()
                )));
            }
        }
        let Some(job_id) = answer.body["job"].as_u64() else {
            return Err(AttemptOutcome::Unknown {
                reason: format!(
                    "{} answered 201 without the id of the job it launched; a job of template {template_id} may be running",
                    answer.what
                ),
            });
        };
        let job = Job {
            id: job_id,
            template_id: launch.template_id,
            url: self.url(&["jobs", &job_id.to_string()]),
        };
        if let Some(ignored) = answer.body["ignored_fields"]
            .as_object()
            .filter(|ignored| !ignored.is_empty())
        {
            return Err(self.cancel_for_ignored_fields(&job, ignored).await);
        }
        launched.record(job.describe("pending"));
        let started = Instant::now();
        let unreadable = |answer: &Answer| {
            format!(
                "AWX job {} (job template {}) was launched, but its status cannot be read: {} answered {}: {}; it may still be running",
                job.id,
                job.template_id,
                answer.what,
                answer.status,
                answer.says()
            )
        };
        let mut follow = Follow::new(
            launch.poll_every,
            launched,
            |trouble: &str| job.describe_trouble(trouble),
            unreadable,
        );
        loop {
            follow.due().await;
            let reading = self.send(Method::GET, job.url.clone(), None).await;
            let Some(answer) = follow.judge(reading)? else {
                continue;
            };
            let Some(job_status) = answer.body["status"].as_str() else {
                return Err(AttemptOutcome::Unknown {
                    reason: unreadable(&answer),
                });
            };
            if job_status == "successful" {
                return Ok(AttemptOutcome::Succeeded {
                    response: job.summary(&answer.body, started),
                });
            }
            if TERMINAL_FAILURES.contains(&job_status) {
                return Ok(job.failure(job_status, &answer.body, started));
            }
            // new, pending, waiting, running (or a status this client does
            // not know, which the step's timeout ends).
            launched.record(job.describe(job_status));
        }
    }

    /// The template launched a job without some of what it was given:
    /// cancel the job, and fail naming what was dropped.
    async fn cancel_for_ignored_fields(
        &self,
        job: &Job,
        ignored: &Map<String, Value>,
    ) -> AttemptOutcome {
        let dropped = ignored
            .iter()
            .map(|(field, value)| match value.as_object() {
                Some(vars) if !vars.is_empty() => {
                    let names: Vec<&str> = vars.keys().map(String::as_str).collect();
                    format!("{field} ({})", names.join(", "))
                }
                _ => field.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let fields: Vec<&String> = ignored.keys().collect();
        let problem = format!(
            "AWX job template {} does not prompt on launch for what the step gives: it dropped {dropped} and launched job {} without them",
            job.template_id, job.id
        );
        let hint = "turn on \"Prompt on launch\" for them in the template";
        let cancel = self.url(&["jobs", &job.id.to_string(), "cancel"]);
        match self.send(Method::POST, cancel, None).await {
            Ok(answer) if answer.status == StatusCode::ACCEPTED => AttemptOutcome::Failed {
                cause: FailureCause::Other,
                error: format!("{problem}; the job was cancelled ({hint})"),
                response: Some(json!({
                    "job_id": job.id,
                    "template_id": job.template_id,
                    "ignored_fields": fields,
                    "cancelled": true,
                })),
                retry_after_ms: None,
            },
            Ok(answer) => AttemptOutcome::Unknown {
                reason: format!(
                    "{problem}, and cancelling it failed ({} answered {}: {}): it may be running without them ({hint})",
                    answer.what,
                    answer.status,
                    answer.says()
                ),
            },
            Err(outcome) => AttemptOutcome::Unknown {
                reason: format!(
                    "{problem}, and cancelling it failed ({}): it may be running without them ({hint})",
                    message(&outcome)
                ),
            },
        }
    }
}

/// A launched job.
struct Job {
    id: u64,
    template_id: u64,
    url: Url,
}

impl Job {
    /// What the step leaves behind if its timeout ends the wait.
    fn describe(&self, status: &str) -> String {
        format!(
            "AWX job {} (job template {}, last seen `{status}`, {})",
            self.id, self.template_id, self.url
        )
    }

    fn describe_trouble(&self, trouble: &str) -> String {
        format!(
            "AWX job {} (job template {}, {}; its last poll failed: {trouble})",
            self.id, self.template_id, self.url
        )
    }

    fn summary(&self, body: &Value, started: Instant) -> Value {
        json!({
            "job_id": self.id,
            "template_id": self.template_id,
            "status": body["status"],
            // AWX's own count, in seconds, from the start of the run.
            "elapsed": body["elapsed"],
            "waited_ms": started.elapsed().as_millis() as u64,
            "url": self.url.as_str(),
        })
    }

    fn failure(&self, status: &str, body: &Value, started: Instant) -> AttemptOutcome {
        let explanation = one_line(body["job_explanation"].as_str());
        let traceback = body["result_traceback"].as_str().unwrap_or_default();
        // A traceback ends with what went wrong.
        let last_line = traceback
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or_default();
        let why = [explanation.as_str(), last_line]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let why = if why.is_empty() {
            format!("its output is at {}stdout/", self.url)
        } else {
            truncate(&why, EXPLANATION_LIMIT)
        };
        let mut response = self.summary(body, started);
        response["job_explanation"] = json!(truncate(&explanation, EXPLANATION_LIMIT));
        response["result_traceback"] = json!(tail(traceback, EXPLANATION_LIMIT));
        AttemptOutcome::Failed {
            // The job ran and ended badly: trying again is a person's call.
            cause: FailureCause::Other,
            error: format!(
                "AWX job {} (job template {}) ended `{status}`: {why}",
                self.id, self.template_id
            ),
            response: Some(response),
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let check = |request: Value, expect: Result<(), &str>| {
            let read = Launch::read(&request).map(drop);
            assert_eq!(read, expect.map_err(str::to_owned), "{request}");
        };
        let base = "https://awx.example.com";
        check(json!({"base_url": base, "template_id": 42}), Ok(()));
        check(json!({"base_url": base, "template_id": "42"}), Ok(()));
        check(
            json!({"base_url": base, "template_id": 42, "extra_vars": {"a": 1}, "poll_every_ms": 250}),
            Ok(()),
        );
        check(
            json!({"base_url": base, "template_id": "forty-two"}),
            Err(
                "`template_id` must be a job template's id (a positive whole number), not \"forty-two\"",
            ),
        );
        check(
            json!({"base_url": base, "template_id": 0}),
            Err("`template_id` must be a job template's id (a positive whole number), not 0"),
        );
        check(
            json!({"base_url": base, "template_id": 1, "extra_vars": ["a"]}),
            Err("`extra_vars` must be a map, not [\"a\"]"),
        );
        check(
            json!({"base_url": base, "template_id": 1, "poll_every_ms": 0}),
            Err("`poll_every_ms` must be a positive number, not 0"),
        );
        check(
            json!({"template_id": 1}),
            Err("the request has no `base_url`"),
        );
        check(
            json!({"base_url": "https://admin:pw@awx.example.com", "template_id": 1}),
            Err("`base_url`: it carries credentials; give them in the auth settings instead"),
        );
    }
}
