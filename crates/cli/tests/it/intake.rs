//! Intake: dedup, resolved events, bad input, approvals, dry runs.

use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, cli, cli_with_env, event, http_runbook};

fn approval_runbook() -> String {
    http_runbook(
        "needs-approval",
        "gated",
        &[("act", "POST", "/act", "idempotent: true")],
        "",
    )
    .replace("approval: auto", "approval: required")
}

async fn gated_target() -> (Scripted, test_support::Running) {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({"done": true}))]);
    let running = target.start().await.unwrap();
    (target, running)
}

#[tokio::test]
async fn the_same_dedup_key_while_a_run_is_open_starts_no_second_run() {
    let (_target, target_server) = gated_target().await;
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &approval_runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let first = server.event(&event("gated", "INC-1")).await;
    assert_eq!(first["disposition"], "started_run");
    assert_eq!(first["state"], "awaiting_approval");
    let second = server.event(&event("gated", "INC-1")).await;
    assert_eq!(second["disposition"], "duplicate");
    assert_eq!(second["run_id"], first["run_id"]);
    // Concurrent duplicates of a new key: the database lets exactly one through.
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (http, url) = (server.http.clone(), format!("{}/v1/events", server.base));
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&event("gated", "INC-2"))
                    .send()
                    .await
                    .unwrap();
                response.json::<serde_json::Value>().await.unwrap()
            })
        })
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap());
    }
    let started = reports
        .iter()
        .filter(|report| report["disposition"] == "started_run")
        .count();
    assert_eq!(started, 1, "{reports:#?}");
    let runs = server.get("/v1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_resolved_event_never_starts_a_run_and_withdraws_a_waiting_one() {
    let (target, target_server) = gated_target().await;
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &approval_runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let mut resolved = event("gated", "ALERT-9");
    resolved["status"] = json!("resolved");
    let report = server.event(&resolved).await;
    assert_eq!(report["disposition"], "inactive");
    assert!(report["run_id"].is_null());
    assert_eq!(
        server.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let firing = server.event(&event("gated", "ALERT-9")).await;
    let run_id = firing["run_id"].as_str().unwrap().to_owned();
    let report = server.event(&resolved).await;
    assert_eq!(report["disposition"], "inactive");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "cancelled");
    assert_eq!(target.calls("POST /act"), 0);
}

#[tokio::test]
async fn approval_through_the_cli_starts_the_run() {
    let (target, target_server) = gated_target().await;
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &approval_runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("gated", "INC-7")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(target.calls("POST /act"), 0, "nothing runs before approval");
    let alice = [("OPSGATE_TOKEN", server.tokens.alice.as_str())];
    let (code, stdout, stderr) = cli_with_env(
        &[
            "approve",
            &run_id,
            "--comment",
            "go",
            "--server",
            &server.base,
        ],
        &alice,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("approved by user:alice"), "{stdout}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /act"), 1);
    let timeline = run["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|record| record["kind"] == "approval.granted" && record["actor"] == "user:alice")
    );
    // A second approval is refused: the run is no longer waiting.
    let bob = [("OPSGATE_TOKEN", server.tokens.bob.as_str())];
    let (code, _, stderr) = cli_with_env(&["approve", &run_id, "--server", &server.base], &bob);
    assert_eq!(code, 1);
    assert!(stderr.contains("409"), "{stderr}");
    let operator = [("OPSGATE_TOKEN", server.tokens.operator.as_str())];
    let (code, stdout, _) = cli_with_env(
        &["runs", "show", &run_id, "--server", &server.base],
        &operator,
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("approved by user:alice"), "{stdout}");
}

