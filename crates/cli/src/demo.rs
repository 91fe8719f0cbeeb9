//! `opsgate demo`: the whole loop, locally, on sample incidents.
//!
//! Starts a simulated endpoint-management API, then a real opsgate server on
//! a fresh embedded store with the example runbooks, posts each sample
//! incident over HTTP exactly as a monitoring system would, and prints each
//! run's story live from the runtime's notifications. Ends with a summary
//! table; exits 0 only when every scenario ended as expected.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;

use crate::render;
use crate::serve::{self, Settings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the server (and the simulator) running after the scenarios, for exploring.
    #[arg(long)]
    pub keep_running: bool,
    /// Address for the demo server (a free port by default).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The runbooks to load (the example runbooks built into the binary by default).
    #[arg(long)]
    pub runbooks: Option<PathBuf>,
    /// Where the scenarios' event files are (the example events built into
    /// the binary by default).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// The directory of people: only people in it approve (the example
    /// directory built into the binary by default).
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// Where the demo's database goes (a fresh temporary file by default).
    #[arg(long)]
    pub database: Option<String>,
}

struct Scenario {
    label: &'static str,
    title: &'static str,
    file: &'static str,
    /// The final state that means the scenario went as designed; `None`
    /// when the event must not start a run at all.
    expect: Option<&'static str>,
    /// Who approves the run, one after the other, each through a signed
    /// approval link, while it waits for approval.
    approvers: &'static [&'static str],
    /// Whether an AI agent proposes it (rather than an operator posting it).
    by_agent: bool,
    /// For a time-bound request: the demo moves its end date (`fields.until`)
    /// to this many seconds from now, so that the removal is seen.
    ends_in_seconds: Option<i64>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        label: "a",
        title: "VPN client service stopped on a laptop",
        file: "vpn-service-stopped.json",
        expect: Some("succeeded"),
        approvers: &[],
        by_agent: false,
        ends_in_seconds: None,
    },
    Scenario {
        label: "b",
        title: "Mailbox at 95% of its quota",
        file: "mailbox-quota-95.json",
        expect: Some("succeeded"),
        approvers: &[],
        by_agent: false,
        ends_in_seconds: None,
    },
    Scenario {
        label: "c",
        title: "VPN tunnel down: the fix runs but does not fix",
        file: "vpn-tunnel-down.json",
        expect: Some("needs_human"),
        approvers: &[],
        by_agent: false,
        ends_in_seconds: None,
    },
    Scenario {
        label: "d",
        title: "A resolved alert",
        file: "vpn-service-resolved.json",
        expect: None,
        approvers: &[],
        by_agent: false,
        ends_in_seconds: None,
    },
    Scenario {
        label: "e",
        title: "IIS web tier 5xx spike in production",
        file: "iis-5xx-spike.json",
        expect: Some("succeeded"),
        approvers: &["alice"],
        by_agent: false,
        ends_in_seconds: None,
    },
    Scenario {
        label: "f",
        title: "VPN access for a new contractor",
        file: "vpn-access-contractor.json",
        expect: Some("succeeded"),
        // Kim's manager Carol is away: Frank stands in; then security.
        approvers: &["frank", "erin"],
        by_agent: false,
        ends_in_seconds: None,
    },
    Scenario {
        label: "g",
        title: "An agent proposes a production restart at 0.55",
        file: "agent-proposes-iis-restart.json",
        expect: Some("denied"),
        approvers: &[],
        by_agent: true,
        ends_in_seconds: None,
    },
    Scenario {
        label: "h",
        title: "Time-bound access to a shared mailbox",
        file: "shared-mailbox-access.json",
        expect: Some("succeeded"),
        // The mailbox's owner approves; the access is removed at its end.
        approvers: &["judy"],
        by_agent: false,
        ends_in_seconds: Some(6),
    },
];

/// What the scenarios after the table's share: the client, the server and
/// the operator's token, and the simulated Teams channel and ServiceNow.
#[derive(Clone, Copy)]
struct Stage<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    operator: &'a str,
    teams: &'a test_support::teams_sim::TeamsSim,
    servicenow: &'a test_support::servicenow_sim::ServiceNowSim,
}

struct Outcome {
    label: &'static str,
    title: &'static str,
    run: String,
    state: String,
    expected: String,
    seconds: f64,
}

