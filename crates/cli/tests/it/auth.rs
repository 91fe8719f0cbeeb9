//! Authentication and authorisation on the real server: every route × every
//! role, missing, malformed, unknown and revoked tokens, signed webhooks
//! (good, tampered, stale, replayed, unknown source), separation of duties
//! — each refusal answered with a JSON error and written to the audit log.

use serde_json::{Value, json};

use crate::harness::{
    Server, Workspace, audit_records, cli, event, http_runbook, refusal_records, refused_total,
    timeline,
};

/// One route as a client calls it.
struct Route {
    method: &'static str,
    path: String,
    body: Value,
}

/// Every route of the API, on a run that exists.
fn routes(run_id: &str) -> Vec<Route> {
    let route = |method, path: String, body| Route { method, path, body };
    vec![
        route("POST", "/v1/events".into(), event("gated", "MATRIX")),
        route(
            "POST",
            "/v1/hooks/alertmanager".into(),
            json!({"version": "4", "alerts": []}),
        ),
        route("POST", "/v1/plan".into(), event("gated", "MATRIX-PLAN")),
        route("GET", "/v1/runs".into(), Value::Null),
        route("GET", format!("/v1/runs/{run_id}"), Value::Null),
        route(
            "GET",
            format!("/v1/runs/{run_id}/wait?timeout_ms=1"),
            Value::Null,
        ),
        route("GET", "/v1/runbooks".into(), Value::Null),
        route(
            "POST",
            format!("/v1/runs/{run_id}/approval-links"),
            json!({}),
        ),
        route("POST", format!("/v1/runs/{run_id}/deny"), json!({})),
        route("POST", format!("/v1/runs/{run_id}/approve"), json!({})),
        route("GET", "/v1/freezes".into(), Value::Null),
        route("GET", "/v1/status".into(), Value::Null),
        route("GET", "/v1/reports/shadow".into(), Value::Null),
        route(
            "POST",
            "/v1/proposals".into(),
            json!({"runbook": "gated", "rationale": "r", "confidence": 0.9,
                   "idempotency_key": "matrix"}),
        ),
        route(
            "POST",
            "/v1/proposals/plan".into(),
            json!({"runbook": "gated", "rationale": "r", "confidence": 0.9,
                   "idempotency_key": "matrix-plan"}),
        ),
        // Not the agent's own: refused by the runtime, not the route.
        route("POST", "/v1/proposals/run_none/withdraw".into(), json!({})),
        route(
            "POST",
            "/mcp".into(),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
        ),
    ]
}

