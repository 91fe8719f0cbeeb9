//! `jenkins.build` against the simulated Jenkins: crumbs bound to a
//! session, a build followed from the queue to its result, each refusal's
//! classification, and a queued build never reported as something a retry
//! may repeat.

use std::collections::BTreeMap;

use connectors::{Auth, Config, Connectors, Credential, Secret};
use domain::{AttemptOutcome, FailureCause, PlannedCall, RetryOn};
use serde_json::{Value, json};
use test_support::Running;
use test_support::jenkins_sim::{Build, JenkinsSim, JobSpec};

const DEFAULT_RETRY_ON: &[RetryOn] = &[
    RetryOn::Connect,
    RetryOn::Timeout,
    RetryOn::Status(429),
    RetryOn::Status(502),
    RetryOn::Status(503),
    RetryOn::Status(504),
];

const API_TOKEN: &str = "11a7c3e5f0b24d6c8e9a0b1c2d3e4f5a6b";

struct Jenkins {
    sim: JenkinsSim,
    server: Running,
    connectors: Connectors,
}

/// A Jenkins with user `opsgate` (credential `jenkins`) and job `deploy`
/// (parameters TICKET and SERVICE); credential `jenkins-wrong` has a token
/// Jenkins does not know. `prepare` sets the simulator up before it starts.
async fn jenkins_with(prepare: impl FnOnce(&JenkinsSim)) -> Jenkins {
    let sim = JenkinsSim::default();
    sim.add_user("opsgate", API_TOKEN);
    sim.add_job("deploy", JobSpec::new(&["TICKET", "SERVICE"], "SUCCESS"));
    prepare(&sim);
    let server = sim.start().await.expect("the simulator starts");
    let basic = |token: &str| Credential {
        auth: Some(Auth::Basic {
            username: "opsgate".into(),
            password: Secret::new(token),
        }),
        tls: None,
        hosts: Vec::new(),
    };
    let connectors = Connectors::new(Config {
        credentials: BTreeMap::from([
            ("jenkins".to_owned(), basic(API_TOKEN)),
            ("jenkins-wrong".to_owned(), basic("0000not-the-token")),
        ]),
        ..Config::default()
    })
    .expect("connectors");
    Jenkins {
        sim,
        server,
        connectors,
    }
}

async fn jenkins() -> Jenkins {
    jenkins_with(|_| {}).await
}

impl Jenkins {
    async fn build(&self, job: &str, parameters: Value, credential: &str) -> AttemptOutcome {
        self.build_within(job, parameters, credential, 10_000).await
    }

    async fn build_within(
        &self,
        job: &str,
        parameters: Value,
        credential: &str,
        timeout_ms: u64,
    ) -> AttemptOutcome {
        let outcome = self
            .connectors
            .call(&PlannedCall {
                action: "jenkins.build".into(),
                request: json!({
                    "base_url": self.server.url,
                    "job": job,
                    "parameters": parameters,
                    "credential": credential,
                    "poll_every_ms": 10,
                }),
                timeout_ms,
            })
            .await;
        let text = serde_json::to_string(&outcome).unwrap();
        assert!(!text.contains(API_TOKEN), "the token leaked into {text}");
        outcome
    }

    fn count(&self, call: &str) -> usize {
        self.sim
            .calls()
            .iter()
            .filter(|made| made.as_str() == call)
            .count()
    }
}

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

#[tokio::test]
async fn a_build_is_followed_from_the_queue_to_its_result() {
    let jenkins = jenkins_with(|sim| {
        sim.add_job(
            "deploy",
            JobSpec {
                queue_polls: 2,
                build_polls: 2,
                ..JobSpec::new(&["TICKET", "SERVICE"], "SUCCESS")
            },
        )
    })
    .await;
    let outcome = jenkins
        .build(
            "deploy",
            json!({"TICKET": "INC0012345", "SERVICE": "vpn agent & co", "COUNT": 3}),
            "jenkins",
        )
        .await;
    let AttemptOutcome::Succeeded { response } = &outcome else {
        panic!("expected a success, got {outcome:?}");
    };
    let url = &jenkins.server.url;
    assert_eq!(response["job"], "deploy");
    assert_eq!(response["number"], 1);
    assert_eq!(response["result"], "SUCCESS");
    assert_eq!(response["url"], format!("{url}/job/deploy/1/"));
    assert_eq!(response["queue_item"], 41);
    assert_eq!(
        jenkins.sim.builds("deploy"),
        [Build {
            job: "deploy".into(),
            number: 1,
            // Jenkins drops parameters the job does not define.
            parameters: BTreeMap::from([
                ("SERVICE".into(), "vpn agent & co".into()),
                ("TICKET".into(), "INC0012345".into()),
            ]),
        }]
    );
    assert_eq!(
        jenkins.sim.calls(),
        [
            "GET /crumbIssuer/api/json",
            "POST /job/deploy/buildWithParameters",
            "GET /queue/item/41/api/json",
            "GET /queue/item/41/api/json",
            "GET /queue/item/41/api/json",
            "GET /job/deploy/1/api/json",
            "GET /job/deploy/1/api/json",
            "GET /job/deploy/1/api/json",
        ]
    );
}

