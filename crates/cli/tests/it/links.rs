//! Signed approval links on the real server: the page shows what will run
//! and why; a link decides once, for its approver, before it expires, for
//! the plan it was issued for; every attempt is audited with its reason.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, event, http_runbook, timeline};

const LINK_SECRET: &str = "links-shared-secret";

fn linked_workspace() -> Workspace {
    let mut workspace = Workspace::new();
    let runbook = http_runbook(
        "iis-restart",
        "iis",
        &[(
            "restart-app-pool",
            "POST",
            "/app-pools/web/restart",
            "idempotent: true",
        )],
        "",
    )
    .replace("approval: auto", "approval: required");
    workspace.add_runbook("r.yaml", &runbook);
    workspace.config_yaml = Some(
        "approval_links:\n  secret: env:TESTS_LINK_SECRET\n  public_url: http://opsgate.test\n"
            .to_owned(),
    );
    workspace.env = vec![("TESTS_LINK_SECRET".into(), LINK_SECRET.into())];
    workspace
}

/// Asks for `token`'s own link to `run_id` with `body`; returns its path.
async fn issue(server: &Server, token: &str, run_id: &str, body: Value) -> String {
    let (status, answer) = server.ask_for_link(token, run_id, &body).await;
    assert_eq!(status, 200, "{answer}");
    let url = answer["url"].as_str().unwrap();
    url.strip_prefix("http://opsgate.test")
        .unwrap_or_else(|| panic!("built on the public URL: {url}"))
        .to_owned()
}