/// Which roles may call each route (same order as [`routes`]): the
/// authorisation policy as the documentation states it.
const ALLOWED: &[&[&str]] = &[
    &["admin", "operator", "agent", "source"],
    // A source posts its own webhooks only; this one is `tests`, not
    // `alertmanager` (hooks.rs checks each webhook with its own source).
    &["admin"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["approver"],
    &["approver"],
    &["approver"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["admin", "operator", "approver", "agent", "viewer"],
    &["admin", "operator", "approver", "agent", "viewer"],
    // Proposals and MCP: an agent's only.
    &["agent"],
    &["agent"],
    &["agent"],
    &["agent"],
];

const ROLES: [&str; 6] = ["admin", "operator", "approver", "agent", "viewer", "source"];

async fn call(server: &Server, token: Option<&str>, route: &Route) -> (u16, Value) {
    let url = format!("{}{}", server.base, route.path);
    let client = reqwest::Client::new();
    let mut request = match route.method {
        "GET" => client.get(url),
        _ => client.post(url).json(&route.body),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("reach opsgate");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn refusals(database_url: &str) -> Vec<Value> {
    audit_records(database_url)
        .into_iter()
        .filter(|record| record["kind"] == "api.refused")
        .collect()
}

fn gated_workspace() -> Workspace {
    let workspace = Workspace::new();
    let runbook = http_runbook(
        "gated",
        "gated",
        &[("act", "POST", "/act", "idempotent: true")],
        "",
    )
    .replace("approval: auto", "approval: required");
    workspace.add_runbook("r.yaml", &runbook);
    workspace
}

#[tokio::test]
async fn every_route_admits_exactly_the_roles_allowed_to_call_it() {
    let workspace = gated_workspace();
    // The source is named after the events it sends (`source: tests`).
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|role| {
            let principal = if *role == "source" { "tests" } else { role };
            (*role, workspace.create_token(principal, role))
        })
        .collect();
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let waiting = server.event(&event("gated", "WAITING")).await;
    let run_id = waiting["run_id"].as_str().unwrap().to_owned();

    let mut refused = 0;
    for (route, allowed) in routes(&run_id).iter().zip(ALLOWED) {
        let (status, body) = call(&server, None, route).await;
        assert_eq!(
            status, 401,
            "{} {} without a token: {body}",
            route.method, route.path
        );
        assert_eq!(body["error"]["code"], "unauthorized");
        refused += 1;
        for (role, token) in &tokens {
            let (status, body) = call(&server, Some(token), route).await;
            if allowed.contains(role) {
                assert!(
                    ![401, 403].contains(&status),
                    "{role} may {} {}: {status} {body}",
                    route.method,
                    route.path
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{role} may not {} {}: {body}",
                    route.method, route.path
                );
                assert_eq!(body["error"]["code"], "forbidden");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(&format!("role {role}")), "{message}");
                refused += 1;
            }
        }
    }
    // The health check is for load balancers: open to all.
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let refusals = refusals(&workspace.database_url());
    assert_eq!(refusals.len(), refused, "every refusal is audited");
    assert!(
        refusals
            .iter()
            .any(|record| record["actor"] == "anonymous" && record["detail"]["status"] == 401)
    );
    assert!(
        refusals
            .iter()
            .any(|record| record["actor"] == "agent:agent"
                && record["detail"]["route"] == "/v1/runs/{id}/approve"
                && record["detail"]["status"] == 403)
    );
    // No credential is ever written down.
    let export = cli(&["audit", "export", "--database", &workspace.database_url()]).1;
    for (_, token) in &tokens {
        let secret = token.rsplit('_').next().unwrap();
        assert!(
            !export.contains(secret),
            "a token's secret reached the audit log"
        );
    }
}

#[tokio::test]
async fn malformed_unknown_and_revoked_tokens_are_refused() {
    let workspace = gated_workspace();
    let viewer = workspace.create_token("vera", "viewer");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let runs = Route {
        method: "GET",
        path: "/v1/runs".into(),
        body: Value::Null,
    };
    assert_eq!(call(&server, Some(&viewer), &runs).await.0, 200);
    let (_, wrong_secret) = viewer.rsplit_once('_').unwrap();
    let forged = viewer.replace(wrong_secret, &"0".repeat(wrong_secret.len()));
    for (token, expected) in [
        ("not-a-token", "malformed token"),
        ("og_0000000000000000_abcdef", "unknown token"),
        (forged.as_str(), "unknown token"),
    ] {
        let (status, body) = call(&server, Some(token), &runs).await;
        assert_eq!(status, 401, "{token}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{token}: {message}");
    }
    let id = viewer.split('_').nth(1).unwrap();
    let (code, stdout, stderr) = cli(&[
        "token",
        "revoke",
        id,
        "--database",
        &workspace.database_url(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (status, body) = call(&server, Some(&viewer), &runs).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "this token was revoked");
    // The two unknown tokens are one kind of refusal: the first is audited
    // in full, the second counted, and its count written on shutdown.
    let mut server = server;
    server.stop().await;
    let refusals = refusal_records(&workspace.database_url());
    assert_eq!(refused_total(&refusals), 4, "{refusals:#?}");
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    let reasons: Vec<(&str, &str, &str)> = refusals
        .iter()
        .map(|record| {
            (
                record["kind"].as_str().unwrap(),
                record["actor"].as_str().unwrap(),
                record["detail"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "api.refused",
                "anonymous",
                "malformed token: expected og_<id>_<secret>"
            ),
            ("api.refused", "anonymous", "unknown token"),
            ("api.refused", "user:vera", "this token was revoked"),
            ("api.refused.repeated", "anonymous", "unknown token"),
        ]
    );
    assert_eq!(refusals[3]["detail"]["count"], 1);
}

#[tokio::test]
async fn nobody_approves_their_own_request_and_agents_never_approve() {
    let workspace = gated_workspace();
    // alice may both request (operator) and approve (approver), with two tokens.
    let alice_requests = workspace.create_token("alice", "operator");
    let agent = workspace.create_token("triage-bot", "agent");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let (status, report) = server
        .post_raw_as(
            &alice_requests,
            "/v1/events",
            &event("gated", "SOD-1").to_string(),
        )
        .await;
    assert_eq!(status, 202, "{report}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();

    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("separation of duties"), "{message}");

    let (status, body) = server.decide_as(&agent, &run_id, "approve").await;
    assert_eq!(status, 403, "{body}");

    // bob, another approver, may.
    let (status, body) = server
        .decide_as(&server.tokens.bob.clone(), &run_id, "approve")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["by"], "user:bob");

    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let kinds: Vec<(String, String)> = timeline(&run)
        .into_iter()
        .map(|(kind, actor, _)| (kind, actor))
        .collect();
    for expected in [
        ("approval.refused", "user:alice"),
        ("approval.granted", "user:bob"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    let refusals = refusals(&workspace.database_url());
    assert!(
        refusals.iter().any(
            |record| record["actor"] == "agent:triage-bot" && record["detail"]["status"] == 403
        ),
        "{refusals:#?}"
    );
}

#[tokio::test]
async fn signed_webhooks_are_verified_on_the_raw_body_once_and_in_time() {
    const SECRET: &str = "grafana-shared-secret";
    let mut workspace = gated_workspace();
    workspace.config_yaml =
        Some("signed_sources:\n  - name: tests\n    secret: env:TESTS_WEBHOOK_SECRET\n".to_owned());
    workspace.env = vec![("TESTS_WEBHOOK_SECRET".into(), SECRET.into())];
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let url = format!("{}/v1/events", server.base);
    let body = event("gated", "SIGNED-1").to_string();
    let now = jiff::Timestamp::now().as_second();
    let send = |source: &'static str, timestamp: i64, signature: String, body: String| {
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header(server::SOURCE_HEADER, source)
                .header(server::TIMESTAMP_HEADER, timestamp.to_string())
                .header(server::SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let good = server::sign(SECRET.as_bytes(), now, body.as_bytes());
    let (status, report) = send("tests", now, good.clone(), body.clone()).await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["disposition"], "started_run");

    let cases = [
        // The same request again: a replay.
        (
            send("tests", now, good.clone(), body.clone()).await,
            "already used",
        ),
        // One byte changed after signing.
        (
            send(
                "tests",
                now,
                good.clone(),
                body.replace("SIGNED-1", "SIGNED-2"),
            )
            .await,
            "does not match",
        ),
        // Signed with another secret.
        (
            send(
                "tests",
                now,
                server::sign(b"guess", now, body.as_bytes()),
                body.clone(),
            )
            .await,
            "does not match",
        ),
        // Signed long ago.
        (
            send(
                "tests",
                now - 600,
                server::sign(SECRET.as_bytes(), now - 600, body.as_bytes()),
                body.clone(),
            )
            .await,
            "replay window",
        ),
        // At the ends of the range: outside the window, not an overflow.
        (
            send("tests", i64::MIN, good.clone(), body.clone()).await,
            "replay window",
        ),
        (
            send("tests", i64::MAX, good.clone(), body.clone()).await,
            "replay window",
        ),
        (
            send("nobody", now, good.clone(), body.clone()).await,
            "unknown source",
        ),
    ];
    for ((status, answer), expected) in cases {
        assert_eq!(status, 401, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "`{message}` should say `{expected}`"
        );
    }
    let runs = server.get("/v1/runs").await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "only the genuine event started a run"
    );
    let mut server = server;
    server.stop().await;
    let refusals = refusal_records(&workspace.database_url());
    assert_eq!(refused_total(&refusals), 7, "{refusals:#?}");
}

#[tokio::test]
async fn an_irreversible_action_needs_two_distinct_approvers() {
    let target = test_support::scripted::Scripted::default();
    target.on(
        "POST /act",
        vec![test_support::scripted::Reply::json(200, json!({}))],
    );
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    let runbook = http_runbook(
        "wipe",
        "wipe",
        &[("act", "POST", "/act", "idempotent: false")],
        "",
    )
    .replace("risk: reversible", "risk: irreversible")
    .replace("approval: auto", "approval: required");
    workspace.add_runbook("r.yaml", &runbook);
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("wipe", "WIPE-1")).await;
    assert_eq!(report["decision"]["approvals_required"], 2, "{report:#}");
    let reasons = report["decision"]["reasons"].to_string();
    assert!(reasons.contains("two distinct people"), "{reasons}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();

    let (status, body) = server.approve(&run_id).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("awaiting_approval")),
        "{body}"
    );
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("distinct people"),
        "{body}"
    );
    assert_eq!(target.calls("POST /act"), 0, "one approval is not enough");

    let (status, body) = server
        .decide_as(&server.tokens.bob.clone(), &run_id, "approve")
        .await;
    assert_eq!(status, 200, "{body}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /act"), 1);
}

#[tokio::test]
async fn with_a_directory_only_its_people_approve() {
    let mut workspace = gated_workspace();
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/directory.yaml");
    workspace.config_yaml = Some(format!("directory: {directory}\n"));
    // alice is in the example directory; mallory is not.
    let mallory = workspace.create_token("mallory", "approver");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let report = server.event(&event("gated", "DIR-1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();

    let (status, body) = server.decide_as(&mallory, &run_id, "approve").await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("wrong person"), "{message}");
    // Nor does she get a link to decide with.
    let (status, body) = server
        .post_raw_as(&mallory, &format!("/v1/runs/{run_id}/approval-links"), "{}")
        .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("wrong person"), "{message}");

    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{body}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let refused: Vec<String> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "approval.refused")
        .map(|(_, actor, _)| actor)
        .collect();
    assert_eq!(refused, ["user:mallory"], "{run:#}");
}

