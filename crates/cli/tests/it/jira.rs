//! Jira on the real server, against a local Jira: a signed issue webhook
//! starts a run as the reporter's directory person; the run's story lands
//! as internal comments, once each, and the issue moves through whichever
//! transition leads to the configured status; webhooks that are not
//! Jira's, or old, or replayed are refused and audited.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::jira_sim::{JiraSim, NewIssue, Site, Workflow, webhook_signature};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, audit_records, eventually, http_runbook};

const WEBHOOK_SECRET: &str = "jira-webhook-secret-Lp3";

fn webhook(key: &str, timestamp_ms: i64) -> Value {
    json!({
        "timestamp": timestamp_ms,
        "webhookEvent": "jira:issue_created",
        "issue_event_type_name": "issue_created",
        "user": {"accountId": "557058:kim", "displayName": "Kim Lee"},
        "issue": {
            "id": "10001",
            "key": key,
            "fields": {
                "summary": "VPN client service stopped on LAPTOP-0042",
                "issuetype": {"id": "10004", "name": "Incident", "subtask": false},
                "project": {"id": "10000", "key": "OPS", "name": "IT Operations"},
                "status": {"id": "1", "name": "Open",
                           "statusCategory": {"id": 2, "key": "new", "name": "To Do"}},
                "priority": {"id": "2", "name": "High"},
                "labels": ["vpn"],
                "reporter": {"accountId": "557058:kim", "displayName": "Kim Lee",
                             "emailAddress": "kim.lee@example.com"}
            }
        }
    })
}

async fn post_webhook(server: &Server, body: &Value, secret: &str) -> (u16, Value) {
    let body = body.to_string();
    let signature = webhook_signature(secret.as_bytes(), body.as_bytes());
    post_signed(server, &body, &signature).await
}

#[tokio::test]
async fn a_signed_issue_webhook_runs_and_the_issue_hears_the_story_and_moves() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let site = Site::cloud();
    let jira = JiraSim::new(site.clone());
    // Transition ids of this workflow start at 211: nothing can guess them.
    jira.add_project("OPS", "IT Operations", Workflow::incident(211));
    let key = jira.seed_issue(NewIssue::incident("OPS", "VPN client service stopped"));
    let jira_server = jira.start().await.unwrap();
    let Site::Cloud { email, api_token } = &site else {
        unreachable!("a Cloud site")
    };

    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "from-jira",
            "incident",
            &[("act", "POST", "/act", "")],
            "writeback: { ticket: true, resolve_on_success: { close_code: done } }\n",
        ),
    );
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(
        &directory,
        "time_zone: UTC\npeople:\n  - { id: kim, name: Kim Lee, email: kim.lee@example.com }\n",
    )
    .unwrap();
    workspace.config_yaml = Some(format!(
        "directory: {}\njira:\n  base_url: {}\n  email: {email}\n  api_token: env:T_JIRA_TOKEN\n  webhook_secret: env:T_JIRA_HOOK\n  resolved_status: Resolved\n",
        directory.display(),
        jira_server.url
    ));
    workspace.env = vec![
        ("T_JIRA_TOKEN".into(), api_token.clone()),
        ("T_JIRA_HOOK".into(), WEBHOOK_SECRET.into()),
    ];
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let now_ms = jiff::Timestamp::now().as_millisecond();

    // Not Jira's, or too old: refused before anything is taken in.
    let (status, answer) = post_webhook(&server, &webhook(&key, now_ms), "a guess").await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) =
        post_webhook(&server, &webhook(&key, now_ms - 3_600_000), WEBHOOK_SECRET).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_string().contains("replay window"), "{answer}");

    let body = webhook(&key, now_ms);
    let (status, answer) = post_webhook(&server, &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let event = &server.get(&format!("/v1/runs/{run_id}")).await["event"];
    assert_eq!(event["source"], "jira", "{event:#}");
    assert_eq!(event["dedup_key"], format!("jira:{key}"));
    assert_eq!(
        event["fields"]["requested_by"], "kim",
        "the reporter is found in the directory by email"
    );

    let (status, answer) = post_webhook(&server, &body, WEBHOOK_SECRET).await;
    assert_eq!(
        status, 401,
        "the same signature again is a replay: {answer}"
    );
    let refused = audit_records(&workspace.database_url())
        .into_iter()
        .filter(|record| {
            record["kind"] == "api.refused" && record["detail"]["route"] == "/v1/hooks/jira"
        })
        .count();
    assert_eq!(refused, 3, "every refusal is audited");

    let moved = eventually(Duration::from_secs(15), || {
        jira.status(&key).as_deref() == Some("Resolved")
    })
    .await;
    let comments = jira.comments(&key);
    let text: Vec<&str> = comments
        .iter()
        .map(|comment| comment.text.as_str())
        .collect();
    assert!(moved, "the issue was resolved: {text:#?}");
    let story = text.join("\n---\n");
    for line in [
        "Automation started: run",
        "Step act (attempt 1) succeeded.",
        "Automation succeeded.",
    ] {
        assert_eq!(story.matches(line).count(), 1, "`{line}` once in:\n{story}");
    }
    assert!(
        comments.iter().all(|comment| comment.internal),
        "internal notes, not shown to the customer"
    );
}

