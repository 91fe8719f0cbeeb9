//! `http.request` and redirects: an approved plan names one URL, so a
//! redirect is the step's answer unless the step asks to follow it, and
//! then only within the same origin. Each case runs against two scripted
//! servers — the target, and another origin a hostile target points at —
//! and checks what the other one received: nothing.

use std::collections::BTreeMap;

use connectors::{Auth, Config, Connectors, Credential, Secret};
use domain::{AttemptOutcome, FailureCause, PlannedCall};
use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

const API_KEY: &str = "k-redirect-0123456789";

fn connectors(hosts: &[&str]) -> Connectors {
    Connectors::new(Config {
        credentials: BTreeMap::from([(
            "api-key".to_owned(),
            Credential {
                auth: Some(Auth::Header {
                    name: "X-Api-Key".into(),
                    value: Secret::new(API_KEY),
                }),
                tls: None,
                hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
            },
        )]),
        ..Config::default()
    })
    .expect("connectors")
}

async fn call(connectors: &Connectors, request: Value) -> AttemptOutcome {
    connectors
        .call(&PlannedCall {
            action: "http.request".into(),
            request,
            timeout_ms: 10_000,
        })
        .await
}

fn redirect(status: u16, location: &str) -> Reply {
    Reply::json(status, json!({})).header("location", location)
}

/// The target and another origin (a server on another port: another
/// origin, as another host would be), the latter scripted to accept
/// anything it is sent.
async fn servers() -> (
    Scripted,
    test_support::Running,
    Scripted,
    test_support::Running,
) {
    let target = Scripted::default();
    let other = Scripted::default();
    for method in ["GET", "POST"] {
        other.on(
            &format!("{method} /steal"),
            vec![Reply::json(200, json!({"ok": true}))],
        );
    }
    let target_running = target.start().await.expect("the target starts");
    let other_running = other.start().await.expect("the other server starts");
    (target, target_running, other, other_running)
}

