//! Connector secrets come only by reference and go nowhere else: after a
//! run that used every configured connector — ServiceNow over OAuth,
//! Microsoft Graph, Teams, Slack, a signed source, API tokens — none of
//! their secrets, nor the tokens the systems issued, is found in the
//! database files, in the server's log (at debug level), or in what the
//! API answers.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::graph_sim::{self, GraphSim};
use test_support::scripted::{Reply, Scripted};
use test_support::servicenow_sim::{self, NewIncident, ServiceNowSim};
use test_support::slack_sim::SlackSim;
use test_support::teams_sim::TeamsSim;

use crate::harness::{Workspace, eventually};

const SLACK_SIGNING_SECRET: &str = "slack-signing-secret-Zr81";
const SLACK_BOT_TOKEN: &str = "xoxb-secret-bot-token-Qm2";
const SOURCE_SECRET: &str = "signed-source-secret-Hx5";
const CHANNEL: &str = "C0APPROVALS";

fn runbook() -> String {
    "id: grant-and-act
title: Grant access, then act
owner: tests
risk: reversible
approval:
  mode: required
  stages:
    - { name: owner, approvers: [\"user:alice\"] }
match:
  kind: granted
targets:
  from: \"[event.subject]\"
  max_targets: 1
steps:
  - id: grant
    action: graph.group_membership
    with: { group_id: \"{{ env.GROUP }}\", user_id: kim@contoso.example, ensure: present }
  - id: act
    action: http.request
    with: { method: POST, url: \"{{ env.TARGET }}/act\" }
writeback: { ticket: true, resolve_on_success: { close_code: \"Solution provided\" } }
"
    .to_owned()
}

#[tokio::test]
async fn no_secret_reaches_the_database_the_log_or_the_api() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let servicenow_credentials = servicenow_sim::Credentials::default();
    let servicenow = ServiceNowSim::new(servicenow_credentials.clone());
    let servicenow_server = servicenow.start().await.unwrap();
    let incident = servicenow.seed_incident(NewIncident {
        short_description: "Contractor needs VPN".into(),
        state: "2".into(),
        ..NewIncident::default()
    });
    let graph_credentials = graph_sim::Credentials::default();
    let graph = GraphSim::new(graph_credentials.clone());
    let graph_server = graph.start().await.unwrap();
    graph.add_user("kim@contoso.example");
    let group = graph.add_group();
    let teams = TeamsSim::new();
    let teams_server = teams.start().await.unwrap();
    let slack = SlackSim::new(SLACK_BOT_TOKEN, &[CHANNEL]);
    let slack_server = slack.start().await.unwrap();

    let mut workspace = Workspace::new();
    workspace.capture_log = true;
    workspace.add_runbook("r.yaml", &runbook());
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(
        &directory,
        "time_zone: UTC\npeople:\n  - { id: alice, name: Alice Admin }\n",
    )
    .unwrap();
    let secret_file = workspace.dir.path().join("servicenow-client-secret");
    std::fs::write(&secret_file, &servicenow_credentials.client_secret).unwrap();
    workspace.config_yaml = Some(format!(
        "directory: {directory}
servicenow:
  instance_url: {servicenow_url}
  oauth:
    client_id: {sn_client}
    client_secret: file:{secret_file}
    username: {sn_user}
    password: env:T_SN_PASSWORD
graph:
  tenant_id: {tenant}
  client_id: {graph_client}
  client_secret: env:T_GRAPH_SECRET
  authority_url: {graph_url}
  graph_url: {graph_url}
teams: {{ webhook_url: \"env:T_TEAMS_URL\" }}
slack:
  signing_secret: env:T_SLACK_SIGNING
  bot_token: env:T_SLACK_BOT
  channel: {CHANNEL}
  api_url: {slack_url}/api
signed_sources:
  - {{ name: desk, secret: env:T_SOURCE_SECRET }}
",
        directory = directory.display(),
        servicenow_url = servicenow_server.url,
        sn_client = servicenow_credentials.client_id,
        secret_file = secret_file.display(),
        sn_user = servicenow_credentials.username,
        tenant = graph_credentials.tenant_id,
        graph_client = graph_credentials.client_id,
        graph_url = graph_server.url,
        slack_url = slack_server.url,
    ));
    let teams_url = teams.webhook_url(&teams_server.url);
    workspace.env = vec![
        (
            "T_SN_PASSWORD".into(),
            servicenow_credentials.password.clone(),
        ),
        (
            "T_GRAPH_SECRET".into(),
            graph_credentials.client_secret.clone(),
        ),
        ("T_TEAMS_URL".into(), teams_url),
        ("T_SLACK_SIGNING".into(), SLACK_SIGNING_SECRET.into()),
        ("T_SLACK_BOT".into(), SLACK_BOT_TOKEN.into()),
        ("T_SOURCE_SECRET".into(), SOURCE_SECRET.into()),
    ];
    let alice = workspace.create_token("alice", "approver");
    let server = workspace.start(&[("TARGET", &target_server.url), ("GROUP", &group)]);

    // The event comes signed by a source, as a desk's webhook would.
    let body = json!({
        "source": "desk", "kind": "granted", "dedup_key": "SECRETS-1",
        "subject": "kim", "status": "firing",
        "fields": {"ticket": incident.number}
    })
    .to_string();
    let now = jiff::Timestamp::now().as_second();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", server.base))
        .header("content-type", "application/json")
        .header(server::SOURCE_HEADER, "desk")
        .header(server::TIMESTAMP_HEADER, now.to_string())
        .header(
            server::SIGNATURE_HEADER,
            server::sign(SOURCE_SECRET.as_bytes(), now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");
    let (status, body) = server.decide_as(&alice, &run_id, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
    assert_eq!(
        graph.members(&group).len(),
        1,
        "the grant went through Graph"
    );

    // Every channel has heard the end of the story.
    let told = eventually(Duration::from_secs(15), || {
        let ticket = servicenow
            .work_notes(&incident.sys_id)
            .iter()
            .any(|note| note.contains("Automation succeeded"));
        let chat = |posts: String| posts.contains("Automation succeeded");
        ticket
            && chat(json!(teams.posted_cards()).to_string())
            && chat(
                slack
                    .posted()
                    .iter()
                    .map(|posted| posted.body.to_string())
                    .collect(),
            )
    })
    .await;
    assert!(told, "the ticket, Teams and Slack were all told");

    let api = [
        server.get(&format!("/v1/runs/{run_id}")).await.to_string(),
        server.get("/v1/runs").await.to_string(),
    ]
    .join("\n");
    let tokens = server.tokens.clone();
    drop(server);

    let mut secrets: Vec<(String, String)> = vec![
        (
            "ServiceNow password".into(),
            servicenow_credentials.password,
        ),
        (
            "ServiceNow client secret".into(),
            servicenow_credentials.client_secret,
        ),
        (
            "Graph client secret".into(),
            graph_credentials.client_secret,
        ),
        ("Teams webhook signature".into(), teams.signature()),
        ("Slack bot token".into(), SLACK_BOT_TOKEN.into()),
        ("Slack signing secret".into(), SLACK_SIGNING_SECRET.into()),
        ("signed source secret".into(), SOURCE_SECRET.into()),
        ("alice's API token".into(), alice),
        ("the operator's API token".into(), tokens.operator),
    ];
    for token in servicenow.issued_tokens() {
        secrets.push(("a ServiceNow OAuth token".into(), token));
    }
    for token in graph.issued_tokens() {
        secrets.push(("a Graph access token".into(), token));
    }
    assert!(
        secrets.len() > 10,
        "the systems issued tokens that were used: {}",
        secrets.len()
    );

    let mut database = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", workspace.database_path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            database.extend(bytes);
        }
    }
    let log = std::fs::read_to_string(workspace.log_path()).expect("the server's log");
    // The searches can find things: what was stored and logged is there.
    assert!(contains(&database, &run_id), "the run is in the database");
    assert!(log.contains(&run_id), "the log speaks of the run");
    assert!(log.contains("DEBUG"), "the log was written at debug level");

    for (what, secret) in &secrets {
        assert!(!secret.is_empty(), "{what} is known");
        assert!(!contains(&database, secret), "{what} is in the database");
        assert!(!log.contains(secret.as_str()), "{what} is in the log");
        assert!(!api.contains(secret.as_str()), "{what} is in the API");
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
