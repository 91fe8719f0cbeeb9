//! Ticket write-back on the real server, against a local ServiceNow that
//! speaks the Table API: the run's story lands as work notes, in order,
//! once each; the incident is resolved on success; a ServiceNow that is
//! down holds the notes back without holding the run back; several
//! instances on one PostgreSQL write each note exactly once.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::servicenow_sim::{Credentials, NewIncident, ServiceNowSim};

use crate::harness::{Workspace, event, eventually, http_runbook};

const PASSWORD_VAR: &str = "OPSGATE_TEST_SN_PASSWORD";

fn ticket_runbook() -> String {
    http_runbook(
        "ticketed",
        "ticketed",
        &[("act", "POST", "/act", "idempotent: true")],
        "writeback: { ticket: true, resolve_on_success: { close_code: \"Solved (Permanently)\" } }\n",
    )
}

/// A workspace whose server writes back to `servicenow_url`.
fn workspace(servicenow_url: &str) -> Workspace {
    let mut workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &ticket_runbook());
    let credentials = Credentials::default();
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {servicenow_url}\n  basic: {{ username: {}, password: \"env:{PASSWORD_VAR}\" }}\n",
        credentials.username
    ));
    workspace
        .env
        .push((PASSWORD_VAR.to_owned(), credentials.password));
    workspace
}

fn ticket_event(number: &str) -> Value {
    let mut event = event("ticketed", &format!("servicenow:{number}"));
    event["source"] = json!("servicenow");
    event["fields"]["ticket"] = json!(number);
    event
}

fn seed(sim: &ServiceNowSim) -> test_support::servicenow_sim::Seeded {
    sim.seed_incident(NewIncident {
        short_description: "VPN client service stopped".into(),
        state: "2".into(),
        ..NewIncident::default()
    })
}

/// Waits until the incident's notes end with the run's last word.
async fn notes_when_finished(sim: &ServiceNowSim, sys_id: &str, within: Duration) -> Vec<String> {
    eventually(within, || {
        sim.work_notes(sys_id)
            .iter()
            .any(|note| note.contains("Automation succeeded"))
    })
    .await;
    sim.work_notes(sys_id)
}

fn target() -> Scripted {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    target
}

/// A target that answers, a local ServiceNow with one incident in
/// progress, and a server writing back to it.
struct Desk {
    sim: ServiceNowSim,
    incident: test_support::servicenow_sim::Seeded,
    workspace: Workspace,
    server: crate::harness::Server,
    _target: Scripted,
    _running: [test_support::Running; 2],
}

async fn desk() -> Desk {
    let target = target();
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed(&sim);
    let workspace = workspace(&sim_server.url);
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    Desk {
        sim,
        incident,
        workspace,
        server,
        _target: target,
        _running: [target_server, sim_server],
    }
}

/// The marker of each note, after checking every note has one.
fn markers(notes: &[String]) -> Vec<&str> {
    notes
        .iter()
        .map(|note| {
            note.rsplit_once("[opsgate ")
                .map_or("", |(_, marker)| marker)
        })
        .collect()
}

