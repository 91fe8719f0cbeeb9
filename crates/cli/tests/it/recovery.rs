//! kill -9 in the middle of a run, then a restart.

use std::time::Duration;

use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, event, eventually, http_runbook};

/// Starts a run whose step `/act` answers only after 3 s, kills the server
/// while the call is in flight, restarts it, and returns the finished run.
async fn kill_during_step(idempotent: bool) -> (Scripted, serde_json::Value) {
    let target = Scripted::default();
    target.on("POST /first", vec![Reply::json(200, json!({}))]);
    target.on(
        "POST /act",
        vec![
            Reply::json(200, json!({})).delayed(Duration::from_secs(3)),
            Reply::json(200, json!({})),
        ],
    );
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    let flag = if idempotent {
        "idempotent: true"
    } else {
        "idempotent: false"
    };
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "crashy",
            "crashy",
            &[
                ("first", "POST", "/first", "idempotent: false"),
                ("act", "POST", "/act", flag),
            ],
            "",
        ),
    );
    let mut server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("crashy", "k1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || target.calls("POST /act") == 1).await,
        "the step started"
    );
    server.kill9();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let run = server.wait(&run_id).await;
    // Give a wrongly repeated call time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        target.calls("POST /first"),
        1,
        "a finished step is never repeated"
    );
    (target, run)
}

#[tokio::test]
async fn an_in_flight_non_idempotent_step_is_not_repeated_and_needs_a_human() {
    let (target, run) = kill_during_step(false).await;
    assert_eq!(run["state"], "needs_human", "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("outcome unknown"), "{reason}");
    assert_eq!(
        target.calls("POST /act"),
        1,
        "the non-idempotent step ran once"
    );
    let kinds: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"run.recovered"), "{kinds:?}");
}

#[tokio::test]
async fn an_in_flight_idempotent_step_is_reissued_after_a_restart() {
    let (target, run) = kill_during_step(true).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /act"), 2, "re-issued once");
    let interrupted = run["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"]["outcome"] == "interrupted")
        .count();
    assert_eq!(interrupted, 1);
}
