//! Triage on the real server: a ticket no runbook's rules took goes to a
//! model (a local server speaking the chat-completions wire format); a
//! confident suggestion becomes `agent:triage`'s proposal and runs through
//! the gate, a less confident one is only written to the ticket, and a
//! rate-limited model gives no suggestion and is not asked again before
//! its Retry-After — every answer recorded.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::chat_completions_sim::{Behaviour, ChatCompletionsSim, user_message};
use test_support::scripted::{Reply, Scripted};
use test_support::servicenow_sim::{Credentials, NewIncident, ServiceNowSim};

use crate::harness::{Workspace, audit_records, eventually};
use crate::proposals::RESTART;

const PASSWORD_VAR: &str = "OPSGATE_TEST_TRIAGE_SN_PASSWORD";
const KEY_VAR: &str = "OPSGATE_TEST_TRIAGE_MODEL_KEY";
const MODEL_KEY: &str = "sk-triage-test-7788";

/// What the model says to each ticket, by its words.
fn model(messages: &[Value]) -> Value {
    let ticket = user_message(messages);
    let answer = |inputs: Value, confidence: f64, rationale: &str| {
        json!({"runbook": "restart-service", "inputs": inputs,
               "confidence": confidence, "rationale": rationale})
    };
    if ticket.contains("spooler keeps stopping") {
        answer(
            json!({"device": "LT-7", "service": "spooler"}),
            0.9,
            "the spooler on LT-7 stopped; restarting it is the known fix",
        )
    } else if ticket.contains("printing is slow") {
        answer(
            json!({"device": "LT-8", "service": "spooler"}),
            0.62,
            "slow printing is sometimes the spooler",
        )
    } else {
        json!({"runbook": null, "inputs": {}, "confidence": 0.9, "rationale": "nothing fits"})
    }
}

fn event(number: &str, text: &str) -> Value {
    json!({
        "source": "tests", "kind": "incident", "dedup_key": format!("tests:{number}"),
        "subject": "LT", "status": "open",
        "fields": {"ticket": number, "short_description": text, "environment": "workstation"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_no_rule_took_is_proposed_by_triage_or_only_suggested_and_a_rate_limit_is_waited_out()
 {
    let target = Scripted::default();
    target.on(
        "POST /devices/LT-7/services/spooler/restart",
        vec![Reply::json(200, json!({"ok": true}))],
    );
    let target_server = target.start().await.unwrap();
    let servicenow = ServiceNowSim::new(Default::default());
    let servicenow_server = servicenow.start().await.unwrap();
    let mut incidents = std::collections::HashMap::new();
    for (number, text) in [
        ("INC0030001", "LT-7: the print spooler keeps stopping"),
        ("INC0030002", "printing is slow on LT-8"),
        ("INC0030003", "LT-9 something odd"),
        ("INC0030004", "LT-10 something else odd"),
    ] {
        let seeded = servicenow.seed_incident(NewIncident {
            number: Some(number.to_owned()),
            short_description: text.to_owned(),
            state: "2".to_owned(),
            ..Default::default()
        });
        incidents.insert(number, seeded.sys_id);
    }
    let sim = ChatCompletionsSim::new(MODEL_KEY, "triage-model-1");
    sim.script(model);
    let model_server = sim.start().await.unwrap();

    let mut workspace = Workspace::new();
    workspace.add_runbook("restart.yaml", RESTART);
    let credentials = Credentials::default();
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {}\n  basic: {{ username: {}, password: \"env:{PASSWORD_VAR}\" }}\n\
         chat_completions:\n  url: {}/v1\n  model: triage-model-1\n  api_key: env:{KEY_VAR}\n  timeout: 5s\n",
        servicenow_server.url, credentials.username, model_server.url,
    ));
    workspace.env = vec![
        (PASSWORD_VAR.to_owned(), credentials.password),
        (KEY_VAR.to_owned(), MODEL_KEY.to_owned()),
    ];
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let notes = |number: &str| servicenow.journal_of(&incidents[number], "work_notes");
    let runs = async || -> Vec<Value> {
        server.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .clone()
    };

    // Confident: proposed by agent:triage, and run as any proposal is.
    let report = server
        .event(&event(
            "INC0030001",
            "LT-7: the print spooler keeps stopping",
        ))
        .await;
    assert_eq!(
        report["disposition"], "no_match",
        "the rules took nothing: {report:#}"
    );
    let mut run_id = None;
    for _ in 0..100 {
        if let Some(run) = runs().await.first() {
            run_id = run["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_id = run_id.expect("triage proposed a run");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["event"]["requester"], "agent:triage");
    assert_eq!(
        target.calls("POST /devices/LT-7/services/spooler/restart"),
        1
    );
    assert!(
        eventually(Duration::from_secs(10), || notes("INC0030001").iter().any(|note| note
            .contains("Proposed by agent:triage (model triage-model-1, prompt triage-v1), confidence 0.9: the spooler on LT-7 stopped")))
        .await,
        "{:#?}",
        notes("INC0030001")
    );
    // The ticket updated: the same problem, nothing proposed again.
    server
        .event(&event(
            "INC0030001",
            "LT-7: the print spooler keeps stopping (2)",
        ))
        .await;

    // Less sure than the threshold: only written to the ticket.
    server
        .event(&event("INC0030002", "printing is slow on LT-8"))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || notes("INC0030002").iter().any(
            |note| note.contains("Suggested runbook restart-service")
                && note.contains("confidence 0.62")
                && note.contains("slow printing is sometimes the spooler")
        ))
        .await,
        "{:#?}",
        notes("INC0030002")
    );

    // A rate-limited model: no suggestion, and not asked again before
    // its Retry-After.
    sim.behave(Behaviour::RateLimited {
        retry_after_seconds: 60,
    });
    let before = sim.calls();
    server
        .event(&event("INC0030003", "LT-9 something odd"))
        .await;
    assert!(eventually(Duration::from_secs(10), || sim.calls() == before + 1).await);
    server
        .event(&event("INC0030004", "LT-10 something else odd"))
        .await;
    let failed = || {
        audit_records(&workspace.database_url())
            .into_iter()
            .filter(|record| record["kind"] == "triage.failed")
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || failed() == 2).await);
    assert_eq!(sim.calls(), before + 1, "no request while rate-limited");

    let runs = runs().await;
    assert_eq!(runs.len(), 1, "one run in all: {runs:#?}");
    let records = audit_records(&workspace.database_url());
    let suggested: Vec<&Value> = records
        .iter()
        .filter(|record| record["kind"] == "triage.suggested")
        .collect();
    assert_eq!(suggested.len(), 3, "{suggested:#?}");
    for record in &suggested {
        assert_eq!(record["actor"], "agent:triage");
        assert_eq!(record["detail"]["model"], "triage-model-1", "{record:#}");
        assert_eq!(record["detail"]["prompt_version"], "triage-v1");
    }
    let everything = Value::Array(records).to_string();
    assert!(
        !everything.contains(MODEL_KEY),
        "the model's key reached the audit log"
    );
    assert!(notes("INC0030003").is_empty() && notes("INC0030004").is_empty());
}