#[tokio::test]
async fn malformed_bodies_get_a_clear_400_and_nothing_is_stored() {
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &approval_runbook());
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let cases = [
        ("/v1/events", "{\"source\": \"x\",", "invalid JSON body"),
        (
            "/v1/events",
            r#"{"source":"x","kind":"k","dedup_key":"d","subject":"s","status":"burning"}"#,
            "at `status`",
        ),
        (
            "/v1/events",
            r#"{"source":"x","kind":"k","dedup_key":"","subject":"s","status":"firing"}"#,
            "`dedup_key` must not be empty",
        ),
        (
            "/v1/events",
            r#"{"source":"x","kind":"k","dedup_key":"d","subject":"s","status":"firing","extra":1}"#,
            "unknown field `extra`",
        ),
        // Two values in one body: not read as the first alone.
        (
            "/v1/events",
            r#"{"source":"x","kind":"k","dedup_key":"d","subject":"s","status":"firing"}{"source":"y"}"#,
            "trailing characters",
        ),
        (
            "/v1/hooks/alertmanager",
            r#"{"version":"3","alerts":[]}"#,
            "unsupported Alertmanager payload version",
        ),
        (
            "/v1/hooks/alertmanager",
            r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A"},"fingerprint":"f1"},{"status":"weird","labels":{"alertname":"B"},"fingerprint":"f2"}]}"#,
            "alerts[1].status",
        ),
    ];
    for (path, body, expected) in cases {
        // Webhooks come from their source; events from the operator.
        let token = if path.starts_with("/v1/hooks/") {
            &server.tokens.alertmanager
        } else {
            &server.tokens.operator
        };
        let (status, answer) = server.post_raw_as(token, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{body}: `{message}` should mention `{expected}`"
        );
        assert!(answer["error"]["code"].is_string());
    }
    let (status, answer) = server.post_raw("/v1/events", &"x".repeat(300 * 1024)).await;
    assert_eq!(status, 413, "bodies have a size limit");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    drop(server);
    let (code, stdout, _) = cli(&["audit", "export", "--database", &workspace.database_url()]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "", "nothing was stored: {stdout}");
}

