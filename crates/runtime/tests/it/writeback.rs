//! What the runtime tells a ticket system and a chat channel through the
//! seam: a run's whole story, once and in order, where the ticket goes at
//! the end, and an approval request per stage that opens.

use connectors::{Outcome, TicketUpdate};
use domain::{NewEvent, Principal, Role};
use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::fakes::{eventually, harness, harness_on};

fn runbook(approval: &str, tail: &str) -> String {
    format!(
        "id: fix\ntitle: Fix the thing\nowner: tests\nrisk: reversible\napproval: {approval}\n\
         match:\n  kind: incident\ntargets:\n  from: \"[event.subject]\"\nsteps:\n\
         \x20 - id: act\n    action: http.request\n    with:\n      method: POST\n      url: \"{{{{ env.TARGET }}}}/act\"\n{tail}"
    )
}

fn event(source: &str, dedup_key: &str) -> NewEvent {
    serde_json::from_value(json!({
        "source": source, "kind": "incident", "dedup_key": dedup_key,
        "subject": "HOST-1", "status": "firing", "fields": {"ticket": "T-1"}
    }))
    .unwrap()
}

fn source(name: &str) -> Principal {
    Principal::new(name.to_owned(), Role::Source)
}

async fn target(status: u16) -> (Scripted, test_support::Running) {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(status, json!({}))]);
    let server = target.start().await.unwrap();
    (target, server)
}

/// The record ranges the notes of `updates` name, in order: `[opsgate
/// run #3-7]` → (3, 7).
fn ranges(updates: &[(String, TicketUpdate)]) -> Vec<(u64, u64)> {
    updates
        .iter()
        .filter_map(|(_, update)| update.note.as_ref())
        .map(|note| {
            let (_, range) = note.marker.trim_end_matches(']').rsplit_once('#').unwrap();
            let (first, last) = range.split_once('-').unwrap();
            (first.parse().unwrap(), last.parse().unwrap())
        })
        .collect()
}

/// Waits until the desk has been told where its ticket goes.
async fn told_an_outcome(h: &crate::fakes::Harness) {
    let told = eventually(|| {
        h.desk
            .updates()
            .iter()
            .any(|(_, update)| update.outcome.is_some())
    })
    .await;
    assert!(told, "{:#?}", h.desk.updates());
}

fn assert_told_once_in_order(updates: &[(String, TicketUpdate)]) {
    let ranges = ranges(updates);
    assert!(!ranges.is_empty(), "no note");
    for pair in ranges.windows(2) {
        assert!(
            pair[0].1 < pair[1].0,
            "notes overlap or go back: {ranges:?}"
        );
    }
}

