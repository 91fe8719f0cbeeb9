//! `awx.job_template` against the simulated AWX: a job followed to its end,
//! the variables a template would drop, each refusal's classification, and
//! a launched job never reported as something a retry may repeat.

use std::collections::BTreeMap;

use connectors::{Auth, Config, Connectors, Credential, Secret};
use domain::{AttemptOutcome, FailureCause, PlannedCall, RetryOn};
use serde_json::{Value, json};
use test_support::Running;
use test_support::awx_sim::{Access, AwxSim, Ending, Template};

/// What a retry policy without `retry_on` retries on.
const DEFAULT_RETRY_ON: &[RetryOn] = &[
    RetryOn::Connect,
    RetryOn::Timeout,
    RetryOn::Status(429),
    RetryOn::Status(502),
    RetryOn::Status(503),
    RetryOn::Status(504),
];

const TOKEN: &str = "Xq7tVbN2pW9kLm4sRz8yHc3d";
const PASSWORD: &str = "correct horse battery staple";

struct Awx {
    sim: AwxSim,
    server: Running,
    connectors: Connectors,
}

/// An AWX with a token (`awx`), a Basic user (`awx-basic`), a read-only
/// token (`awx-read-only`); credential `awx-wrong` has a token AWX does not
/// know, `awx-wrong-password` a wrong password.
async fn awx() -> Awx {
    let sim = AwxSim::default();
    sim.add_token(TOKEN, Access::Execute);
    sim.add_token("read-only-token", Access::ReadOnly);
    sim.add_user("opsgate", PASSWORD, Access::Execute);
    let server = sim.start().await.expect("the simulator starts");
    let bearer = |token: &str| Credential {
        auth: Some(Auth::Bearer {
            token: Secret::new(token),
        }),
        tls: None,
        hosts: Vec::new(),
    };
    let basic = |password: &str| Credential {
        auth: Some(Auth::Basic {
            username: "opsgate".into(),
            password: Secret::new(password),
        }),
        tls: None,
        hosts: Vec::new(),
    };
    let credentials = BTreeMap::from([
        ("awx".to_owned(), bearer(TOKEN)),
        ("awx-read-only".to_owned(), bearer("read-only-token")),
        ("awx-wrong".to_owned(), bearer("not-a-token-awx-knows")),
        ("awx-basic".to_owned(), basic(PASSWORD)),
        ("awx-wrong-password".to_owned(), basic("hunter2")),
    ]);
    let connectors = Connectors::new(Config {
        credentials,
        ..Config::default()
    })
    .expect("connectors");
    Awx {
        sim,
        server,
        connectors,
    }
}

impl Awx {
    /// Launches `template` with `extra_vars` as `credential`, polling every
    /// 10ms, within `timeout_ms`.
    async fn launch(
        &self,
        template: u64,
        extra_vars: Value,
        credential: &str,
        timeout_ms: u64,
    ) -> AttemptOutcome {
        let outcome = call(
            &self.connectors,
            json!({
                "base_url": self.server.url,
                "template_id": template,
                "extra_vars": extra_vars,
                "credential": credential,
                "poll_every_ms": 10,
            }),
            timeout_ms,
        )
        .await;
        assert_no_secret_in(&outcome);
        outcome
    }

    fn job_reads(&self) -> usize {
        self.sim
            .calls()
            .iter()
            .filter(|call| call.starts_with("GET /api/v2/jobs/"))
            .count()
    }
}

async fn call(connectors: &Connectors, request: Value, timeout_ms: u64) -> AttemptOutcome {
    connectors
        .call(&PlannedCall {
            action: "awx.job_template".into(),
            request,
            timeout_ms,
        })
        .await
}

fn assert_no_secret_in(outcome: &AttemptOutcome) {
    let text = serde_json::to_string(outcome).expect("an outcome serialises");
    for secret in [TOKEN, PASSWORD, "read-only-token", "hunter2"] {
        assert!(!text.contains(secret), "a secret leaked into {text}");
    }
}

