//! A routine restart, as an operator deploying a new version does it:
//! SIGTERM while a slow non-idempotent step is in flight. The step
//! finishes and its outcome is committed, the server says it is draining
//! meanwhile, and the restarted server goes on with the next step: no
//! person is needed, nothing runs twice.

use std::time::{Duration, Instant};

use serde_json::json;
use test_support::Running;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, count_of, event, eventually, http_runbook};

/// A three-step runbook whose middle step, `/act`, answers after `delay`;
/// every step is non-idempotent, so none may be sent twice.
async fn slow_middle_step(delay: Duration) -> (Scripted, Running, Workspace) {
    let target = Scripted::default();
    target.on("POST /first", vec![Reply::json(200, json!({}))]);
    target.on(
        "POST /act",
        vec![Reply::json(200, json!({})).delayed(delay)],
    );
    target.on("POST /last", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "deploy-me",
            "deploy-me",
            &[
                ("first", "POST", "/first", "idempotent: false"),
                ("act", "POST", "/act", "idempotent: false"),
                ("last", "POST", "/last", "idempotent: false"),
            ],
            "",
        ),
    );
    (target, target_server, workspace)
}

/// Starts the server on `workspace`, ready for work, and posts the event
/// of its run; returns once the slow step is in flight, with the run's id.
async fn with_the_slow_step_in_flight(
    target: &Scripted,
    workspace: &Workspace,
    url: &str,
) -> (Server, String) {
    let server = workspace.start(&[("TARGET", url)]);
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let report = server.event(&event("deploy-me", "k1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || target.calls("POST /act") == 1).await,
        "the slow step started"
    );
    (server, run_id)
}

#[tokio::test]
async fn sigterm_during_a_slow_non_idempotent_step_lets_it_finish_and_the_restart_goes_on() {
    let (target, target_server, workspace) = slow_middle_step(Duration::from_secs(2)).await;
    let url = target_server.url.clone();
    let (mut server, run_id) = with_the_slow_step_in_flight(&target, &workspace, &url).await;
    let signalled = Instant::now();
    server.signal("TERM");

    // Draining: still serving, not ready for new work.
    let draining = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(draining.status(), 503);
    assert_eq!(
        draining.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "draining"})
    );
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "opsgate stopped with {status}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1_500),
        "it waited for the step in flight, not {took:?}"
    );
    assert_eq!(
        target.calls("POST /last"),
        0,
        "no step started while draining"
    );

    let server = workspace.start(&[("TARGET", &url)]);
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    for path in ["POST /first", "POST /act", "POST /last"] {
        assert_eq!(target.calls(path), 1, "{path} was called once");
    }
    assert_eq!(count_of(&run, "run.handed_over"), 1, "{run:#}");
    assert_eq!(
        count_of(&run, "run.recovered"),
        0,
        "nothing was left in flight"
    );
}

#[tokio::test]
async fn a_second_signal_stops_at_once() {
    let (target, target_server, workspace) = slow_middle_step(Duration::from_secs(8)).await;
    let url = target_server.url.clone();
    let (mut server, _) = with_the_slow_step_in_flight(&target, &workspace, &url).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "draining");
    server.signal("TERM");
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "opsgate stopped with {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the second signal did not wait for the 8 s step: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn the_grace_period_bounds_the_wait() {
    let (target, target_server, mut workspace) = slow_middle_step(Duration::from_secs(8)).await;
    let url = target_server.url.clone();
    workspace
        .env
        .push(("OPSGATE_SHUTDOWN_GRACE_MS".to_owned(), "500".to_owned()));
    let (mut server, _) = with_the_slow_step_in_flight(&target, &workspace, &url).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "opsgate stopped with {status}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "stopped after the 500 ms grace period, not {took:?}"
    );
}
