//! Tickets from ServiceNow on the real server, against a local instance
//! that speaks the Table API: a signed notification is read back through
//! the Table API (the record, its CI, its caller) and starts a run; a
//! notification that breaks the contract is refused with nothing stored; a
//! resolved incident withdraws its waiting run; a failed run hands the
//! ticket to the resolver group; a requested item's approvals are recorded
//! on its `sysapproval_approver` records.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::servicenow_sim::{Credentials, ServiceNowSim};

use crate::harness::{Server, Workspace, eventually, http_runbook};

const PASSWORD_VAR: &str = "OPSGATE_TEST_SN_PASSWORD";
const HOOK_SECRET_VAR: &str = "OPSGATE_TEST_SN_HOOK_SECRET";
pub(crate) const HOOK_SECRET: &str = "business-rule-shared-secret-4Kp";

const DIRECTORY: &str = "time_zone: UTC
people:
  - { id: kim, name: Kim Kowalski, email: kim.kowalski@example.com, manager: carol }
  - { id: carol, name: Carol Chen, email: carol.chen@example.com }
  - { id: erin, name: Erin Evans, email: erin.evans@example.com }
groups:
  security: [erin]
";

/// A server that reads and writes `sim`, takes notifications signed by
/// the `servicenow` source, and knows kim, carol and erin.
pub(crate) fn workspace(sim_url: &str, runbook: &str) -> Workspace {
    let mut workspace = Workspace::new();
    workspace.add_runbook("r.yaml", runbook);
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(&directory, DIRECTORY).expect("write the directory");
    let credentials = Credentials::default();
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {sim_url}\n  basic: {{ username: {}, password: \"env:{PASSWORD_VAR}\" }}\n\
         signed_sources:\n  - name: servicenow\n    secret: env:{HOOK_SECRET_VAR}\n\
         directory: {}\n",
        credentials.username,
        directory.display()
    ));
    workspace.env = vec![
        (PASSWORD_VAR.to_owned(), credentials.password),
        (HOOK_SECRET_VAR.to_owned(), HOOK_SECRET.to_owned()),
    ];
    workspace
}

fn runbook(kind: &str, tail: &str) -> String {
    http_runbook("from-ticket", kind, &[("act", "POST", "/act", "")], tail)
}

/// Posts `body` as the business rule does: signed with the shared secret.
async fn notify(server: &Server, body: &Value) -> (u16, Value, Option<String>) {
    notify_at(server, body, 0).await
}

/// [`notify`] signed `seconds_ago`: a retry of the same notification is
/// signed anew, and a signature is accepted once.
pub(crate) async fn notify_at(
    server: &Server,
    body: &Value,
    seconds_ago: i64,
) -> (u16, Value, Option<String>) {
    let body = body.to_string();
    let now = jiff::Timestamp::now().as_second() - seconds_ago;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/hooks/servicenow", server.base))
        .header("content-type", "application/json")
        .header(server::SOURCE_HEADER, "servicenow")
        .header(server::TIMESTAMP_HEADER, now.to_string())
        .header(
            server::SIGNATURE_HEADER,
            server::sign(HOOK_SECRET.as_bytes(), now, body.as_bytes()),
        )
        .body(body)
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

pub(crate) fn notification(table: &str, sys_id: &str, number: &str, operation: &str) -> Value {
    json!({"table": table, "sys_id": sys_id, "number": number,
           "operation": operation, "changed": ["state"]})
}

/// An incident on kim's laptop, raised by kim.
pub(crate) struct Incident {
    pub(crate) sys_id: String,
    pub(crate) number: String,
    ci: String,
}

pub(crate) fn seed_incident(sim: &ServiceNowSim, state: &str) -> Incident {
    let ci = sim.seed_record(
        "cmdb_ci",
        &[
            ("name", "LAPTOP-0042"),
            ("fqdn", "laptop-0042.corp.example.com"),
            ("ip_address", "10.20.30.42"),
            ("sys_class_name", "cmdb_ci_computer"),
        ],
    );
    let kim = sim.seed_record(
        "sys_user",
        &[
            ("name", "Kim Kowalski"),
            ("user_name", "kim.kowalski"),
            ("email", "kim.kowalski@example.com"),
        ],
    );
    let number = "INC0020001";
    let sys_id = sim.seed_record(
        "incident",
        &[
            ("number", number),
            ("short_description", "VPN client service stopped"),
            ("category", "network"),
            ("state", state),
            ("cmdb_ci", &ci),
            ("caller_id", &kim),
        ],
    );
    Incident {
        sys_id,
        number: number.to_owned(),
        ci,
    }
}

pub(crate) fn target(status: u16) -> Scripted {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(status, json!({}))]);
    target
}