#[tokio::test]
async fn the_story_lands_on_the_ticket_in_order_and_resolves_it() {
    let desk = desk().await;
    let (sim, incident, server) = (&desk.sim, &desk.incident, &desk.server);

    let report = server.event(&ticket_event(&incident.number)).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
    let notes = notes_when_finished(sim, &incident.sys_id, Duration::from_secs(10)).await;
    let all = notes.join("\n---\n");
    for (earlier, later) in [
        ("Automation started: run", "Decision: allow"),
        ("Decision: allow", "Step act (attempt 1) succeeded."),
        ("Step act (attempt 1) succeeded.", "Automation succeeded."),
    ] {
        let (first, second) = (all.find(earlier), all.find(later));
        assert!(
            first.is_some() && second.is_some() && first < second,
            "`{earlier}` before `{later}` in:\n{all}"
        );
    }
    assert!(all.contains(&format!("[opsgate {run_id} #")), "{all}");
    let record = sim.incident(&incident.sys_id).unwrap();
    assert_eq!(record["state"], "6", "resolved: {record:?}");
    assert_eq!(record["close_code"], "Solved (Permanently)");
    // The write-back is marked done just after the ticket took its last
    // note: look until then.
    let mut run = server.get(&format!("/v1/runs/{run_id}")).await;
    for _ in 0..100 {
        if run["writebacks"][0]["done"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        run = server.get(&format!("/v1/runs/{run_id}")).await;
    }
    assert_eq!(
        run["writebacks"][0]["done"], true,
        "{:#}",
        run["writebacks"][0]
    );
    // Nothing secret leaves in the run's API answer or in the audit log.
    let password = Credentials::default().password;
    assert!(!run.to_string().contains(&password));
    assert!(
        !crate::harness::audit_records(&desk.workspace.database_url())
            .iter()
            .any(|record| record.to_string().contains(&password))
    );
}

#[tokio::test]
async fn a_servicenow_that_is_down_delays_the_notes_but_not_the_run() {
    let desk = desk().await;
    let (sim, incident, server) = (&desk.sim, &desk.incident, &desk.server);

    sim.down(true);
    let report = server.event(&ticket_event(&incident.number)).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.wait(&run_id).await["state"],
        "succeeded",
        "the run does not wait for the ticket system"
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let calls = sim.calls();
            calls.len() >= 2
        })
        .await,
        "opsgate kept trying"
    );
    assert!(sim.work_notes(&incident.sys_id).is_empty());
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert!(
        run["writebacks"][0]["failures"].as_i64().unwrap() >= 1,
        "{:#}",
        run["writebacks"][0]
    );
    assert!(
        run["writebacks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{:#}",
        run["writebacks"][0]
    );

    sim.down(false);
    let notes = notes_when_finished(sim, &incident.sys_id, Duration::from_secs(20)).await;
    assert!(
        notes.iter().any(|note| note.contains("Automation started")),
        "nothing was lost: {notes:#?}"
    );
    let markers = markers(&notes);
    let distinct: std::collections::BTreeSet<_> = markers.iter().collect();
    assert_eq!(markers.len(), distinct.len(), "each note once: {notes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_write_each_note_exactly_once() {
    const RUNS: usize = 20;
    let Some(database) =
        crate::postgres::database("three_instances_write_each_note_exactly_once").await
    else {
        return;
    };
    let target = target();
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let mut workspace = workspace(&sim_server.url);
    workspace.database = Some(database.url.clone());
    let vars = [("TARGET", target_server.url.as_str())];
    let servers = [
        workspace.start(&vars),
        workspace.start(&vars),
        workspace.start(&vars),
    ];
    let incidents: Vec<_> = (0..RUNS).map(|_| seed(&sim)).collect();
    let mut run_ids = Vec::new();
    for (index, incident) in incidents.iter().enumerate() {
        let mut event = ticket_event(&incident.number);
        event["subject"] = json!(format!("HOST-{index}"));
        let report = servers[index % 3].event(&event).await;
        run_ids.push(report["run_id"].as_str().unwrap().to_owned());
    }
    for (incident, run_id) in incidents.iter().zip(&run_ids) {
        let notes = notes_when_finished(&sim, &incident.sys_id, Duration::from_secs(30)).await;
        let run = servers[0].get(&format!("/v1/runs/{run_id}")).await;
        assert!(
            notes
                .iter()
                .any(|note| note.contains("Automation succeeded")),
            "{notes:#?}\nrun {} with write-back {:#}",
            run["state"],
            run["writebacks"][0]
        );
        let markers = markers(&notes);
        let distinct: std::collections::BTreeSet<_> = markers.iter().collect();
        assert!(
            !markers.contains(&""),
            "every note has its marker: {notes:#?}"
        );
        assert_eq!(distinct.len(), notes.len(), "each note once: {notes:#?}");
        assert_eq!(sim.incident(&incident.sys_id).unwrap()["state"], "6");
    }
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test]
async fn an_expired_approval_tells_the_ticket_it_is_blocked() {
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed(&sim);
    let workspace = workspace(&sim_server.url);
    workspace.add_runbook(
        "r.yaml",
        &ticket_runbook().replace(
            "approval: auto",
            "approval: { mode: required, expires: 1s }",
        ),
    );
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let report = server.event(&ticket_event(&incident.number)).await;
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");
    assert!(
        eventually(Duration::from_secs(15), || sim
            .work_notes(&incident.sys_id)
            .iter()
            .any(|note| note.contains("Blocked: approval expired")))
        .await,
        "{:#?}",
        sim.work_notes(&incident.sys_id)
    );
    let notes = sim.work_notes(&incident.sys_id).join("\n");
    assert!(
        notes.contains("Waiting for approval: approval (any approver)"),
        "{notes}"
    );
    assert_eq!(
        sim.incident(&incident.sys_id).unwrap()["state"],
        "2",
        "not resolved"
    );
}

#[tokio::test]
async fn a_failed_run_tells_the_ticket_where_it_got_to() {
    let target = Scripted::default();
    target.on("POST /first", vec![Reply::json(200, json!({}))]);
    target.on(
        "POST /act",
        vec![Reply::json(500, json!({"error": "disk full"}))],
    );
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed(&sim);
    let workspace = workspace(&sim_server.url);
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "ticketed",
            "ticketed",
            &[("first", "POST", "/first", ""), ("act", "POST", "/act", "")],
            "writeback: { ticket: true, resolve_on_success: { close_code: \"Solved (Permanently)\" } }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&ticket_event(&incident.number)).await;
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert!(
        matches!(run["state"].as_str(), Some("rolled_back" | "needs_human")),
        "{run:#}"
    );
    assert!(
        eventually(Duration::from_secs(15), || sim
            .work_notes(&incident.sys_id)
            .iter()
            .any(
                |note| note.contains("Last successful step: first (1 of 2 steps done).")
            ))
        .await,
        "{:#?}",
        sim.work_notes(&incident.sys_id)
    );
    let notes = sim.work_notes(&incident.sys_id).join("\n");
    assert!(notes.contains("Step act (attempt 1) failed"), "{notes}");
    assert!(notes.contains("Automation failed"), "{notes}");
    assert_eq!(
        sim.incident(&incident.sys_id).unwrap()["state"],
        "2",
        "not resolved"
    );
}
