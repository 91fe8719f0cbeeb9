//! Grafana's webhook contact point and PagerDuty Events v2-shaped events on
//! the real server: each becomes an event; a resolve withdraws a run still
//! waiting for approval; a malformed one is refused saying what and where;
//! a PagerDuty routing key is never kept. A source speaks only for itself:
//! each webhook route takes its own source, never another's.

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, audit_records, http_runbook};

fn grafana(status: &str) -> Value {
    json!({
        "receiver": "opsgate", "status": status, "orgId": 1, "version": "1",
        "title": "[FIRING:1] DiskFull (db-01)", "message": "disk 97% on db-01",
        "groupKey": "{}:{alertname=\"DiskFull\"}", "externalURL": "https://grafana.example",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "alerts": [{
            "status": status,
            "labels": {"alertname": "DiskFull", "instance": "db-01", "environment": "production"},
            "annotations": {"summary": "disk 97% on db-01"},
            "startsAt": "2026-11-22T07:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://grafana.example/alerting/grafana/abc/view",
            "fingerprint": "57c6d9296de2ad39",
            "silenceURL": "https://grafana.example/alerting/silence/new",
            "dashboardURL": "https://grafana.example/d/disk", "panelURL": "https://grafana.example/d/disk?viewPanel=2",
            "values": {"B": 97.2}
        }]
    })
}

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

fn pagerduty(action: &str) -> Value {
    json!({
        "routing_key": ROUTING_KEY, "event_action": action, "dedup_key": "disk-db-01",
        "payload": {"summary": "Disk full on db-01", "source": "db-01", "severity": "critical", "class": "DiskFull"}
    })
}

/// Posts `body` to a webhook route with a source's `token`.
async fn post_as_source(server: &Server, token: &str, path: &str, body: &Value) -> (u16, Value) {
    server.post_raw_as(token, path, &body.to_string()).await
}

fn workspace(approval: &str) -> (Workspace, Scripted) {
    let target = Scripted::default();
    target.on("POST /clean", vec![Reply::json(200, json!({}))]);
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("disk", "DiskFull", &[("clean", "POST", "/clean", "")], "")
            .replace("approval: auto", &format!("approval: {approval}")),
    );
    (workspace, target)
}

#[tokio::test]
async fn a_grafana_alert_starts_a_run_and_its_resolution_does_not() {
    let (workspace, target) = workspace("auto");
    let token = workspace.create_token("grafana", "source");
    let target_server = target.start().await.unwrap();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer) =
        post_as_source(&server, &token, "/v1/hooks/grafana", &grafana("firing")).await;
    assert_eq!(status, 202, "{answer}");
    let report = &answer["events"][0];
    assert_eq!(report["disposition"], "started_run", "{answer:#}");
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let event = &run["timeline"][0]["detail"];
    assert_eq!(event["source"], "grafana", "{event:#}");
    assert_eq!(event["subject"], "db-01");
    assert_eq!(
        event["occurred_at"], "2026-11-22T07:00:00Z",
        "the alert's startsAt is its event time"
    );

    let (status, answer) =
        post_as_source(&server, &token, "/v1/hooks/grafana", &grafana("resolved")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"][0]["disposition"], "inactive", "{answer:#}");
    assert_eq!(target.calls("POST /clean"), 1);

    let mut wrong = grafana("firing");
    wrong["version"] = json!("4");
    let (status, answer) = post_as_source(&server, &token, "/v1/hooks/grafana", &wrong).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("Grafana webhook payload version `4`"),
        "{answer}"
    );
}

#[tokio::test]
async fn pagerduty_events_trigger_withdraw_and_are_checked() {
    let (workspace, target) = workspace("required");
    let token = workspace.create_token("pagerduty", "source");
    let target_server = target.start().await.unwrap();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer) = post_as_source(
        &server,
        &token,
        "/v1/hooks/pagerduty",
        &pagerduty("trigger"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["dedup_key"], "disk-db-01");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["report"]["state"], "awaiting_approval", "{answer:#}");

    let (status, answer) = post_as_source(
        &server,
        &token,
        "/v1/hooks/pagerduty",
        &pagerduty("acknowledge"),
    )
    .await;
    assert_eq!((status, &answer["report"]), (202, &Value::Null), "{answer}");
    let (status, answer) = post_as_source(
        &server,
        &token,
        "/v1/hooks/pagerduty",
        &pagerduty("resolve"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(
        run["state"], "cancelled",
        "the resolve withdrew the waiting run: {run:#}"
    );

    let mut bad = pagerduty("trigger");
    bad["payload"]["severity"] = json!("urgent");
    let (status, answer) = post_as_source(&server, &token, "/v1/hooks/pagerduty", &bad).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("payload.severity is `urgent`"),
        "{answer}"
    );
    let (status, answer) = post_as_source(
        &server,
        &token,
        "/v1/hooks/pagerduty",
        &json!({"event_action": "trigger"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("payload is missing"),
        "{answer}"
    );

    assert!(
        !audit_records(&workspace.database_url())
            .iter()
            .any(|record| record.to_string().contains(ROUTING_KEY)),
        "the routing key is not kept"
    );
    assert_eq!(target.calls("POST /clean"), 0);
}

/// A minimal Alertmanager webhook (v4) for `instance`.
fn alertmanager(instance: &str) -> Value {
    json!({"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "fingerprint": format!("fp-{instance}"),
        "labels": {"alertname": "DiskFull", "instance": instance},
    }]})
}

