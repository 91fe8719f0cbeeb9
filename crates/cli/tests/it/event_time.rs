//! Event time on the real server: an event can say when it happened
//! (`occurred_at`; an alert's `startsAt`, a ticket's update time), and the
//! windows — recurrences, rate limits — are judged at that time, bounded
//! by when it is received. A backlog flushed at once after an outage is
//! seen spread over the hours it happened in, not as a burst; and a time
//! in the future is not believed.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::harness::{Server, Workspace, http_runbook};
use crate::servicenow::target;

fn event(dedup_key: &str, subject: &str, occurred_at: Option<Timestamp>) -> Value {
    let mut event = json!({"source": "monitoring", "kind": "CacheFull", "dedup_key": dedup_key,
        "subject": subject, "status": "firing", "fields": {"signature": "cache full"}});
    if let Some(at) = occurred_at {
        event["occurred_at"] = json!(at);
    }
    event
}

fn hours_ago(hours: f64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_secs_f64(hours * 3600.0)
}

async fn post(server: &Server, event: &Value) -> Value {
    let (status, answer) = server.post("/v1/events", event).await;
    assert_eq!(status, 202, "{event} → {answer:#}");
    answer
}

fn start(tail: &str, target_url: &str) -> (Workspace, Server) {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "clear-cache",
            "CacheFull",
            &[("act", "POST", "/act", "")],
            tail,
        ),
    );
    let server = workspace.start(&[("TARGET", target_url)]);
    (workspace, server)
}

#[tokio::test]
async fn a_backlog_flushed_at_once_is_rate_limited_over_the_hours_it_happened_in() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let (_workspace, server) = start(
        "guardrails:\n  rate_limit: { runs: 1, window: 1h }\n",
        &target_server.url,
    );
    // Four alerts held back by an outage, one an hour and a half apart,
    // arrive together: one run an hour is what the runbook allows, and
    // each happened in an hour of its own.
    let mut runs = Vec::new();
    for (index, hours) in [4.5, 3.0, 1.5, 0.0].into_iter().enumerate() {
        let answer = post(
            &server,
            &event(
                &format!("backlog-{index}"),
                &format!("HOST-{index}"),
                Some(hours_ago(hours)),
            ),
        )
        .await;
        assert_eq!(answer["disposition"], "started_run", "{answer:#}");
        runs.push(answer["run_id"].as_str().unwrap().to_owned());
    }
    for run in &runs {
        assert_eq!(server.wait(run).await["state"], "succeeded", "{run}");
    }
    assert_eq!(target.calls("POST /act"), 4);
    // Without their times, the same four are a burst: one runs.
    let mut denied = 0;
    for index in 0..4 {
        let answer = post(
            &server,
            &event(&format!("burst-{index}"), &format!("OTHER-{index}"), None),
        )
        .await;
        if answer["disposition"] == "denied_run" {
            denied += 1;
            let reasons = answer["decision"]["reasons"].to_string();
            assert!(reasons.contains("rate limit"), "{reasons}");
        }
    }
    assert_eq!(denied, 4, "the hour of now already had its run");
}

#[tokio::test]
async fn recurrences_count_when_the_incidents_happened_and_a_time_ahead_is_not_believed() {
    let target = target(200);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "clear-cache",
            "CacheFull",
            &[("act", "POST", "/act", "")],
            "",
        )
        .replace(
            "  kind: CacheFull\n",
            "  kind: CacheFull\n  recurrence: { count: 3, window: 1h, key: [subject] }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    // Three incidents on one host, two hours apart: never three in an hour.
    for (index, hours) in [4.0, 2.0, 0.0].into_iter().enumerate() {
        let answer = post(
            &server,
            &event(&format!("spread-{index}"), "HOST-1", Some(hours_ago(hours))),
        )
        .await;
        assert_eq!(answer["disposition"], "below_recurrence", "{answer:#}");
    }
    // Three within the hour (one said to happen an hour from now, which is
    // taken as now): the third acts.
    for (index, at) in [
        Some(hours_ago(0.5)),
        Some(Timestamp::now() + SignedDuration::from_hours(1)),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = post(&server, &event(&format!("close-{index}"), "HOST-2", at)).await;
        assert_eq!(answer["disposition"], "below_recurrence", "{answer:#}");
    }
    let third = post(&server, &event("close-2", "HOST-2", None)).await;
    assert_eq!(third["disposition"], "started_run", "{third:#}");
    let run_id = third["run_id"].as_str().unwrap();
    assert_eq!(server.wait(run_id).await["state"], "succeeded");
    // The time the sender gave is kept with the event; the one ahead of
    // opsgate's clock is not.
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(
        run["event"]["occurred_at"],
        Value::Null,
        "{:#}",
        run["event"]
    );
    let records = crate::harness::audit_records(&workspace.database_url());
    let received: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record["kind"] == "event.received" && record["detail"]["subject"] == "HOST-2"
        })
        .collect();
    assert_eq!(received.len(), 3);
    assert!(
        received[0]["detail"]["occurred_at"].is_string(),
        "{:#}",
        received[0]
    );
    assert_eq!(
        received[1]["detail"]["occurred_at"],
        Value::Null,
        "a time ahead: {:#}",
        received[1]
    );
}
