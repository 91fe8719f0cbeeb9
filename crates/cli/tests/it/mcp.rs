//! MCP, driven by real clients: the official Python SDK (`mcp`, pinned in
//! `.ci/run`) over streamable HTTP — in its modern mode and in the legacy
//! one with the initialize handshake — and over stdio through `opsgate
//! mcp`; and rmcp's own client.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{BIN, skip};
use crate::proposals::{Setup, setup};

/// Whether Python can import the MCP SDK; the skip says how to get it.
fn python_sdk() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import mcp, httpx2"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        skip(
            "the MCP tests with the Python SDK",
            "python3 cannot import `mcp` (pip install mcp==2.3.0)",
        );
    }
    found
}

/// Runs the agent script with `args`; what it was answered.
fn agent(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/agent.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "the agent script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the agent script printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Judges what an agent was answered over MCP, and what the server did.
async fn judge(setup: &Setup, said: &Value, prefix: &str) {
    let tools = &said["tools"];
    let names: Vec<&str> = tools
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for tool in [
        "list_runbooks",
        "describe_runbook",
        "dry_run_proposal",
        "propose",
        "run_status",
        "explain_decision",
        "withdraw_proposal",
    ] {
        assert!(names.contains(&tool), "{tool} in {names:?}");
    }
    assert!(
        !names.iter().any(|name| name.contains("approve")),
        "{names:?}"
    );
    assert_eq!(tools["list_runbooks"]["read_only"], true);
    assert_eq!(tools["propose"]["read_only"], false);
    // This agent may propose nothing irreversible (wipe-disk is above its
    // highest risk): its proposals cannot destroy.
    assert_eq!(tools["propose"]["destructive"], false, "{tools:#}");

    let runbooks: Vec<&str> = said["list_runbooks"]["content"]["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|runbook| runbook["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        runbooks,
        ["recycle-web", "restart-service"],
        "in scope only"
    );
    let described = &said["describe_runbook"]["content"]["runbook"];
    assert_eq!(described["risk"], "reversible");
    assert_eq!(
        described["inputs"]["required"],
        json!(["device", "service"])
    );

    let dry_run = &said["dry_run"]["content"];
    assert_eq!(dry_run["decision"]["kind"], "allow", "{dry_run:#}");
    assert_eq!(dry_run["plan"]["targets"], json!(["LT-7"]));

    let auto = &said["propose_auto"]["content"];
    assert_eq!(said["propose_auto"]["is_error"], false);
    assert_eq!(auto["outcome"], "executing", "{auto:#}");
    let again = &said["propose_again"]["content"];
    assert_eq!(again["run_id"], auto["run_id"], "{again:#}");
    assert_eq!(again["replayed"], true);

    let approval = &said["propose_approval"]["content"];
    assert_eq!(approval["outcome"], "awaiting_approval", "{approval:#}");
    let approval_url = approval["approval_url"].as_str().unwrap();
    assert!(
        approval_url.ends_with("/approval-links") && approval_url.starts_with("http"),
        "{approval_url}"
    );

    let unsure = &said["propose_unsure"]["content"];
    assert_eq!(unsure["outcome"], "denied", "{unsure:#}");
    assert!(unsure["decision"]["reasons"].to_string().contains("0.3"));

    let refused = &said["propose_out_of_scope"];
    assert_eq!(refused["is_error"], true, "{refused:#}");
    assert_eq!(refused["content"]["error"]["code"], "forbidden");
    assert!(
        refused["content"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("above this agent's highest risk")
    );

    let status = &said["run_status"]["content"];
    assert_eq!(status["run_id"], auto["run_id"]);
    assert_eq!(status["runbook"], "restart-service");
    let explained = &said["explain"]["content"];
    assert_eq!(explained["decision"], "deny");
    assert_eq!(explained["proposed"]["confidence"], 0.3);
    assert_eq!(explained["proposed"]["agent"], "agent:triage-bot");

    let approve = &said["approve"];
    assert!(
        approve["raised"].as_str().is_some() || approve["is_error"] == true,
        "an approving tool does not exist: {approve:#}"
    );

    // The server's side: the auto-approved run ran once; the one that
    // waits waits; nothing a tool result carried is a token.
    let server = &setup.server;
    let run = server.wait(auto["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let waiting = server
        .get(&format!(
            "/v1/runs/{}",
            approval["run_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(waiting["state"], "awaiting_approval");
    let text = said.to_string();
    assert!(
        !text.contains(&setup.agent),
        "the agent's token came back in a result"
    );
    assert!(!text.contains("og_"), "a token came back in a result");
    let _ = prefix;
}

#[tokio::test]
async fn the_python_sdk_drives_the_tools_over_streamable_http_in_both_protocol_revisions() {
    if !python_sdk() {
        return;
    }
    let setup = setup().await;
    let url = format!("{}/mcp", setup.server.base);
    for mode in ["auto", "legacy"] {
        let prefix = format!("http-{mode}");
        let agent_token = setup.agent.clone();
        let said = tokio::task::spawn_blocking({
            let (url, prefix) = (url.clone(), prefix.clone());
            move || {
                agent(&[
                    "--url",
                    &url,
                    "--token",
                    &agent_token,
                    "--mode",
                    mode,
                    "--prefix",
                    &prefix,
                ])
            }
        })
        .await
        .unwrap();
        judge(&setup, &said, &prefix).await;
    }
}

#[tokio::test]
async fn the_python_sdk_drives_the_tools_over_stdio_through_opsgate_mcp() {
    if !python_sdk() {
        return;
    }
    let setup = setup().await;
    let base = setup.server.base.clone();
    let agent_token = setup.agent.clone();
    let said = tokio::task::spawn_blocking(move || {
        agent(&[
            "--stdio",
            BIN,
            "--server",
            &base,
            "--token",
            &agent_token,
            "--prefix",
            "stdio",
        ])
    })
    .await
    .unwrap();
    judge(&setup, &said, "stdio").await;
}

#[tokio::test]
async fn rmcps_client_drives_the_tools_over_streamable_http() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let setup = setup().await;
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", setup.server.base))
            .auth_header(setup.agent.clone()),
    );
    let client = ().serve(transport).await.expect("connect over MCP");
    let call = async |name: &'static str, arguments: Value| {
        let Value::Object(arguments) = arguments else {
            unreachable!()
        };
        let result = client
            .call_tool(CallToolRequestParams::new(name).with_arguments(arguments))
            .await
            .expect("a tool result");
        (
            result.is_error == Some(true),
            result.structured_content.unwrap_or(Value::Null),
        )
    };
    let tools = client.list_tools(None).await.unwrap();
    let propose = tools
        .tools
        .iter()
        .find(|tool| tool.name == "propose")
        .unwrap();
    let annotations = propose.annotations.as_ref().unwrap();
    assert_eq!(annotations.read_only_hint, Some(false));
    assert_eq!(annotations.idempotent_hint, Some(true));

    let proposal = |runbook: &str, inputs: Value, key: &str, confidence: f64| {
        json!({
            "runbook": runbook, "inputs": inputs, "confidence": confidence,
            "rationale": "from rmcp's client", "idempotency_key": key,
        })
    };
    let restart = || json!({"device": "LT-7", "service": "spooler"});
    let (error, dry_run) = call(
        "dry_run_proposal",
        proposal("restart-service", restart(), "rmcp-dry", 0.9),
    )
    .await;
    assert!(!error);
    assert_eq!(dry_run["decision"]["kind"], "allow", "{dry_run:#}");

    let (_, auto) = call(
        "propose",
        proposal("restart-service", restart(), "rmcp-1", 0.9),
    )
    .await;
    assert_eq!(auto["outcome"], "executing", "{auto:#}");
    let (_, waits) = call(
        "propose",
        proposal("recycle-web", json!({"server": "WEB-01"}), "rmcp-2", 0.9),
    )
    .await;
    assert_eq!(waits["outcome"], "awaiting_approval", "{waits:#}");
    let (_, denied) = call(
        "propose",
        proposal("restart-service", restart(), "rmcp-3", 0.2),
    )
    .await;
    assert_eq!(denied["outcome"], "denied", "{denied:#}");
    let (error, refused) = call(
        "propose",
        proposal("wipe-disk", json!({"device": "LT-7"}), "rmcp-4", 0.99),
    )
    .await;
    assert!(error, "{refused:#}");
    assert_eq!(refused["error"]["code"], "forbidden");

    let (_, status) = call("run_status", json!({"run_id": auto["run_id"]})).await;
    assert_eq!(status["runbook"], "restart-service");
    // No tool approves; the agent withdraws its own waiting proposal.
    let approve = client
        .call_tool(
            CallToolRequestParams::new("approve_run").with_arguments(
                json!({"run_id": waits["run_id"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await;
    assert!(approve.is_err(), "{approve:?}");
    let (error, withdrawn) = call(
        "withdraw_proposal",
        json!({"run_id": waits["run_id"], "reason": "no longer needed"}),
    )
    .await;
    assert!(!error, "{withdrawn:#}");
    assert_eq!(withdrawn["state"], "cancelled");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_client_that_takes_tasks_polls_a_waiting_proposal_as_a_task_until_a_person_decides() {
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities,
        ClientConfig, GetTaskParams, Implementation, ProtocolVersion, TaskStatus,
    };
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let setup = setup().await;
    let connect = async |token: &str| {
        let transport = StreamableHttpClientTransport::with_client(
            reqwest::Client::new(),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", setup.server.base))
                .auth_header(token.to_owned()),
        );
        // Tasks in the 2026-07-28 revision: every request carries the
        // client's capabilities, so a stateless server knows it takes them.
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("tasks-test", "1"),
        )
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("connect over MCP")
    };
    let client = connect(&setup.agent).await;
    let propose = async |key: &str, runbook: &str, inputs: Value, confidence: f64| {
        let arguments = json!({
            "runbook": runbook, "inputs": inputs, "confidence": confidence,
            "rationale": "as a task", "idempotency_key": key,
        });
        client
            .call_tool_once(
                CallToolRequestParams::new("propose")
                    .with_arguments(arguments.as_object().unwrap().clone()),
            )
            .await
            .expect("an answer")
    };
    let get = async |task_id: &str| {
        client
            .get_task(GetTaskParams::new(task_id))
            .await
            .expect("the task")
            .task
    };

    // Waiting for a person: a task, whose id is the run's.
    let answer = propose("task-1", "recycle-web", json!({"server": "WEB-01"}), 0.9).await;
    let CallToolResponse::Task(created) = answer else {
        panic!("a waiting proposal is answered as a task: {answer:?}")
    };
    let run_id = created.task.task_id.clone();
    assert!(run_id.starts_with("run_"), "{run_id}");
    assert_eq!(created.task.status, TaskStatus::Working);
    let message = created.task.status_message.clone().unwrap();
    assert!(
        message.starts_with("awaiting approval by a person: approvers get their page at http"),
        "{message}"
    );
    assert_eq!(get(&run_id).await.status(), TaskStatus::Working);
    // A person approves; polled, the task completes with the run's end.
    let (status, _) = setup.server.approve(&run_id).await;
    assert_eq!(status, 200);
    let mut done = None;
    for _ in 0..100 {
        let task = get(&run_id).await;
        if task.status().is_terminal() {
            done = Some(task);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let done = done.expect("the task completes");
    assert_eq!(done.status(), TaskStatus::Completed);
    let result = serde_json::to_value(&done).unwrap();
    assert_eq!(
        result["result"]["structuredContent"]["state"], "succeeded",
        "{result:#}"
    );

    // Decided at once (denied): no task, the answer itself.
    let CallToolResponse::Complete(denied) = propose(
        "task-2",
        "restart-service",
        json!({"device": "LT-7", "service": "spooler"}),
        0.2,
    )
    .await
    else {
        panic!("a denied proposal is answered at once")
    };
    assert_eq!(denied.structured_content.unwrap()["outcome"], "denied");

    // Cancelling the task withdraws the proposal.
    let CallToolResponse::Task(waiting) =
        propose("task-3", "recycle-web", json!({"server": "WEB-01"}), 0.9).await
    else {
        panic!("a task")
    };
    let waiting_id = waiting.task.task_id.clone();
    // Another agent's run is no task of this one's.
    let other = crate::proposals::agent_token(&setup.workspace, "other-bot", &[]);
    let stranger = connect(&other).await;
    assert!(
        stranger
            .get_task(GetTaskParams::new(&waiting_id))
            .await
            .is_err()
    );
    assert!(
        stranger
            .cancel_task(CancelTaskParams::new(&waiting_id))
            .await
            .is_err()
    );
    client
        .cancel_task(CancelTaskParams::new(&waiting_id))
        .await
        .expect("cancelled");
    assert_eq!(get(&waiting_id).await.status(), TaskStatus::Cancelled);
    let run = setup.server.get(&format!("/v1/runs/{waiting_id}")).await;
    assert_eq!(run["state"], "cancelled");
    client.cancel().await.unwrap();
    stranger.cancel().await.unwrap();
}
