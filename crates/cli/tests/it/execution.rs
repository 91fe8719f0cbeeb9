//! Steps, retries, timeouts, verification and rollback, end to end.

use std::time::Duration;

use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, event, http_runbook};

fn ok() -> Reply {
    Reply::json(200, json!({"ok": true}))
}

#[tokio::test]
async fn happy_path_on_the_simulated_endpoint_api() {
    let sim = test_support::endpoint_sim::Sim::demo();
    let sim_server = sim.start().await.unwrap();
    let workspace = Workspace::new();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/runbooks/restart-endpoint-service.yaml"
    ))
    .unwrap();
    workspace.add_runbook("restart.yaml", &example);
    let server = workspace.start(&[("ENDPOINT_API", &sim_server.url)]);
    let incident = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/events/vpn-service-stopped.json"
    ))
    .unwrap();
    let (status, report) = server.post_raw("/v1/events", &incident).await;
    assert_eq!(status, 202);
    assert_eq!(report["disposition"], "started_run");
    assert_eq!(report["runbook"], "restart-endpoint-service");
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        sim.world().devices["LAPTOP-0042"].services["vpnagent"],
        "running"
    );
    let restarts = sim
        .world()
        .calls
        .iter()
        .filter(|call| call.ends_with("/vpnagent/restart"))
        .count();
    assert_eq!(restarts, 1);
    let attempts = run["attempts"].as_array().unwrap();
    let phases: Vec<&str> = attempts
        .iter()
        .map(|attempt| attempt["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["step", "step", "verify"]);
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt["outcome"]["outcome"] == "succeeded")
    );
}

