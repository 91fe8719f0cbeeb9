//! One run per problem, not per update, on the real server: an incident
//! updated again and again while open — by people and by opsgate's own
//! notes, through the ServiceNow simulator and the real write-back — gets
//! one run until it is resolved and comes back; a runbook's `rerun.after`
//! lets an update start a new run once that long has passed; a second
//! ticket about the same subject is linked to the open run, and both
//! tickets are told; and every update held back is reported `suppressed`,
//! never as a denied run.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::servicenow_sim::{Credentials, ServiceNowSim};

use crate::harness::{Server, Workspace, count_of, event, eventually, http_runbook, timeline};
use crate::servicenow::{notification, notify_at, target, workspace};

/// What the business rule sends for `number`'s `update`, with who made it
/// as the instance records it (`current.sys_updated_by`) and its update
/// count, which makes each notification's signature its own.
fn update_by(sim: &ServiceNowSim, sys_id: &str, number: &str) -> Value {
    let record = sim.record("incident", sys_id).expect("the incident");
    let mut body = notification("incident", sys_id, number, "update");
    body["sys_updated_by"] = json!(record["sys_updated_by"]);
    body["sys_mod_count"] = json!(record["sys_mod_count"]);
    body
}

/// Sends `body` as the business rule does and returns its intake report.
async fn report_of(server: &Server, body: &Value, attempt: i64) -> Value {
    let (status, answer, _) = notify_at(server, body, attempt).await;
    assert_eq!(status, 202, "{body} → {answer}");
    answer["report"].clone()
}

/// An incident on `ci` (a `cmdb_ci` sys_id) in state `2` (In Progress).
fn seed_incident_on(sim: &ServiceNowSim, number: &str, ci: &str) -> String {
    sim.seed_record(
        "incident",
        &[
            ("number", number),
            ("short_description", "VPN client service stopped"),
            ("state", "2"),
            ("cmdb_ci", ci),
        ],
    )
}

fn laptop(sim: &ServiceNowSim) -> String {
    sim.seed_record("cmdb_ci", &[("name", "LAPTOP-0042")])
}

async fn notes_holding(sim: &ServiceNowSim, sys_id: &str, text: &str) -> String {
    let found = eventually(Duration::from_secs(15), || {
        sim.work_notes(sys_id)
            .iter()
            .any(|note| note.contains(text))
    })
    .await;
    let notes = sim.work_notes(sys_id).join("\n---\n");
    assert!(found, "no note holds `{text}`:\n{notes}");
    notes
}

