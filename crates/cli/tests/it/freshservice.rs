//! Tickets from Freshservice on the real server, against a local service
//! desk that speaks API v2: the Workflow Automator's call, carrying a
//! source token, is read back (the ticket, its requester) and starts a
//! run, which writes its story back as private notes and resolves the
//! ticket, or hands it to a group when it fails; what an attacker or a
//! broken rule sends is refused with nothing stored.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::freshservice_sim::{Failure, FreshserviceSim, NewTicket};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, audit_records, eventually, http_runbook};

const API_KEY_VAR: &str = "OPSGATE_TEST_FS_API_KEY";
const API_KEY: &str = "fs-agent-api-key-R7m2Kq";

const DIRECTORY: &str = "time_zone: UTC
people:
  - { id: kim, name: Kim Lee, email: kim.lee@example.com }
  - { id: carol, name: Carol Chen, email: carol.chen@example.com }
";

struct Desk {
    sim: FreshserviceSim,
    _sim_server: test_support::Running,
    workspace: Workspace,
    /// The `freshservice` source's token, as the automator's rule carries it.
    token: String,
}

/// A server that reads and writes a local Freshservice, with `runbook`.
async fn desk(runbook: &str) -> Desk {
    let sim = FreshserviceSim::new(API_KEY);
    let sim_server = sim.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.add_runbook("r.yaml", runbook);
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(&directory, DIRECTORY).unwrap();
    workspace.config_yaml = Some(format!(
        "freshservice:\n  base_url: {}\n  api_key: env:{API_KEY_VAR}\ndirectory: {}\n",
        sim_server.url,
        directory.display()
    ));
    workspace.env = vec![(API_KEY_VAR.to_owned(), API_KEY.to_owned())];
    let token = workspace.create_token("freshservice", "source");
    Desk {
        sim,
        _sim_server: sim_server,
        workspace,
        token,
    }
}

impl Desk {
    /// An open incident on LT-0042, raised by kim.
    fn seed(&self) -> u64 {
        let kim = self.sim.add_requester("Kim", "kim.lee@example.com");
        let mut ticket = NewTicket::incident("VPN client stopped on LT-0042");
        ticket.requester_id = Some(kim);
        ticket
            .custom_fields
            .insert("device".into(), json!("LT-0042"));
        self.sim.seed_ticket(ticket)
    }
}