#[tokio::test]
async fn each_webhook_route_takes_its_own_source_only() {
    let target = Scripted::default();
    target.on("POST /clean", vec![Reply::json(200, json!({}))]);
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let sim = test_support::servicenow_sim::ServiceNowSim::new(
        test_support::servicenow_sim::Credentials::default(),
    );
    let sim_server = sim.start().await.unwrap();
    let incident = crate::servicenow::seed_incident(&sim, "2");
    let workspace = crate::servicenow::workspace(
        &sim_server.url,
        &http_runbook("disk", "DiskFull", &[("clean", "POST", "/clean", "")], ""),
    );
    workspace.add_runbook(
        "ticket.yaml",
        &http_runbook("ticket", "incident", &[("act", "POST", "/act", "")], ""),
    );
    let foreign = workspace.create_token("jira-x", "source");
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let cases = [
        ("alertmanager", alertmanager("db-01")),
        ("grafana", grafana("firing")),
        ("pagerduty", pagerduty("trigger")),
        (
            "servicenow",
            crate::servicenow::notification(
                "incident",
                &incident.sys_id,
                &incident.number,
                "insert",
            ),
        ),
    ];

    // Another source's token: refused before the body is read.
    for (source, body) in &cases {
        let path = format!("/v1/hooks/{source}");
        let (status, answer) = post_as_source(&server, &foreign, &path, body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("source:jira-x")
                && message.contains(&format!("source `{source}` only")),
            "{message}"
        );
    }
    // Nor may it post an event in another source's name.
    let mut event = crate::harness::event("DiskFull", "db-01");
    event["source"] = json!("alertmanager");
    let (status, answer) = post_as_source(&server, &foreign, "/v1/events", &event).await;
    assert_eq!(status, 403, "{answer}");
    // Another source's signature likewise: servicenow signs its own only.
    let body = alertmanager("db-02").to_string();
    let now = jiff::Timestamp::now().as_second();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/hooks/alertmanager", server.base))
        .header("content-type", "application/json")
        .header(server::SOURCE_HEADER, "servicenow")
        .header(server::TIMESTAMP_HEADER, now.to_string())
        .header(
            server::SIGNATURE_HEADER,
            server::sign(
                crate::servicenow::HOOK_SECRET.as_bytes(),
                now,
                body.as_bytes(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(server.get("/v1/runs").await["runs"], json!([]), "no run");
    let records = audit_records(&workspace.database_url());
    let kinds: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|record| {
            (
                record["kind"].as_str().unwrap(),
                record["actor"].as_str().unwrap(),
                record["detail"]["route"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("api.refused", "source:jira-x", "/v1/hooks/alertmanager"),
            ("api.refused", "source:jira-x", "/v1/hooks/grafana"),
            ("api.refused", "source:jira-x", "/v1/hooks/pagerduty"),
            ("api.refused", "source:jira-x", "/v1/hooks/servicenow"),
            ("api.refused", "source:jira-x", "/v1/events"),
            ("api.refused", "source:servicenow", "/v1/hooks/alertmanager"),
        ],
        "nothing stored, every refusal audited"
    );
    assert!(
        records
            .iter()
            .all(|record| record["detail"]["status"] == 403)
    );
    assert_eq!(target.calls("POST /clean") + target.calls("POST /act"), 0);

    // Each source's own token is accepted.
    for (source, body) in &cases {
        let path = format!("/v1/hooks/{source}");
        let own = workspace.create_token(source, "source");
        let (status, answer) = post_as_source(&server, &own, &path, body).await;
        assert_eq!(status, 202, "{path}: {answer}");
    }
    let runs = server.get("/v1/runs").await;
    assert!(!runs["runs"].as_array().unwrap().is_empty(), "{runs:#}");
}