async fn notes_holding(sim: &ServiceNowSim, sys_id: &str, text: &str) -> String {
    let found = eventually(Duration::from_secs(15), || {
        sim.journal_of(sys_id, "work_notes")
            .iter()
            .any(|note| note.contains(text))
    })
    .await;
    let notes = sim.journal_of(sys_id, "work_notes").join("\n---\n");
    assert!(found, "no note holds `{text}`:\n{notes}");
    notes
}

#[tokio::test]
async fn a_signed_notification_is_read_through_the_table_api_and_starts_a_run() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "2");
    let workspace = workspace(
        &sim_server.url,
        &runbook(
            "incident",
            "writeback: { ticket: true, resolve_on_success: { close_code: \"Solution provided\" } }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let (status, answer, _) = notify(
        &server,
        &notification("incident", &incident.sys_id, &incident.number, "insert"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    let event = &server.get(&format!("/v1/runs/{run_id}")).await["event"];
    assert_eq!(event["source"], "servicenow", "{event:#}");
    assert_eq!(event["kind"], "incident");
    assert_eq!(event["subject"], "LAPTOP-0042", "the CI names the target");
    assert_eq!(event["dedup_key"], "servicenow:INC0020001");
    let fields = &event["fields"];
    assert_eq!(fields["ticket"], "INC0020001");
    assert_eq!(fields["short_description"], "VPN client service stopped");
    assert_eq!(fields["state"], "In Progress", "display values: {fields:#}");
    assert_eq!(fields["ci"]["fqdn"], "laptop-0042.corp.example.com");
    assert_eq!(fields["ci"]["class"], "cmdb_ci_computer");
    assert_eq!(fields["caller_email"], "kim.kowalski@example.com");
    assert_eq!(
        fields["requested_by"], "kim",
        "the caller is found in the directory by email"
    );
    let calls = sim.calls();
    for read in [
        format!("GET /api/now/table/incident/{}", incident.sys_id),
        format!("GET /api/now/table/cmdb_ci/{}", incident.ci),
    ] {
        assert!(calls.contains(&read), "{read} in {calls:#?}");
    }

    notes_holding(&sim, &incident.sys_id, "Automation succeeded").await;
    let record = sim.record("incident", &incident.sys_id).unwrap();
    assert_eq!(record["state"], "6", "{record:?}");
    assert_eq!(record["close_code"], "Solution provided");
}

#[tokio::test]
async fn notifications_that_break_the_contract_or_cannot_be_read_store_nothing() {
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "1");
    let workspace = workspace(&sim_server.url, &runbook("incident", ""));
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let good = notification("incident", &incident.sys_id, &incident.number, "insert");

    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut bad = good.clone();
    bad["table"] = json!("change_request");
    cases.push((bad, "table is `change_request`"));
    let mut bad = good.clone();
    bad["sys_id"] = json!("42");
    cases.push((bad, "sys_id is `42`"));
    let mut bad = good.clone();
    bad["operation"] = json!("merge");
    cases.push((bad, "operation is `merge`"));
    let mut bad = good.clone();
    bad["number"] = json!("INC0099999");
    cases.push((bad, "is numbered `INC0020001`"));
    let mut bad = good.clone();
    bad["sys_id"] = json!("0123456789abcdef0123456789abcdef");
    cases.push((bad, "could not read incident"));
    let mut bad = good.clone();
    bad["extra"] = json!(true);
    cases.push((bad, "unknown field `extra`"));
    for (body, expected) in cases {
        let (status, answer, _) = notify(&server, &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "`{expected}` in {message}");
    }

    // Unsigned: refused before anything is read.
    let reads_before = sim.calls().len();
    let (status, answer) = server
        .post_raw_as("og_not_a_token", "/v1/hooks/servicenow", &good.to_string())
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        sim.calls().len(),
        reads_before,
        "nothing read for a stranger"
    );

    // The instance rate-limits, then is down: try again later.
    sim.rate_limit_next(1, 7);
    let (status, answer, retry_after) = notify(&server, &good).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        retry_after.as_deref(),
        Some("7"),
        "ServiceNow's Retry-After"
    );
    sim.down(true);
    let (status, answer, _) = notify_at(&server, &good, 1).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("try again"),
        "{answer}"
    );

    let runs = server.get("/v1/runs").await;
    assert_eq!(runs["runs"], json!([]), "nothing was stored: {runs:#}");

    sim.down(false);
    let (status, answer, _) = notify_at(&server, &good, 2).await;
    assert_eq!(
        status, 202,
        "the same notification, once readable: {answer}"
    );
}

