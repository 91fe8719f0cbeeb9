//! The kill switch, end to end: a freeze stops a run at its next step
//! boundary and nothing else runs; new events it covers are stored
//! `frozen`; lifting it resumes the run where it stopped; a freeze that
//! cancels rolls back; a freeze issued on one instance stops a run another
//! drives. And every way to misuse it is refused.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, cli_with_env, eventually, timeline};

/// A runbook of `steps` HTTP steps, `POST /s1` … `POST /s<n>`, each with
/// a rollback `POST /undo-s<i>`, auto-approved, matched on `kind`.
fn rollout_runbook(id: &str, kind: &str, steps: usize) -> String {
    let mut yaml = format!(
        "id: {id}\ntitle: Rollout {id}\nowner: tests\nrisk: reversible\napproval: auto\n\
         match:\n  kind: {kind}\ntargets:\n  from: \"[event.subject]\"\n  max_targets: 1\nsteps:\n"
    );
    for index in 1..=steps {
        yaml.push_str(&format!(
            "  - id: s{index}\n    action: http.request\n    idempotent: true\n    with:\n      method: POST\n      url: \"{{{{ env.TARGET }}}}/s{index}\"\n    rollback:\n      action: http.request\n      with:\n        method: POST\n        url: \"{{{{ env.TARGET }}}}/undo-s{index}\"\n"
        ));
    }
    yaml
}

/// A target whose step `slow` takes `delay` to answer; every other call
/// answers at once.
fn target(steps: usize, slow: usize, delay: Duration) -> Scripted {
    let target = Scripted::default();
    for index in 1..=steps {
        let reply = Reply::json(200, json!({"ok": true}));
        let reply = if index == slow {
            reply.delayed(delay)
        } else {
            reply
        };
        target.on(&format!("POST /s{index}"), vec![reply]);
        target.on(
            &format!("POST /undo-s{index}"),
            vec![Reply::json(200, json!({"ok": true}))],
        );
    }
    target
}

fn rollout_event(kind: &str, dedup_key: &str, subject: &str) -> Value {
    json!({
        "source": "tests", "kind": kind, "dedup_key": dedup_key,
        "subject": subject, "status": "firing", "fields": {}
    })
}