#[tokio::test]
async fn a_flood_of_refused_requests_is_counted_not_audited_one_by_one() {
    const SECRET: &str = "flood-test-secret";
    let mut workspace = gated_workspace();
    workspace.config_yaml =
        Some("signed_sources:\n  - name: tests\n    secret: env:TESTS_WEBHOOK_SECRET\n".to_owned());
    workspace.env = vec![("TESTS_WEBHOOK_SECRET".into(), SECRET.into())];
    let mut server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let http = reqwest::Client::new();
    let events = format!("{}/v1/events", server.base);
    let runs = format!("{}/v1/runs", server.base);
    let now = jiff::Timestamp::now().as_second();
    // (what, how many, one request)
    let floods: [(&str, usize, reqwest::RequestBuilder); 3] = [
        (
            "anonymous",
            2000,
            http.post(&events)
                .header("content-type", "application/json")
                .body(event("gated", "FLOOD").to_string()),
        ),
        (
            "unknown token",
            300,
            http.get(&runs).bearer_auth("og_0000000000000000_guess"),
        ),
        (
            "bad signature",
            300,
            http.post(&events)
                .header("content-type", "application/json")
                .header(server::SOURCE_HEADER, "tests")
                .header(server::TIMESTAMP_HEADER, now.to_string())
                .header(
                    server::SIGNATURE_HEADER,
                    server::sign(b"a guess", now, b"{}"),
                )
                .body(event("gated", "FLOOD").to_string()),
        ),
    ];
    for (_, count, request) in &floods {
        // Sixteen at a time, `count` in all.
        let mut sent = tokio::task::JoinSet::new();
        for task in 0..16 {
            let share = count / 16 + usize::from(task < count % 16);
            let request = request.try_clone().unwrap();
            sent.spawn(async move {
                for _ in 0..share {
                    let response = request.try_clone().unwrap().send().await.unwrap();
                    assert_eq!(response.status(), 401);
                }
            });
        }
        sent.join_all().await;
    }
    let before_stop = refusal_records(&workspace.database_url());
    assert!(
        before_stop.len() <= 3,
        "one record per kind so far: {before_stop:#?}"
    );

    server.stop().await;
    let records = refusal_records(&workspace.database_url());
    assert!(records.len() <= 6, "a bounded number of rows: {records:#?}");
    let of = |reason: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|record| {
                record["detail"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains(reason)
            })
            .cloned()
            .collect()
    };
    for (what, count, reason) in [
        ("anonymous", 2000, "authentication required"),
        ("unknown token", 300, "unknown token"),
        ("bad signature", 300, "does not match"),
    ] {
        let records = of(reason);
        assert_eq!(
            records.len(),
            2,
            "{what}: one in full, one summary: {records:#?}"
        );
        assert_eq!(
            refused_total(&records) as usize,
            count,
            "{what}: {records:#?}"
        );
        let summary = &records[1];
        assert_eq!(summary["kind"], "api.refused.repeated");
        assert!(
            summary["detail"]["first_at"].as_str().unwrap()
                <= summary["detail"]["last_at"].as_str().unwrap()
        );
    }
    let (code, stdout, stderr) = cli(&["audit", "verify", "--database", &workspace.database_url()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
