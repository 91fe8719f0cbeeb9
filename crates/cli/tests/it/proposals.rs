//! Agents' proposals (`/v1/proposals`) on the real server: the same gate as
//! any event, the agent's token's scope, idempotency, what is kept of what
//! the agent said, and an agent that never approves.

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, audit_records, cli, client_with_token, timeline};

/// A reversible runbook, auto-approved, that agents may propose or that
/// matches a proposal's `fields.signature`.
pub const RESTART: &str = r#"id: restart-service
title: Restart a stopped service
owner: tests
risk: reversible
approval: auto
match:
  when:
    - field: fields.signature
      equals: "service stopped"
inputs:
  type: object
  required: [device, service]
  additionalProperties: false
  properties:
    device: { type: string, pattern: "^[A-Z0-9-]{2,32}$" }
    service: { type: string, enum: [vpnagent, spooler] }
  from_event:
    device: "{{ event.subject }}"
targets:
  from: "[inputs.device]"
  max_targets: 1
guardrails:
  min_confidence: 0.5
steps:
  - id: restart
    action: http.request
    with:
      method: POST
      url: "{{ env.TARGET }}/devices/{{ inputs.device }}/services/{{ inputs.service }}/restart"
    idempotent: true
writeback: { ticket: true }
"#;

/// A runbook a person approves.
pub const RECYCLE: &str = r#"id: recycle-web
title: Recycle a web server's pool
owner: tests
risk: reversible
approval: { mode: required, expires: 1h }
match:
  kind: never
inputs:
  type: object
  required: [server]
  additionalProperties: false
  properties:
    server: { type: string, pattern: "^WEB-[0-9]{2}$" }
targets:
  from: "[inputs.server]"
  max_targets: 1
steps:
  - id: recycle
    action: http.request
    with:
      method: POST
      url: "{{ env.TARGET }}/web/{{ inputs.server }}/recycle"
    idempotent: true
"#;

/// An irreversible runbook: above a reversible-only agent's reach.
pub const WIPE: &str = r#"id: wipe-disk
title: Wipe a disk
owner: tests
risk: irreversible
approval: auto
match:
  kind: never
inputs:
  type: object
  required: [device]
  additionalProperties: false
  properties:
    device: { type: string }
targets:
  from: "[inputs.device]"
  max_targets: 1
steps:
  - id: wipe
    action: http.request
    with:
      method: POST
      url: "{{ env.TARGET }}/devices/{{ inputs.device }}/wipe"
"#;

/// A policy that judges an agent's arguments, not only names.
const POLICY: &str = r#"package opsgate.agent_arguments

deny contains "agents may not touch LT-666" if {
	input.proposal.inputs.device == "LT-666"
}

# For LT-500 this policy cannot decide: a complete rule with two values
# is an evaluation error, and the gate must fail closed.
broken := 1 if input.proposal.inputs.device == "LT-500"

broken := 2 if input.proposal.inputs.device == "LT-500"

deny contains "never" if broken == 3
"#;

/// `opsgate token create --role agent` with a scope.
pub fn agent_token(workspace: &Workspace, name: &str, scope: &[&str]) -> String {
    let database = workspace.database_url();
    let mut args = vec![
        "token",
        "create",
        "--principal",
        name,
        "--role",
        "agent",
        "--database",
        &database,
    ];
    args.extend_from_slice(scope);
    let (code, stdout, stderr) = cli(&args);
    assert_eq!(code, 0, "token create: {stderr}");
    stdout.trim().to_owned()
}

pub async fn propose(server: &Server, token: &str, proposal: &Value) -> (u16, Value) {
    server
        .post_raw_as(token, "/v1/proposals", &proposal.to_string())
        .await
}

fn proposal(runbook: &str, inputs: Value, key: &str, confidence: f64) -> Value {
    json!({
        "runbook": runbook,
        "inputs": inputs,
        "rationale": "the service stopped after the 14:02 update; a restart cleared it twice last week",
        "evidence": [
            {"kind": "link", "url": "https://monitoring.example/alerts/991"},
            {"kind": "log", "text": "14:02:11 service spooler entered the stopped state"}
        ],
        "confidence": confidence,
        "model": {"name": "triage-llm", "version": "2026-11"},
        "prompt_version": "restart-v3",
        "idempotency_key": key,
    })
}

