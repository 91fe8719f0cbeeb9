//! Escalating remedies on the real server: a five-target rollout restarts
//! a spooler; on one target it does not verify, so the second remedy (a
//! driver rollback) waits for its own approval, runs, and fails there. The
//! rollout halts, the targets after it are never called, and the ticket
//! and the chat channel are told that on-call is alerted and why.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::servicenow_sim::{Credentials, NewIncident, ServiceNowSim};
use test_support::slack_sim::SlackSim;

use crate::harness::{Workspace, eventually, timeline};

const HOSTS: [&str; 5] = ["h1", "h2", "h3", "h4", "h5"];
const CHANNEL: &str = "C0ONCALL";
const BOT_TOKEN: &str = "xoxb-tests-bot-token";

fn runbook() -> String {
    "id: spooler-fleet\ntitle: Fix the print spooler\nowner: tests\nrisk: reversible\napproval: auto\n\
     match:\n  kind: fleet\n\
     targets:\n  from: \"event.fields.hosts\"\n  max_targets: 5\n\
     steps:\n\
     \x20 - id: restart-spooler\n    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.TARGET }}/{{ target }}/restart\"\n\
     verify:\n  probe: { action: http.request, with: { method: GET, url: \"{{ env.TARGET }}/{{ target }}/spooler\" } }\n\
     \x20 expect: \"response.json.state == 'running'\"\n  within: 600ms\n  every: 200ms\n\
     then_if_unverified:\n\
     \x20 - id: rollback-driver\n    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.TARGET }}/{{ target }}/rollback-driver\"\n\
     rollout:\n  canary: 1\n  batch: 2\n\
     on_failure: { escalate_to: \"group:endpoint-oncall\", ticket_state: needs_human }\n\
     writeback: { ticket: true }\n"
        .to_owned()
}

/// h3's spooler never comes back, and its driver rollback fails.
fn target() -> Scripted {
    let target = Scripted::default();
    for host in HOSTS {
        let state = if host == "h3" { "stopped" } else { "running" };
        target.on(
            &format!("POST /{host}/restart"),
            vec![Reply::json(200, json!({}))],
        );
        target.on(
            &format!("GET /{host}/spooler"),
            vec![Reply::json(200, json!({"state": state}))],
        );
        let rollback = if host == "h3" {
            Reply::json(500, json!({"error": "driver package missing"}))
        } else {
            Reply::json(200, json!({}))
        };
        target.on(&format!("POST /{host}/rollback-driver"), vec![rollback]);
    }
    target
}

#[tokio::test]
async fn a_second_remedy_that_fails_halts_the_rollout_and_alerts_on_call_in_ticket_and_chat() {
    let target = target();
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let slack = SlackSim::new(BOT_TOKEN, &[CHANNEL]);
    let slack_server = slack.start().await.unwrap();
    let incident = sim.seed_incident(NewIncident {
        short_description: "Print spooler keeps crashing".into(),
        state: "2".into(),
        ..NewIncident::default()
    });
    let mut workspace = Workspace::new();
    workspace.add_runbook("spooler.yaml", &runbook());
    let credentials = Credentials::default();
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {}\n  basic: {{ username: {}, password: \"env:OPSGATE_TEST_SN_PASSWORD\" }}\n\
         slack:\n  signing_secret: env:TESTS_SLACK_SIGNING_SECRET\n  bot_token: env:TESTS_SLACK_BOT_TOKEN\n  channel: {CHANNEL}\n  api_url: {slack}/api\n  response_url_base: {slack}/actions/\n",
        sim_server.url,
        credentials.username,
        slack = slack_server.url,
    ));
    workspace.env = vec![
        ("OPSGATE_TEST_SN_PASSWORD".to_owned(), credentials.password),
        (
            "TESTS_SLACK_SIGNING_SECRET".into(),
            "slack-signing-secret".into(),
        ),
        ("TESTS_SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
    ];
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let event = json!({
        "source": "servicenow", "kind": "fleet",
        "dedup_key": format!("servicenow:{}", incident.number),
        "subject": "site-7", "status": "firing",
        "fields": {"hosts": HOSTS, "ticket": incident.number},
    });
    let report = server.event(&event).await;
    let run_id = report["run_id"].as_str().expect("a run").to_owned();

    // h3 did not verify: the driver rollback waits for its own approval.
    let mut run = Value::Null;
    for _ in 0..200 {
        run = server.get(&format!("/v1/runs/{run_id}")).await;
        if run["state"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run["state"], "awaiting_approval", "{run:#}");
    assert_eq!(target.calls("POST /h3/rollback-driver"), 0);
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{body}");

    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "needs_human", "{run:#}");
    assert_eq!(target.calls("POST /h3/rollback-driver"), 1);
    for host in ["h1", "h2"] {
        assert_eq!(target.calls(&format!("POST /{host}/rollback-driver")), 0);
    }
    for host in ["h4", "h5"] {
        assert_eq!(target.calls(&format!("POST /{host}/restart")), 0, "{host}");
    }
    let records = timeline(&run);
    let (_, _, alerted) = records
        .iter()
        .find(|(kind, _, _)| kind == "oncall.alerted")
        .expect("an oncall.alerted record");
    assert_eq!(alerted["group"], "group:endpoint-oncall");
    assert_eq!(alerted["target"], "h3");
    let (_, _, halted) = records
        .iter()
        .find(|(kind, _, _)| kind == "rollout.halted")
        .expect("a rollout.halted record");
    assert_eq!(halted["done"], json!(["h1", "h2"]));
    assert_eq!(halted["failed"], json!(["h3"]));
    assert_eq!(halted["untouched"], json!(["h4", "h5"]));

    let told = "On-call alerted (endpoint-oncall): both remedies were tried on h3";
    assert!(
        eventually(Duration::from_secs(15), || sim
            .work_notes(&incident.sys_id)
            .iter()
            .any(|note| note.contains(told)))
        .await,
        "{:#?}",
        sim.work_notes(&incident.sys_id)
    );
    assert!(
        eventually(Duration::from_secs(15), || slack.posted().iter().any(
            |message| message.channel == CHANNEL && message.body.to_string().contains(told)
        ))
        .await,
        "{:#?}",
        slack.posted()
    );
}