/// Posts `body` to the Freshservice hook with `token`, as the rule does.
async fn notify(server: &Server, token: &str, body: &Value) -> (u16, Value, Option<String>) {
    let response = crate::harness::client_with_token(token)
        .post(format!("{}/v1/hooks/freshservice", server.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("reach opsgate");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

fn runbook(tail: &str) -> String {
    let mut yaml = http_runbook("vpn-fix", "incident", &[("act", "POST", "/act", "")], tail);
    yaml = yaml.replace(
        "match:\n  kind: incident\n",
        "match:\n  source: freshservice\n  kind: incident\n",
    );
    yaml
}

fn target(status: u16) -> Scripted {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(status, json!({}))]);
    target
}

async fn notes_holding(sim: &FreshserviceSim, ticket: u64, text: &str) -> String {
    let found = eventually(Duration::from_secs(15), || {
        sim.notes(ticket)
            .iter()
            .any(|note| note.body_text.contains(text))
    })
    .await;
    let notes: Vec<String> = sim
        .notes(ticket)
        .into_iter()
        .map(|note| note.body_text)
        .collect();
    let notes = notes.join("\n---\n");
    assert!(found, "no note holds `{text}`:\n{notes}");
    notes
}

#[tokio::test]
async fn a_ticket_from_the_automator_runs_its_fix_and_is_resolved() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let desk = desk(&runbook(
        "writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n",
    ))
    .await;
    let ticket = desk.seed();
    let server = desk.workspace.start(&[("TARGET", &target_server.url)]);

    let (status, answer, _) = notify(
        &server,
        &desk.token,
        &json!({"ticket_id": format!("#INC-{ticket}"), "event": "created"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let event = &server.get(&format!("/v1/runs/{run_id}")).await["event"];
    assert_eq!(event["source"], "freshservice", "{event:#}");
    assert_eq!(event["dedup_key"], format!("freshservice:{ticket}"));
    assert_eq!(event["fields"]["custom_fields"]["device"], "LT-0042");
    assert_eq!(event["fields"]["requested_by"], "kim", "found by email");

    let notes = notes_holding(&desk.sim, ticket, "Resolved by opsgate run").await;
    assert!(notes.contains(&format!("[opsgate {run_id} #")), "{notes}");
    assert!(
        eventually(Duration::from_secs(15), || desk.sim.status(ticket)
            == Some(4))
        .await,
        "the ticket is Resolved: {:?}",
        desk.sim.ticket(ticket)
    );
    assert!(desk.sim.notes(ticket).iter().all(|note| note.private));
    let calls = desk.sim.calls();
    assert!(
        calls.contains(&format!("GET /api/v2/tickets/{ticket}")),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&format!("PUT /api/v2/tickets/{ticket}")),
        "{calls:#?}"
    );
}

/// The ticket is closed in Freshservice while the run waits for approval,
/// and nobody tells opsgate: it reads the ticket back before acting.
#[tokio::test]
async fn a_ticket_closed_while_the_run_waited_is_read_back_and_the_run_does_not_act() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let desk = desk(&runbook("").replace("approval: auto", "approval: required")).await;
    let ticket = desk.seed();
    let carol = desk.workspace.create_token("carol", "approver");
    let server = desk.workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer, _) = notify(
        &server,
        &desk.token,
        &json!({"ticket_id": format!("#INC-{ticket}"), "event": "created"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    desk.sim.set_status(ticket, 5);
    let (status, answer) = server.decide_as(&carol, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert_eq!(target.calls("POST /act"), 0, "it acted on a closed ticket");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("was closed (Closed)"),
        "{run:#}"
    );
}

#[tokio::test]
async fn a_failed_run_leaves_its_ticket_open_with_the_group_that_takes_over() {
    let target = target(500);
    let target_server = target.start().await.unwrap();
    let desk = desk(&runbook(
        "on_failure: { escalate_to: \"group:Endpoint L2\", ticket_state: needs_human }\n\
         writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n",
    ))
    .await;
    let l2 = desk.sim.add_group("Endpoint L2");
    let ticket = desk.seed();
    desk.sim.set_status(ticket, 3);
    let server = desk.workspace.start(&[("TARGET", &target_server.url)]);

    let (status, answer, _) = notify(&server, &desk.token, &json!({"ticket_id": ticket})).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "rolled_back", "{run:#}");
    let notes = notes_holding(&desk.sim, ticket, "Handed to the group Endpoint L2.").await;
    assert!(notes.contains("No step succeeded."), "{notes}");
    assert!(
        eventually(Duration::from_secs(15), || {
            desk.sim.status(ticket) == Some(2) && desk.sim.group_id(ticket) == Some(l2)
        })
        .await,
        "Open, with Endpoint L2: {:?}",
        desk.sim.ticket(ticket)
    );
}

#[tokio::test]
async fn what_a_stranger_or_a_broken_rule_sends_is_refused_and_stores_nothing() {
    let desk = desk(&runbook("approval: required\n").replace("approval: auto\n", "")).await;
    let ticket = desk.seed();
    let other_source = desk.workspace.create_token("alertmanager", "source");
    let operator = desk.workspace.create_token("olga", "operator");
    let server = desk.workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let good = json!({"ticket_id": ticket});

    // Another source, another role, no token: refused before anything is read.
    for (token, status) in [
        (&other_source, 403),
        (&operator, 403),
        (&"og_nope".to_owned(), 401),
    ] {
        let (got, answer, _) = notify(&server, token, &good).await;
        assert_eq!(got, status, "{answer}");
    }
    // A value that walks a path, a wrong shape, a ticket that is not there.
    for (body, code, says) in [
        (
            json!({"ticket_id": "1001/../../groups"}),
            "invalid_notification",
            "ticket_id is",
        ),
        (
            json!({"ticket_id": "../requesters/1"}),
            "invalid_notification",
            "ticket_id is",
        ),
        (
            json!({"ticket_id": 1, "url": "http://elsewhere/"}),
            "invalid_body",
            "unknown field `url`",
        ),
        (
            json!({"ticket_id": 999_999}),
            "unreadable_record",
            "could not read ticket 999999",
        ),
    ] {
        let (status, answer, _) = notify(&server, &desk.token, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    // Freshservice rate limiting: 503 with its Retry-After, nothing stored.
    desk.sim.fail_next(
        1,
        Failure::RateLimited {
            retry_after_seconds: 4,
        },
    );
    let (status, answer, retry_after) = notify(&server, &desk.token, &good).await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (503, Some("4")),
        "{answer}"
    );
    assert_eq!(
        server.get("/v1/runs").await["runs"],
        json!([]),
        "nothing stored"
    );
    // Nothing but tickets was read: no walked path reached the desk.
    let calls = desk.sim.calls();
    assert!(
        calls
            .iter()
            .all(|call| call.starts_with("GET /api/v2/tickets/")
                || call.starts_with("GET /api/v2/requesters/")),
        "{calls:#?}"
    );

    // A burst of the same notification: one run.
    let mut runs = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let (status, answer, _) = notify(&server, &desk.token, &good).await;
        assert_eq!(status, 202, "{answer}");
        runs.insert(answer["report"]["run_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(runs.len(), 1, "{runs:?}");
    // The ticket resolved by a person withdraws the waiting run.
    desk.sim.set_status(ticket, 4);
    let (status, answer, _) = notify(&server, &desk.token, &good).await;
    assert_eq!(status, 202, "{answer}");
    let waiting = runs.first().unwrap();
    assert_eq!(
        answer["report"]["disposition"], "inactive",
        "no new run: {answer}"
    );
    assert_eq!(answer["report"]["run_id"], waiting.as_str(), "{answer}");
    let run = server.wait(waiting).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");

    let refusals: Vec<(String, String)> = audit_records(&desk.workspace.database_url())
        .iter()
        .filter(|record| record["kind"] == "api.refused")
        .map(|record| {
            (
                record["actor"].as_str().unwrap().to_owned(),
                record["detail"]["route"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        refusals.contains(&(
            "source:alertmanager".to_owned(),
            "/v1/hooks/freshservice".to_owned()
        )),
        "{refusals:?}"
    );
}