#[tokio::test]
async fn jobs_in_folders_are_reached_through_their_folders() {
    let jenkins =
        jenkins_with(|sim| sim.add_job("platform/web deploy", JobSpec::new(&["TAG"], "SUCCESS")))
            .await;
    let outcome = jenkins
        .build("platform/web deploy", json!({"TAG": "v1.2.3"}), "jenkins")
        .await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(jenkins.sim.builds("platform/web deploy").len(), 1);
    assert_eq!(
        jenkins.count("POST /job/platform/job/web%20deploy/buildWithParameters"),
        1
    );
}

#[tokio::test]
async fn unsuccessful_results_fail_naming_the_result_and_the_build() {
    for result in ["FAILURE", "UNSTABLE", "ABORTED", "NOT_BUILT"] {
        let jenkins =
            jenkins_with(|sim| sim.add_job("deploy", JobSpec::new(&["TICKET"], result))).await;
        let outcome = jenkins
            .build("deploy", json!({"TICKET": "INC1"}), "jenkins")
            .await;
        let (cause, error, retry_after_ms) = failure(&outcome);
        assert_eq!(cause, FailureCause::Other, "{result}");
        assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
        assert_eq!(retry_after_ms, None);
        assert_eq!(
            error,
            format!(
                "Jenkins build `deploy` #1 ended {result}: {}/job/deploy/1/",
                jenkins.server.url
            )
        );
        let AttemptOutcome::Failed {
            response: Some(response),
            ..
        } = &outcome
        else {
            panic!("a failed build keeps its summary")
        };
        assert_eq!(response["result"], result);
    }
}

#[tokio::test]
async fn an_expired_session_gets_a_new_crumb_once() {
    let jenkins = jenkins().await;
    jenkins.sim.refuse_next_crumbs(1);
    let outcome = jenkins
        .build("deploy", json!({"TICKET": "INC1"}), "jenkins")
        .await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(jenkins.sim.crumb_requests(), 2);
    assert_eq!(jenkins.count("POST /job/deploy/buildWithParameters"), 2);

    // Refused again with a fresh crumb: the refusal stands.
    jenkins.sim.refuse_next_crumbs(2);
    let outcome = jenkins
        .build("deploy", json!({"TICKET": "INC2"}), "jenkins")
        .await;
    let (cause, error, _) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(403));
    assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
    assert_eq!(
        error,
        "Jenkins POST /job/deploy/buildWithParameters answered 403 Forbidden: No valid crumb was included in the request"
    );
    assert_eq!(jenkins.sim.crumb_requests(), 4);
    assert_eq!(jenkins.count("POST /job/deploy/buildWithParameters"), 4);
    assert_eq!(jenkins.sim.builds("deploy").len(), 1);
}

#[tokio::test]
async fn without_csrf_protection_no_crumb_is_sent() {
    let jenkins = jenkins_with(JenkinsSim::csrf_off).await;
    let outcome = jenkins
        .build("deploy", json!({"TICKET": "INC1"}), "jenkins")
        .await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(jenkins.sim.crumb_requests(), 1);
}

