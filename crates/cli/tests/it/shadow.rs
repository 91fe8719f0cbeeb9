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
async fn a_principal_in_shadow_is_shadowed_on_a_live_runbook_and_counts_against_no_live_run() {
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
    // Judged as if they had run: the rate limit of one an hour lets the
    // first through and would have refused the other two.
    assert_eq!(runbook["would_run"], 1, "{report:#}");
    assert_eq!(runbook["would_refuse"], 2, "{report:#}");
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

/// Past events of `clear-cache` over a day: bursts a rate limit of two an
/// hour stops, repeats a hold keeps off, a recurrence of the same host,
/// and people's resolutions — one as the runbook would close it, one not.
fn history() -> Vec<Value> {
    let at = |hour: u32, minute: u32| format!("2026-11-02T{hour:02}:{minute:02}:00Z");
    let firing = |host: &str, hour: u32, minute: u32| {
        json!({"source": "monitoring", "kind": "CacheFull", "dedup_key": format!("cache:{host}"),
               "subject": host, "status": "firing", "fields": {}, "occurred_at": at(hour, minute)})
    };
    let resolved = |host: &str, hour: u32, close_code: &str| {
        json!({"source": "monitoring", "kind": "CacheFull", "dedup_key": format!("cache:{host}"),
               "subject": host, "status": "resolved", "occurred_at": at(hour, 0),
               "fields": {"close_code": close_code, "resolved_by": "Beth Anglin",
                          "close_notes": format!("{close_code} on {host}")}})
    };
    vec![
        // 09:00–09:40: three hosts; the third meets the rate limit.
        firing("HOST-1", 9, 0),
        firing("HOST-2", 9, 20),
        firing("HOST-3", 9, 40),
        // HOST-1 again within the hold: held off.
        firing("HOST-1", 9, 50),
        // 14:00–14:40: a new hour, two more run, one is refused.
        firing("HOST-4", 14, 0),
        firing("HOST-5", 14, 20),
        firing("HOST-6", 14, 40),
        // People resolve two of them.
        resolved("HOST-1", 16, "Solved"),
        resolved("HOST-2", 17, "Workaround"),
        // An event from an agent, shadowed like any other.
        {
            let mut agent = firing("HOST-7", 20, 0);
            agent["requester"] = json!("agent:triage-bot");
            agent
        },
    ]
}

fn replay_workspace(target_url: &str) -> Workspace {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "clear-cache",
            "CacheFull",
            &[("act", "POST", "/act", "")],
            "guardrails:\n  rate_limit: { runs: 2, window: 1h }\n\
             writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n",
        )
        .replace("\"{{ env.TARGET }}/act\"", &format!("\"{target_url}/act\"")),
    );
    workspace
}

/// `opsgate shadow replay` on `lines`, as JSON: its tally and report.
fn replay(workspace: &Workspace, name: &str, text: &str, extra: &[&str]) -> Value {
    let file = workspace.dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let runbooks = workspace.runbooks();
    let mut args = vec![
        "shadow",
        "replay",
        file.to_str().unwrap(),
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cli(&args);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

/// What a report says, without what differs between two replays of the
/// same events (run ids, the time it was made).
fn said(answer: &Value) -> Value {
    let mut report = answer["report"]["runbooks"].clone();
    for runbook in report.as_array_mut().unwrap() {
        for case in runbook["differing"].as_array_mut().unwrap() {
            case.as_object_mut().unwrap().remove("run_id");
            case.as_object_mut().unwrap().remove("shadowed_at");
        }
    }
    json!({"tally": answer["tally"]["dispositions"], "runbooks": report})
}

#[tokio::test]
async fn a_replay_judges_past_events_when_they_happened_and_answers_alike_in_any_order_and_pace() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let workspace = replay_workspace(&target_server.url);
    let history = history();
    let jsonl = |events: &[Value]| {
        events
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let answer = replay(&workspace, "history.jsonl", &jsonl(&history), &[]);
    let runbook = &answer["report"]["runbooks"][0];
    for (field, expected) in [
        ("runbook", json!("clear-cache")),
        ("mode", json!("live")),
        ("events_seen", json!(8)),
        ("shadowed", json!(7)),
        ("held_off", json!(1)),
        ("would_run", json!(5)),
        ("would_refuse", json!(2)),
        ("resolved", json!(2)),
        ("agreed", json!(1)),
        ("differed", json!(1)),
    ] {
        assert_eq!(runbook[field], expected, "{field}: {answer:#}");
    }
    assert_eq!(runbook["differing"][0]["subject"], "HOST-2", "{answer:#}");
    assert_eq!(runbook["differing"][0]["close_code"], "Workaround");
    assert_eq!(
        answer["tally"]["dispositions"],
        json!({"shadowed": 7, "shadow_held": 1, "inactive": 2}),
        "{answer:#}"
    );
    assert_eq!(target.calls("POST /act"), 0, "nothing was called");

    // The same events in another order, one every 20 ms: the same answer.
    let mut reversed = history.clone();
    reversed.reverse();
    let again = replay(
        &workspace,
        "reversed.jsonl",
        &jsonl(&reversed),
        &["--pace", "20ms"],
    );
    assert_eq!(said(&again), said(&answer));

    // As CSV, with a column that becomes a field.
    let mut csv = String::from(
        "occurred_at,source,kind,dedup_key,subject,status,requester,close_code,resolved_by,close_notes\n",
    );
    for event in &history {
        let field = |name: &str| {
            event["fields"][name]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},\"{}\",\"{}\"\n",
            event["occurred_at"].as_str().unwrap(),
            event["source"].as_str().unwrap(),
            event["kind"].as_str().unwrap(),
            event["dedup_key"].as_str().unwrap(),
            event["subject"].as_str().unwrap(),
            event["status"].as_str().unwrap(),
            event["requester"].as_str().unwrap_or_default(),
            field("close_code"),
            field("resolved_by"),
            field("close_notes"),
        ));
    }
    let from_csv = replay(&workspace, "history.csv", &csv, &[]);
    assert_eq!(said(&from_csv), said(&answer));
}

#[test]
fn a_replay_refuses_a_file_with_bad_rows_and_says_where() {
    let workspace = replay_workspace("http://127.0.0.1:9");
    let file = workspace.dir.path().join("bad.jsonl");
    let good = json!({"source": "m", "kind": "CacheFull", "dedup_key": "a", "subject": "H",
                      "status": "firing", "occurred_at": "2026-11-02T09:00:00Z"});
    let mut no_time = good.clone();
    no_time.as_object_mut().unwrap().remove("occurred_at");
    let mut bad_requester = good.clone();
    bad_requester["requester"] = json!("triage-bot");
    std::fs::write(
        &file,
        format!("{good}\n{{not json\n{no_time}\n\n{bad_requester}\n"),
    )
    .unwrap();
    let runbooks = workspace.runbooks();
    let (code, stdout, stderr) = cli(&[
        "shadow",
        "replay",
        file.to_str().unwrap(),
        "--runbooks",
        runbooks.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stdout}");
    let path = file.display().to_string();
    for expected in [
        format!("{path}:2:2: not JSON"),
        format!("{path}:3: no `occurred_at`"),
        format!("{path}:5: requester `triage-bot` is not `source:…`, `agent:…` or `user:…`"),
    ] {
        assert!(stderr.contains(&expected), "`{expected}` in:\n{stderr}");
    }
    assert!(!stdout.contains("replayed"), "nothing replayed: {stdout}");
}
