//! What a run costs the store: its write transactions, each a synced
//! commit before anything it authorises is done.

use domain::{NewEvent, Principal, Role, RunState};
use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::fakes::harness_on;

fn runbook(step: &str) -> String {
    format!(
        "id: fix\ntitle: Fix the thing\nowner: tests\nrisk: reversible\napproval: auto\n\
         match:\n  kind: incident\ntargets:\n  from: \"[event.subject]\"\nsteps:\n{step}"
    )
}

const ACT: &str = "  - id: act\n    action: http.request\n    with:\n      method: POST\n      \
                   url: \"{{ env.TARGET }}/act\"\n";

fn event(dedup_key: &str, subject: &str) -> NewEvent {
    serde_json::from_value(json!({
        "source": "alerts", "kind": "incident", "dedup_key": dedup_key,
        "subject": subject, "status": "firing", "fields": {}
    }))
    .unwrap()
}

/// A runtime with the one-step runbook, its step's target answering
/// `replies` in turn.
async fn one_step_against(
    replies: Vec<Reply>,
) -> (Scripted, test_support::Running, crate::fakes::Harness) {
    let target = Scripted::default();
    target.on("POST /act", replies);
    let server = target.start().await.unwrap();
    let h = harness_on(
        &[&runbook(ACT)],
        &server.url,
        false,
        runtime::Clock::system(),
    )
    .await;
    (target, server, h)
}

/// Posts `event` as the alerting source; returns the run it started.
async fn post(h: &crate::fakes::Harness, event: NewEvent) -> String {
    let source = Principal::new("alerts".to_owned(), Role::Source);
    let report = h.runtime.intake().ingest(event, &source).await.unwrap();
    report.run_id.expect("a run started")
}

/// Posts `event` and waits for its run to succeed; returns how many
/// write transactions (batches: one each, as nothing else writes) the
/// store committed meanwhile.
async fn transactions_of_one_run(h: &crate::fakes::Harness, event: NewEvent) -> u64 {
    let store = h.runtime.store().clone();
    let mut updates = h.runtime.subscribe();
    let before = store.batches_committed();
    let run_id = post(h, event).await;
    let settled = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let update = updates.recv().await.unwrap();
            if update.run_id == run_id && update.state.is_settled() {
                return update.state;
            }
        }
    })
    .await
    .expect("the run settled within 10 s");
    assert_eq!(settled, RunState::Succeeded);
    store.batches_committed() - before
}

/// A one-step run started at intake: the intake's transaction also
/// claims it and commits its step's warrant; the step's outcome and the
/// lease given back are the second. Nothing else is written.
#[tokio::test]
async fn a_one_step_run_started_at_intake_takes_two_write_transactions() {
    let (_target, _server, h) = one_step_against(vec![Reply::json(200, json!({}))]).await;

    assert_eq!(transactions_of_one_run(&h, event("K1", "HOST-1")).await, 2);
    // And every later run alike: nothing is left to do once.
    assert_eq!(transactions_of_one_run(&h, event("K2", "HOST-2")).await, 2);
}

/// A run whose target another run holds is stored, approved, and claimed
/// once the target is free: it takes the long way, and still runs.
#[tokio::test]
async fn a_run_whose_target_is_held_is_stored_and_runs_once_the_target_is_free() {
    let (target, _server, h) = one_step_against(vec![
        Reply::json(200, json!({})).delayed(std::time::Duration::from_millis(300)),
        Reply::json(200, json!({})),
    ])
    .await;
    let mut updates = h.runtime.subscribe();
    let first = post(&h, event("K1", "HOST-1")).await;
    let second = post(&h, event("K2", "HOST-1")).await;

    let mut succeeded = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while succeeded.len() < 2 {
            let update = updates.recv().await.unwrap();
            if update.state == RunState::Succeeded {
                succeeded.push(update.run_id);
            }
        }
    })
    .await
    .expect("both runs succeeded within 10 s");
    assert_eq!(succeeded, [first, second]);
    assert_eq!(target.calls("POST /act"), 2);
}
