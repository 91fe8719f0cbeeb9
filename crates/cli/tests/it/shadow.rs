//! Shadow mode on the real server: a runbook with `mode: shadow`, or any
//! runbook proposed by a principal the config puts in shadow, is matched,
//! planned and decided, and stops before any call — the target is never
//! called — recording the exact requests it would have sent; a ticketed
//! run says so in a work note. A subject shadowed lately is held off. When
//! a person resolves the ticket, what they did is recorded beside what
//! opsgate would have done, and `opsgate report shadow` adds it up.

use serde_json::{Value, json};
use test_support::servicenow_sim::ServiceNowSim;

use crate::harness::{Server, Workspace, cli, count_of, http_runbook, timeline};
use crate::servicenow::{notification, notify_at, target, workspace};

/// Sends the business rule's notification of `number`'s update (its
/// update count makes each signature its own) and returns the report.
async fn update(
    server: &Server,
    sim: &ServiceNowSim,
    sys_id: &str,
    number: &str,
    attempt: i64,
) -> Value {
    let record = sim.record("incident", sys_id).expect("the incident");
    let mut body = notification("incident", sys_id, number, "update");
    body["sys_mod_count"] = json!(record["sys_mod_count"]);
    let (status, answer, _) = notify_at(server, &body, attempt).await;
    assert_eq!(status, 202, "{body} → {answer}");
    answer["report"].clone()
}

fn incident_on(sim: &ServiceNowSim, number: &str, laptop: &str) -> String {
    let ci = sim.seed_record("cmdb_ci", &[("name", laptop)]);
    sim.seed_record(
        "incident",
        &[
            ("number", number),
            ("short_description", "VPN client service stopped"),
            ("state", "2"),
            ("cmdb_ci", &ci),
        ],
    )
}

/// A person resolves the incident as the instance records it.
fn resolve(sim: &ServiceNowSim, sys_id: &str, by: &str, close_code: &str, notes: &str) {
    sim.set_field_as("beth.anglin", "incident", sys_id, "close_code", close_code);
    sim.set_field_as("beth.anglin", "incident", sys_id, "close_notes", notes);
    sim.set_field_as("beth.anglin", "incident", sys_id, "resolved_by", by);
    sim.set_field_as("beth.anglin", "incident", sys_id, "state", "6");
    sim.set_field_as("beth.anglin", "incident", sys_id, "sys_mod_count", "20");
}

fn record<'t>(records: &'t [(String, String, Value)], kind: &str) -> &'t Value {
    &records
        .iter()
        .find(|(found, _, _)| found == kind)
        .unwrap_or_else(|| panic!("no {kind} in {records:#?}"))
        .2
}

