//! Batched rollouts on the real server: a ten-target rollout against a
//! scripted HTTP target runs its canary, then its batches with a pause
//! between them; one target failing halts it, its failed batch is rolled
//! back and the targets after it are never called, and the ticket is told
//! which targets are done, failed and untouched; a freeze issued
//! mid-rollout stops it after the step under way, and lifting it goes on.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::servicenow_sim::{Credentials, NewIncident, ServiceNowSim};

use crate::harness::{Server, Workspace, eventually, timeline};

const HOSTS: [&str; 10] = ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9", "h10"];

/// Two steps per target, `POST /<target>/s1` (undone by
/// `POST /<target>/undo-s1`) and `POST /<target>/s2`, on every host the
/// event names, a canary and batches of three.
fn runbook() -> String {
    "id: fleet-restart\ntitle: Restart the fleet\nowner: tests\nrisk: reversible\napproval: auto\n\
     match:\n  kind: fleet\n\
     targets:\n  from: \"event.fields.hosts\"\n  max_targets: 10\n\
     steps:\n\
     \x20 - id: s1\n    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.TARGET }}/{{ target }}/s1\"\n\
     \x20   rollback:\n      action: http.request\n      with:\n        method: POST\n        url: \"{{ env.TARGET }}/{{ target }}/undo-s1\"\n\
     \x20 - id: s2\n    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.TARGET }}/{{ target }}/s2\"\n\
     rollout:\n  canary: 1\n  batch: 3\n  pause: 300ms\n  stop_when: { failures: 1 }\n  rollback: failed_batch\n"
        .to_owned()
}

/// Every call answers 200 at once, but `POST /<failing>/s2` answers 500
/// and `POST /<slow>/s1` takes `delay`.
fn target(failing: Option<&str>, slow: Option<(&str, Duration)>) -> Scripted {
    let target = Scripted::default();
    let ok = || Reply::json(200, json!({"ok": true}));
    for host in HOSTS {
        for call in ["s1", "s2", "undo-s1"] {
            let path = format!("POST /{host}/{call}");
            let reply = match (call, failing, slow) {
                ("s2", Some(failing), _) if failing == host => {
                    Reply::json(500, json!({"error": "broken"}))
                }
                ("s1", _, Some((slow, delay))) if slow == host => ok().delayed(delay),
                _ => ok(),
            };
            target.on(&path, vec![reply]);
        }
    }
    target
}

fn fleet_event(dedup_key: &str) -> Value {
    json!({
        "source": "tests", "kind": "fleet", "dedup_key": dedup_key,
        "subject": "fleet", "status": "firing", "fields": {"hosts": HOSTS}
    })
}

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

fn calls(target: &Scripted, host: &str, call: &str) -> usize {
    target.calls(&format!("POST /{host}/{call}"))
}

#[tokio::test]
async fn one_failing_target_halts_the_rollout_and_the_targets_after_it_are_never_called() {
    // Batches: h1 (the canary), h2–h4, h5–h7, h8–h10. h6's second step
    // fails: batch 3 halts with h6, and h5 and h6 are undone.
    let target = target(Some("h6"), None);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("fleet.yaml", &runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&fleet_event("FLEET-1")).await;
    let run_id = report["run_id"].as_str().expect("a run").to_owned();
    let run = until_state(&server, &run_id, "needs_human").await;

    for host in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        assert_eq!(calls(&target, host, "s1"), 1, "{host} s1");
    }
    for host in ["h1", "h2", "h3", "h4", "h5"] {
        assert_eq!(calls(&target, host, "s2"), 1, "{host} s2");
    }
    assert_eq!(calls(&target, "h6", "s2"), 1, "h6 s2 is tried once");
    // The failed batch is rolled back; earlier batches stay done.
    for (host, undone) in [
        ("h1", 0),
        ("h2", 0),
        ("h3", 0),
        ("h4", 0),
        ("h5", 1),
        ("h6", 1),
    ] {
        assert_eq!(calls(&target, host, "undo-s1"), undone, "{host} undo");
    }
    // The untouched targets are never called.
    for host in ["h7", "h8", "h9", "h10"] {
        for call in ["s1", "s2", "undo-s1"] {
            assert_eq!(calls(&target, host, call), 0, "{host} {call}");
        }
    }

    let records = timeline(&run);
    let started: Vec<&Value> = records
        .iter()
        .filter(|(kind, _, _)| kind == "rollout.batch_started")
        .map(|(_, _, detail)| detail)
        .collect();
    assert_eq!(started.len(), 3, "{started:#?}");
    assert_eq!(started[0]["targets"], json!(["h1"]));
    assert_eq!(started[1]["targets"], json!(["h2", "h3", "h4"]));
    assert_eq!(started[2]["of"], 4);
    let (_, _, halted) = records
        .iter()
        .find(|(kind, _, _)| kind == "rollout.halted")
        .expect("a rollout.halted record");
    assert_eq!(halted["done"], json!(["h1", "h2", "h3", "h4", "h5"]));
    assert_eq!(halted["failed"], json!(["h6"]));
    assert_eq!(halted["untouched"], json!(["h7", "h8", "h9", "h10"]));
    assert_eq!(halted["rolled_back"], json!(["h5", "h6"]));
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .starts_with("rollout halted: 1 target(s) failed"),
        "{run:#}"
    );
}

