//! Request bodies must be declared as what they are: the JSON routes take
//! `application/json` (parameters such as `charset` allowed, and
//! `application/<x>+json`), Slack's interactions a form; anything else, or
//! a body without a `Content-Type`, is refused with 415 in the API's error
//! format and changes nothing.

use serde_json::{Value, json};

use crate::harness::{Server, Workspace, event, http_runbook};

/// Posts `body` as `token`, declared `content_type` (none when `None`).
async fn post(
    server: &Server,
    token: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("reach opsgate");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn json_routes_refuse_bodies_of_another_media_type_with_415() {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("gated", "gated", &[("act", "POST", "/act", "")], "")
            .replace("approval: auto", "approval: required"),
    );
    let grafana = workspace.create_token("grafana", "source");
    let pagerduty = workspace.create_token("pagerduty", "source");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let tokens = server.tokens.clone();
    let report = server.event(&event("gated", "MEDIA-1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let alerts = json!({"version": "4", "alerts": [{"status": "firing",
        "labels": {"alertname": "gated", "instance": "h"}, "fingerprint": "f1"}]});
    let pagerduty_event = json!({"routing_key": "k", "event_action": "trigger",
        "payload": {"summary": "s", "source": "h", "severity": "critical"}});
    let routes: Vec<(&str, String, Value)> = vec![
        (
            &tokens.operator,
            "/v1/events".into(),
            event("gated", "MEDIA-2"),
        ),
        (
            &tokens.operator,
            "/v1/plan".into(),
            event("gated", "MEDIA-3"),
        ),
        (
            &tokens.alertmanager,
            "/v1/hooks/alertmanager".into(),
            alerts.clone(),
        ),
        (&grafana, "/v1/hooks/grafana".into(), alerts),
        (&pagerduty, "/v1/hooks/pagerduty".into(), pagerduty_event),
        (
            &tokens.alice,
            format!("/v1/runs/{run_id}/approve"),
            json!({"comment": "ok"}),
        ),
        (
            &tokens.alice,
            format!("/v1/runs/{run_id}/deny"),
            json!({"comment": "no"}),
        ),
        (
            &tokens.operator,
            format!("/v1/runs/{run_id}/cancel"),
            json!({"reason": "r"}),
        ),
    ];
    for (token, path, body) in &routes {
        for content_type in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("text/plain"),
            Some("application/xml"),
            Some("application/jsonx"),
        ] {
            let (status, answer) =
                post(&server, token, path, content_type, &body.to_string()).await;
            assert_eq!(status, 415, "{path} as {content_type:?}: {answer}");
            assert_eq!(
                answer["error"]["code"], "unsupported_media_type",
                "{answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("Content-Type: application/json"),
                "{message}"
            );
        }
    }
    let runs = server.get("/v1/runs").await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "nothing new: {runs:#}"
    );
    assert_eq!(runs["runs"][0]["state"], "awaiting_approval", "{runs:#}");

    // JSON however it is spelled is taken.
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/vnd.opsgate+json",
    ] {
        let (status, answer) = post(
            &server,
            &tokens.operator,
            "/v1/plan",
            Some(content_type),
            &event("gated", "MEDIA-4").to_string(),
        )
        .await;
        assert_eq!(status, 200, "{content_type}: {answer}");
    }
    // A decision without a body needs no Content-Type.
    let (status, answer) = post(
        &server,
        &tokens.alice,
        &format!("/v1/runs/{run_id}/approve"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// The signed approval page's form is read like every body: a decision
/// sent as JSON, or without a `Content-Type`, is the API's own 415, and a
/// form that is not the page's is a 400 saying so — before the link is
/// even looked at. (schemathesis found the page answering these in
/// another format.)
#[tokio::test]
async fn the_approval_page_refuses_a_body_that_is_not_its_form_in_the_apis_format() {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("gated", "gated", &[("act", "POST", "/act", "")], ""),
    );
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    for (content_type, body, status, code) in [
        (
            Some("application/json"),
            r#"{"decision":"approve"}"#,
            415,
            "unsupported_media_type",
        ),
        (None, "decision=approve", 415, "unsupported_media_type"),
        (
            Some("application/x-www-form-urlencoded"),
            "verdict=approve",
            400,
            "invalid_body",
        ),
    ] {
        let (got, answer) = post(&server, "", "/approve/not-a-link", content_type, body).await;
        assert_eq!(got, status, "{content_type:?} {body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
}
