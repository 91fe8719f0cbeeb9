//! A second round of hostile tries against the real server, each one that
//! got through the first round of fixes and is now refused: the approval
//! page's refusals counted, torn and redirected anchors, a request dropped
//! unanswered, `HEAD`, the requester's manager, made-up source names
//! (requesters spelled with invisible or full-width characters are among
//! the spellings of `hostile.rs`).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, audit_records, event, eventually, http_runbook};

/// Refused requests must not grow the audit log without bound: the
/// approval page is public, so anyone can post a decision to a token that
/// is not a link. Those refusals go through the refusal ledger like the
/// API's, and the posted `decision` text is not kept.
#[tokio::test]
async fn anonymous_posts_to_the_approval_page_cannot_grow_the_audit_without_bound() {
    let workspace = Workspace::new();
    let server = workspace.start(&[]);
    let before = audit_records(&workspace.database_url()).len();
    let padding = "x".repeat(8_000);
    let anonymous = reqwest::Client::new();
    for index in 0..200 {
        let status = anonymous
            .post(format!("{}/approve/not-a-link-{index}", server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("decision={padding}{index}"))
            .send()
            .await
            .expect("reach opsgate")
            .status();
        assert_eq!(status, 403);
    }
    let records = audit_records(&workspace.database_url());
    let added = &records[before..];
    let bytes: usize = added.iter().map(|record| record.to_string().len()).sum();
    assert!(
        added.len() <= 10 && bytes <= 100_000,
        "200 anonymous requests added {} audit records ({bytes} bytes); \
         the API's refusals of one kind are counted in one record",
        added.len()
    );
}

const ANCHOR_KEY: &str = "the anchor key: thirty-two bytes at the very least";

/// `audit verify --anchor` on `anchors`.
fn verify_against(workspace: &Workspace, anchors: &Path) -> (i32, String) {
    crate::audit::verify_against(workspace, anchors, ANCHOR_KEY)
}

/// Anchors exist for the power loss, which can leave the file's last line
/// torn. The next anchor then starts a line of its own, and `audit verify
/// --anchor` leaves the torn line out (with a warning) and checks every
/// anchor written whole.
#[tokio::test]
async fn anchors_written_after_a_torn_anchor_line_still_verify() {
    let mut workspace = Workspace::new();
    let anchors = workspace.dir.path().join("anchors.jsonl");
    workspace.config_yaml = Some(format!(
        "audit_anchor:\n  sink: \"file:{}\"\n  key: env:OPSGATE_ANCHOR_KEY\n  every_records: 1\n",
        anchors.display()
    ));
    workspace
        .env
        .push(("OPSGATE_ANCHOR_KEY".into(), ANCHOR_KEY.into()));
    let mut server = workspace.start(&[]);
    server.event(&event("nothing-matches", "a")).await;
    server.stop().await;
    let (code, output) = verify_against(&workspace, &anchors);
    assert_eq!(code, 0, "{output}");

    // The crash: half of an anchor line reached the disk.
    let whole = std::fs::read_to_string(&anchors).unwrap();
    let last = whole.lines().last().unwrap().to_owned();
    std::fs::write(&anchors, format!("{whole}{}", &last[..last.len() / 2])).unwrap();

    let mut server = workspace.start(&[]);
    server.event(&event("nothing-matches", "b")).await;
    let grew = || {
        std::fs::read_to_string(&anchors)
            .map(|text| text.len() > whole.len() + last.len())
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(10), grew).await,
        "no anchor after the restart"
    );
    server.stop().await;
    let (code, output) = verify_against(&workspace, &anchors);
    assert_eq!(
        code, 0,
        "a torn line from a crash makes every later anchor unverifiable: {output}"
    );
}