fn run_ids(runs: &Value) -> Vec<String> {
    runs["runs"]
        .as_array()
        .expect("a list of runs")
        .iter()
        .map(|run| run["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_incident_updated_ten_times_while_open_gets_one_run_until_it_resolves_and_comes_back() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let ci = laptop(&sim);
    let sys_id = seed_incident_on(&sim, "INC0030001", &ci);
    let workspace = workspace(
        &sim_server.url,
        &http_runbook(
            "from-ticket",
            "incident",
            &[("act", "POST", "/act", "")],
            "writeback: { ticket: true }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let mut attempt = 0;
    let mut next = || {
        attempt += 1;
        attempt
    };

    let first = report_of(&server, &update_by(&sim, &sys_id, "INC0030001"), next()).await;
    assert_eq!(first["disposition"], "started_run", "{first:#}");
    let run_id = first["run_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
    notes_holding(&sim, &sys_id, "Automation succeeded").await;

    // The work notes came back as updates made by opsgate's own user, and
    // people went on working the incident; it never left In Progress.
    let mut reports = Vec::new();
    let integration_user = Credentials::default().username;
    assert_eq!(
        sim.record("incident", &sys_id).unwrap()["sys_updated_by"],
        integration_user,
        "the write-back's notes were the last change"
    );
    reports.push(report_of(&server, &update_by(&sim, &sys_id, "INC0030001"), next()).await);
    for (index, (user, field, value)) in [
        ("abel.tuter", "priority", "2"),
        ("abel.tuter", "description", "still stopped after a reboot"),
        ("beth.anglin", "priority", "1"),
        ("beth.anglin", "category", "network"),
        (
            integration_user.as_str(),
            "description",
            "opsgate's own change",
        ),
        ("abel.tuter", "short_description", "VPN down again"),
        ("beth.anglin", "priority", "3"),
        ("abel.tuter", "description", "user asks for news"),
        ("beth.anglin", "category", "software"),
    ]
    .into_iter()
    .enumerate()
    {
        sim.set_field_as(user, "incident", &sys_id, field, value);
        sim.set_field_as(
            user,
            "incident",
            &sys_id,
            "sys_mod_count",
            &(index + 10).to_string(),
        );
        reports.push(report_of(&server, &update_by(&sim, &sys_id, "INC0030001"), next()).await);
    }
    assert_eq!(reports.len(), 10);
    for report in &reports {
        assert_eq!(report["disposition"], "suppressed", "{report:#}");
        assert_eq!(
            report["decision"],
            Value::Null,
            "nothing decided: {report:#}"
        );
    }
    for opsgate_own in [&reports[0], &reports[5]] {
        let message = opsgate_own["message"].as_str().unwrap();
        assert!(message.contains("made by opsgate itself"), "{message}");
    }
    for person in reports
        .iter()
        .enumerate()
        .filter(|(index, _)| ![0, 5].contains(index))
    {
        assert_eq!(
            person.1["run_id"],
            run_id.as_str(),
            "names the run: {:#}",
            person.1
        );
    }
    assert_eq!(run_ids(&server.get("/v1/runs").await), [run_id.as_str()]);
    assert_eq!(target.calls("POST /act"), 1, "the fix ran once");

    // Resolved, then back: a new run. Each update counts up
    // `sys_mod_count`, as the instance does, so no two notifications are
    // alike (the same body signed in the same second is a replay).
    let updated_as = |user: &str, field: &str, value: &str, count: u32| {
        sim.set_field_as(user, "incident", &sys_id, field, value);
        sim.set_field_as(
            user,
            "incident",
            &sys_id,
            "sys_mod_count",
            &count.to_string(),
        );
    };
    updated_as("beth.anglin", "state", "6", 20);
    let resolved = report_of(&server, &update_by(&sim, &sys_id, "INC0030001"), next()).await;
    assert_eq!(resolved["disposition"], "inactive", "{resolved:#}");
    updated_as("abel.tuter", "state", "2", 21);
    let back = report_of(&server, &update_by(&sim, &sys_id, "INC0030001"), next()).await;
    assert_eq!(back["disposition"], "started_run", "{back:#}");
    let second = back["run_id"].as_str().unwrap().to_owned();
    assert_ne!(second, run_id);
    assert_eq!(server.wait(&second).await["state"], "succeeded");
    updated_as("abel.tuter", "description", "and again", 30);
    let again = report_of(&server, &update_by(&sim, &sys_id, "INC0030001"), next()).await;
    assert_eq!(again["disposition"], "suppressed", "{again:#}");
    assert_eq!(run_ids(&server.get("/v1/runs").await).len(), 2);
}

#[tokio::test]
async fn rerun_after_lets_an_update_start_a_run_once_the_last_is_old_enough() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    let rerun = |after: &str| {
        http_runbook(
            "clear-cache",
            "CacheFull",
            &[("act", "POST", "/act", "")],
            "",
        )
        .replace(
            "  kind: CacheFull\n",
            &format!("  kind: CacheFull\n  rerun: {{ after: {after} }}\n"),
        )
    };
    workspace.add_runbook("r.yaml", &rerun("2s"));
    workspace.add_runbook(
        "once.yaml",
        &http_runbook("restart", "ServiceDown", &[("act", "POST", "/act", "")], ""),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let first = server.event(&event("CacheFull", "cache-1")).await;
    assert_eq!(first["disposition"], "started_run", "{first:#}");
    let run_id = first["run_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
    let soon = server.event(&event("CacheFull", "cache-1")).await;
    assert_eq!(soon["disposition"], "suppressed", "{soon:#}");
    assert_eq!(soon["run_id"], run_id.as_str());

    let created: jiff::Timestamp = server.get(&format!("/v1/runs/{run_id}")).await["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let due = created + jiff::SignedDuration::from_millis(2_100);
    if let Ok(wait) = Duration::try_from(due - jiff::Timestamp::now()) {
        tokio::time::sleep(wait).await;
    }
    let later = server.event(&event("CacheFull", "cache-1")).await;
    assert_eq!(later["disposition"], "started_run", "{later:#}");
    assert_ne!(later["run_id"], run_id.as_str());

    // Without `rerun`, an update after the window is held back all the
    // same: suppressed, not a run denied.
    let once = server.event(&event("ServiceDown", "down-1")).await;
    let once_run = once["run_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait(&once_run).await["state"], "succeeded");
    for _ in 0..3 {
        let repeat = server.event(&event("ServiceDown", "down-1")).await;
        assert_eq!(repeat["disposition"], "suppressed", "{repeat:#}");
        assert_eq!(repeat["run_id"], once_run.as_str());
    }
    let mut resolved = event("ServiceDown", "down-1");
    resolved["status"] = json!("resolved");
    assert_eq!(server.event(&resolved).await["disposition"], "inactive");
    let back = server.event(&event("ServiceDown", "down-1")).await;
    assert_eq!(back["disposition"], "started_run", "{back:#}");
}

#[tokio::test]
async fn a_second_ticket_about_the_same_subject_is_linked_to_the_open_run() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let ci = laptop(&sim);
    let first_ticket = seed_incident_on(&sim, "INC0040001", &ci);
    let second_ticket = seed_incident_on(&sim, "INC0040002", &ci);
    let workspace = workspace(
        &sim_server.url,
        &http_runbook(
            "from-ticket",
            "incident",
            &[("act", "POST", "/act", "")],
            "writeback: { ticket: true, resolve_on_success: { close_code: \"Solution provided\" } }\n",
        )
        .replace(
            "approval: auto\n",
            "approval:\n  mode: required\n  stages:\n    - { name: owner, approvers: [\"user:carol\"] }\n",
        ),
    );
    let carol = workspace.create_token("carol", "approver");
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let first = report_of(&server, &update_by(&sim, &first_ticket, "INC0040001"), 1).await;
    assert_eq!(first["state"], "awaiting_approval", "{first:#}");
    let run_id = first["run_id"].as_str().unwrap().to_owned();

    let second = report_of(&server, &update_by(&sim, &second_ticket, "INC0040002"), 2).await;
    assert_eq!(second["disposition"], "linked", "{second:#}");
    assert_eq!(second["run_id"], run_id.as_str());
    assert!(
        second["message"].as_str().unwrap().contains("LAPTOP-0042"),
        "{second:#}"
    );
    // Its next update is the open run's duplicate, and links nothing again.
    sim.set_field_as("abel.tuter", "incident", &second_ticket, "priority", "2");
    sim.set_field_as(
        "abel.tuter",
        "incident",
        &second_ticket,
        "sys_mod_count",
        "5",
    );
    let update = report_of(&server, &update_by(&sim, &second_ticket, "INC0040002"), 3).await;
    assert_eq!(update["disposition"], "duplicate", "{update:#}");

    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(count_of(&run, "run.linked"), 1, "{run:#}");
    let (_, _, linked) = timeline(&run)
        .into_iter()
        .find(|(kind, _, _)| kind == "run.linked")
        .unwrap();
    assert_eq!(linked["ticket"], "INC0040002");
    assert_eq!(linked["event"], second["event_id"]);
    let destinations: Vec<&str> = run["writebacks"]
        .as_array()
        .expect("the run's write-backs")
        .iter()
        .map(|writeback| writeback["destination"].as_str().unwrap())
        .collect();
    assert_eq!(destinations, ["INC0040001", "INC0040002"], "{run:#}");
    assert_eq!(run_ids(&server.get("/v1/runs").await), [run_id.as_str()]);

    for ticket in [&first_ticket, &second_ticket] {
        notes_holding(
            &sim,
            ticket,
            "Another ticket, INC0040002, reports the same problem on LAPTOP-0042",
        )
        .await;
    }
    let (status, body) = server.decide_as(&carol, &run_id, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
    for ticket in [&first_ticket, &second_ticket] {
        notes_holding(&sim, ticket, "Automation succeeded").await;
        let resolved = eventually(Duration::from_secs(15), || {
            sim.record("incident", ticket).unwrap()["state"] == "6"
        })
        .await;
        assert!(
            resolved,
            "both tickets resolved: {:?}",
            sim.record("incident", ticket)
        );
    }
    assert_eq!(target.calls("POST /act"), 1, "one fix for both tickets");
}