/// Polls until the run is in `state` (or 20 s pass).
async fn until_state(server: &Server, run_id: &str, state: &str) -> Value {
    for _ in 0..400 {
        let run = server.get(&format!("/v1/runs/{run_id}")).await;
        if run["state"] == state {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "run {run_id} never reached {state}: {:#}",
        server.get(&format!("/v1/runs/{run_id}")).await
    );
}

async fn wait_for_call(target: &Scripted, call: &str) {
    assert!(
        eventually(Duration::from_secs(20), || target.calls(call) > 0).await,
        "{call} was never called"
    );
}

#[tokio::test]
async fn a_freeze_stops_a_ten_step_rollout_after_the_current_step_and_unfreeze_resumes_it() {
    let target = target(10, 3, Duration::from_millis(1500));
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 10));
    workspace.add_runbook(
        "other.yaml",
        &rollout_runbook("other", "other", 1).replace("/s1", "/other"),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server
        .event(&rollout_event("rollout", "R-1", "web-1"))
        .await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    // Step s3 is in flight (it takes 1.5 s): pull the switch now.
    wait_for_call(&target, "POST /s3").await;
    let (status, freeze) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "INC-77: bad rollout, stop everything"}),
        )
        .await;
    assert_eq!(status, 201, "{freeze}");
    assert_eq!(freeze["scope"], json!({"kind": "everything"}));
    assert_eq!(freeze["on_runs"], "pause");
    assert_eq!(freeze["issued_by"], "user:tests-operator");
    let freeze_id = freeze["id"].as_str().unwrap().to_owned();
    // The step under way finishes; the run pauses before the next one.
    let run = until_state(&server, &run_id, "paused").await;
    assert_eq!(target.calls("POST /s3"), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for index in 4..=10 {
        assert_eq!(target.calls(&format!("POST /s{index}")), 0, "s{index} ran");
    }
    let paused = timeline(&run);
    let (_, _, detail) = paused
        .iter()
        .find(|(kind, _, _)| kind == "run.paused")
        .expect("a run.paused record");
    assert_eq!(detail["step"], "s4");
    assert_eq!(detail["freeze"], freeze_id.as_str());
    assert_eq!(detail["reason"], "INC-77: bad rollout, stop everything");

    // A new event during the freeze is stored, frozen, and nothing runs.
    let frozen = server.event(&rollout_event("other", "O-1", "web-2")).await;
    assert_eq!(frozen["disposition"], "frozen", "{frozen:#}");
    assert!(frozen["run_id"].is_null());
    assert!(
        frozen["message"]
            .as_str()
            .unwrap()
            .contains("automation is frozen"),
        "{frozen:#}"
    );
    assert_eq!(target.calls("POST /other"), 0);

    let status = server.get("/v1/status").await;
    assert_eq!(status["automation"], "frozen");
    assert_eq!(status["paused_runs"], json!([run_id]));
    assert_eq!(status["freezes"][0]["id"], freeze_id.as_str());
    assert_eq!(
        server.get("/v1/freezes").await["freezes"][0]["id"],
        freeze_id.as_str()
    );

    // Lifted: the run goes on from s4, each step exactly once.
    let (status, lifted) = server
        .post(
            &format!("/v1/freezes/{freeze_id}/lift"),
            &json!({"reason": "rollout fixed"}),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["lifted"]["by"], "user:tests-operator");
    let run = until_state(&server, &run_id, "succeeded").await;
    for index in 1..=10 {
        assert_eq!(target.calls(&format!("POST /s{index}")), 1, "s{index}");
    }
    let kinds: Vec<String> = timeline(&run)
        .into_iter()
        .map(|(kind, _, _)| kind)
        .collect();
    assert!(kinds.contains(&"run.resumed".to_owned()), "{kinds:?}");
    assert_eq!(server.get("/v1/status").await["automation"], "live");
    // Lifting it again is a conflict; an unknown freeze is not found.
    let (status, _) = server
        .post(&format!("/v1/freezes/{freeze_id}/lift"), &json!({}))
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .post("/v1/freezes/frz_nothing/lift", &json!({}))
        .await;
    assert_eq!(status, 404);
    // Both are in the audit log with who and why.
    let records = crate::harness::audit_records(&workspace.database_url());
    let issued = records
        .iter()
        .find(|record| record["kind"] == "freeze.issued")
        .expect("freeze.issued");
    assert_eq!(issued["actor"], "user:tests-operator");
    assert_eq!(
        issued["detail"]["reason"],
        "INC-77: bad rollout, stop everything"
    );
    let lifted = records
        .iter()
        .find(|record| record["kind"] == "freeze.lifted")
        .expect("freeze.lifted");
    assert_eq!(lifted["detail"]["reason"], "rollout fixed");
}

#[tokio::test]
async fn a_freeze_that_cancels_rolls_back_the_steps_the_run_completed() {
    let target = target(3, 2, Duration::from_millis(1000));
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 3));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server
        .event(&rollout_event("rollout", "R-1", "web-1"))
        .await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    wait_for_call(&target, "POST /s2").await;
    let (status, freeze) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "wrong fix", "runbook": "rollout", "on_runs": "cancel"}),
        )
        .await;
    assert_eq!(status, 201, "{freeze}");
    let run = until_state(&server, &run_id, "cancelled").await;
    assert_eq!(target.calls("POST /s3"), 0);
    // Newest first: s2's rollback, then s1's.
    assert_eq!(target.calls("POST /undo-s2"), 1);
    assert_eq!(target.calls("POST /undo-s1"), 1);
    assert_eq!(target.calls("POST /undo-s3"), 0);
    assert!(
        run["reason"].as_str().unwrap().contains("wrong fix"),
        "{run:#}"
    );
}