#[tokio::test]
async fn a_run_tells_its_ticket_its_story_once_and_resolves_it() {
    let (_target, server) = target(200).await;
    let tail = "writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n";
    let h = harness(&[&runbook("auto", tail)], &server.url, false).await;
    let report = h
        .runtime
        .intake()
        .ingest(event("desk", "D1"), &source("desk"))
        .await
        .unwrap();
    let run_id = report.run_id.clone().unwrap();

    told_an_outcome(&h).await;
    let updates = h.desk.updates();
    assert!(
        updates
            .iter()
            .all(|(ticket, update)| ticket == "T-1" && update.run_id == run_id)
    );
    assert_told_once_in_order(&updates);
    let outcomes: Vec<&Outcome> = updates
        .iter()
        .filter_map(|(_, update)| update.outcome.as_ref())
        .collect();
    assert_eq!(
        outcomes,
        [&Outcome::Resolved {
            close_code: "Solved".into(),
            close_notes: format!("Resolved by opsgate run {run_id}: the fix ran and was verified."),
        }]
    );
    let story: String = updates
        .iter()
        .filter_map(|(_, update)| update.note.as_ref())
        .map(|note| note.text.clone())
        .collect();
    assert!(story.contains("act"), "{story}");
    // Nobody was asked: the run did not wait for a person.
    assert!(h.chat.requests().is_empty() && h.chat.progress().is_empty());
    // And the write-back is done, however the last batch met the run's
    // end: it is never left waiting for records that will not come.
    let mut done = false;
    for _ in 0..200 {
        let detail = h
            .runtime
            .reads()
            .run_detail(&run_id)
            .await
            .unwrap()
            .unwrap();
        done = detail.writebacks.iter().all(|writeback| writeback.done);
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(done, "the desk's write-back is done");
}

#[tokio::test]
async fn a_failed_run_hands_its_ticket_to_a_person_and_says_where_it_got_to() {
    let (_target, server) = target(500).await;
    let tail = "on_failure: { escalate_to: \"group:endpoint-l2\", ticket_state: needs_human }\n\
                writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n";
    let h = harness(&[&runbook("auto", tail)], &server.url, false).await;
    h.runtime
        .intake()
        .ingest(event("desk", "D2"), &source("desk"))
        .await
        .unwrap();

    told_an_outcome(&h).await;
    let updates = h.desk.updates();
    let (_, last) = updates
        .iter()
        .find(|(_, update)| update.outcome.is_some())
        .unwrap();
    assert_eq!(
        last.outcome,
        Some(Outcome::NeedsPerson {
            state: Some("needs_human".into()),
            group: Some("endpoint-l2".into()),
        })
    );
    assert!(
        last.note
            .as_ref()
            .unwrap()
            .text
            .contains("No step succeeded.")
    );
    assert_told_once_in_order(&updates);
}

#[tokio::test]
async fn a_ticket_system_that_is_down_holds_the_story_back_and_loses_none_of_it() {
    let (_target, server) = target(200).await;
    let tail = "writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n";
    let h = harness(&[&runbook("auto", tail)], &server.url, false).await;
    *h.desk.failing.lock().unwrap() = 3;
    h.runtime
        .intake()
        .ingest(event("desk", "D3"), &source("desk"))
        .await
        .unwrap();

    told_an_outcome(&h).await;
    assert_eq!(*h.desk.failing.lock().unwrap(), 0, "it was tried again");
    // The batch that failed was written again as it was, then the rest:
    // nothing twice, nothing skipped, the first note from the run's first
    // record on.
    let updates = h.desk.updates();
    assert_told_once_in_order(&updates);
    let story = &updates[0].1.note.as_ref().unwrap().text;
    assert!(
        story.starts_with("Automation started: run"),
        "the run's first record: {story}"
    );
}

/// A ticket system down for an hour, on a clock moved a minute at a time:
/// the run does not wait for it; the desk is asked again sooner at first,
/// then every five minutes, never more often; once it is back, it is told
/// the whole story once, in order, and where the ticket goes.
#[tokio::test]
async fn a_ticket_system_down_for_an_hour_is_asked_every_five_minutes_then_told_everything_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let (_target, server) = target(200).await;
    let clock = runtime::ManualClock::starting_at("2026-03-02T09:00:00Z".parse().unwrap());
    let tail = "writeback: { ticket: true, resolve_on_success: { close_code: \"Solved\" } }\n";
    let h = harness_on(&[&runbook("auto", tail)], &server.url, false, clock.clock()).await;
    h.desk.down.store(true, SeqCst);
    let report = h
        .runtime
        .intake()
        .ingest(event("desk", "D-HOUR"), &source("desk"))
        .await
        .unwrap();
    let run_id = report.run_id.unwrap();
    let store = h.runtime.store().clone();
    let mut settled = false;
    for _ in 0..1000 {
        let run = store.run(&run_id).await.unwrap().unwrap();
        if run.state == domain::RunState::Succeeded {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(settled, "the run finished without waiting for the desk");

    let mut asked_at = Vec::new();
    for minute in 0..=60_i64 {
        let before = h.desk.writes_asked.load(SeqCst);
        h.runtime.write_back_due().await.unwrap();
        if h.desk.writes_asked.load(SeqCst) > before {
            asked_at.push(minute);
        }
        clock.advance(jiff::SignedDuration::from_mins(1));
    }
    let gaps: Vec<i64> = asked_at.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert!(
        gaps.windows(2).all(|pair| pair[0] <= pair[1]) && gaps.iter().all(|gap| *gap <= 5),
        "asked sooner at first, then every 5 minutes at most: at minutes {asked_at:?}"
    );
    assert_eq!(gaps[gaps.len() - 3..], [5, 5, 5], "at minutes {asked_at:?}");
    assert!(asked_at.len() <= 20, "at minutes {asked_at:?}");
    assert!(h.desk.updates().is_empty());

    // Back: within five minutes the desk has the whole story, once.
    h.desk.down.store(false, SeqCst);
    for _ in 0..=5 {
        h.runtime.write_back_due().await.unwrap();
        clock.advance(jiff::SignedDuration::from_mins(1));
    }
    let updates = h.desk.updates();
    assert_told_once_in_order(&updates);
    let story = &updates[0].1.note.as_ref().unwrap().text;
    assert!(story.starts_with("Automation started: run"), "{story}");
    assert!(
        updates.iter().any(|(_, update)| update.outcome.is_some()),
        "{updates:#?}"
    );
}

#[tokio::test]
async fn a_run_that_waits_for_a_person_asks_the_chat_channel_once_for_its_stage() {
    let (_target, server) = target(200).await;
    let h = harness(&[&runbook("required", "")], &server.url, false).await;
    // An alert names a ticket, but the desk owns only its own events.
    let report = h
        .runtime
        .intake()
        .ingest(event("alerts", "A1"), &source("alerts"))
        .await
        .unwrap();
    let run_id = report.run_id.unwrap();

    assert!(eventually(|| !h.chat.requests().is_empty()).await);
    let requests = h.chat.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(request.run_id, run_id);
    assert_eq!(request.runbook_title, "Fix the thing");
    assert_eq!(request.targets, ["HOST-1"]);
    assert_eq!(request.steps.len(), 1);
    assert!(
        request.steps[0].request.contains("/act"),
        "{:?}",
        request.steps
    );
    assert!(
        request.links.is_empty(),
        "a channel with buttons gets no links"
    );
    assert_eq!(request.approvers, ["anyone with the approver role"]);
    assert!(h.desk.updates().is_empty(), "no ticket of the desk's");
}

#[tokio::test]
async fn a_channel_that_links_approvers_is_not_asked_without_signed_pages() {
    let (_target, server) = target(200).await;
    let h = harness(&[&runbook("required", "")], &server.url, true).await;
    h.runtime
        .intake()
        .ingest(event("alerts", "A2"), &source("alerts"))
        .await
        .unwrap();

    // Its progress is told; an approval request without a page to link
    // would ask people for what they cannot give there.
    assert!(eventually(|| !h.chat.progress().is_empty()).await);
    assert!(h.chat.requests().is_empty(), "{:#?}", h.chat.requests());
}

/// A rollout over `a`, `b` and `c` (a canary, then batches of one), each
/// target's step `POST /<target>/act`.
fn rollout_runbook(rollout: &str) -> String {
    format!(
        "id: fleet\ntitle: Fix the fleet\nowner: tests\nrisk: reversible\napproval: auto\n\
         match:\n  kind: incident\ntargets:\n  from: \"['a', 'b', 'c']\"\n  max_targets: 3\nsteps:\n\
         \x20 - id: act\n    action: http.request\n    with:\n      method: POST\n      url: \"{{{{ env.TARGET }}}}/{{{{ target }}}}/act\"\n\
         rollout: {rollout}\n\
         writeback: {{ ticket: true }}\n"
    )
}

async fn fleet(failing: &str) -> (Scripted, test_support::Running) {
    let target = Scripted::default();
    for host in ["a", "b", "c"] {
        let status = if host == failing { 500 } else { 200 };
        target.on(
            &format!("POST /{host}/act"),
            vec![Reply::json(status, json!({}))],
        );
    }
    let server = target.start().await.unwrap();
    (target, server)
}

#[tokio::test]
async fn a_halted_rollout_tells_the_ticket_and_the_channel_its_targets() {
    let (target, server) = fleet("b").await;
    let h = harness(
        &[&rollout_runbook("{ canary: 1, batch: 1 }")],
        &server.url,
        false,
    )
    .await;
    h.runtime
        .intake()
        .ingest(event("desk", "F1"), &source("desk"))
        .await
        .unwrap();

    let halted = "Rollout halted: 1 target(s) failed (`stop_when.failures: 1`). Done: a. \
                  Failed: b. Untouched: c. Rolled back: none.";
    let told = |lines: Vec<String>| lines.iter().any(|line| line.contains(halted));
    assert!(
        eventually(|| told(
            h.chat
                .progress()
                .into_iter()
                .flat_map(|progress| progress.lines)
                .collect()
        ))
        .await,
        "{:#?}",
        h.chat.progress()
    );
    assert!(
        eventually(|| told(
            h.desk
                .updates()
                .into_iter()
                .filter_map(|(_, update)| update.note.map(|note| note.text))
                .collect()
        ))
        .await,
        "{:#?}",
        h.desk.updates()
    );
    assert_eq!(target.calls("POST /c/act"), 0, "c is untouched");
}

#[tokio::test]
async fn a_rollout_asks_the_channel_to_go_on_past_its_canary() {
    let (target, server) = fleet("none").await;
    let h = harness(
        &[&rollout_runbook(
            "{ canary: 1, batch: 2, approve_after_canary: true }",
        )],
        &server.url,
        false,
    )
    .await;
    h.runtime
        .intake()
        .ingest(event("desk", "F2"), &source("desk"))
        .await
        .unwrap();

    assert!(eventually(|| !h.chat.requests().is_empty()).await);
    let request = &h.chat.requests()[0];
    assert_eq!(request.stage, "past the canary");
    assert_eq!(target.calls("POST /a/act"), 1);
    assert_eq!(target.calls("POST /b/act"), 0, "the rest waits");
}
