//! The re-check before acting: a run approved after a wait reads the
//! problem again (its runbook's `precheck`) and does not act on a system
//! that healed meanwhile.

use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, event, http_runbook, timeline};

fn runbook() -> String {
    http_runbook(
        "restart",
        "stopped",
        &[("restart", "POST", "/restart", "idempotent: true")],
        "precheck:\n  probe: { action: http.request, with: { url: \"{{ env.TARGET }}/status\" } }\n  expect: \"response.json.status != 'running'\"\n",
    )
    .replace("approval: auto", "approval: required")
}

/// Posts the event, approves the run as alice, and waits for it.
async fn approved_run(status: &str) -> (Scripted, serde_json::Value) {
    let target = Scripted::default();
    target.on(
        "GET /status",
        vec![Reply::json(200, json!({"status": status}))],
    );
    target.on("POST /restart", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("restart.yaml", &runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("stopped", "SVC-1")).await;
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let (status, _) = server.approve(&run_id).await;
    assert_eq!(status, 200);
    let run = server.wait(&run_id).await;
    (target, run)
}

#[tokio::test]
async fn a_run_approved_after_the_problem_went_away_is_cancelled_without_acting() {
    let (target, run) = approved_run("running").await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert_eq!(target.calls("GET /status"), 1);
    assert_eq!(
        target.calls("POST /restart"),
        0,
        "it acted on a healthy system"
    );
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("the problem is gone"),
        "{run:#}"
    );
    let kinds: Vec<String> = timeline(&run)
        .into_iter()
        .map(|(kind, _, _)| kind)
        .collect();
    assert!(kinds.contains(&"precheck.cleared".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn a_run_approved_while_the_problem_is_still_there_acts() {
    let (target, run) = approved_run("stopped").await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("GET /status"), 1);
    assert_eq!(target.calls("POST /restart"), 1);
    let phases: Vec<&str> = run["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["precheck", "step"]);
}