#[tokio::test]
async fn a_freeze_covers_only_its_scope_and_expires_by_itself() {
    let target = target(2, 0, Duration::ZERO);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("a.yaml", &rollout_runbook("restart-a", "a", 1));
    workspace.add_runbook(
        "b.yaml",
        &rollout_runbook("other-b", "b", 1).replace("/s1", "/s2"),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    // A runbook's freeze.
    let (status, _) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "restarts misbehave", "runbook": "restart-*", "expires_in": "2s"}),
        )
        .await;
    assert_eq!(status, 201);
    let frozen = server.event(&rollout_event("a", "A-1", "web-1")).await;
    assert_eq!(frozen["disposition"], "frozen", "{frozen:#}");
    let other = server.event(&rollout_event("b", "B-1", "web-1")).await;
    assert_eq!(other["disposition"], "started_run", "{other:#}");
    assert_eq!(
        server.wait(other["run_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    assert_eq!(
        server.get("/v1/status").await["automation"],
        "partly_frozen"
    );
    // A targets freeze.
    let (status, _) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "db maintenance", "targets": "DB-PROD-*", "expires_in": "2s"}),
        )
        .await;
    assert_eq!(status, 201);
    let frozen = server.event(&rollout_event("b", "B-2", "db-prod-3")).await;
    assert_eq!(frozen["disposition"], "frozen", "{frozen:#}");
    // Both expire on their own: the same events run again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(server.get("/v1/status").await["automation"], "live");
    let again = server.event(&rollout_event("a", "A-2", "web-1")).await;
    assert_eq!(again["disposition"], "started_run", "{again:#}");
    assert_eq!(
        server.wait(again["run_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
}

#[tokio::test]
async fn a_run_paused_by_an_expiring_freeze_resumes_when_it_expires() {
    let target = target(2, 1, Duration::from_millis(800));
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 2));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server
        .event(&rollout_event("rollout", "R-1", "web-1"))
        .await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    wait_for_call(&target, "POST /s1").await;
    let (status, _) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "short pause", "expires_in": "2s"}),
        )
        .await;
    assert_eq!(status, 201);
    until_state(&server, &run_id, "paused").await;
    assert_eq!(target.calls("POST /s2"), 0);
    let run = until_state(&server, &run_id, "succeeded").await;
    assert_eq!(target.calls("POST /s2"), 1);
    let resumed = timeline(&run)
        .into_iter()
        .find(|(kind, _, _)| kind == "run.resumed")
        .expect("run.resumed");
    assert_eq!(resumed.2["by"], "opsgate");
}

#[tokio::test]
async fn a_freeze_of_a_principal_freezes_only_what_it_posts() {
    let target = target(1, 0, Duration::ZERO);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 1));
    let agent = workspace.create_token("triage-bot", "agent");
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, _) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "the agent proposes nonsense", "principal": "agent:*"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, frozen) = server
        .post_raw_as(
            &agent,
            "/v1/events",
            &rollout_event("rollout", "AG-1", "web-1").to_string(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(frozen["disposition"], "frozen", "{frozen:#}");
    let by_operator = server
        .event(&rollout_event("rollout", "OP-1", "web-1"))
        .await;
    assert_eq!(by_operator["disposition"], "started_run", "{by_operator:#}");
}

#[tokio::test]
async fn freezing_is_refused_to_agents_and_sources_and_without_a_clear_order() {
    let workspace = Workspace::new();
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 1));
    let agent = workspace.create_token("triage-bot", "agent");
    let viewer = workspace.create_token("vera", "viewer");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let order = json!({"reason": "stop"}).to_string();
    for token in [&agent, &viewer, &server.tokens.alertmanager.clone()] {
        let (status, body) = server.post_raw_as(token, "/v1/freezes", &order).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, _) = server
        .post_raw_as("og_made_up", "/v1/freezes", &order)
        .await;
    assert_eq!(status, 401);
    // An agent cannot lift a freeze either.
    let (status, freeze) = server
        .post("/v1/freezes", &json!({"reason": "drill"}))
        .await;
    assert_eq!(status, 201);
    let lift = format!("/v1/freezes/{}/lift", freeze["id"].as_str().unwrap());
    let (status, _) = server.post_raw_as(&agent, &lift, "{}").await;
    assert_eq!(status, 403);
    assert_eq!(server.get("/v1/status").await["automation"], "frozen");
    // An approver (on call) may pull and lift the switch.
    let (status, _) = server
        .post_raw_as(&server.tokens.alice.clone(), &lift, "")
        .await;
    assert_eq!(status, 200);
    // Orders that say too little, or too much.
    for (body, says) in [
        (json!({}), "reason"),
        (json!({"reason": "   "}), "reason"),
        (
            json!({"reason": "x", "runbook": "nothing-*"}),
            "no loaded runbook matches",
        ),
        (
            json!({"reason": "x", "runbook": "rollout", "targets": "db-*"}),
            "one of",
        ),
        (
            json!({"reason": "x", "principal": "triage-bot"}),
            "not a principal",
        ),
        (json!({"reason": "x", "expires_in": "soon"}), "expires_in"),
        (json!({"reason": "x", "expires_in": "-5m"}), "expires_in"),
        (
            json!({"reason": "x", "expires_at": "2020-01-01T00:00:00Z"}),
            "not in the future",
        ),
        (json!({"reason": "x", "on_runs": "explode"}), "on_runs"),
        (json!({"reason": "x", "scope": "everything"}), "scope"),
        (json!({"reason": "x".repeat(501)}), "longer than 500"),
    ] {
        let (status, answer) = server.post("/v1/freezes", &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body} → {message}");
    }
    assert_eq!(server.get("/v1/status").await["automation"], "live");
}