/// Submits the page's form; returns the status and the page.
async fn submit(server: &Server, path: &str, decision: &str, comment: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "decision={}&comment={}",
            form_encode(decision),
            form_encode(comment)
        ))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `application/x-www-form-urlencoded`, as a browser sends the form.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn an_approver_decides_once_through_the_signed_page() {
    let target = Scripted::default();
    target.on(
        "POST /app-pools/web/restart",
        vec![Reply::json(200, json!({}))],
    );
    let target_server = target.start().await.unwrap();
    let workspace = linked_workspace();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("iis", "IIS-5XX-1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let alice = server.tokens.alice.clone();
    let path = issue(&server, &alice, &run_id, json!({})).await;

    // The page: what, where, why — no credential needed beyond the link.
    let page = reqwest::get(format!("{}{path}", server.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    for expected in [
        "Test runbook iis-restart",
        "<code>HOST-1</code>",
        "/app-pools/web/restart",
        "runbook `iis-restart` requires approval",
        report["run_id"].as_str().unwrap(),
        "alice",
        "value=\"approve\"",
    ] {
        assert!(
            page.contains(expected),
            "the page should show `{expected}`:\n{page}"
        );
    }
    assert_eq!(target.calls("POST /app-pools/web/restart"), 0);

    let (status, answer) =
        submit(&server, &path, "approve", "5xx confirmed in the dashboard").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("You approved run"), "{answer}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /app-pools/web/restart"), 1);

    // Once only.
    let (status, answer) = submit(&server, &path, "approve", "again").await;
    assert_eq!(status, 410, "{answer}");
    assert!(answer.contains("already used"), "{answer}");

    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let records = timeline(&run);
    let kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|(kind, actor, _)| (kind.as_str(), actor.as_str()))
        .collect();
    for expected in [
        ("approval.link_issued", "user:alice"),
        ("approval.link_used", "user:alice"),
        ("approval.granted", "user:alice"),
        ("approval.link_refused", "user:alice"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    let granted = records
        .iter()
        .find(|(kind, _, _)| kind == "approval.granted")
        .unwrap();
    assert_eq!(granted.2["comment"], "5xx confirmed in the dashboard");
}

#[tokio::test]
async fn expired_forged_and_self_approving_links_are_refused_and_audited() {
    let workspace = linked_workspace();
    let alice_requests = workspace.create_token("alice", "operator");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let (status, report) = server
        .post_raw_as(
            &alice_requests,
            "/v1/events",
            &event("iis", "IIS-5XX-2").to_string(),
        )
        .await;
    assert_eq!(status, 202, "{report}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let plan_hash = run["plan"]["plan_hash"].as_str().unwrap().to_owned();

    // Expired.
    let bob = server.tokens.bob.clone();
    let short = issue(&server, &bob, &run_id, json!({"expires_in_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, answer) = submit(&server, &short, "approve", "").await;
    assert_eq!(status, 410, "{answer}");
    assert!(answer.contains("expired"), "{answer}");

    // Tampered: another run, approver or expiry breaks the signature.
    let good = issue(&server, &bob, &run_id, json!({})).await;
    let (payload, signature) = good
        .trim_start_matches("/approve/")
        .split_once('.')
        .unwrap();
    let mut link: Value = serde_json::from_slice(&hex::decode(payload).unwrap()).unwrap();
    link["approver"] = json!("mallory");
    let forged = format!(
        "/approve/{}.{signature}",
        hex::encode(serde_json::to_vec(&link).unwrap())
    );
    let (status, answer) = submit(&server, &forged, "approve", "").await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("not genuine"), "{answer}");

    // Issued for another plan (signed with the real key): the plan changed.
    let stale = server::sign_link(
        &domain::Secret::new(LINK_SECRET),
        &server::ApprovalLink {
            run_id: run_id.clone(),
            approver: "bob".into(),
            stage: "approval".into(),
            issued_by: "user:bob".into(),
            plan_hash: "0".repeat(plan_hash.len()),
            expires_at: jiff::Timestamp::now().as_second() + 600,
            nonce: "stale-plan".into(),
        },
    );
    let (status, answer) = submit(&server, &format!("/approve/{stale}"), "approve", "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("plan changed"), "{answer}");

    // Issued for another stage of the chain: the run is not at that stage.
    let other_stage = server::sign_link(
        &domain::Secret::new(LINK_SECRET),
        &server::ApprovalLink {
            run_id: run_id.clone(),
            approver: "bob".into(),
            stage: "security".into(),
            issued_by: "user:bob".into(),
            plan_hash: plan_hash.clone(),
            expires_at: jiff::Timestamp::now().as_second() + 600,
            nonce: "other-stage".into(),
        },
    );
    let (status, answer) = submit(&server, &format!("/approve/{other_stage}"), "approve", "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("stage `security`"), "{answer}");

    // alice asked for this run: she gets no link to approve it.
    let alice = server.tokens.alice.clone();
    let (status, answer) = server.ask_for_link(&alice, &run_id, &json!({})).await;
    assert_eq!(status, 403, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("separation of duties"), "{message}");
    // Nor does a link she caused to be issued for bob (signed with the real
    // key: only a requester-issued link could carry her as its issuer).
    let caused_by_alice = server::sign_link(
        &domain::Secret::new(LINK_SECRET),
        &server::ApprovalLink {
            run_id: run_id.clone(),
            approver: "bob".into(),
            stage: "approval".into(),
            issued_by: "user:alice".into(),
            plan_hash: plan_hash.clone(),
            expires_at: jiff::Timestamp::now().as_second() + 600,
            nonce: "caused-by-the-requester".into(),
        },
    );
    let (status, answer) = submit(
        &server,
        &format!("/approve/{caused_by_alice}"),
        "approve",
        "",
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("who asked for this run"), "{answer}");

    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "awaiting_approval", "nothing was approved");
    let refusals: Vec<String> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "approval.link_refused" || kind == "approval.refused")
        .map(|(kind, actor, detail)| format!("{kind} {actor}: {}", detail["reason"]))
        .collect();
    assert_eq!(refusals.len(), 5, "{refusals:#?}");
    assert!(refusals[0].contains("expired"), "{refusals:#?}");
    assert!(refusals[1].contains("plan changed"), "{refusals:#?}");
    assert!(refusals[2].contains("stage `security`"), "{refusals:#?}");
    assert!(
        refusals[3].starts_with("approval.link_refused user:alice")
            && refusals[3].contains("separation of duties"),
        "{refusals:#?}"
    );
    assert!(
        refusals[4].contains("who asked for this run"),
        "{refusals:#?}"
    );
    // The forged link names no run anyone can trust: audited without one.
    let forged_attempts = crate::harness::audit_records(&workspace.database_url())
        .into_iter()
        .filter(|record| {
            record["kind"] == "approval.link_refused"
                && record["run_id"].is_null()
                && record["detail"]["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains("not genuine"))
        })
        .count();
    assert_eq!(forged_attempts, 1, "the forged attempt is in the audit log");
}