/// A server with the three runbooks and the policy, a target that
/// answers, and an agent limited to `restart-*`, `recycle-*` and `wipe-*`
/// on `LT-*` and `WEB-*`, at most reversible.
pub struct Setup {
    pub workspace: Workspace,
    pub server: Server,
    pub target: Scripted,
    pub agent: String,
    pub _target_server: test_support::Running,
}

pub async fn setup() -> Setup {
    let target = Scripted::default();
    for path in [
        "POST /devices/LT-7/services/spooler/restart",
        "POST /devices/LT-8/services/vpnagent/restart",
        "POST /web/WEB-01/recycle",
    ] {
        target.on(path, vec![Reply::json(200, json!({"ok": true}))]);
    }
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.add_runbook("restart.yaml", RESTART);
    workspace.add_runbook("recycle.yaml", RECYCLE);
    workspace.add_runbook("wipe.yaml", WIPE);
    let policies = workspace.dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("agent_arguments.rego"), POLICY).unwrap();
    workspace.config_yaml = Some(format!("policies: {}\n", policies.display()));
    let agent = agent_token(
        &workspace,
        "triage-bot",
        &[
            "--runbook",
            "restart-*",
            "--runbook",
            "recycle-*",
            "--runbook",
            "wipe-*",
            "--target",
            "LT-*",
            "--target",
            "WEB-*",
            "--max-risk",
            "reversible",
        ],
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    Setup {
        workspace,
        server,
        target,
        agent,
        _target_server: target_server,
    }
}

#[tokio::test]
async fn a_proposal_runs_through_the_gate_once_per_key_and_keeps_what_the_agent_said() {
    let Setup {
        workspace: _workspace,
        server,
        target,
        agent,
        _target_server: _running,
    } = setup().await;
    let first = proposal(
        "restart-service",
        json!({"device": "LT-7", "service": "spooler"}),
        "inc-1001",
        0.92,
    );
    let (status, answer) = propose(&server, &agent, &first).await;
    assert_eq!(status, 202, "{answer:#}");
    assert_eq!(answer["outcome"], "executing", "{answer:#}");
    assert_eq!(answer["replayed"], false);
    assert_eq!(answer["decision"]["kind"], "allow");
    let run_id = answer["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        target.calls("POST /devices/LT-7/services/spooler/restart"),
        1
    );

    // Everything the agent said is on the run, told by the agent.
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let proposed: Vec<_> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "run.proposed")
        .collect();
    assert_eq!(proposed.len(), 1, "{run:#}");
    let (_, actor, said) = &proposed[0];
    assert_eq!(actor, "agent:triage-bot");
    assert_eq!(said["confidence"], 0.92);
    assert_eq!(said["model"]["name"], "triage-llm");
    assert_eq!(said["prompt_version"], "restart-v3");
    assert_eq!(said["evidence"][1]["kind"], "log");
    assert!(said["rationale"].as_str().unwrap().contains("14:02 update"));

    // Sent again (a retry): the same run, as it is now; nothing runs twice.
    let (status, again) = propose(&server, &agent, &first).await;
    assert_eq!(status, 202, "{again:#}");
    assert_eq!(again["replayed"], true, "{again:#}");
    assert_eq!(again["run_id"], run_id.as_str());
    assert_eq!(again["outcome"], "finished");
    assert_eq!(
        target.calls("POST /devices/LT-7/services/spooler/restart"),
        1
    );
    // The same key for another proposal is a mistake, said as such.
    let changed = proposal(
        "restart-service",
        json!({"device": "LT-7", "service": "spooler"}),
        "inc-1001",
        0.95,
    );
    let (status, refused) = propose(&server, &agent, &changed).await;
    assert_eq!(status, 409, "{refused:#}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idempotency key `inc-1001` was used for another proposal"),
        "{refused:#}"
    );

    // No runbook named: matched from what the agent read, the runbook
    // filling what the agent left out (the device, from the subject).
    let unnamed = json!({
        "subject": "LT-8",
        "fields": {"signature": "service stopped"},
        "inputs": {"service": "vpnagent"},
        "rationale": "the VPN agent stopped",
        "confidence": 0.8,
        "idempotency_key": "inc-1002",
    });
    let (status, matched) = propose(&server, &agent, &unnamed).await;
    assert_eq!(status, 202, "{matched:#}");
    assert_eq!(matched["runbook"], "restart-service", "{matched:#}");
    let run = server.wait(matched["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        target.calls("POST /devices/LT-8/services/vpnagent/restart"),
        1
    );

    // Denied, each with its reason: below the runbook's lowest confidence;
    // a policy that errors (it denies); a policy that judges the agent's
    // arguments.
    for (device, key, confidence, reason) in [
        ("LT-7", "inc-1003", 0.3, "0.3"),
        ("LT-500", "inc-1005", 0.99, "the policies could not decide"),
        ("LT-666", "inc-1004", 0.99, "agents may not touch LT-666"),
    ] {
        let inputs = json!({"device": device, "service": "spooler"});
        let (status, denied) = propose(
            &server,
            &agent,
            &proposal("restart-service", inputs, key, confidence),
        )
        .await;
        assert_eq!(status, 202, "{denied:#}");
        assert_eq!(denied["outcome"], "denied", "{denied:#}");
        assert!(
            denied["decision"]["reasons"].to_string().contains(reason),
            "{reason}: {denied:#}"
        );
    }
}

