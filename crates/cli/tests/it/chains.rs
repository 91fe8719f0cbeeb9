//! Approval chains on the real server: stages in order resolved through the
//! directory, a stand-in for an approver who is out of office, escalation
//! when a stage times out, and a step that waits for its own approval.

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, audit_records, count_of, event, http_runbook, timeline};

/// A directory in which carol (kim's manager) is out of office today and
/// frank stands in for her; security is erin and heidi; on-call is alice
/// and bob; ivan owns nothing and his backup is judy.
fn directory() -> String {
    let today = jiff::Zoned::now().date();
    let from = today.yesterday().expect("a date");
    let to = today
        .tomorrow()
        .expect("a date")
        .tomorrow()
        .expect("a date");
    format!(
        "time_zone: UTC
people:
  - {{ id: kim, name: Kim Kowalski, manager: carol }}
  - id: carol
    name: Carol Chen
    backup: frank
    out_of_office:
      - {{ from: {from}, to: {to} }}
  - {{ id: frank, name: Frank Fischer }}
  - {{ id: erin, name: Erin Evans }}
  - {{ id: heidi, name: Heidi Hansen }}
  - {{ id: alice, name: Alice Admin }}
  - {{ id: bob, name: Bob Byte }}
  - {{ id: ivan, name: Ivan Ivanov, backup: judy }}
  - {{ id: judy, name: Judy Jones }}
groups:
  security: [erin, heidi]
  on-call: [alice, bob]
"
    )
}

fn workspace_with(runbook: &str) -> Workspace {
    let mut workspace = Workspace::new();
    let path = workspace.dir.path().join("directory.yaml");
    std::fs::write(&path, directory()).expect("write the directory");
    workspace.config_yaml = Some(format!("directory: {}\n", path.display()));
    workspace.add_runbook("r.yaml", runbook);
    workspace
}

fn runbook(approval: &str, steps: &[(&str, &str, &str, &str)]) -> String {
    http_runbook("chained", "chained", steps, "")
        .replace("approval: auto\n", &format!("approval:\n{approval}"))
}

fn requested_by(person: &str, dedup_key: &str) -> Value {
    let mut event = event("chained", dedup_key);
    event["fields"]["requested_by"] = json!(person);
    event
}

async fn refusal(server: &Server, token: &str, run_id: &str) -> String {
    let (status, body) = server.decide_as(token, run_id, "approve").await;
    assert_eq!(status, 403, "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn manager_then_security_with_a_stand_in_for_the_absent_manager() {
    let target = Scripted::default();
    target.on("POST /grant", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = workspace_with(&runbook(
        "  mode: required\n  stages:\n    - { name: manager, approvers: [\"manager_of(requester)\"] }\n    - { name: security, approvers: [\"group:security\"] }\n",
        &[("grant", "POST", "/grant", "")],
    ));
    let [carol, frank, erin] =
        ["carol", "frank", "erin"].map(|person| workspace.create_token(person, "approver"));
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let report = server.event(&requested_by("kim", "VPN-1")).await;
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let escalated: Vec<Value> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "approval.escalated")
        .map(|(_, _, detail)| detail)
        .collect();
    assert_eq!(escalated.len(), 1, "{run:#}");
    assert_eq!(escalated[0]["from"], "user:carol");
    assert_eq!(escalated[0]["to"], json!(["user:frank"]));

    let absent = refusal(&server, &carol, &run_id).await;
    assert!(
        absent.contains("wrong person") && absent.contains("manager"),
        "{absent}"
    );
    let early = refusal(&server, &erin, &run_id).await;
    assert!(
        early.contains("stage `manager`"),
        "security waits for the manager stage: {early}"
    );
    let (status, body) = server.decide_as(&frank, &run_id, "approve").await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("awaiting_approval")),
        "{body}"
    );
    let twice = refusal(&server, &frank, &run_id).await;
    assert!(twice.contains("already"), "{twice}");
    let (status, body) = server.decide_as(&erin, &run_id, "approve").await;
    assert_eq!(status, 200, "{body}");

    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /grant"), 1);
    assert_eq!(count_of(&run, "approval.stage_passed"), 1);
    let refused: Vec<String> = audit_records(&workspace.database_url())
        .into_iter()
        .filter(|record| {
            record["kind"] == "approval.refused" && record["run_id"] == run_id.as_str()
        })
        .map(|record| record["actor"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        refused,
        ["user:carol", "user:erin", "user:frank"],
        "every refusal audited"
    );
}

#[tokio::test]
async fn a_stage_that_times_out_escalates_to_the_backup_then_on_call() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = workspace_with(&runbook(
        "  mode: required\n  stages:\n    - { name: owner, approvers: [\"user:ivan\"], timeout: 1s }\n",
        &[("act", "POST", "/act", "")],
    ));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let bob = server.tokens.bob.clone();

    let report = server.event(&requested_by("kim", "ESC-1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let before = refusal(&server, &bob, &run_id).await;
    assert!(before.contains("wrong person"), "{before}");

    // First the owner's backup (judy), a second later on-call (alice, bob).
    let escalations = |run: &Value| count_of(run, "approval.escalated");
    let mut run = server.get(&format!("/v1/runs/{run_id}")).await;
    for _ in 0..100 {
        if escalations(&run) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        run = server.get(&format!("/v1/runs/{run_id}")).await;
    }
    let levels: Vec<Value> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "approval.escalated")
        .map(|(_, _, detail)| detail["to"].clone())
        .collect();
    assert_eq!(
        levels,
        [json!(["user:judy"]), json!(["user:alice", "user:bob"])],
        "{run:#}"
    );
    let (status, body) = server.decide_as(&bob, &run_id, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
}

#[tokio::test]
async fn a_gated_step_waits_for_its_own_approval() {
    let target = Scripted::default();
    target.on("POST /restart", vec![Reply::json(200, json!({}))]);
    target.on("POST /rollback-driver", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.lease_ttl_ms = 1500;
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "printer",
            "printer",
            &[
                ("restart-spooler", "POST", "/restart", ""),
                (
                    "rollback-driver",
                    "POST",
                    "/rollback-driver",
                    "requires_approval: true",
                ),
            ],
            "",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("printer", "PRN-1")).await;
    assert_eq!(report["decision"]["kind"], "allow", "{report:#}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let paused = server.wait(&run_id).await;
    assert_eq!(paused["state"], "awaiting_approval", "{paused:#}");
    assert_eq!(
        (
            target.calls("POST /restart"),
            target.calls("POST /rollback-driver")
        ),
        (1, 0),
        "the first step ran, the gated one waits"
    );
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{body}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /rollback-driver"), 1);
    assert_eq!(count_of(&run, "approval.requested"), 1);
}

#[tokio::test]
async fn a_chain_nobody_can_approve_denies_the_run_at_once() {
    // No directory: `manager_of(requester)` names no one.
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &runbook(
            "  mode: required\n  stages:\n    - { name: manager, approvers: [\"manager_of(requester)\"] }\n",
            &[("act", "POST", "/act", "")],
        ),
    );
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let report = server.event(&requested_by("kim", "NOBODY-1")).await;
    assert_eq!(report["state"], "denied", "{report:#}");
    let reasons = report["decision"]["reasons"].to_string();
    assert!(reasons.contains("no directory"), "{reasons}");
}