/// How long one scenario may take before the demo gives up on it.
const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Prints each transition of `run_id` until the run settles; returns its
/// final state. Updates that arrived before the call are still in the
/// receiver, so nothing is missed.
async fn tell_story(
    updates: &mut tokio::sync::broadcast::Receiver<runtime::RunUpdate>,
    run_id: &str,
) -> String {
    loop {
        match updates.recv().await {
            Ok(update) if update.run_id == run_id => {
                for (kind, detail) in &update.records {
                    println!(
                        "      {}",
                        render::describe(kind.as_str(), detail, "opsgate")
                    );
                }
                if update.state.is_settled() {
                    return update.state.as_str().to_owned();
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                println!("      ({missed} updates not shown)");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return "unknown".to_owned(),
        }
    }
}

/// Scenario (i): escalating remedies across a site. Five print-spooler
/// incidents from one site within two hours (their `occurred_at` spread
/// over them) start the runbook, whose `match.recurrence` waits for them;
/// the spooler is restarted on the site's twelve endpoints, the canary
/// first, then in batches. On one endpoint the spooler does not come back,
/// so the print-driver rollback asks for its own approval, runs, and fails
/// there: the rollout halts, on-call is alerted, and the endpoints done,
/// failed and untouched are listed.
async fn spooler_scenario(
    stage: &Stage<'_>,
    updates: &mut tokio::sync::broadcast::Receiver<runtime::RunUpdate>,
    event: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let Stage {
        http,
        base,
        operator,
        teams,
        ..
    } = *stage;
    let title = "A site's spooler: restart, driver rollback, on-call";
    println!("\n(i) {title}  [{}]", event.display());
    let started_at = Instant::now();
    let template: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(event)?)?;
    let now = jiff::Timestamp::now();
    let mut run_id = None;
    for (index, minutes_ago) in [110, 85, 60, 30, 5].into_iter().enumerate() {
        let number = format!("INC00125{:02}", index + 1);
        let laptop = format!("LAPTOP-030{}", index + 1);
        let mut event = template.clone();
        event["dedup_key"] = number.clone().into();
        event["subject"] = laptop.clone().into();
        event["fields"]["ticket"] = number.clone().into();
        event["occurred_at"] = (now - jiff::SignedDuration::from_mins(minutes_ago))
            .to_string()
            .into();
        let report = post_event(http, base, operator, &event).await?;
        println!(
            "    {number} from {laptop}, {minutes_ago} min ago: {}",
            report.message
        );
        run_id = run_id.or(report.run_id);
    }
    let run_id = run_id.context("five incidents from one site did not start a run")?;
    let state = tokio::time::timeout(RUN_TIMEOUT, tell_story(updates, &run_id))
        .await
        .unwrap_or_else(|_| "still running".to_owned());
    anyhow::ensure!(
        state == "awaiting_approval",
        "the driver rollback did not wait for approval: {state}"
    );
    approve_through_link(http, teams, &run_id, "alice").await?;
    let state = tokio::time::timeout(RUN_TIMEOUT, tell_story(updates, &run_id))
        .await
        .unwrap_or_else(|_| "still running".to_owned());
    Ok(Outcome {
        label: "i",
        title,
        run: run_id,
        state,
        expected: "needs_human".to_owned(),
        seconds: started_at.elapsed().as_secs_f64(),
    })
}

/// Scenario (j): the kill switch. The IIS restart of (e) is asked for
/// again and approved during a freeze an operator pulled: the run pauses
/// before its first step, and an incident arriving meanwhile is stored
/// `frozen`; lifted, the run goes on where it stopped.
async fn freeze_scenario(
    stage: &Stage<'_>,
    updates: &mut tokio::sync::broadcast::Receiver<runtime::RunUpdate>,
    event: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let Stage {
        http,
        base,
        operator,
        teams,
        ..
    } = *stage;
    let title = "A freeze pauses an approved run until lifted";
    println!("\n(j) {title}  [{}]", event.display());
    let started_at = Instant::now();
    let body = std::fs::read_to_string(event)?;
    let again = |dedup_key: &str| -> anyhow::Result<String> {
        let mut event: serde_json::Value = serde_json::from_str(&body)?;
        event["dedup_key"] = dedup_key.into();
        Ok(event.to_string())
    };
    let post = |path: String, body: String| {
        http.post(format!("{base}{path}"))
            .bearer_auth(operator)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let report: server::api::IntakeAnswer = post("/v1/events".into(), again("demo-j-1")?)
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("    intake: {}", report.message);
    let run_id = report.run_id.context("the restart did not start a run")?;
    let freeze: domain::Freeze = post(
        "/v1/freezes".into(),
        serde_json::json!({"reason": "storefront release in progress: hands off the web tier", "targets": "WEB-*"})
            .to_string(),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    println!(
        "    an operator freezes {} ({}): opsgate freeze --targets 'WEB-*'",
        freeze.scope, freeze.reason
    );
    approve_through_link(http, teams, &run_id, "alice").await?;
    let state = tokio::time::timeout(RUN_TIMEOUT, tell_story(updates, &run_id))
        .await
        .unwrap_or_else(|_| "still running".to_owned());
    anyhow::ensure!(state == "paused", "the approved run did not pause: {state}");
    let frozen: server::api::IntakeAnswer = post("/v1/events".into(), again("demo-j-2")?)
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("    another 5xx alert meanwhile: {}", frozen.message);
    let status: server::api::StatusAnswer =
        get_json(http, &format!("{base}/v1/status"), operator).await?;
    println!(
        "    opsgate status: automation {}, {} freeze(s), paused: {}",
        status.automation.as_str(),
        status.freezes.len(),
        status.paused_runs.join(" ")
    );
    post(
        format!("/v1/freezes/{}/lift", freeze.id),
        serde_json::json!({"reason": "release done"}).to_string(),
    )
    .await?
    .error_for_status()?;
    println!("    the release is done: opsgate unfreeze {}", freeze.id);
    let state = tokio::time::timeout(RUN_TIMEOUT, tell_story(updates, &run_id))
        .await
        .unwrap_or_else(|_| "still running".to_owned());
    let state = if frozen.disposition == "frozen" {
        state
    } else {
        format!("{state}, but the alert was {}", frozen.disposition)
    };
    Ok(Outcome {
        label: "j",
        title,
        run: run_id,
        state,
        expected: "succeeded".to_owned(),
        seconds: started_at.elapsed().as_secs_f64(),
    })
}

/// Scenario (k): shadow mode. A new runbook (`clear-print-queue`, `mode:
/// shadow`) meets four print tickets: each is planned and decided, nothing
/// is called, and the ticket is told what would have run; a repeat is held
/// off. The service desk resolves three — two as opsgate would have, one
/// otherwise — and the shadow report shows the agreement and the case that
/// differs.
async fn shadow_scenario(stage: &Stage<'_>, event: &std::path::Path) -> anyhow::Result<Outcome> {
    let Stage {
        http,
        base,
        operator,
        servicenow,
        ..
    } = *stage;
    let title = "A runbook in shadow mode, compared with people";
    println!("\n(k) {title}  [{}]", event.display());
    let started_at = Instant::now();
    let template: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(event)?)?;
    let post =
        |event: serde_json::Value| async move { post_event(http, base, operator, &event).await };
    // (ticket, laptop, how the person resolved it: close code and notes)
    let tickets = [
        (
            "INC0012401",
            "LAPTOP-0101",
            Some((
                "Solved (Permanently)",
                "Restarted the print spooler; printing again",
            )),
        ),
        (
            "INC0012402",
            "LAPTOP-0102",
            Some(("Solved (Permanently)", "Spooler restarted remotely")),
        ),
        (
            "INC0012403",
            "LAPTOP-0103",
            Some((
                "Workaround",
                "Reinstalled the printer driver: the spooler restart did not help",
            )),
        ),
        ("INC0012404", "LAPTOP-0104", None),
    ];
    let mut sys_ids = Vec::new();
    let mut first_run = None;
    for (number, laptop, _) in tickets {
        sys_ids.push(
            servicenow
                .seed_incident(test_support::servicenow_sim::NewIncident {
                    number: Some(number.to_owned()),
                    short_description: "Nothing prints: jobs stay in the queue".to_owned(),
                    state: "2".to_owned(),
                    ..Default::default()
                })
                .sys_id,
        );
        let mut event = template.clone();
        event["dedup_key"] = number.into();
        event["subject"] = laptop.into();
        event["fields"]["ticket"] = number.into();
        let report = post(event).await?;
        println!("    {number}: {}", report.message);
        first_run = first_run.or(report.run_id);
    }
    // The first ticket is updated again: shadowed once is enough.
    let mut again = template.clone();
    again["dedup_key"] = "INC0012401".into();
    let held = post(again).await?;
    println!("    INC0012401 updated: {}", held.message);
    // The write-back tells the ticket on its own loop: give it a moment.
    let shadow_note = || {
        servicenow
            .work_notes(&sys_ids[0])
            .into_iter()
            .find(|note| note.contains("nothing was executed"))
    };
    for _ in 0..50 {
        if shadow_note().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if let Some(note) = shadow_note() {
        println!("    the work note on INC0012401:");
        for line in note.lines().filter(|line| !line.is_empty()) {
            println!("      | {line}");
        }
    }
    // The service desk resolves three of them, each its own way.
    for ((number, laptop, resolution), sys_id) in tickets.iter().zip(&sys_ids) {
        let Some((close_code, close_notes)) = resolution else {
            continue;
        };
        for (field, value) in [
            ("close_code", *close_code),
            ("close_notes", *close_notes),
            ("state", "6"),
        ] {
            servicenow.set_field_as("beth.anglin", "incident", sys_id, field, value);
        }
        let mut resolved = template.clone();
        resolved["dedup_key"] = (*number).into();
        resolved["subject"] = (*laptop).into();
        resolved["status"] = "resolved".into();
        resolved["fields"]["ticket"] = (*number).into();
        resolved["fields"]["close_code"] = (*close_code).into();
        resolved["fields"]["close_notes"] = (*close_notes).into();
        resolved["fields"]["resolved_by"] = "Beth Anglin".into();
        let report = post(resolved).await?;
        println!(
            "    Beth resolves {number} as \"{close_code}\": {}",
            report.message
        );
    }
    let report: server::api::ShadowReportAnswer = get_json(
        http,
        &format!("{base}/v1/reports/shadow?since=1h"),
        operator,
    )
    .await?;
    println!("    opsgate report shadow --since 1h:");
    let runbook = report
        .runbooks
        .iter()
        .find(|runbook| runbook.runbook == "clear-print-queue")
        .context("the shadow report has no clear-print-queue")?;
    for line in crate::report::runbook_lines(runbook) {
        println!("      {line}");
    }
    Ok(Outcome {
        label: "k",
        title,
        run: first_run.unwrap_or_else(|| "-".to_owned()),
        state: format!(
            "{} shadowed, {} of {} agree",
            runbook.shadowed,
            runbook.agreed,
            runbook.agreed + runbook.differed
        ),
        expected: "4 shadowed, 2 of 3 agree".to_owned(),
        seconds: started_at.elapsed().as_secs_f64(),
    })
}

/// `POST /v1/events` of `event` with `token`: the intake's report.
async fn post_event(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    event: &serde_json::Value,
) -> anyhow::Result<server::api::IntakeAnswer> {
    Ok(http
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .json(event)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// `GET url` with `token`, its JSON answer read as `T`.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<T> {
    Ok(http
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// An AI agent as scenario (l) plays it: a small scripted client of
/// opsgate's MCP server, speaking the protocol's 2026-07-28 revision over
/// HTTP by hand (one JSON-RPC request per POST, no session), with an
/// agent's token.
struct McpAgent {
    http: reqwest::Client,
    url: String,
    token: String,
    next_id: u64,
}

impl McpAgent {
    /// Calls `method` with `params`; the JSON-RPC result.
    async fn request(
        &mut self,
        method: &str,
        name: Option<&str>,
        mut params: Value,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        // Each request says who is asking and in which revision: there is
        // no initialize handshake in 2026-07-28.
        params["_meta"] = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "opsgate-demo-agent", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        let answer: Value = request
            .json(&serde_json::json!({
                "jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params,
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            answer.get("error").is_none(),
            "the MCP server answered {method} with an error: {}",
            answer["error"]
        );
        Ok(answer["result"].clone())
    }

    /// Calls the tool `name`; its structured result.
    async fn call(&mut self, name: &str, arguments: Value) -> anyhow::Result<Value> {
        let result = self
            .request(
                "tools/call",
                Some(name),
                serde_json::json!({"name": name, "arguments": arguments}),
            )
            .await?;
        Ok(result["structuredContent"].clone())
    }
}

/// A ticket the agent of scenario (l) reads, and what it proposes for it.
struct AgentTicket {
    label: &'static str,
    title: &'static str,
    number: &'static str,
    short_description: &'static str,
    runbook: &'static str,
    inputs: fn() -> Value,
    environment: &'static str,
    confidence: f64,
    rationale: &'static str,
    evidence: &'static str,
    /// Who approves it on their page, when it waits for a person.
    approver: Option<&'static str>,
    expect: &'static str,
    /// The ticket's state when the story is told, what the desk calls it,
    /// and a line of the last note.
    told: (&'static str, &'static str, &'static str),
}

const AGENT_TICKETS: [AgentTicket; 3] = [
    AgentTicket {
        label: "l1",
        title: "An agent's proposal, auto-approved (MCP)",
        number: "INC0020101",
        short_description: "LAPTOP-0107: VPN client keeps stopping after this morning's update",
        runbook: "restart-endpoint-service",
        inputs: || serde_json::json!({"device_id": "LAPTOP-0107", "service": "vpnagent"}),
        environment: "workstation",
        confidence: 0.93,
        rationale: "The ticket names one laptop and the VPN client service; the endpoint API shows vpnagent stopped there. Restarting the service is the known fix.",
        evidence: "endpoint API: LAPTOP-0107 vpnagent status=stopped",
        approver: None,
        expect: "succeeded",
        // The runbook resolves its ticket.
        told: ("6", "Resolved", "Automation succeeded"),
    },
    AgentTicket {
        label: "l2",
        title: "An agent's proposal, approved on its page (MCP)",
        number: "INC0020102",
        short_description: "Storefront on WEB-03 returns HTTP 500 since the 09:40 deploy",
        runbook: "recycle-iis-web-tier",
        inputs: || serde_json::json!({"server": "WEB-03"}),
        environment: "production",
        confidence: 0.91,
        rationale: "5xx on one production web server right after a deploy; w3svc is degraded there. A restart of the web service usually clears it.",
        evidence: "Grafana: 5xx rate 31% on WEB-03 since 09:41",
        approver: Some("alice"),
        expect: "succeeded",
        // This runbook tells its ticket and leaves resolving to a person.
        told: ("2", "In Progress", "Automation succeeded"),
    },
    AgentTicket {
        label: "l3",
        title: "An agent's proposal at 0.42, denied (MCP)",
        number: "INC0020103",
        short_description: "Shop feels slow sometimes (WEB-04?)",
        runbook: "recycle-iis-web-tier",
        inputs: || serde_json::json!({"server": "WEB-04"}),
        environment: "production",
        confidence: 0.42,
        rationale: "Vague report; WEB-04 is the only server the caller names, and a restart might help, but nothing shows it is at fault.",
        evidence: "no alert on WEB-04 in the last 24h",
        approver: None,
        expect: "denied",
        told: (
            "2",
            "In Progress",
            "Not run: agent `demo-agent` proposed with confidence 0.42",
        ),
    },
];

/// Scenario (l): an AI agent connected over MCP reads three tickets and
/// proposes a runbook for each. opsgate decides: one runs at once, one
/// waits for a person who approves it on its page, one is denied for low
/// confidence; each ticket is told what the agent proposed and why.
async fn agent_scenario(
    stage: &Stage<'_>,
    store: &store::Store,
    updates: &mut tokio::sync::broadcast::Receiver<runtime::RunUpdate>,
) -> anyhow::Result<(Vec<Outcome>, Vec<DemoTicket>)> {
    let Stage {
        http,
        base,
        teams,
        servicenow,
        ..
    } = *stage;
    println!("\n(l) An AI agent over MCP proposes fixes for three tickets");
    let mut token = server::issue_token("demo-agent", domain::Role::Agent, jiff::Timestamp::now());
    token.row.scope = Some(domain::Scope {
        runbooks: vec!["restart-*".into(), "recycle-*".into()],
        targets: vec!["LAPTOP-*".into(), "WEB-*".into()],
        max_risk: Some(domain::RiskClass::Reversible),
    });
    store.create_token(&token.row).await?;
    let mut agent = McpAgent {
        http: http.clone(),
        url: format!("{base}/mcp"),
        token: token.token,
        next_id: 0,
    };
    let tools = agent
        .request("tools/list", None, serde_json::json!({}))
        .await?;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    println!(
        "    the agent connects to {base}/mcp; tools: {}",
        names.join(", ")
    );
    let mut outcomes = Vec::new();
    let mut tickets = Vec::new();
    for ticket in &AGENT_TICKETS {
        let started_at = Instant::now();
        let seeded = servicenow.seed_incident(test_support::servicenow_sim::NewIncident {
            number: Some(ticket.number.to_owned()),
            short_description: ticket.short_description.to_owned(),
            state: "2".to_owned(),
            ..Default::default()
        });
        println!("    {} \"{}\"", ticket.number, ticket.short_description);
        let proposal = serde_json::json!({
            "runbook": ticket.runbook,
            "inputs": (ticket.inputs)(),
            "ticket": ticket.number,
            "fields": {"environment": ticket.environment},
            "rationale": ticket.rationale,
            "evidence": [{"kind": "observation", "text": ticket.evidence}],
            "confidence": ticket.confidence,
            "model": {"name": "demo-triage-model", "version": "2026-11"},
            "prompt_version": "triage-v4",
            "idempotency_key": ticket.number,
        });
        let answer = agent.call("propose", proposal).await?;
        let outcome = answer["outcome"].as_str().unwrap_or("?");
        println!(
            "      the agent proposes {} at confidence {}: opsgate answers {outcome}{}",
            ticket.runbook,
            ticket.confidence,
            answer["decision"]["reasons"]
                .as_array()
                .filter(|_| outcome == "denied")
                .map(|reasons| format!(
                    " ({})",
                    reasons
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
                .unwrap_or_default()
        );
        let run_id = answer["run_id"].as_str().unwrap_or("-").to_owned();
        let mut state = answer["state"].as_str().unwrap_or("?").to_owned();
        if outcome == "awaiting_approval" {
            println!(
                "      it waits for a person: the answer names where approvers get their page ({})",
                answer["approval_url"].as_str().unwrap_or("-")
            );
            if let Some(approver) = ticket.approver {
                approve_through_link(http, teams, &run_id, approver).await?;
            }
        }
        if outcome != "denied" {
            state = tokio::time::timeout(RUN_TIMEOUT, tell_story(updates, &run_id))
                .await
                .unwrap_or_else(|_| "still running".to_owned());
        }
        let (done_state, done_label, last_words) = ticket.told;
        tickets.push(DemoTicket {
            table: "incident",
            number: ticket.number,
            sys_id: seeded.sys_id,
            done_state,
            done_label,
            last_words,
        });
        outcomes.push(Outcome {
            label: ticket.label,
            title: ticket.title,
            run: run_id,
            state,
            expected: ticket.expect.to_owned(),
            seconds: started_at.elapsed().as_secs_f64(),
        });
    }
    Ok((outcomes, tickets))
}

/// The incident scenario (a) starts from, in the simulated ServiceNow.
const DEMO_TICKET: &str = "INC0012345";
/// The requested item scenario (h) starts from.
const DEMO_REQUEST: &str = "RITM0010088";

/// A ServiceNow record a scenario writes back to, and how it looks done.
struct DemoTicket {
    table: &'static str,
    number: &'static str,
    sys_id: String,
    /// The state opsgate leaves it in, and what the desk calls that state.
    done_state: &'static str,
    done_label: &'static str,
    /// A line the last work note holds once the run's whole story is told.
    last_words: &'static str,
}

/// Waits for the write-back of a scenario to reach its ticket, and prints
/// the ticket as the service desk sees it: its work notes and its state.
async fn print_ticket(
    servicenow: &test_support::servicenow_sim::ServiceNowSim,
    ticket: &DemoTicket,
) -> bool {
    let record = || {
        servicenow
            .record(ticket.table, &ticket.sys_id)
            .unwrap_or_default()
    };
    let told = || {
        record().get("state").map(String::as_str) == Some(ticket.done_state)
            && servicenow
                .journal_of(&ticket.sys_id, "work_notes")
                .iter()
                .any(|note| note.contains(ticket.last_words))
    };
    for _ in 0..100 {
        if told() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "\n{} {} in ServiceNow (written back by opsgate)",
        ticket.table, ticket.number
    );
    for note in servicenow.journal_of(&ticket.sys_id, "work_notes") {
        for line in note.lines().filter(|line| !line.is_empty()) {
            println!("  | {line}");
        }
        println!("  |");
    }
    let record = record();
    let state = record.get("state").map_or("?", String::as_str);
    let close_code = record
        .get("close_code")
        .filter(|code| !code.is_empty())
        .map(|code| format!(", close code \"{code}\""))
        .unwrap_or_default();
    let told = told();
    println!(
        "  state {state}{}",
        if told {
            format!(" ({}){close_code}", ticket.done_label)
        } else {
            format!(" — NOT {} with the whole story", ticket.done_label)
        }
    );
    told
}

/// Prints what the Teams channel was shown: an approval card per stage
/// that opened, with a button per approver, and progress cards. Every run
/// of the demo that waited for people ends with a progress card saying how.
async fn print_teams_channel(teams: &test_support::teams_sim::TeamsSim) -> bool {
    let told_the_end = || {
        let cards = teams.posted_cards();
        let text = Value::Array(cards).to_string();
        text.contains("Automation succeeded")
    };
    for _ in 0..100 {
        if told_the_end() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let cards = teams.posted_cards();
    println!(
        "
Teams channel (simulated): {} card(s) posted",
        cards.len()
    );
    for card in &cards {
        // A banner (the state), the runbook's title, then what happened.
        let text = |at: &Value| at.as_str().unwrap_or_default().to_owned();
        let body = &card["body"];
        let mut title = format!(
            "{}: {}",
            text(&body[0]["items"][0]["text"]),
            text(&body[1]["inlines"][0]["text"])
        );
        if body[2]["type"] == "RichTextBlock" {
            title = format!("{title} — {}", text(&body[2]["inlines"][0]["text"]));
        }
        if let Some((cut, _)) = title.char_indices().nth(150) {
            title.truncate(cut);
            title.push('…');
        }
        let buttons: Vec<&str> = card["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|action| action["title"].as_str())
            .collect();
        if buttons.is_empty() {
            println!("  - {title}");
        } else {
            println!("  - {title}  [{}]", buttons.join("] ["));
        }
    }
    let told = told_the_end();
    if !told {
        println!("  the channel was NOT told how the runs ended");
    }
    told
}

/// Prints who the run waits for, as its birth recorded it: the stages and
/// who stands in for an approver who is away.
async fn print_approval_request(
    http: &reqwest::Client,
    base: &str,
    operator_token: &str,
    run_id: &str,
) -> anyhow::Result<()> {
    let run: server::api::RunDetail =
        get_json(http, &format!("{base}/v1/runs/{run_id}"), operator_token).await?;
    for record in &run.timeline {
        let kind = record.kind.as_str();
        if kind == domain::RecordKind::ApprovalRequested
            || kind == domain::RecordKind::ApprovalEscalated
        {
            println!(
                "      {}",
                render::describe(kind, &record.detail, "opsgate")
            );
        }
    }
    Ok(())
}

/// Does what an approver does with the link the Teams channel's approval
/// card brings them: opens the page, reads it, approves with a comment.
/// Nobody can ask opsgate for another person's link; what a link posted in
/// a shared channel still exposes is in docs/teams.md.
async fn approve_through_link(
    http: &reqwest::Client,
    teams: &test_support::teams_sim::TeamsSim,
    run_id: &str,
    approver: &str,
) -> anyhow::Result<()> {
    let url = link_on_card(teams, run_id, approver).await?;
    let url = url.as_str();
    println!(
        "      the Teams card links {approver} to a signed approval page: {}…",
        &url[..url.len().min(72)]
    );
    let page = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    anyhow::ensure!(
        page.contains(run_id),
        "the approval page does not name the run"
    );
    println!(
        "      {approver} opens it: the page shows the targets, every request, and why approval is needed"
    );
    let answer = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=approve&comment=reviewed+the+plan+on+this+page")
        .send()
        .await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the approval page answered {}",
        answer.status()
    );
    println!("      {approver} approves on the page");
    Ok(())
}

/// The URL of the button the newest approval card for `run_id` offers
/// `approver` ("Review as …"), once the card is posted: the write-back
/// posts it right after the stage opens.
async fn link_on_card(
    teams: &test_support::teams_sim::TeamsSim,
    run_id: &str,
    approver: &str,
) -> anyhow::Result<String> {
    let button = format!("Review as {approver}");
    for _ in 0..100 {
        let cards = teams.posted_cards();
        let url = cards
            .iter()
            .rev()
            .filter(|card| card.to_string().contains(run_id))
            .flat_map(|card| card["actions"].as_array().cloned().unwrap_or_default())
            .find(|action| action["title"] == button.as_str())
            .and_then(|action| action["url"].as_str().map(str::to_owned));
        if let Some(url) = url {
            return Ok(url);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("no approval card for run {run_id} offered {approver} a link")
}

/// The examples the demo runs on, built into the binary so that `opsgate
/// demo` works from any directory, an installed binary included. They are
/// written to the demo's scratch directory at start; the flags that name
/// other files or directories replace them. A unit test below keeps these
/// lists equal to the `examples/` folders.
mod examples {
    pub const RUNBOOKS: &[(&str, &str)] = &[
        (
            "clear-print-queue.yaml",
            include_str!("../../../examples/runbooks/clear-print-queue.yaml"),
        ),
        (
            "expand-mailbox-quota.yaml",
            include_str!("../../../examples/runbooks/expand-mailbox-quota.yaml"),
        ),
        (
            "fix-print-spooler-site.yaml",
            include_str!("../../../examples/runbooks/fix-print-spooler-site.yaml"),
        ),
        (
            "grant-vpn-access.yaml",
            include_str!("../../../examples/runbooks/grant-vpn-access.yaml"),
        ),
        (
            "recycle-iis-web-tier.yaml",
            include_str!("../../../examples/runbooks/recycle-iis-web-tier.yaml"),
        ),
        (
            "reset-vpn-network-profile.yaml",
            include_str!("../../../examples/runbooks/reset-vpn-network-profile.yaml"),
        ),
        (
            "restart-endpoint-service.yaml",
            include_str!("../../../examples/runbooks/restart-endpoint-service.yaml"),
        ),
        (
            "shared-mailbox-access.yaml",
            include_str!("../../../examples/runbooks/shared-mailbox-access.yaml"),
        ),
    ];

    pub const EVENTS: &[(&str, &str)] = &[
        (
            "agent-proposes-iis-restart.json",
            include_str!("../../../examples/events/agent-proposes-iis-restart.json"),
        ),
        (
            "alertmanager-vpn-service-stopped.json",
            include_str!("../../../examples/events/alertmanager-vpn-service-stopped.json"),
        ),
        (
            "iis-5xx-spike.json",
            include_str!("../../../examples/events/iis-5xx-spike.json"),
        ),
        (
            "mailbox-quota-95.json",
            include_str!("../../../examples/events/mailbox-quota-95.json"),
        ),
        (
            "print-queue-stuck.json",
            include_str!("../../../examples/events/print-queue-stuck.json"),
        ),
        (
            "print-spooler-crashed.json",
            include_str!("../../../examples/events/print-spooler-crashed.json"),
        ),
        (
            "shared-mailbox-access.json",
            include_str!("../../../examples/events/shared-mailbox-access.json"),
        ),
        (
            "vpn-access-contractor.json",
            include_str!("../../../examples/events/vpn-access-contractor.json"),
        ),
        (
            "vpn-service-resolved.json",
            include_str!("../../../examples/events/vpn-service-resolved.json"),
        ),
        (
            "vpn-service-stopped.json",
            include_str!("../../../examples/events/vpn-service-stopped.json"),
        ),
        (
            "vpn-tunnel-down.json",
            include_str!("../../../examples/events/vpn-tunnel-down.json"),
        ),
    ];

    pub const DIRECTORY: &str = include_str!("../../../examples/directory.yaml");
}

/// Where the demo's runbooks, events and directory are: the flags' paths,
/// or the built-in examples written under `scratch`.
struct ExamplePaths {
    runbooks: PathBuf,
    events: PathBuf,
    directory: PathBuf,
}

fn example_paths(args: &Args, scratch: &std::path::Path) -> anyhow::Result<ExamplePaths> {
    let write_all = |folder: PathBuf, files: &[(&str, &str)]| -> anyhow::Result<PathBuf> {
        // Exactly these files: nothing left from an earlier demo of the same
        // process id joins them.
        if folder.exists() {
            std::fs::remove_dir_all(&folder)
                .with_context(|| format!("emptying {}", folder.display()))?;
        }
        std::fs::create_dir_all(&folder)?;
        for (name, text) in files {
            let path = folder.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(folder)
    };
    let runbooks = match &args.runbooks {
        Some(path) => path.clone(),
        None => write_all(scratch.join("runbooks"), examples::RUNBOOKS)?,
    };
    let events = match &args.events {
        Some(path) => path.clone(),
        None => write_all(scratch.join("events"), examples::EVENTS)?,
    };
    let directory = match &args.directory {
        Some(path) => path.clone(),
        None => {
            let path = scratch.join("example-directory.yaml");
            std::fs::write(&path, examples::DIRECTORY)
                .with_context(|| format!("writing {}", path.display()))?;
            path
        }
    };
    Ok(ExamplePaths {
        runbooks,
        events,
        directory,
    })
}

/// `event` (JSON) with its `fields.until` moved to `seconds` from now.
fn with_end_in(event: &str, seconds: i64) -> anyhow::Result<String> {
    let mut event: Value = serde_json::from_str(event)?;
    let until = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds))
        .round(jiff::Unit::Second)?;
    let fields = event["fields"]
        .as_object_mut()
        .context("the event has no `fields`")?;
    fields.insert("until".to_owned(), Value::String(until.to_string()));
    Ok(event.to_string())
}

/// The example directory has Carol away for a week in November 2026, so
/// that scenario f shows her backup standing in. The demo moves that week
/// to cover today (in a copy), so the story holds whatever the date.
fn directory_for_today(
    directory: &std::path::Path,
    scratch: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    const CAROL_AWAY: &str = "{ from: 2026-11-20, to: 2026-11-27 }";
    let text = std::fs::read_to_string(directory)
        .with_context(|| format!("reading {}", directory.display()))?;
    if !text.contains(CAROL_AWAY) {
        return Ok(directory.to_owned());
    }
    let today = jiff::Zoned::now().date();
    let from = today.checked_sub(jiff::Span::new().days(2))?;
    let to = today.checked_add(jiff::Span::new().days(5))?;
    let copy = scratch.join("directory.yaml");
    std::fs::write(
        &copy,
        text.replace(CAROL_AWAY, &format!("{{ from: {from}, to: {to} }}")),
    )?;
    Ok(copy)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    serve::init_logging("warn", serve::LogFormat::Text);
    let sim = test_support::endpoint_sim::Sim::demo();
    let sim_server = sim
        .start()
        .await
        .context("starting the simulated endpoint API")?;
    let scratch = std::env::temp_dir().join(format!("opsgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let examples = example_paths(&args, &scratch)?;
    // The ticket of scenario (a) lives in a simulated ServiceNow instance;
    // opsgate writes the run's story back to it.
    let servicenow = test_support::servicenow_sim::ServiceNowSim::new(Default::default());
    let servicenow_server = servicenow
        .start()
        .await
        .context("starting the simulated ServiceNow")?;
    let incident = servicenow.seed_incident(test_support::servicenow_sim::NewIncident {
        number: Some(DEMO_TICKET.to_owned()),
        short_description: "VPN keeps disconnecting".to_owned(),
        state: "2".to_owned(),
        ..Default::default()
    });
    let request = servicenow.seed_record(
        "sc_req_item",
        &[
            ("number", DEMO_REQUEST),
            ("short_description", "Access to the Finance shared mailbox"),
            ("state", "1"),
        ],
    );
    // The mailbox owner's approval waits on the request in ServiceNow too;
    // opsgate records her decision there.
    let judy = servicenow.seed_record(
        "sys_user",
        &[("name", "Judy Jones"), ("email", "judy.jones@example.com")],
    );
    let judy_approval = servicenow.seed_record(
        "sysapproval_approver",
        &[
            ("approver", &judy),
            ("sysapproval", &request),
            ("state", "requested"),
        ],
    );
    let tickets = [
        DemoTicket {
            table: "incident",
            number: DEMO_TICKET,
            sys_id: incident.sys_id,
            done_state: "6",
            done_label: "Resolved",
            last_words: "Automation succeeded",
        },
        DemoTicket {
            table: "sc_req_item",
            number: DEMO_REQUEST,
            sys_id: request,
            done_state: "3",
            done_label: "Closed Complete",
            last_words: "The time-bound change was undone",
        },
    ];
    // Scenario (h) grants mailbox access through a simulated Microsoft
    // Graph (Entra ID): Kim, and the mailbox's access group.
    let graph_credentials = test_support::graph_sim::Credentials::default();
    let graph = test_support::graph_sim::GraphSim::new(graph_credentials.clone());
    let graph_server = graph
        .start()
        .await
        .context("starting the simulated Microsoft Graph")?;
    graph.add_user("kim.kowalski@partner.example.net");
    let mailbox_group = graph.add_group();
    let graph_secret_file = scratch.join("graph-client-secret");
    std::fs::write(&graph_secret_file, &graph_credentials.client_secret)?;
    let credentials = test_support::servicenow_sim::Credentials::default();
    let password_file = scratch.join("servicenow-password");
    std::fs::write(&password_file, &credentials.password)?;
    // Runs that wait for people are announced in a simulated Teams channel
    // (a Workflows webhook); its URL is a secret, given by reference.
    let teams = test_support::teams_sim::TeamsSim::new();
    let teams_server = teams
        .start()
        .await
        .context("starting the simulated Teams webhook")?;
    let teams_url_file = scratch.join("teams-webhook-url");
    std::fs::write(&teams_url_file, teams.webhook_url(&teams_server.url))?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", scratch.join("demo.db").display()));
    let settings = Settings {
        listen: args.listen.clone(),
        database: database.clone(),
        runbooks: examples.runbooks.clone(),
        log: "warn".to_owned(),
        log_format: serve::LogFormat::Text,
        lease_ttl_ms: runtime::Config::DEFAULT_LEASE_TTL_MS,
        shutdown_grace: std::time::Duration::from_secs(30),
        max_intake_in_flight: runtime::Config::DEFAULT_MAX_INTAKE_IN_FLIGHT,
        vars: Default::default(),
        signed_sources: Vec::new(),
        approval_links: None,
        global_rate_limit: None,
        shadow: None,
        directory: Some(directory_for_today(&examples.directory, &scratch)?),
        policies: None,
        integrations: [
            (
                connectors::graph::NAME.to_owned(),
                serde_json::json!({
                    "tenant_id": graph_credentials.tenant_id,
                    "client_id": graph_credentials.client_id,
                    "client_secret": format!("file:{}", graph_secret_file.display()),
                    "authority_url": graph_server.url,
                    "graph_url": graph_server.url,
                }),
            ),
            (
                connectors::servicenow::NAME.to_owned(),
                serde_json::json!({
                    "instance_url": servicenow_server.url,
                    "basic": {
                        "username": credentials.username,
                        "password": format!("file:{}", password_file.display()),
                    },
                }),
            ),
            (
                connectors::teams::NAME.to_owned(),
                serde_json::json!({"webhook_url": format!("file:{}", teams_url_file.display())}),
            ),
        ]
        .into(),
        playbooks: None,
        credentials: Default::default(),
        audit_anchor: None,
    };
    let started = serve::start(
        &settings,
        &[
            ("ENDPOINT_API".to_owned(), sim_server.url.clone()),
            ("FINANCE_MAILBOX_GROUP".to_owned(), mailbox_group.clone()),
        ],
    )
    .await?;
    let base = format!("http://{}", started.address);
    println!("opsgate demo");
    println!("  server      {base}");
    println!("  database    {database}");
    println!(
        "  runbooks    {} ({} loaded)",
        examples.runbooks.display(),
        started.runtime.catalog().len()
    );
    println!("  endpoint API (simulated) {}", sim_server.url);
    println!("  ServiceNow (simulated)   {}", servicenow_server.url);
    println!("  Teams webhook (simulated) {}", teams_server.url);
    println!("  Microsoft Graph (simulated) {}", graph_server.url);

    // The story, live: every committed transition, as the runtime announces it.
    let mut updates = started.runtime.subscribe();

    // The demo posts its incidents as an operator would, with a token.
    let operator = server::issue_token(
        "demo-operator",
        domain::Role::Operator,
        jiff::Timestamp::now(),
    );
    started.runtime.store().create_token(&operator.row).await?;
    let agent = server::issue_token("triage-bot", domain::Role::Agent, jiff::Timestamp::now());
    started.runtime.store().create_token(&agent.row).await?;
    // The people who approve hold the approver role: the on-call engineers,
    // Frank (standing in for Kim's manager Carol, who is away), Erin from
    // security, and Judy, who owns the finance mailbox. Only they get links
    // on the cards (a stage any approver may pass offers each of them one).
    for approver in ["alice", "bob", "frank", "erin", "judy"] {
        let token = server::issue_token(approver, domain::Role::Approver, jiff::Timestamp::now());
        started.runtime.store().create_token(&token.row).await?;
    }
    let http = reqwest::Client::new();
    let mut outcomes = Vec::new();
    for scenario in SCENARIOS {
        let path = examples.events.join(scenario.file);
        let mut body = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(seconds) = scenario.ends_in_seconds {
            body = with_end_in(&body, seconds)
                .with_context(|| format!("moving the end date of {}", path.display()))?;
        }
        println!(
            "\n({}) {}  [{}]",
            scenario.label,
            scenario.title,
            path.display()
        );
        let started_at = Instant::now();
        let report: server::api::IntakeAnswer = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(if scenario.by_agent {
                &agent.token
            } else {
                &operator.token
            })
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        println!("    intake: {}", report.message);
        let (run, state) = match report
            .run_id
            .as_deref()
            .filter(|_| matches!(report.disposition.as_str(), "started_run" | "denied_run"))
        {
            Some(run_id) => {
                // A run born awaiting approval, or denied, has no
                // transition to tell yet.
                let mut state = match report.state.map(domain::RunState::as_str) {
                    Some(born @ ("awaiting_approval" | "denied")) => {
                        print_approval_request(&http, &base, &operator.token, run_id).await?;
                        born.to_owned()
                    }
                    _ => tokio::time::timeout(RUN_TIMEOUT, tell_story(&mut updates, run_id))
                        .await
                        .unwrap_or_else(|_| "still running".to_owned()),
                };
                for approver in scenario.approvers {
                    if state != "awaiting_approval" {
                        break;
                    }
                    approve_through_link(&http, &teams, run_id, approver).await?;
                    state = tokio::time::timeout(RUN_TIMEOUT, tell_story(&mut updates, run_id))
                        .await
                        .unwrap_or_else(|_| "still running".to_owned());
                }
                if state == "in_effect" {
                    println!("      … until its end date: opsgate's timer then undoes it");
                    state = tokio::time::timeout(RUN_TIMEOUT, tell_story(&mut updates, run_id))
                        .await
                        .unwrap_or_else(|_| "still in effect".to_owned());
                }
                (run_id.to_owned(), state)
            }
            None => ("-".to_owned(), format!("no run ({})", report.disposition)),
        };
        let expected = match scenario.expect {
            Some(state) => state.to_owned(),
            None => "no run (inactive)".to_owned(),
        };
        outcomes.push(Outcome {
            label: scenario.label,
            title: scenario.title,
            run,
            state,
            expected,
            seconds: started_at.elapsed().as_secs_f64(),
        });
    }

    let stage = Stage {
        http: &http,
        base: &base,
        operator: &operator.token,
        teams: &teams,
        servicenow: &servicenow,
    };
    let events = &examples.events;
    outcomes.push(
        spooler_scenario(
            &stage,
            &mut updates,
            &events.join("print-spooler-crashed.json"),
        )
        .await?,
    );
    outcomes.push(freeze_scenario(&stage, &mut updates, &events.join("iis-5xx-spike.json")).await?);
    outcomes.push(shadow_scenario(&stage, &events.join("print-queue-stuck.json")).await?);
    let (agent_outcomes, agent_tickets) =
        agent_scenario(&stage, started.runtime.store(), &mut updates).await?;
    outcomes.extend(agent_outcomes);

    println!("\nsummary");
    println!(
        "  {:<3} {:<48} {:<30} {:<20} {:>7}  AS EXPECTED",
        "", "SCENARIO", "RUN", "OUTCOME", "SECONDS"
    );
    let mut all_as_expected = true;
    for outcome in &outcomes {
        let as_expected = outcome.state == outcome.expected;
        all_as_expected &= as_expected;
        println!(
            "  {:<3} {:<48} {:<30} {:<20} {:>7.2}  {}",
            outcome.label,
            outcome.title,
            outcome.run,
            outcome.state,
            outcome.seconds,
            if as_expected {
                "yes".to_owned()
            } else {
                format!("NO (expected {})", outcome.expected)
            }
        );
    }
    for ticket in tickets.iter().chain(&agent_tickets) {
        all_as_expected &= print_ticket(&servicenow, ticket).await;
    }
    let approval = servicenow
        .record("sysapproval_approver", &judy_approval)
        .unwrap_or_default();
    let approval_state = approval.get("state").map_or("?", String::as_str);
    println!("  Judy's approval record on {DEMO_REQUEST}: {approval_state}");
    all_as_expected &= approval_state == "approved";
    all_as_expected &= print_teams_channel(&teams).await;
    let chain = started.runtime.store().verify_audit().await?;
    match &chain.first_break {
        None => println!(
            "\naudit chain intact: {} record(s), head {}",
            chain.records,
            domain::short_hash(&chain.head_hash)
        ),
        Some(broken) => {
            all_as_expected = false;
            println!(
                "\naudit chain BROKEN at record {}: {}",
                broken.seq, broken.reason
            );
        }
    }
    if args.keep_running {
        println!(
            "\nthe server keeps running at {base} (Ctrl-C to stop); try `opsgate runs --server {base}`"
        );
        started.task.await??;
    }
    drop((sim_server, graph_server));
    Ok(if all_as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::examples;

    /// Every file of an `examples/` folder, with its text.
    fn folder(name: &str) -> Vec<(String, String)> {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        let mut files: Vec<(String, String)> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    fn built_in(files: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = files
            .iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn the_built_in_examples_are_the_example_folders() {
        assert_eq!(built_in(examples::RUNBOOKS), folder("runbooks"));
        assert_eq!(built_in(examples::EVENTS), folder("events"));
    }

    #[test]
    fn every_scenario_has_a_built_in_event() {
        for scenario in super::SCENARIOS {
            assert!(
                examples::EVENTS
                    .iter()
                    .any(|(name, _)| *name == scenario.file),
                "{} is not built in",
                scenario.file
            );
        }
    }
}