#[tokio::test]
async fn a_proposal_outside_the_agents_scope_is_refused_audited_and_stores_no_run() {
    let Setup {
        workspace,
        server,
        target,
        agent,
        _target_server: _running,
    } = setup().await;
    let check = async |proposal: Value, status: u16, says: &str| {
        let (answered, body) = propose(&server, &agent, &proposal).await;
        assert_eq!(answered, status, "{body:#}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    };
    // Irreversible, above the agent's highest risk.
    check(
        proposal("wipe-disk", json!({"device": "LT-7"}), "k-1", 0.99),
        403,
        "runbook `wipe-disk` is irreversible, above this agent's highest risk, reversible",
    )
    .await;
    // A target outside its patterns.
    check(
        proposal(
            "restart-service",
            json!({"device": "DB-PROD-01", "service": "spooler"}),
            "k-2",
            0.99,
        ),
        403,
        "target `DB-PROD-01` is outside this agent's scope",
    )
    .await;
    // Targets that are not the plan's.
    let mut elsewhere = proposal(
        "restart-service",
        json!({"device": "LT-7", "service": "spooler"}),
        "k-3",
        0.99,
    );
    elsewhere["targets"] = json!(["LT-9"]);
    check(
        elsewhere,
        403,
        "the proposal names targets [\"LT-9\"], but runbook `restart-service` with these inputs acts on [\"LT-7\"]",
    )
    .await;
    // Inputs the runbook's schema refuses; a runbook that does not exist.
    check(
        proposal(
            "restart-service",
            json!({"device": "LT-7", "service": "rm -rf"}),
            "k-4",
            0.99,
        ),
        400,
        "runbook `restart-service` cannot be planned as proposed",
    )
    .await;
    check(
        proposal("restart-servce", json!({}), "k-5", 0.99),
        400,
        "no runbook `restart-servce`: did you mean `restart-service`?",
    )
    .await;
    check(
        json!({"rationale": "x", "confidence": 2, "idempotency_key": "k-6"}),
        400,
        "`confidence` must be between 0 and 1",
    )
    .await;
    // Only an agent proposes; and no event poses as an agent's proposal.
    let (status, _) = server
        .post(
            "/v1/proposals",
            &proposal("restart-service", json!({}), "k-7", 0.9),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .post(
            "/v1/events",
            &json!({"source": "agent", "kind": "proposal", "dedup_key": "x", "subject": "LT-7",
                     "status": "open", "fields": {"proposal": {"agent": "agent:someone"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reserved for agents' proposals")
    );

    let runs = server.get("/v1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "{runs:#}");
    for path in [
        "POST /devices/LT-7/services/spooler/restart",
        "POST /devices/LT-7/wipe",
        "POST /devices/DB-PROD-01/services/spooler/restart",
    ] {
        assert_eq!(target.calls(path), 0, "{path}");
    }
    let refused: Vec<Value> = audit_records(&workspace.database_url())
        .into_iter()
        .filter(|record| record["kind"] == "proposal.refused")
        .collect();
    assert_eq!(refused.len(), 3, "scope, target and targets: {refused:#?}");
    assert_eq!(refused[0]["actor"], "agent:triage-bot");
    assert_eq!(refused[0]["detail"]["runbook"], "wipe-disk");
    assert_eq!(refused[1]["detail"]["targets"], json!(["DB-PROD-01"]));
}

#[tokio::test]
async fn a_proposal_that_needs_approval_waits_for_a_person_and_no_agent_approves_it() {
    let Setup {
        workspace,
        server,
        target,
        agent,
        _target_server: _running,
    } = setup().await;
    let recycle = |key: &str| proposal("recycle-web", json!({"server": "WEB-01"}), key, 0.9);
    let (status, answer) = propose(&server, &agent, &recycle("web-1")).await;
    assert_eq!(status, 202, "{answer:#}");
    assert_eq!(answer["outcome"], "awaiting_approval", "{answer:#}");
    let run_id = answer["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer["approval_url"].as_str().unwrap(),
        format!("{}/v1/runs/{run_id}/approval-links", server.base),
        "where an approver gets their own page"
    );
    // The agent cannot approve it, nor ask for an approver's page.
    let (status, _) = server.decide_as(&agent, &run_id, "approve").await;
    assert_eq!(status, 403);
    let (status, _) = server.ask_for_link(&agent, &run_id, &json!({})).await;
    assert_eq!(status, 403);
    // Another agent cannot withdraw it.
    let other = agent_token(&workspace, "other-bot", &[]);
    let (status, body) = server
        .post_raw_as(&other, &format!("/v1/proposals/{run_id}/withdraw"), "{}")
        .await;
    assert_eq!(status, 403, "{body:#}");
    // The approver's page shows what the agent said, links as text.
    let (status, link) = server
        .ask_for_link(&server.tokens.alice.clone(), &run_id, &json!({}))
        .await;
    assert_eq!(status, 200, "{link:#}");
    let page = reqwest::get(link["url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for said in [
        "<h2>Proposed by agent:triage-bot</h2>",
        "Confidence 0.9, model <code>triage-llm</code> <code>2026-11</code>, prompt <code>restart-v3</code>",
        "the service stopped after the 14:02 update; a restart cleared it twice last week",
        "<li>link: <code>https://monitoring.example/alerts/991</code></li>",
    ] {
        assert!(page.contains(said), "{said} in {page}");
    }
    assert!(!page.contains("<a "), "no agent's link is followable");
    // A person approves; it runs.
    let (status, _) = server.approve(&run_id).await;
    assert_eq!(status, 200);
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /web/WEB-01/recycle"), 1);

    // The agent withdraws its own while it waits: it never acts.
    let (_, second) = propose(&server, &agent, &recycle("web-2")).await;
    let second_id = second["run_id"].as_str().unwrap().to_owned();
    let response = client_with_token(&agent)
        .post(format!("{}/v1/proposals/{second_id}/withdraw", server.base))
        .json(&json!({"reason": "the pool recovered by itself"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let withdrawn: Value = response.json().await.unwrap();
    assert_eq!(withdrawn["state"], "cancelled", "{withdrawn:#}");
    // Withdrawn is withdrawn: not twice.
    let (status, _) = server
        .post_raw_as(&agent, &format!("/v1/proposals/{second_id}/withdraw"), "{}")
        .await;
    assert_eq!(status, 400);
    assert_eq!(target.calls("POST /web/WEB-01/recycle"), 1);
}

#[tokio::test]
async fn a_burst_of_the_same_proposal_starts_one_run_and_answers_it_to_every_sender() {
    let Setup {
        workspace: _workspace,
        server,
        target,
        agent,
        _target_server: _running,
    } = setup().await;
    let same = proposal(
        "restart-service",
        json!({"device": "LT-7", "service": "spooler"}),
        "burst-1",
        0.9,
    );
    let mut sent = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (base, agent, same) = (server.base.clone(), agent.clone(), same.clone());
        sent.spawn(async move {
            let response = client_with_token(&agent)
                .post(format!("{base}/v1/proposals"))
                .json(&same)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        });
    }
    let answers = sent.join_all().await;
    let mut run_ids: Vec<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 202, "{answer:#}");
            answer["run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    run_ids.dedup();
    assert_eq!(run_ids.len(), 1, "one run for one key: {run_ids:?}");
    let replayed = answers
        .iter()
        .filter(|(_, answer)| answer["replayed"] == true)
        .count();
    assert_eq!(
        replayed, 19,
        "every other sender is told it is the same run"
    );
    let run = server.wait(&run_ids[0]).await;
    assert_eq!(run["state"], "succeeded");
    assert_eq!(
        target.calls("POST /devices/LT-7/services/spooler/restart"),
        1
    );
    let runs = server.get("/v1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
}