/// The anchor webhook follows no redirect, like every other outbound
/// client: a sink answering `302` would otherwise have the anchor's POST
/// turned into a body-less GET elsewhere whose `200` counted as written.
/// A redirect is a failed write, tried again.
#[tokio::test]
async fn a_redirect_from_the_anchor_webhook_is_not_a_written_anchor() {
    let sink = Scripted::default();
    sink.on(
        "POST /anchors",
        vec![Reply::json(302, json!({})).header("location", "/elsewhere")],
    );
    sink.on("GET /elsewhere", vec![Reply::json(200, json!({}))]);
    let running = sink.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.config_yaml = Some(format!(
        "audit_anchor: {{ sink: \"{}/anchors\", key: env:OPSGATE_ANCHOR_KEY, every_records: 1 }}\n",
        running.url
    ));
    workspace
        .env
        .push(("OPSGATE_ANCHOR_KEY".into(), ANCHOR_KEY.into()));
    let mut server = workspace.start(&[]);
    server.event(&event("nothing-matches", "a")).await;
    assert!(
        eventually(Duration::from_secs(10), || sink.calls("POST /anchors") >= 1).await,
        "no anchor was posted"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop().await;
    assert_eq!(
        sink.calls("GET /elsewhere"),
        0,
        "the anchor's POST was redirected to a GET without its body and counted as written"
    );
}

/// A signature is used by the authentication middleware before the
/// handler runs. When the sender gives up waiting (ServiceNow's outbound
/// call times out while opsgate still reads the record back), the handler
/// is dropped with the connection, nothing is stored, and the signature is
/// given back: the sender's retry of the very same request is taken in,
/// not refused as a replay.
#[tokio::test]
async fn a_notification_whose_sender_gave_up_waiting_is_taken_in_when_sent_again() {
    let sys_id = "0123456789abcdef0123456789abcdef";
    let instance = Scripted::default();
    instance.on(
        &format!("GET /api/now/table/incident/{sys_id}"),
        vec![
            Reply::json(500, json!({})).delayed(Duration::from_secs(3)),
            Reply::json(500, json!({})),
        ],
    );
    let instance_server = instance.start().await.unwrap();
    let workspace = crate::servicenow::workspace(
        &instance_server.url,
        &http_runbook(
            "from-ticket",
            "incident",
            &[("act", "POST", "/act", "")],
            "",
        ),
    );
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let body =
        crate::servicenow::notification("incident", sys_id, "INC0012345", "insert").to_string();
    let now = jiff::Timestamp::now().as_second();
    let signature = server::sign(
        crate::servicenow::HOOK_SECRET.as_bytes(),
        now,
        body.as_bytes(),
    );
    let send = |timeout: Duration| {
        reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap()
            .post(format!("{}/v1/hooks/servicenow", server.base))
            .header("content-type", "application/json")
            .header(server::SOURCE_HEADER, "servicenow")
            .header(server::TIMESTAMP_HEADER, now.to_string())
            .header(server::SIGNATURE_HEADER, signature.clone())
            .body(body.clone())
            .send()
    };
    // The sender waits half a second, then gives up.
    assert!(send(Duration::from_millis(500)).await.is_err());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let retry = send(Duration::from_secs(10)).await.expect("reach opsgate");
    let status = retry.status().as_u16();
    let answer = retry.text().await.unwrap_or_default();
    assert_ne!(
        status, 401,
        "the retry of a request opsgate never answered is refused as a replay: {answer}"
    );
}

/// The route table (`auth::RouteTable`) takes HEAD wherever it takes
/// GET, as RFC 9110 asks and as load balancers' health checks expect.
#[tokio::test]
async fn head_is_answered_where_get_is() {
    let workspace = Workspace::new();
    let server = workspace.start(&[]);
    let anonymous = reqwest::Client::new();
    let refused = anonymous
        .delete(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    let allowed = refused
        .headers()
        .get("allow")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let healthz = anonymous
        .head(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let runs = server
        .http
        .head(format!("{}/v1/runs", server.base))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(
        (healthz, runs),
        (200, 200),
        "HEAD is refused although a 405 elsewhere says `allow: {allowed}`"
    );
}

/// `manager_of(requester)` finds the requester in the form people are
/// compared in: `KIM`, as a ticket system may spell her, is kim, and her
/// manager approves.
#[tokio::test]
async fn the_requesters_manager_is_found_however_the_event_spells_the_requester() {
    let mut workspace = Workspace::new();
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(
        &directory,
        "time_zone: UTC\npeople:\n  - { id: kim, name: Kim Kowalski, manager: carol }\n  - { id: carol, name: Carol Chen }\n",
    )
    .unwrap();
    workspace.config_yaml = Some(format!("directory: {}\n", directory.display()));
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("grant", "grant", &[("grant", "POST", "/grant", "")], "").replace(
            "approval: auto\n",
            "approval:\n  mode: required\n  stages:\n    - { name: manager, approvers: [\"manager_of(requester)\"] }\n",
        ),
    );
    let carol = workspace.create_token("carol", "approver");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let mut request = event("grant", "SPELLED-KIM");
    request["fields"]["requested_by"] = json!("KIM");
    let report = server.event(&request).await;
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");
    let run_id = report["run_id"].as_str().unwrap();
    let (status, body) = server.decide_as(&carol, run_id, "approve").await;
    assert_eq!(status, 200, "kim's manager cannot approve: {body}");
}

/// What an anonymous sender writes into a request (a made-up source name)
/// does not decide how many audit records it gets: its refusals are
/// grouped without what they quote, and counted.
#[tokio::test]
async fn anonymous_requests_with_made_up_source_names_are_counted_not_audited_one_by_one() {
    let workspace = Workspace::new();
    let mut server = workspace.start(&[]);
    let before = audit_records(&workspace.database_url()).len();
    let anonymous = reqwest::Client::new();
    for index in 0..1_000 {
        let status = anonymous
            .post(format!("{}/v1/events", server.base))
            .header("content-type", "application/json")
            .header("x-opsgate-source", format!("made-up-{index}"))
            .header("x-opsgate-timestamp", "0")
            .header("x-opsgate-signature", "sha256=00")
            .body("{}")
            .send()
            .await
            .expect("reach opsgate")
            .status();
        assert_eq!(status, 401);
    }
    server.stop().await;
    let added = audit_records(&workspace.database_url()).len() - before;
    assert!(
        added <= 20,
        "1,000 anonymous requests added {added} audit records"
    );
}