#[tokio::test]
async fn a_shadow_runbook_calls_nothing_tells_the_ticket_and_compares_with_how_people_resolved_it()
{
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(test_support::servicenow_sim::Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let beth = sim.seed_record(
        "sys_user",
        &[("name", "Beth Anglin"), ("user_name", "beth.anglin")],
    );
    let first = incident_on(&sim, "INC0040001", "LAPTOP-0042");
    let second = incident_on(&sim, "INC0040002", "LAPTOP-0043");
    let workspace = workspace(
        &sim_server.url,
        &http_runbook(
            "vpn-restart",
            "incident",
            &[("act", "POST", "/act", "")],
            "mode: shadow\nwriteback: { ticket: true, resolve_on_success: { close_code: \"Solution provided\" } }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    // Matched, planned, decided — and stopped before any call.
    let shadowed = update(&server, &sim, &first, "INC0040001", 1).await;
    assert_eq!(shadowed["disposition"], "shadowed", "{shadowed:#}");
    assert_eq!(shadowed["decision"]["kind"], "allow", "{shadowed:#}");
    let run_id = shadowed["run_id"].as_str().unwrap().to_owned();
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "shadowed", "{run:#}");
    let records = timeline(&run);
    let would = record(&records, "run.shadowed");
    assert_eq!(would["would"], "run");
    assert_eq!(
        would["requests"],
        json!([{"step": "act", "action": "http.request",
                "request": {"method": "POST", "url": format!("{}/act", target_server.url)}}]),
        "the exact request a live run would send"
    );
    for never in ["attempt.started", "approval.requested", "run.paused"] {
        assert_eq!(count_of(&run, never), 0, "{never} in {records:#?}");
    }
    assert_eq!(
        record(&records, "run.state")["to"],
        "shadowed",
        "{records:#?}"
    );
    assert_eq!(target.calls("POST /act"), 0, "nothing was called");
    // The ticket is told what would have run, and left as it was.
    let note = crate::harness::eventually(std::time::Duration::from_secs(15), || {
        sim.work_notes(&first)
            .iter()
            .any(|note| note.contains("Shadow mode, nothing was executed"))
    })
    .await;
    let notes = sim.work_notes(&first).join("\n---\n");
    assert!(note, "no shadow note:\n{notes}");
    assert!(
        notes.contains("opsgate would run")
            && notes.contains(&format!("1. POST {}/act (act)", target_server.url)),
        "{notes}"
    );
    assert!(!notes.contains("Automation started"), "{notes}");
    assert_eq!(sim.record("incident", &first).unwrap()["state"], "2");

    // The same subject again within the hold: not shadowed again.
    sim.set_field_as("abel.tuter", "incident", &first, "priority", "1");
    sim.set_field_as("abel.tuter", "incident", &first, "sys_mod_count", "5");
    let held = update(&server, &sim, &first, "INC0040001", 2).await;
    assert_eq!(held["disposition"], "shadow_held", "{held:#}");
    assert!(
        held["message"].as_str().unwrap().contains(&run_id),
        "{held:#}"
    );
    let other = update(&server, &sim, &second, "INC0040002", 3).await;
    assert_eq!(
        other["disposition"], "shadowed",
        "another subject: {other:#}"
    );
    let other_run = other["run_id"].as_str().unwrap().to_owned();

    // People resolve them: one otherwise than opsgate would have, one the
    // same way. Each resolution is recorded beside its shadowed run.
    resolve(
        &sim,
        &first,
        &beth,
        "Workaround",
        "Reinstalled the VPN client by hand",
    );
    let resolved = update(&server, &sim, &first, "INC0040001", 4).await;
    assert_eq!(resolved["disposition"], "inactive", "{resolved:#}");
    assert_eq!(resolved["run_id"], run_id.as_str(), "{resolved:#}");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("shadowed run"),
        "{resolved:#}"
    );
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let did = record(&timeline(&run), "shadow.resolved").clone();
    assert_eq!(did["by"], "Beth Anglin", "{did:#}");
    assert_eq!(did["close_code"], "Workaround");
    assert_eq!(did["close_notes"], "Reinstalled the VPN client by hand");
    assert_eq!(did["would_close_code"], "Solution provided");
    assert_eq!(did["agrees"], false);
    resolve(
        &sim,
        &second,
        &beth,
        "Solution provided",
        "Restarted the VPN service",
    );
    let agreed = update(&server, &sim, &second, "INC0040002", 5).await;
    assert_eq!(agreed["run_id"], other_run.as_str(), "{agreed:#}");
    let run = server.get(&format!("/v1/runs/{other_run}")).await;
    assert_eq!(record(&timeline(&run), "shadow.resolved")["agrees"], true);
    assert_eq!(target.calls("POST /act"), 0, "still nothing called");

    // The report: the evidence for switching the runbook to live.
    let report = server.get("/v1/reports/shadow?since=1h").await;
    let [runbook] = report["runbooks"].as_array().unwrap().as_slice() else {
        panic!("one runbook: {report:#}");
    };
    for (field, expected) in [
        ("runbook", json!("vpn-restart")),
        ("mode", json!("shadow")),
        ("events_seen", json!(3)),
        ("shadowed", json!(2)),
        ("held_off", json!(1)),
        ("would_run", json!(2)),
        ("would_ask", json!(0)),
        ("would_refuse", json!(0)),
        ("resolved", json!(2)),
        ("agreed", json!(1)),
        ("differed", json!(1)),
        ("not_comparable", json!(0)),
        ("agreement", json!(0.5)),
    ] {
        assert_eq!(runbook[field], expected, "{field}: {report:#}");
    }
    let [case] = runbook["differing"].as_array().unwrap().as_slice() else {
        panic!("one differing case: {report:#}");
    };
    assert_eq!(case["run_id"], run_id.as_str());
    assert_eq!(case["ticket"], "INC0040001");
    assert_eq!(case["subject"], "LAPTOP-0042");
    assert_eq!(case["would"], "run");
    assert_eq!(case["resolved_by"], "Beth Anglin");
    assert_eq!(case["close_code"], "Workaround");

    // A report from before now holds nothing; and the CLI says the same.
    let later = server
        .get(&format!(
            "/v1/reports/shadow?since={}",
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)
        ))
        .await;
    assert_eq!(later["runbooks"], json!([]), "{later:#}");
    let token = &server.tokens.operator;
    let (code, stdout, stderr) = cli(&[
        "report",
        "shadow",
        "--since",
        "1h",
        "--server",
        &server.base,
        "--token",
        token,
    ]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "vpn-restart (now shadow): 3 events seen — 2 shadowed, 1 held off",
        "would have: run 2, asked for approval 0, refused 0",
        "resolved by people: 2 — agreed 1, differed 1, not comparable 0 — 50% agreement",
        "differs: INC0040001 (LAPTOP-0042",
        "would run and close as \"Solution provided\"; Beth Anglin closed it as \"Workaround\": Reinstalled the VPN client by hand",
    ] {
        assert!(stdout.contains(line), "`{line}` in:\n{stdout}");
    }
    let (code, _, stderr) = cli(&[
        "report",
        "shadow",
        "--since",
        "last tuesday",
        "--server",
        &server.base,
        "--token",
        token,
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("400") && stderr.contains("`since` must be a time"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_principal_in_shadow_is_shadowed_on_a_live_runbook_and_counts_against_no_limit() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "clear-cache",
            "CacheFull",
            &[("act", "POST", "/act", "")],
            "guardrails:\n  rate_limit: { runs: 1, window: 1h }\n",
        ),
    );
    workspace.config_yaml = Some("shadow: { principals: [\"agent:triage-*\"] }\n".to_owned());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let agent = workspace.create_token("triage-bot", "agent");
    let other_agent = workspace.create_token("ops-bot", "agent");
    let cache_full = |dedup_key: &str, subject: &str| {
        json!({"source": "tests", "kind": "CacheFull", "dedup_key": dedup_key,
               "subject": subject, "status": "firing", "fields": {}})
        .to_string()
    };

    for (index, host) in ["HOST-1", "HOST-2", "HOST-3"].into_iter().enumerate() {
        let (status, answer) = server
            .post_raw_as(
                &agent,
                "/v1/events",
                &cache_full(&format!("a-{index}"), host),
            )
            .await;
        assert_eq!(status, 202, "{answer:#}");
        assert_eq!(answer["disposition"], "shadowed", "{answer:#}");
    }
    // Within the day's hold, the same subject is not shadowed again.
    let (_, again) = server
        .post_raw_as(&agent, "/v1/events", &cache_full("a-again", "HOST-1"))
        .await;
    assert_eq!(again["disposition"], "shadow_held", "{again:#}");
    assert_eq!(target.calls("POST /act"), 0);

    // Shadow runs count against no limit: the runbook's one run an hour is
    // still there for a principal that is not in shadow.
    let (status, live) = server
        .post_raw_as(&other_agent, "/v1/events", &cache_full("b-0", "HOST-9"))
        .await;
    assert_eq!(status, 202, "{live:#}");
    assert_eq!(live["disposition"], "started_run", "{live:#}");
    let run_id = live["run_id"].as_str().unwrap();
    assert_eq!(server.wait(run_id).await["state"], "succeeded");
    assert_eq!(target.calls("POST /act"), 1);

    let report = server.get("/v1/reports/shadow").await;
    let runbook = &report["runbooks"][0];
    assert_eq!(runbook["mode"], "live", "{report:#}");
    assert_eq!(runbook["shadowed"], 3, "{report:#}");
    assert_eq!(runbook["held_off"], 1, "{report:#}");
    assert_eq!(runbook["resolved"], 0, "{report:#}");
    assert_eq!(runbook["agreement"], Value::Null, "{report:#}");
}

#[test]
fn a_shadow_principal_must_name_its_kind() {
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "clear-cache",
            "CacheFull",
            &[("act", "POST", "/act", "")],
            "",
        ),
    );
    let config = workspace.dir.path().join("serve.yaml");
    std::fs::write(&config, "shadow: { principals: [\"triage-bot\"] }\n").unwrap();
    workspace.config_yaml = None;
    let database = workspace.database_url();
    let runbooks = workspace.runbooks();
    let (code, _, stderr) = cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--database",
        &database,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("shadow.principals: `triage-bot` is not a principal"),
        "{stderr}"
    );
}