#[tokio::test]
async fn the_cli_freezes_reports_and_unfreezes() {
    let workspace = Workspace::new();
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 1));
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let env = [
        ("OPSGATE_SERVER", server.base.as_str()),
        ("OPSGATE_TOKEN", server.tokens.operator.as_str()),
    ];
    let (code, stdout, stderr) = cli_with_env(&["status"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("automation is LIVE"), "{stdout}");
    let (code, stdout, stderr) = cli_with_env(
        &[
            "freeze",
            "--reason",
            "monthly kill-switch drill",
            "--expires-in",
            "1h",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("all automation"), "{stdout}");
    let id = stdout
        .split_whitespace()
        .find(|word| word.starts_with("frz_"))
        .expect("the freeze's id")
        .to_owned();
    let (code, stdout, _) = cli_with_env(&["status"], &env);
    assert_eq!(code, 1, "a frozen status exits 1");
    assert!(stdout.contains("automation is FROZEN"), "{stdout}");
    assert!(stdout.contains("monthly kill-switch drill"), "{stdout}");
    let (code, _, stderr) = cli_with_env(&["freeze", "--runbook", "rollout"], &env);
    assert_eq!(code, 2, "clap refuses a freeze without a reason: {stderr}");
    let (code, stdout, stderr) = cli_with_env(&["unfreeze", &id, "--reason", "drill over"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    let (code, _, _) = cli_with_env(&["status"], &env);
    assert_eq!(code, 0);
    // An agent's token is refused, and the CLI says so.
    let agent = workspace.create_token("triage-bot", "agent");
    let (code, _, stderr) = cli_with_env(
        &["freeze", "--reason", "x"],
        &[
            ("OPSGATE_SERVER", server.base.as_str()),
            ("OPSGATE_TOKEN", agent.as_str()),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("403") || stderr.contains("may not"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_freeze_issued_on_one_postgres_instance_stops_a_run_another_drives() {
    let Some(database) = crate::postgres::database(
        "a_freeze_issued_on_one_postgres_instance_stops_a_run_another_drives",
    )
    .await
    else {
        return;
    };
    let target = target(3, 2, Duration::from_millis(1500));
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.add_runbook("rollout.yaml", &rollout_runbook("rollout", "rollout", 3));
    let first = workspace.start(&[("TARGET", &target_server.url)]);
    let second = workspace.start(&[("TARGET", &target_server.url)]);
    // The second instance takes the event in, so it drives the run.
    let report = second
        .event(&rollout_event("rollout", "R-1", "web-1"))
        .await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    wait_for_call(&target, "POST /s2").await;
    let (status, freeze) = first
        .post(
            "/v1/freezes",
            &json!({"reason": "stop from the other instance"}),
        )
        .await;
    assert_eq!(status, 201, "{freeze}");
    until_state(&second, &run_id, "paused").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.calls("POST /s3"), 0);
    // The second instance refuses new events too: it heard the freeze.
    let frozen = second
        .event(&rollout_event("rollout", "R-2", "web-2"))
        .await;
    assert_eq!(frozen["disposition"], "frozen", "{frozen:#}");
    let lift = format!("/v1/freezes/{}/lift", freeze["id"].as_str().unwrap());
    let (status, _) = first.post(&lift, &json!({})).await;
    assert_eq!(status, 200);
    until_state(&second, &run_id, "succeeded").await;
    assert_eq!(target.calls("POST /s3"), 1);
    assert_eq!(target.calls("POST /s1"), 1);
}