#[tokio::test]
async fn a_freeze_stops_a_ten_target_rollout_after_the_current_step_and_nothing_else_runs() {
    // h3's first step takes 1.5 s: the freeze is issued while it is in
    // flight.
    let target = target(None, Some(("h3", Duration::from_millis(1500))));
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("fleet.yaml", &runbook());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&fleet_event("FLEET-2")).await;
    let run_id = report["run_id"].as_str().expect("a run").to_owned();
    assert!(
        eventually(Duration::from_secs(20), || calls(&target, "h3", "s1") > 0).await,
        "h3 s1 was never called"
    );
    let (status, freeze) = server
        .post(
            "/v1/freezes",
            &json!({"reason": "INC-88: stop the fleet rollout"}),
        )
        .await;
    assert_eq!(status, 201, "{freeze}");
    let freeze_id = freeze["id"].as_str().unwrap().to_owned();

    // The step under way finishes; nothing after it runs.
    let run = until_state(&server, &run_id, "paused").await;
    assert_eq!(calls(&target, "h3", "s1"), 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(calls(&target, "h3", "s2"), 0, "h3 s2 ran during the freeze");
    for host in ["h4", "h5", "h6", "h7", "h8", "h9", "h10"] {
        for call in ["s1", "s2"] {
            assert_eq!(calls(&target, host, call), 0, "{host} {call} ran");
        }
    }
    let (_, _, paused) = timeline(&run)
        .into_iter()
        .find(|(kind, _, _)| kind == "run.paused")
        .expect("a run.paused record");
    assert_eq!(paused["step"], "s2");
    assert_eq!(paused["target"], "h3");

    // Lifted: the rollout goes on from h3's second step, each call once.
    let (status, _) = server
        .post(&format!("/v1/freezes/{freeze_id}/lift"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let run = until_state(&server, &run_id, "succeeded").await;
    for host in HOSTS {
        assert_eq!(calls(&target, host, "s1"), 1, "{host} s1");
        assert_eq!(calls(&target, host, "s2"), 1, "{host} s2");
        assert_eq!(calls(&target, host, "undo-s1"), 0, "{host} undo");
    }
    let finished = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "rollout.batch_finished")
        .count();
    assert_eq!(finished, 4);
}

#[tokio::test]
async fn the_ticket_is_told_which_targets_are_done_failed_and_untouched() {
    // h2, in the first batch after the canary, fails its second step.
    let target = target(Some("h2"), None);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = sim.seed_incident(NewIncident {
        short_description: "Fleet agent stopped".into(),
        state: "2".into(),
        ..NewIncident::default()
    });
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "fleet.yaml",
        &format!("{}writeback: {{ ticket: true }}\n", runbook()),
    );
    let credentials = Credentials::default();
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {}\n  basic: {{ username: {}, password: \"env:OPSGATE_TEST_SN_PASSWORD\" }}\n",
        sim_server.url, credentials.username
    ));
    workspace
        .env
        .push(("OPSGATE_TEST_SN_PASSWORD".to_owned(), credentials.password));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let mut event = fleet_event(&format!("servicenow:{}", incident.number));
    event["source"] = json!("servicenow");
    event["fields"]["ticket"] = json!(incident.number);
    let report = server.event(&event).await;
    let run_id = report["run_id"].as_str().expect("a run").to_owned();
    until_state(&server, &run_id, "needs_human").await;

    let halted = "Rollout halted: 1 target(s) failed (`stop_when.failures: 1`). Done: h1. \
                  Failed: h2. Untouched: h3, h4, h5, h6, h7, h8, h9, h10. Rolled back: h2.";
    assert!(
        eventually(Duration::from_secs(15), || sim
            .work_notes(&incident.sys_id)
            .iter()
            .any(|note| note.contains(halted)))
        .await,
        "{:#?}",
        sim.work_notes(&incident.sys_id)
    );
    let notes = sim.work_notes(&incident.sys_id).join("\n");
    assert!(
        notes.contains("Rollout batch 1 of 4 finished. Done: h1. Failed: none."),
        "{notes}"
    );
    assert!(notes.contains("Rollout: 1 of 10 targets done."), "{notes}");
    for host in ["h3", "h4", "h5"] {
        assert_eq!(calls(&target, host, "s1"), 0, "{host} s1");
    }
}