#[tokio::test]
async fn a_503_is_retried_then_succeeds() {
    let target = Scripted::default();
    target.on(
        "POST /restart",
        vec![Reply::json(503, json!({"error": "busy"})), ok()],
    );
    let target_server = target.start().await.unwrap();
    let run = run_once(
        &target_server.url,
        &restart_retrying_on_503("flaky"),
        "flaky",
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /restart"), 2);
    let outcomes: Vec<&str> = run["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "succeeded"]);
}

#[tokio::test]
async fn a_404_is_not_retried_when_the_policy_does_not_cover_it() {
    let target = Scripted::default();
    target.on(
        "POST /restart",
        vec![Reply::json(404, json!({"error": "no such device"}))],
    );
    let target_server = target.start().await.unwrap();
    let run = run_once(
        &target_server.url,
        &restart_retrying_on_503("missing"),
        "missing",
    )
    .await;
    assert_eq!(run["state"], "rolled_back", "{run:#}");
    assert!(
        run["reason"].as_str().unwrap().contains("answered 404"),
        "{}",
        run["reason"]
    );
    assert_eq!(target.calls("POST /restart"), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let target = Scripted::default();
    target.on(
        "POST /restart",
        vec![
            Reply::json(429, json!({"error": "slow down"})).header("retry-after", "2"),
            ok(),
        ],
    );
    let target_server = target.start().await.unwrap();
    let run = run_once(
        &target_server.url,
        &http_runbook(
            "polite",
            "limited",
            &[(
                "restart",
                "POST",
                "/restart",
                "idempotent: true\nretry: { attempts: 2, initial: 10ms, retry_on: [429] }",
            )],
            "",
        ),
        "limited",
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let times = target.call_times("POST /restart");
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(1950),
        "retried after {gap:?}, but the peer asked for 2 s"
    );
}

/// The request went out and no answer came in time: an idempotent step
/// fails (and the run rolls back); one that is not may have acted, so a
/// person finds out.
#[tokio::test]
async fn a_step_that_runs_past_its_timeout_fails() {
    for (idempotent, state, said) in [
        ("true", "rolled_back", "failed after 1 attempt"),
        ("false", "needs_human", "outcome unknown"),
    ] {
        let target = Scripted::default();
        target.on("POST /slow", vec![ok().delayed(Duration::from_secs(5))]);
        let target_server = target.start().await.unwrap();
        let run = run_once(
            &target_server.url,
            &http_runbook(
                "slow",
                "slow",
                &[(
                    "slow-step",
                    "POST",
                    "/slow",
                    &format!("timeout: 300ms\nidempotent: {idempotent}"),
                )],
                "",
            ),
            "slow",
        )
        .await;
        assert_eq!(run["state"], state, "{run:#}");
        let reason = run["reason"].as_str().unwrap();
        assert!(reason.contains("timed out after 300ms"), "{reason}");
        assert!(reason.contains(said), "{reason}");
        assert_eq!(run["attempts"][0]["outcome"]["cause"]["kind"], "timeout");
    }
}

#[tokio::test]
async fn failed_verification_rolls_back_completed_steps_in_reverse_order() {
    let target = Scripted::default();
    for path in ["/a", "/b", "/c", "/undo-a", "/undo-b", "/undo-c"] {
        target.on(&format!("POST {path}"), vec![ok()]);
    }
    target.on(
        "GET /health",
        vec![Reply::json(200, json!({"healthy": false}))],
    );
    let target_server = target.start().await.unwrap();
    let rollback = |path: &str| {
        format!(
            "idempotent: true\nrollback:\n  action: http.request\n  with: {{ method: POST, url: \"{{{{ env.TARGET }}}}{path}\" }}"
        )
    };
    let (undo_a, undo_b, undo_c) = (
        rollback("/undo-a"),
        rollback("/undo-b"),
        rollback("/undo-c"),
    );
    let verify = "verify:\n  probe: { action: http.request, with: { method: GET, url: \"{{ env.TARGET }}/health\" } }\n  expect: \"response.json.healthy\"\n  within: 300ms\n  every: 100ms\n";
    let run = run_once(
        &target_server.url,
        &http_runbook(
            "three",
            "three",
            &[
                ("step-a", "POST", "/a", &undo_a),
                ("step-b", "POST", "/b", &undo_b),
                ("step-c", "POST", "/c", &undo_c),
            ],
            verify,
        ),
        "three",
    )
    .await;
    assert_eq!(run["state"], "needs_human", "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.starts_with("verification failed"), "{reason}");
    let order: Vec<_> = ["/undo-c", "/undo-b", "/undo-a"]
        .iter()
        .map(|path| target.call_times(&format!("POST {path}")))
        .collect();
    assert!(
        order.iter().all(|times| times.len() == 1),
        "each rollback runs once: {order:?}"
    );
    assert!(
        order[0][0] < order[1][0] && order[1][0] < order[2][0],
        "rollbacks ran c, b, a"
    );
    assert!(target.calls("GET /health") >= 2, "verification polled");
}

/// One idempotent `POST /restart` step, retried up to 3 times on 503 only.
fn restart_retrying_on_503(kind: &str) -> String {
    let retry = "idempotent: true\nretry: { attempts: 3, initial: 50ms, retry_on: [503] }";
    http_runbook(kind, kind, &[("restart", "POST", "/restart", retry)], "")
}

/// Starts a server with only `runbook`, its `env.TARGET` pointing at
/// `target`, sends one event of `kind`, and returns the run once settled.
async fn run_once(target: &str, runbook: &str, kind: &str) -> serde_json::Value {
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", runbook);
    let server = workspace.start(&[("TARGET", target)]);
    let report = server.event(&event(kind, "k1")).await;
    server.wait(report["run_id"].as_str().unwrap()).await
}

/// A runbook with one `command.run` step matched on `kind`.
fn command_runbook(kind: &str, script: &str, retry: &str) -> String {
    format!(
        "id: {kind}\ntitle: Command {kind}\nowner: tests\nrisk: reversible\napproval: auto\n\
         match:\n  kind: {kind}\ntargets:\n  from: \"[event.subject]\"\nsteps:\n\
         \x20 - id: run-it\n    action: command.run\n    with:\n      program: sh\n      args: [\"-c\", {script:?}]\n\
         \x20   idempotent: true\n{retry}"
    )
}

#[tokio::test]
async fn command_steps_succeed_on_exit_zero_and_retry_only_the_exit_codes_named() {
    let scratch = tempfile::tempdir().unwrap();
    let counter = scratch.path().join("count");
    // Fails with 75 (EX_TEMPFAIL) the first time, succeeds the second.
    let flaky = format!(
        "echo x >> {0}; [ $(wc -l < {0}) -ge 2 ] && echo '{{\"ok\": true}}' || exit 75",
        counter.display()
    );
    let run = run_once(
        "unused",
        &command_runbook(
            "flaky-command",
            &flaky,
            "    retry: { attempts: 3, initial: 10ms, retry_on: [\"exit:75\"] }\n",
        ),
        "flaky-command",
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2
    );
    assert_eq!(
        run["attempts"][1]["outcome"]["response"]["json"]["ok"],
        true
    );

    let run = run_once(
        "unused",
        &command_runbook(
            "broken-command",
            "echo nope >&2; exit 3",
            "    retry: { attempts: 3, initial: 10ms, retry_on: [\"exit:75\"] }\n",
        ),
        "broken-command",
    )
    .await;
    assert_eq!(run["state"], "rolled_back", "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("exited with 3: nope"), "{reason}");
    assert_eq!(
        run["attempts"].as_array().unwrap().len(),
        1,
        "exit 3 is not retried"
    );
}