/// Posts `body` with `signature` as Jira's `X-Hub-Signature`, as given.
async fn post_signed(server: &Server, body: &str, signature: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/hooks/jira", server.base))
        .header("content-type", "application/json; charset=UTF-8")
        .header("x-hub-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("reach opsgate");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_webhook_is_taken_in_once_however_its_signature_is_written() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let site = Site::cloud();
    let jira = JiraSim::new(site.clone());
    jira.add_project("OPS", "IT Operations", Workflow::incident(211));
    let key = jira.seed_issue(NewIssue::incident("OPS", "VPN client service stopped"));
    let jira_server = jira.start().await.unwrap();
    let Site::Cloud { email, api_token } = &site else {
        unreachable!("a Cloud site")
    };
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("from-jira", "incident", &[("act", "POST", "/act", "")], ""),
    );
    workspace.config_yaml = Some(format!(
        "jira:\n  base_url: {}\n  email: {email}\n  api_token: env:T_JIRA_TOKEN\n  webhook_secret: env:T_JIRA_HOOK\n  resolved_status: Resolved\n",
        jira_server.url
    ));
    workspace.env = vec![
        ("T_JIRA_TOKEN".into(), api_token.clone()),
        ("T_JIRA_HOOK".into(), WEBHOOK_SECRET.into()),
    ];
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let body = webhook(&key, jiff::Timestamp::now().as_millisecond()).to_string();
    let signature = webhook_signature(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    let hex_digits = signature.strip_prefix("sha256=").unwrap();

    let (status, answer) = post_signed(&server, &body, &signature).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    // The run is over, so a replay that got in would start another one.
    let replays = [
        (
            "hex upper-cased",
            format!("sha256={}", hex_digits.to_uppercase()),
            "already used",
        ),
        ("the same header", signature.clone(), "already used"),
        (
            "prefix upper-cased",
            format!("SHA256={hex_digits}"),
            "sha256 only",
        ),
    ];
    for (case, replayed, reason) in replays {
        let (status, answer) = post_signed(&server, &body, &replayed).await;
        assert_eq!(status, 401, "{case}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{case}: {message}");
    }
    assert_eq!(
        server.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(target.calls("POST /act"), 1, "the target was called once");
}

/// The issue is resolved in Jira while its run waits for approval, and no
/// webhook says so: opsgate reads it back before acting.
#[tokio::test]
async fn an_issue_resolved_while_the_run_waited_is_read_back_and_the_run_does_not_act() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let site = Site::cloud();
    let jira = JiraSim::new(site.clone());
    jira.add_project("OPS", "IT Operations", Workflow::incident(211));
    let key = jira.seed_issue(NewIssue::incident("OPS", "VPN client service stopped"));
    let jira_server = jira.start().await.unwrap();
    let Site::Cloud { email, api_token } = &site else {
        unreachable!("a Cloud site")
    };
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("from-jira", "incident", &[("act", "POST", "/act", "")], "")
            .replace("approval: auto", "approval: required"),
    );
    workspace.config_yaml = Some(format!(
        "jira:\n  base_url: {}\n  email: {email}\n  api_token: env:T_JIRA_TOKEN\n  webhook_secret: env:T_JIRA_HOOK\n",
        jira_server.url
    ));
    workspace.env = vec![
        ("T_JIRA_TOKEN".into(), api_token.clone()),
        ("T_JIRA_HOOK".into(), WEBHOOK_SECRET.into()),
    ];
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let (status, answer) = post_webhook(&server, &webhook(&key, now_ms), WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    jira.set_status(&key, "Resolved");
    let (status, answer) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{answer}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert_eq!(target.calls("POST /act"), 0, "it acted on a resolved issue");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("ticket {key} was closed (Resolved)")),
        "{run:#}"
    );
}