#[tokio::test]
async fn a_resolved_incident_withdraws_the_run_waiting_for_approval() {
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "1");
    let workspace = workspace(
        &sim_server.url,
        &runbook("incident", "").replace("approval: auto", "approval: required"),
    );
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let (status, answer, _) = notify(
        &server,
        &notification("incident", &incident.sys_id, &incident.number, "insert"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["report"]["state"], "awaiting_approval", "{answer:#}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();

    sim.set_field("incident", &incident.sys_id, "state", "6");
    let (status, answer, _) = notify(
        &server,
        &notification("incident", &incident.sys_id, &incident.number, "update"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
}

/// No notification of the change reaches opsgate (a business rule that
/// fires on insert only, a lost webhook): the ticket is read back before
/// the approved run acts.
#[tokio::test]
async fn an_incident_closed_while_the_run_waited_is_read_back_and_the_run_does_not_act() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "1");
    let workspace = workspace(
        &sim_server.url,
        &runbook("incident", "").replace("approval: auto", "approval: required"),
    );
    let erin = workspace.create_token("erin", "approver");
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer, _) = notify(
        &server,
        &notification("incident", &incident.sys_id, &incident.number, "insert"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    // A person resolves the incident meanwhile; opsgate is not told.
    sim.set_field("incident", &incident.sys_id, "state", "6");
    let (status, answer) = server.decide_as(&erin, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert_eq!(target.calls("POST /act"), 0, "it acted on a closed ticket");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("ticket {} was closed (Resolved)", incident.number)),
        "{reason}"
    );
}

#[tokio::test]
async fn a_failed_run_hands_the_ticket_to_the_resolver_group() {
    let target = target(500);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "2");
    let group = sim.seed_record("sys_user_group", &[("name", "endpoint-l2")]);
    let somebody = sim.seed_record("sys_user", &[("name", "Auto Dispatcher")]);
    sim.set_field("incident", &incident.sys_id, "assigned_to", &somebody);
    let workspace = workspace(
        &sim_server.url,
        &runbook(
            "incident",
            "on_failure: { escalate_to: \"group:endpoint-l2\", ticket_state: needs_human }\n\
             writeback: { ticket: true }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer, _) = notify(
        &server,
        &notification("incident", &incident.sys_id, &incident.number, "insert"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "rolled_back", "{run:#}");

    let notes = notes_holding(&sim, &incident.sys_id, "Reassigned to endpoint-l2").await;
    assert!(
        notes.contains("Automation failed and was rolled back"),
        "{notes}"
    );
    assert!(notes.contains("No step succeeded."), "{notes}");
    let record = sim.record("incident", &incident.sys_id).unwrap();
    assert_eq!(
        record["state"], "2",
        "back in progress for people: {record:?}"
    );
    assert_eq!(record["assignment_group"], group);
    assert_eq!(
        record["assigned_to"], "",
        "in the group's queue, unassigned"
    );
}

#[tokio::test]
async fn approvals_of_a_requested_item_are_recorded_on_its_approval_records() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let [kim, carol, erin] = [
        ("Kim Kowalski", "kim.kowalski@example.com"),
        ("Carol Chen", "carol.chen@example.com"),
        ("Erin Evans", "erin.evans@example.com"),
    ]
    .map(|(name, email)| sim.seed_record("sys_user", &[("name", name), ("email", email)]));
    let item = sim.seed_record(
        "sc_req_item",
        &[
            ("number", "RITM0010001"),
            ("short_description", "VPN access for a contractor"),
            ("state", "1"),
            ("approval", "requested"),
            ("requested_for", &kim),
        ],
    );
    let approval_of = |approver: &str| {
        sim.seed_record(
            "sysapproval_approver",
            &[
                ("approver", approver),
                ("sysapproval", &item),
                ("state", "requested"),
            ],
        )
    };
    let (carol_approval, erin_approval) = (approval_of(&carol), approval_of(&erin));
    let workspace = workspace(
        &sim_server.url,
        &runbook(
            "request",
            "writeback: { ticket: true, resolve_on_success: { close_code: \"Solution provided\" } }\n",
        )
        .replace(
            "approval: auto\n",
            "approval:\n  mode: required\n  stages:\n    - { name: manager, approvers: [\"manager_of(requester)\"] }\n    - { name: security, approvers: [\"group:security\"] }\n",
        ),
    );
    let [carol_token, erin_token] =
        ["carol", "erin"].map(|person| workspace.create_token(person, "approver"));
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let (status, answer, _) = notify(
        &server,
        &notification("sc_req_item", &item, "RITM0010001", "insert"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["report"]["state"], "awaiting_approval", "{answer:#}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    for token in [&carol_token, &erin_token] {
        let (status, body) = server.decide_as(token, &run_id, "approve").await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");

    notes_holding(&sim, &item, "Automation succeeded").await;
    for approval in [&carol_approval, &erin_approval] {
        let record = sim.record("sysapproval_approver", approval).unwrap();
        assert_eq!(record["state"], "approved", "{record:?}");
        let comments = sim.journal_of(approval, "comments").join("\n");
        assert!(
            comments.contains(&format!("Approved in opsgate, run {run_id}")),
            "{comments}"
        );
    }
    let record = sim.record("sc_req_item", &item).unwrap();
    assert_eq!(record["state"], "3", "closed complete: {record:?}");
}

/// Posts `body` with the signed-source headers given as they are.
async fn send_signed(server: &Server, body: &str, timestamp: i64, signature: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/hooks/servicenow", server.base))
        .header("content-type", "application/json")
        .header(server::SOURCE_HEADER, "servicenow")
        .header(server::TIMESTAMP_HEADER, timestamp.to_string())
        .header(server::SIGNATURE_HEADER, signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("reach opsgate");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The same hex digits in another case, every other letter flipped.
fn mixed_case(hex_digits: &str) -> String {
    hex_digits
        .chars()
        .enumerate()
        .map(|(index, digit)| {
            if index % 2 == 0 {
                digit.to_ascii_uppercase()
            } else {
                digit
            }
        })
        .collect()
}

#[tokio::test]
async fn a_signature_is_used_once_however_its_hex_is_written() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "2");
    let workspace = workspace(&sim_server.url, &runbook("incident", ""));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let body = notification("incident", &incident.sys_id, &incident.number, "insert").to_string();
    let now = jiff::Timestamp::now().as_second();
    let signature = server::sign(HOOK_SECRET.as_bytes(), now, body.as_bytes());
    let hex_digits = signature.strip_prefix("sha256=").unwrap();

    let (status, answer) = send_signed(&server, &body, now, &signature).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    // Once the first run is over, a replay that got in would start another.
    let replays = [
        ("the same header", signature.clone(), "already used"),
        (
            "hex upper-cased",
            format!("sha256={}", hex_digits.to_uppercase()),
            "already used",
        ),
        (
            "hex in mixed case",
            format!("sha256={}", mixed_case(hex_digits)),
            "already used",
        ),
        (
            "prefix upper-cased",
            format!("SHA256={hex_digits}"),
            "must be sha256=<hex>",
        ),
    ];
    for (case, replayed, reason) in replays {
        let (status, answer) = send_signed(&server, &body, now, &replayed).await;
        assert_eq!(status, 401, "{case}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{case}: {message}");
    }
    assert_eq!(
        server.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(target.calls("POST /act"), 1, "the target was called once");
}

#[tokio::test]
async fn a_notification_answered_503_is_taken_in_when_sent_again_with_the_same_signature() {
    let sim = ServiceNowSim::new(Credentials::default());
    let sim_server = sim.start().await.unwrap();
    let incident = seed_incident(&sim, "1");
    let workspace = workspace(&sim_server.url, &runbook("incident", ""));
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let body = notification("incident", &incident.sys_id, &incident.number, "insert").to_string();
    let now = jiff::Timestamp::now().as_second();
    let signature = server::sign(HOOK_SECRET.as_bytes(), now, body.as_bytes());

    sim.down(true);
    let (status, answer) = send_signed(&server, &body, now, &signature).await;
    assert_eq!(status, 503, "{answer}");
    sim.down(false);
    // opsgate failed, so the signature was not used up: the sender's retry
    // of the very same request is taken in, once.
    let (status, answer) = send_signed(&server, &body, now, &signature).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = send_signed(&server, &body, now, &signature).await;
    assert_eq!(status, 401, "{answer}");
}