/// The cause, message and `Retry-After` of a failure; panics on anything else.
#[track_caller]
fn failure(outcome: &AttemptOutcome) -> (FailureCause, &str, Option<u64>) {
    match outcome {
        AttemptOutcome::Failed {
            cause,
            error,
            retry_after_ms,
            ..
        } => (*cause, error.as_str(), *retry_after_ms),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[track_caller]
fn unknown(outcome: &AttemptOutcome) -> &str {
    match outcome {
        AttemptOutcome::Unknown { reason } => reason,
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_successful_job_is_followed_to_its_end() {
    let awx = awx().await;
    let template = awx.sim.add_template(Template {
        running_polls: 2,
        ..Template::new("Restart service", Ending::Successful)
    });
    for credential in ["awx", "awx-basic"] {
        let outcome = awx
            .launch(
                template,
                json!({"service": "vpnagent", "ticket": "INC0012345"}),
                credential,
                10_000,
            )
            .await;
        let AttemptOutcome::Succeeded { response } = &outcome else {
            panic!("{credential}: expected a success, got {outcome:?}");
        };
        let job = awx.sim.jobs().last().cloned().expect("a job");
        assert_eq!(response["job_id"], job.id);
        assert_eq!(response["template_id"], template);
        assert_eq!(response["status"], "successful");
        assert!(response["elapsed"].is_f64(), "{response}");
        assert_eq!(
            response["url"],
            format!("{}/api/v2/jobs/{}/", awx.server.url, job.id)
        );
        assert_eq!(job.status, "successful");
        assert_eq!(
            Value::Object(job.extra_vars),
            json!({"service": "vpnagent", "ticket": "INC0012345"})
        );
    }
    let first = awx.sim.jobs()[0].id;
    assert_eq!(
        awx.sim.calls()[..5],
        [
            format!("POST /api/v2/job_templates/{template}/launch/"),
            // waiting, running, running, successful
            format!("GET /api/v2/jobs/{first}/"),
            format!("GET /api/v2/jobs/{first}/"),
            format!("GET /api/v2/jobs/{first}/"),
            format!("GET /api/v2/jobs/{first}/"),
        ]
    );
}

#[tokio::test]
async fn jobs_that_end_badly_fail_with_awx_s_explanation() {
    let awx = awx().await;
    let traceback = "Traceback (most recent call last):\n  File \"/awx/main/tasks/jobs.py\", line 604, in run\n    raise RuntimeError(msg)\nRuntimeError: Project update failed: could not clone the repository\n";
    let cases = [
        (Ending::Failed, "ended `failed`: its output is at "),
        (
            Ending::Error {
                explanation: "Previous Task Failed: {\"job_type\": \"project_update\"}".into(),
                traceback: traceback.into(),
            },
            "ended `error`: Previous Task Failed: {\"job_type\": \"project_update\"}; RuntimeError: Project update failed: could not clone the repository",
        ),
        (Ending::Canceled, "ended `canceled`"),
    ];
    for (ending, says) in cases {
        let template = awx
            .sim
            .add_template(Template::new("Patch hosts", ending.clone()));
        let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
        let (cause, error, retry_after_ms) = failure(&outcome);
        assert_eq!(cause, FailureCause::Other, "{ending:?}");
        assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
        assert_eq!(retry_after_ms, None);
        let job = awx.sim.jobs().last().cloned().expect("a job");
        assert!(
            error.starts_with(&format!(
                "AWX job {} (job template {template}) {says}",
                job.id
            )),
            "{error}"
        );
        let AttemptOutcome::Failed {
            response: Some(response),
            ..
        } = &outcome
        else {
            panic!("a failed job keeps AWX's answer")
        };
        assert_eq!(response["status"], job.status);
        if matches!(ending, Ending::Error { .. }) {
            assert_eq!(response["result_traceback"], traceback);
        }
    }
}

#[tokio::test]
async fn variables_a_template_would_drop_cancel_its_job_and_fail() {
    let awx = awx().await;
    let template = awx.sim.add_template(Template {
        ask_variables_on_launch: false,
        ..Template::new("Restart service", Ending::Successful)
    });
    let outcome = awx
        .launch(
            template,
            json!({"service": "vpnagent", "ticket": "INC0012345"}),
            "awx",
            10_000,
        )
        .await;
    let (cause, error, _) = failure(&outcome);
    let job = awx.sim.jobs()[0].clone();
    assert_eq!(cause, FailureCause::Other);
    assert_eq!(
        error,
        format!(
            "AWX job template {template} does not prompt on launch for what the step gives: it dropped extra_vars (service, ticket) and launched job {} without them; the job was cancelled (turn on \"Prompt on launch\" for them in the template)",
            job.id
        )
    );
    assert_eq!(job.status, "canceled");
    assert!(job.extra_vars.is_empty(), "AWX dropped them");
    assert_eq!(
        awx.sim.calls(),
        [
            format!("POST /api/v2/job_templates/{template}/launch/"),
            format!("POST /api/v2/jobs/{}/cancel/", job.id),
        ],
        "no poll of a job that runs without its variables"
    );

    // Without variables, nothing is dropped and the job runs.
    let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );

    // A job that cannot be cancelled may run without them: a person looks.
    awx.sim.refuse_cancels(true);
    let outcome = awx
        .launch(template, json!({"service": "vpnagent"}), "awx", 10_000)
        .await;
    let reason = unknown(&outcome);
    assert!(
        reason.contains("it dropped extra_vars (service)")
            && reason.contains("cancelling it failed (AWX POST /api/v2/jobs/")
            && reason.contains("answered 405 Method Not Allowed: Method \"POST\" not allowed.): it may be running without them"),
        "{reason}"
    );
}

#[tokio::test]
async fn refusals_of_the_launch_say_why_and_are_not_retried() {
    let awx = awx().await;
    let template = awx
        .sim
        .add_template(Template::new("Restart service", Ending::Successful));
    let cases: [(u64, &str, u16, String); 4] = [
        (
            template,
            "awx-wrong",
            401,
            format!(
                "AWX POST /api/v2/job_templates/{template}/launch/ answered 401 Unauthorized: Authentication credentials were not provided. To establish a login session, visit /api/login/."
            ),
        ),
        (
            template,
            "awx-wrong-password",
            401,
            format!(
                "AWX POST /api/v2/job_templates/{template}/launch/ answered 401 Unauthorized: Invalid username/password."
            ),
        ),
        (
            template,
            "awx-read-only",
            403,
            format!(
                "AWX POST /api/v2/job_templates/{template}/launch/ answered 403 Forbidden: You do not have permission to perform this action."
            ),
        ),
        (
            999,
            "awx",
            404,
            format!(
                "AWX at {}/ has no job template 999 that credential `awx` can see (AWX POST /api/v2/job_templates/999/launch/ answered 404 Not Found: Not found.)",
                awx.server.url
            ),
        ),
    ];
    for (template, credential, status, expect) in cases {
        let outcome = awx
            .launch(template, json!({"a": 1}), credential, 10_000)
            .await;
        let (cause, error, retry_after_ms) = failure(&outcome);
        assert_eq!(cause, FailureCause::Status(status), "{credential}");
        assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
        assert_eq!(retry_after_ms, None);
        assert_eq!(error, expect);
    }
    assert!(awx.sim.jobs().is_empty());
}

#[tokio::test]
async fn throttling_and_outages_before_the_launch_are_retryable() {
    let awx = awx().await;
    let template = awx
        .sim
        .add_template(Template::new("Restart service", Ending::Successful));
    awx.sim.throttle_next(1, 7);
    let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
    let (cause, error, retry_after_ms) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(429));
    assert!(cause.is_covered_by(DEFAULT_RETRY_ON));
    assert_eq!(retry_after_ms, Some(7_000));
    assert!(
        error.ends_with("answered 429 Too Many Requests: Request was throttled. Expected available in 7 seconds."),
        "{error}"
    );

    awx.sim.unavailable_next(1, 30);
    let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
    let (cause, error, retry_after_ms) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(503));
    assert!(cause.is_covered_by(DEFAULT_RETRY_ON));
    assert_eq!(retry_after_ms, Some(30_000));
    assert!(
        error.contains("answered 503 Service Unavailable: <html> <head><title>503 Service Temporarily Unavailable</title>"),
        "{error}"
    );
    assert!(awx.sim.jobs().is_empty(), "nothing was launched");

    // The engine's next attempt launches.
    let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn trouble_reading_a_launched_job_is_waited_out() {
    let awx = awx().await;
    let template = awx
        .sim
        .add_template(Template::new("Restart service", Ending::Successful));
    awx.sim.throttle_job_reads(2, 1);
    let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
    let AttemptOutcome::Succeeded { response } = &outcome else {
        panic!("expected a success, got {outcome:?}");
    };
    assert!(
        response["waited_ms"].as_u64().unwrap() >= 2_000,
        "each 429's Retry-After was waited: {response}"
    );
    // Two throttled reads, then waiting, running, successful.
    assert_eq!(awx.job_reads(), 5);
    assert_eq!(awx.sim.jobs().len(), 1);
}

#[tokio::test]
async fn a_launched_job_whose_status_cannot_be_read_has_an_unknown_outcome() {
    let awx = awx().await;
    let template = awx
        .sim
        .add_template(Template::new("Restart service", Ending::Successful));
    awx.sim.deny_job_reads(true);
    let outcome = awx.launch(template, json!({}), "awx", 10_000).await;
    let job = awx.sim.jobs()[0].clone();
    assert_eq!(
        unknown(&outcome),
        format!(
            "AWX job {id} (job template {template}) was launched, but its status cannot be read: AWX GET /api/v2/jobs/{id}/ answered 403 Forbidden: You do not have permission to perform this action.; it may still be running",
            id = job.id
        )
    );
}

#[tokio::test]
async fn a_timeout_while_the_job_runs_is_an_unknown_outcome_not_a_timeout() {
    let awx = awx().await;
    let template = awx.sim.add_template(Template {
        running_polls: 100_000,
        ..Template::new("Long patch run", Ending::Successful)
    });
    let outcome = awx.launch(template, json!({}), "awx", 500).await;
    let job = awx.sim.jobs()[0].clone();
    assert_eq!(job.status, "running", "the job is left running");
    assert_eq!(
        unknown(&outcome),
        format!(
            "timed out after 500ms waiting for AWX job {id} (job template {template}, last seen `running`, {url}/api/v2/jobs/{id}/): nothing was cancelled, and it may still be running; look before running the step again",
            id = job.id,
            url = awx.server.url
        )
    );

    // A launch that is sent but not answered may have started a job.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = call(
        &awx.connectors,
        json!({
            "base_url": format!("http://{}", silent.local_addr().unwrap()),
            "template_id": template,
            "credential": "awx",
        }),
        300,
    )
    .await;
    assert_eq!(
        unknown(&outcome),
        format!(
            "timed out after 300ms waiting for the answer to the launch of AWX job template {template} (a job may have started): nothing was cancelled, and it may still be running; look before running the step again"
        )
    );
}

#[tokio::test]
async fn requests_without_a_known_credential_fail_before_any_call() {
    let awx = awx().await;
    let base = awx.server.url.clone();
    let cases = [
        (
            json!({"base_url": base, "template_id": 7}),
            "`awx.job_template` needs a `credential`: the name of an entry of `credentials:` in the config file",
        ),
        (
            json!({"base_url": base, "template_id": 7, "credential": "tower"}),
            "no credential is named `tower` (`credentials:` in the config file; configured: awx, awx-basic, awx-read-only, awx-wrong, awx-wrong-password)",
        ),
        (
            json!({"base_url": base, "template_id": "seven", "credential": "awx"}),
            "`template_id` must be a job template's id (a positive whole number), not \"seven\"",
        ),
    ];
    for (request, expect) in cases {
        let outcome = call(&awx.connectors, request, 10_000).await;
        assert_eq!(failure(&outcome), (FailureCause::Other, expect, None));
    }
    assert!(awx.sim.calls().is_empty());
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let awx = awx().await;
    let debug = format!("{:?}", awx.connectors);
    for secret in [TOKEN, PASSWORD, "read-only-token", "hunter2"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("awx-basic"), "names are shown: {debug}");
}