#[tokio::test]
async fn refusals_before_the_build_is_queued_say_why() {
    let jenkins = jenkins().await;
    let url = jenkins.server.url.clone();
    let cases = [
        (
            "deploy",
            "jenkins-wrong",
            401,
            "Jenkins GET /crumbIssuer/api/json answered 401 Unauthorized: Invalid password/token for user: opsgate".to_owned(),
        ),
        (
            "nope",
            "jenkins",
            404,
            format!("Jenkins at {url}/ has no job `nope` that credential `jenkins` can see (Jenkins POST /job/nope/buildWithParameters answered 404 Not Found)"),
        ),
    ];
    for (job, credential, status, expect) in cases {
        let outcome = jenkins
            .build(job, json!({"TICKET": "INC1"}), credential)
            .await;
        let (cause, error, _) = failure(&outcome);
        assert_eq!(cause, FailureCause::Status(status), "{job}");
        assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
        assert_eq!(error, expect);
    }
    assert!(jenkins.sim.builds("deploy").is_empty());
}

#[tokio::test]
async fn a_cancelled_queue_item_fails_without_a_build() {
    let jenkins = jenkins_with(|sim| sim.cancel_queued(true)).await;
    let outcome = jenkins
        .build("deploy", json!({"TICKET": "INC1"}), "jenkins")
        .await;
    let (cause, error, _) = failure(&outcome);
    assert_eq!(cause, FailureCause::Other);
    assert_eq!(
        error,
        "Jenkins queue item 41 of job `deploy` was cancelled before it started: no build ran"
    );
    assert!(jenkins.sim.builds("deploy").is_empty());
}

#[tokio::test]
async fn a_queued_build_that_cannot_be_followed_has_an_unknown_outcome() {
    let jenkins = jenkins_with(|sim| sim.forget_queue(true)).await;
    let outcome = jenkins
        .build("deploy", json!({"TICKET": "INC1"}), "jenkins")
        .await;
    let AttemptOutcome::Unknown { reason } = &outcome else {
        panic!("expected an unknown outcome, got {outcome:?}");
    };
    assert_eq!(
        reason,
        "Jenkins queue item 41 (job `deploy`) cannot be followed: Jenkins GET /queue/item/41/api/json answered 404 Not Found: Not Found; it may still run"
    );
}

#[tokio::test]
async fn only_the_queue_items_number_is_taken_from_the_location() {
    // Jenkins is configured with a URL this client cannot reach: were the
    // Location followed, the credential would go there and the call fail.
    let jenkins = jenkins_with(|sim| sim.root_url("http://jenkins.invalid:8080")).await;
    let outcome = jenkins
        .build("deploy", json!({"TICKET": "INC1"}), "jenkins")
        .await;
    let AttemptOutcome::Succeeded { response } = &outcome else {
        panic!("expected a success, got {outcome:?}");
    };
    assert_eq!(response["url"], "http://jenkins.invalid:8080/job/deploy/1/");
}

#[tokio::test]
async fn a_timeout_while_the_build_runs_is_an_unknown_outcome_not_a_timeout() {
    let jenkins = jenkins_with(|sim| {
        sim.add_job(
            "deploy",
            JobSpec {
                build_polls: 100_000,
                ..JobSpec::new(&["TICKET"], "SUCCESS")
            },
        )
    })
    .await;
    let outcome = jenkins
        .build_within("deploy", json!({"TICKET": "INC1"}), "jenkins", 500)
        .await;
    let AttemptOutcome::Unknown { reason } = &outcome else {
        panic!("expected an unknown outcome, got {outcome:?}");
    };
    assert_eq!(
        reason,
        &format!(
            "timed out after 500ms waiting for Jenkins build `deploy` #1 ({}/job/deploy/1/): nothing was cancelled, and it may still be running; look before running the step again",
            jenkins.server.url
        )
    );

    // A timeout before the build is asked for stays a timeout: Jenkins does
    // not answer the crumb request.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = jenkins
        .connectors
        .call(&PlannedCall {
            action: "jenkins.build".into(),
            request: json!({
                "base_url": format!("http://{}", silent.local_addr().unwrap()),
                "job": "deploy",
                "credential": "jenkins",
            }),
            timeout_ms: 300,
        })
        .await;
    assert_eq!(
        failure(&outcome),
        (FailureCause::Timeout, "timed out after 300ms", None)
    );
}

#[tokio::test]
async fn the_token_stays_out_of_debug_output() {
    let jenkins = jenkins().await;
    let debug = format!("{:?}", jenkins.connectors);
    assert!(!debug.contains(API_TOKEN), "{debug}");
}