#[track_caller]
fn assert_failed_with_status(outcome: &AttemptOutcome, status: u16, says: &[&str]) {
    let AttemptOutcome::Failed { cause, error, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(*cause, FailureCause::Status(status), "{error}");
    for part in says {
        assert!(error.contains(part), "`{error}` should say `{part}`");
    }
    assert!(!error.contains(API_KEY), "{error}");
}

#[tokio::test]
async fn a_redirect_to_another_host_is_the_answer_and_nothing_goes_there() {
    let (target, target_url, other, other_url) = servers().await;
    let steal = format!("{}/steal", other_url.url);
    target.on("POST /act", vec![redirect(302, &steal)]);
    let connectors = connectors(&[]);

    let outcome = call(
        &connectors,
        json!({"method": "POST", "url": format!("{}/act", target_url.url),
               "json": {"restart": true}, "credential": "api-key"}),
    )
    .await;
    assert_failed_with_status(&outcome, 302, &["answered 302"]);
    assert_eq!(target.calls("POST /act"), 1);
    assert_eq!(other.calls("POST /steal") + other.calls("GET /steal"), 0);

    // Expected, the redirect is a success, still not followed.
    let outcome = call(
        &connectors,
        json!({"method": "POST", "url": format!("{}/act", target_url.url),
               "expect_status": [302], "credential": "api-key"}),
    )
    .await;
    let AttemptOutcome::Succeeded { response } = &outcome else {
        panic!("expected a success, got {outcome:?}");
    };
    assert_eq!(response["status"], 302);
    assert_eq!(response["headers"]["location"], steal);
    assert_eq!(other.calls("POST /steal") + other.calls("GET /steal"), 0);
}

#[tokio::test]
async fn same_origin_follows_redirects_within_the_origin_only() {
    let (target, target_url, other, other_url) = servers().await;
    let base = &target_url.url;
    target.on("GET /old", vec![redirect(301, "/new")]);
    target.on("GET /new", vec![Reply::json(200, json!({"moved": true}))]);
    target.on(
        "POST /submit",
        vec![redirect(303, &format!("{base}/result"))],
    );
    target.on("GET /result", vec![Reply::json(200, json!({"done": true}))]);
    target.on("POST /keep", vec![redirect(307, "/kept")]);
    target.on("POST /kept", vec![Reply::json(201, json!({}))]);
    target.on(
        "GET /leave",
        vec![redirect(302, &format!("{}/steal", other_url.url))],
    );
    target.on("GET /loop", vec![redirect(302, "/loop")]);
    let connectors = connectors(&[]);
    let follow = |path: &str, method: &str| {
        json!({"method": method, "url": format!("{base}{path}"), "json": {"a": 1},
               "credential": "api-key", "follow_redirects": "same_origin"})
    };

    let outcome = call(&connectors, follow("/old", "GET")).await;
    assert!(
        matches!(&outcome, AttemptOutcome::Succeeded { response } if response["json"]["moved"] == true),
        "{outcome:?}"
    );
    assert_eq!(target.calls("GET /new"), 1);

    // 303 turns the POST into a GET; 307 repeats the POST.
    let outcome = call(&connectors, follow("/submit", "POST")).await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(target.calls("GET /result"), 1);
    let outcome = call(&connectors, follow("/keep", "POST")).await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(target.calls("POST /kept"), 1);

    let outcome = call(&connectors, follow("/leave", "GET")).await;
    assert_failed_with_status(
        &outcome,
        302,
        &[
            &format!("{}/steal", other_url.url),
            "another origin",
            "not followed",
        ],
    );
    assert_eq!(other.calls("GET /steal") + other.calls("POST /steal"), 0);

    let outcome = call(&connectors, follow("/loop", "GET")).await;
    assert_failed_with_status(&outcome, 302, &["after 5 redirects"]);
    assert_eq!(target.calls("GET /loop"), 6);
}

#[tokio::test]
async fn a_credential_is_never_sent_to_a_host_it_does_not_name() {
    let (target, target_url, _other, _other_url) = servers().await;
    target.on("GET /act", vec![Reply::json(200, json!({}))]);
    let url = format!("{}/act", target_url.url);

    let elsewhere = connectors(&["api.example", "*.corp.example"]);
    let outcome = call(&elsewhere, json!({"url": url, "credential": "api-key"})).await;
    let AttemptOutcome::Failed { cause, error, .. } = &outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(*cause, FailureCause::Other);
    assert!(
        error.contains("credential `api-key` may only be sent to api.example, *.corp.example")
            && error.contains("not to `127.0.0.1`"),
        "{error}"
    );
    assert_eq!(target.calls("GET /act"), 0);

    let here = connectors(&["127.0.0.1"]);
    let outcome = call(&here, json!({"url": url, "credential": "api-key"})).await;
    assert!(
        matches!(outcome, AttemptOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(target.calls("GET /act"), 1);
}

#[test]
fn a_credential_with_a_host_that_is_not_a_pattern_is_refused() {
    let mut config = Config::default();
    config.credentials.insert(
        "api-key".into(),
        Credential {
            auth: Some(Auth::Header {
                name: "X-Api-Key".into(),
                value: Secret::new(API_KEY),
            }),
            tls: None,
            hosts: vec!["https://api.example/".into()],
        },
    );
    let error = Connectors::new(config).expect_err("refused").to_string();
    assert_eq!(
        error,
        "credential `api-key`: `hosts` entry `https://api.example/` is not a host name or `*.domain` (no scheme, port or path)"
    );
}

/// The clients that write back (a ticket system, a chat channel) follow no
/// redirect either: a ticket's story, a card with signed approval links or
/// a Basic password goes to the configured address only.
#[tokio::test]
async fn write_back_clients_follow_no_redirect() {
    let (target, target_running, other, other_running) = servers().await;
    let elsewhere = format!("{}/steal", other_running.url);
    target.on("POST /webhook", vec![redirect(307, &elsewhere)]);
    target.on(
        "GET /api/now/table/incident/0123",
        vec![redirect(307, &elsewhere)],
    );
    let teams = connectors::teams::Teams::new(
        Secret::new(format!("{}/webhook", target_running.url)),
        std::time::Duration::from_secs(5),
    )
    .expect("a Teams client");
    let posted = teams.post(&json!({"type": "message"})).await;
    assert!(posted.is_err(), "a 307 is not a posted card: {posted:?}");

    let servicenow = connectors::ServiceNow::new(connectors::ServiceNowConfig {
        instance_url: target_running.url.clone(),
        auth: connectors::ServiceNowAuth::Basic {
            username: "opsgate".into(),
            password: Secret::new("sn-password-0123"),
        },
        timeout: std::time::Duration::from_secs(5),
    })
    .expect("a ServiceNow client");
    let read = servicenow.get("incident", "0123").await;
    assert!(read.is_err(), "a 307 is not a record: {read:?}");

    assert_eq!(target.calls("POST /webhook"), 1);
    assert_eq!(target.calls("GET /api/now/table/incident/0123"), 1);
    assert_eq!(other.calls("POST /steal") + other.calls("GET /steal"), 0);
}