#[test]
fn invalid_runbooks_are_refused_with_file_and_line() {
    let workspace = Workspace::new();
    workspace.add_runbook("good.yaml", &approval_runbook());
    workspace.add_runbook(
        "bad.yaml",
        "id: bad-one\ntitle: Bad\nowner: tests\nrisk: reversible\nmatch: { kind: x }\ntargets: { from: \"[event.subject]\" }\nsteps:\n  - id: a\n    action: http.request\n    with: { url: \"{{ inputs.nope }}\" }\n    timout: 5s\n  - id: a\n    action: http.request\n    with: { url: \"http://x\" }\n",
    );
    let runbooks = workspace.runbooks();
    let (code, stdout, _) = cli(&["runbook", "validate", runbooks.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    for expected in [
        "bad.yaml:10:",
        "bad.yaml:11:",
        "timout",
        "bad.yaml:12:",
        "inputs.nope",
    ] {
        assert!(
            stdout.contains(expected),
            "`{expected}` missing from:\n{stdout}"
        );
    }
    // The server refuses to start on them, and creates no database.
    let (code, _, stderr) = cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--database",
        &workspace.database_url(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("problem(s) in the runbooks"), "{stderr}");
    assert!(!workspace.database_path().exists());
}

#[test]
fn plan_dry_runs_every_example_event_without_touching_anything() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let runbooks = format!("{root}/examples/runbooks");
    let event = format!("{root}/examples/events/vpn-service-stopped.json");
    let (code, stdout, stderr) = cli(&[
        "plan",
        "--event",
        &event,
        "--runbooks",
        &runbooks,
        "--var",
        "ENDPOINT_API=http://endpoint.invalid",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let dry_run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(dry_run["matched"], "restart-endpoint-service");
    assert_eq!(dry_run["decision"]["kind"], "allow");
    assert_eq!(dry_run["plan"]["targets"], json!(["LAPTOP-0042"]));
    assert_eq!(
        dry_run["plan"]["steps"][1]["call"]["request"]["url"],
        "http://endpoint.invalid/devices/LAPTOP-0042/services/vpnagent/restart"
    );
    for file in [
        "mailbox-quota-95.json",
        "vpn-tunnel-down.json",
        "vpn-service-resolved.json",
    ] {
        let (code, stdout, stderr) = cli(&[
            "plan",
            "--event",
            &format!("{root}/examples/events/{file}"),
            "--runbooks",
            &runbooks,
            "--var",
            "ENDPOINT_API=http://x",
        ]);
        assert_eq!(code, 0, "{file}: {stdout}{stderr}");
    }
}

#[tokio::test]
async fn a_recurrence_runbook_acts_only_from_the_nth_incident() {
    let (target, target_server) = gated_target().await;
    let workspace = Workspace::new();
    let runbook = http_runbook("recurring", "flapping", &[("act", "POST", "/act", "idempotent: true")], "")
        .replace("match:\n  kind: flapping\n", "match:\n  kind: flapping\n  recurrence: { count: 3, window: 1h, key: [subject, fields.signature] }\n");
    workspace.add_runbook("r.yaml", &runbook);
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let incident = |key: &str, signature: &str| {
        let mut incident = event("flapping", key);
        incident["fields"] = json!({"signature": signature});
        incident
    };
    // A dry run cannot count earlier events, and says what intake would wait for.
    let (status, dry_run) = server
        .post("/v1/plan", &incident("INC-0", "spooler crashed"))
        .await;
    assert_eq!(status, 200, "{dry_run}");
    let message = dry_run["message"].as_str().unwrap();
    assert!(
        message.starts_with("would run it, auto-approved")
            && message.contains("only once the event has been seen 3 times within 1h"),
        "{message}"
    );
    let first = server.event(&incident("INC-1", "spooler crashed")).await;
    assert_eq!(first["disposition"], "below_recurrence", "{first}");
    assert!(
        first["message"].as_str().unwrap().contains("seen 1"),
        "{first}"
    );
    // A re-sent incident is not a new occurrence; another signature is another key.
    assert_eq!(
        server.event(&incident("INC-1", "spooler crashed")).await["disposition"],
        "below_recurrence"
    );
    assert_eq!(
        server.event(&incident("INC-X", "driver crashed")).await["disposition"],
        "below_recurrence"
    );
    let second = server.event(&incident("INC-2", "spooler crashed")).await;
    assert!(
        second["message"].as_str().unwrap().contains("seen 2"),
        "{second}"
    );
    let third = server.event(&incident("INC-3", "spooler crashed")).await;
    assert_eq!(third["disposition"], "started_run", "{third}");
    assert_eq!(
        server.wait(third["run_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    assert_eq!(target.calls("POST /act"), 1);
}

#[tokio::test]
async fn two_runs_never_act_on_the_same_target_at_once() {
    let target = Scripted::default();
    target.on(
        "POST /act",
        vec![Reply::json(200, json!({})).delayed(std::time::Duration::from_millis(700))],
    );
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "serial",
            "busy",
            &[("act", "POST", "/act", "idempotent: true")],
            "",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    // Two incidents (two dedup keys) about the same host HOST-1.
    let first = server.event(&event("busy", "INC-A")).await;
    let second = server.event(&event("busy", "INC-B")).await;
    for report in [&first, &second] {
        assert_eq!(
            server.wait(report["run_id"].as_str().unwrap()).await["state"],
            "succeeded"
        );
    }
    let times = target.call_times("POST /act");
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= std::time::Duration::from_millis(690),
        "the second run started {gap:?} after the first, while it still held HOST-1"
    );
}

/// Run from an empty directory, as an installed binary would be: the demo
/// brings its examples with it.
#[test]
fn the_demo_closes_every_scenario_as_designed() {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::harness::BIN)
        .arg("demo")
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "verified: response.json.status == 'running'",
        "needs_human",
        "rollback `set-fallback-profile`",
        "no run (inactive)",
        "alice approves on the page",
        "approved by user:alice",
        "below the runbook's min_confidence 0.8",
        "carol is out of office; their backup frank stands in",
        "approved by user:frank (stage manager, 1 of 1)",
        "approved by user:erin (stage security, 1 of 1)",
        "incident INC0012345 in ServiceNow",
        "| Automation succeeded.",
        "state 6 (Resolved)",
        "approved by user:judy (stage mailbox-owner, 1 of 1)",
        "rollback `grant-mailbox-access` attempt 1 succeeded",
        "sc_req_item RITM0010088 in ServiceNow",
        "| The time-bound change was undone; the run is complete.",
        "state 3 (Closed Complete)",
        "Judy's approval record on RITM0010088: approved",
        "audit chain intact",
        // (i): escalating remedies across a site.
        "INC0012505 from LAPTOP-0305, 5 min ago:",
        "first remedy did not verify on LAPTOP-0307: second remedy next (roll-back-print-driver)",
        "on-call endpoint-oncall alerted on LAPTOP-0307",
        "untouched LAPTOP-0308, LAPTOP-0309, LAPTOP-0310, LAPTOP-0311, LAPTOP-0312",
        // (j): the kill switch.
        "paused before step `capture-diagnostics`: freeze",
        "automation is frozen",
        "the event is stored and nothing runs",
        "opsgate status: automation partly_frozen",
        "resumed at step `capture-diagnostics`",
        // (k): shadow mode.
        "INC0012404: runbook `clear-print-queue` matched in shadow mode: opsgate would run; nothing was executed",
        "not shadowed again within its shadow_hold",
        "| Shadow mode, nothing was executed: opsgate would run. The requests it would have sent: 1. POST http://",
        "recorded beside shadowed run",
        "clear-print-queue (now shadow): 5 events seen — 4 shadowed, 1 held off",
        "resolved by people: 3 — agreed 2, differed 1, not comparable 0 — 67% agreement",
        "differs: INC0012403 (LAPTOP-0103",
        "4 shadowed, 2 of 3 agree",
        // (l): an agent over MCP.
        "the agent connects to http://",
        "tools: list_runbooks, describe_runbook, dry_run_proposal, propose, run_status, explain_decision, withdraw_proposal",
        "the agent proposes restart-endpoint-service at confidence 0.93: opsgate answers executing",
        "the agent proposes recycle-iis-web-tier at confidence 0.91: opsgate answers awaiting_approval",
        "the agent proposes recycle-iis-web-tier at confidence 0.42: opsgate answers denied (agent `demo-agent` proposed with confidence 0.42, below the runbook's min_confidence 0.8",
        "incident INC0020101 in ServiceNow",
        "| Proposed by agent:demo-agent (model demo-triage-model 2026-11, prompt triage-v4), confidence 0.93: The ticket names one laptop",
        "| - evidence (observation): Grafana: 5xx rate 31% on WEB-03 since 09:41",
        "| Not run: agent `demo-agent` proposed with confidence 0.42",
    ] {
        assert!(stdout.contains(expected), "`{expected}` missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("  yes").count(), 14, "{stdout}");
}

#[test]
fn the_demo_reads_the_events_its_flag_names() {
    let events = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::harness::BIN)
        .args(["demo", "--events"])
        .arg(events.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let missing = events.path().join("vpn-service-stopped.json");
    assert!(
        stderr.contains(&format!("reading {}", missing.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn post_plan_is_a_dry_run_that_stores_nothing() {
    let (target, target_server) = gated_target().await;
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &approval_runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, dry_run) = server.post("/v1/plan", &event("gated", "INC-P")).await;
    assert_eq!(status, 200, "{dry_run}");
    assert_eq!(dry_run["matched"], "needs-approval");
    assert_eq!(dry_run["decision"]["kind"], "require_approval");
    assert_eq!(
        dry_run["plan"]["steps"][0]["call"]["request"]["url"],
        format!("{}/act", target_server.url)
    );
    assert_eq!(
        server.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(target.calls("POST /act"), 0);
    drop(server);
    let (_, stdout, _) = cli(&["audit", "export", "--database", &workspace.database_url()]);
    assert_eq!(stdout.trim(), "");
}

#[tokio::test]
async fn serve_reads_its_settings_from_a_config_file() {
    let (target, target_server) = gated_target().await;
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &approval_runbook().replace("approval: required", "approval: auto"),
    );
    let config = workspace.dir.path().join("opsgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndatabase: {}\nrunbooks: {}\nvars:\n  TARGET: {}\n",
            workspace.database_url(),
            workspace.runbooks().display(),
            target_server.url
        ),
    )
    .unwrap();
    let operator = workspace.tokens().operator.clone();
    let mut child = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let base = first
        .trim()
        .strip_prefix("opsgate listening on ")
        .unwrap()
        .to_owned();
    let http = crate::harness::client_with_token(&operator);
    let health: serde_json::Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let report: serde_json::Value = http
        .post(format!("{base}/v1/events"))
        .json(&event("gated", "CFG-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: serde_json::Value = http
        .get(format!(
            "{base}/v1/runs/{}/wait",
            report["run_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        target.calls("POST /act"),
        1,
        "the file's vars reached the templates"
    );
    assert!(
        workspace.database_path().exists(),
        "the file's database was used"
    );
}
