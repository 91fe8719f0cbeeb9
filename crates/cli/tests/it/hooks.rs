//! Grafana's webhook contact point and PagerDuty Events v2-shaped events on
//! the real server: each becomes an event; a resolve withdraws a run still
//! waiting for approval; a malformed one is refused saying what and where;
//! a PagerDuty routing key is never kept.

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

async fn post_as_source(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let token = server.tokens.alertmanager.clone();
    server.post_raw_as(&token, path, &body.to_string()).await
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
    let target_server = target.start().await.unwrap();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer) = post_as_source(&server, "/v1/hooks/grafana", &grafana("firing")).await;
    assert_eq!(status, 202, "{answer}");
    let report = &answer["events"][0];
    assert_eq!(report["disposition"], "started_run", "{answer:#}");
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let event = &run["timeline"][0]["detail"];
    assert_eq!(event["source"], "grafana", "{event:#}");
    assert_eq!(event["subject"], "db-01");

    let (status, answer) = post_as_source(&server, "/v1/hooks/grafana", &grafana("resolved")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"][0]["disposition"], "inactive", "{answer:#}");
    assert_eq!(target.calls("POST /clean"), 1);

    let mut wrong = grafana("firing");
    wrong["version"] = json!("4");
    let (status, answer) = post_as_source(&server, "/v1/hooks/grafana", &wrong).await;
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
    let target_server = target.start().await.unwrap();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, answer) =
        post_as_source(&server, "/v1/hooks/pagerduty", &pagerduty("trigger")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["dedup_key"], "disk-db-01");
    let run_id = answer["report"]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["report"]["state"], "awaiting_approval", "{answer:#}");

    let (status, answer) =
        post_as_source(&server, "/v1/hooks/pagerduty", &pagerduty("acknowledge")).await;
    assert_eq!((status, &answer["report"]), (202, &Value::Null), "{answer}");
    let (status, answer) =
        post_as_source(&server, "/v1/hooks/pagerduty", &pagerduty("resolve")).await;
    assert_eq!(status, 202, "{answer}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(
        run["state"], "cancelled",
        "the resolve withdrew the waiting run: {run:#}"
    );

    let mut bad = pagerduty("trigger");
    bad["payload"]["severity"] = json!("urgent");
    let (status, answer) = post_as_source(&server, "/v1/hooks/pagerduty", &bad).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("payload.severity is `urgent`"),
        "{answer}"
    );
    let (status, answer) = post_as_source(
        &server,
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
