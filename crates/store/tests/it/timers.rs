//! Durable timers: stored with the run that asks for one, claimed under a
//! lease when due, fired exactly once with the run's transition, disarmed
//! when the run moves on, and fenced against an instance whose claim lapsed.

use std::collections::BTreeSet;

use domain::{DecisionKind, RunState};
use engine::{Input, TimerKind};
use jiff::Timestamp;
use store::{ClaimedTimer, Error, Store, TimerFiring};

use crate::{APPROVAL_EXPIRES_MS, Fixture, at, plan};

const TTL: i64 = 10_000;
const DUE: i64 = APPROVAL_EXPIRES_MS as i64;

async fn awaiting_run(fixture: &Fixture, run_id: &str) {
    fixture
        .start_run(
            run_id,
            &format!("key-{run_id}"),
            &plan(1),
            DecisionKind::RequireApproval,
            at(0),
        )
        .await;
}

/// Fires `timer` the way the runtime does: the engine's answer to it,
/// committed with the firing.
async fn fire(store: &Store, timer: &ClaimedTimer, now: Timestamp) -> store::Result<TimerFiring> {
    let run = store.run(&timer.run_id).await?.expect("run exists");
    let transition = engine::step(
        &run.machine,
        &run.plan,
        Input::TimerFired(timer.kind),
        now,
        0.5,
    )
    .ok();
    store
        .fire_timer(timer, run.revision, transition.as_ref(), "instance", now)
        .await
}

async fn expiry_records(store: &Store, run_id: &str) -> usize {
    store
        .audit(Some(run_id))
        .await
        .unwrap()
        .iter()
        .filter(|record| record.kind == "approval.expired")
        .count()
}

async fn an_approval_expiry_fires_once_at_its_due_time() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    awaiting_run(&fixture, "run-1").await;
    let timers = store.timers("run-1").await.unwrap();
    assert_eq!(timers.len(), 1);
    assert_eq!(
        (
            timers[0].kind,
            timers[0].armed_in,
            timers[0].due_at,
            timers[0].status.as_str()
        ),
        (
            TimerKind::ApprovalExpiry,
            RunState::AwaitingApproval,
            at(DUE),
            "pending"
        )
    );
    assert_eq!(store.next_timer_check().await.unwrap(), Some(at(DUE)));

    let early = store
        .claim_due_timers("a", at(DUE - 1), TTL, 10)
        .await
        .unwrap();
    assert!(early.is_empty(), "not due yet: {early:?}");
    let claimed = store.claim_due_timers("a", at(DUE), TTL, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].run_id.as_str(), claimed[0].lease.token),
        ("run-1", 1)
    );
    assert!(
        store
            .claim_due_timers("b", at(DUE + 1), TTL, 10)
            .await
            .unwrap()
            .is_empty(),
        "held by a"
    );
    // While a holds it, the next look is when a's claim would lapse.
    assert_eq!(store.next_timer_check().await.unwrap(), Some(at(DUE + TTL)));

    assert_eq!(
        fire(store, &claimed[0], at(DUE + 5)).await.unwrap(),
        TimerFiring::Fired
    );
    let run = store.run("run-1").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Expired);
    assert_eq!(store.timers("run-1").await.unwrap()[0].status, "fired");
    assert_eq!(store.next_timer_check().await.unwrap(), None);
    assert!(
        store
            .claim_due_timers("b", at(DUE * 2), TTL, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Firing again with the same claim changes nothing.
    assert_eq!(
        fire(store, &claimed[0], at(DUE + 6)).await.unwrap(),
        TimerFiring::AlreadySettled
    );
    assert_eq!(expiry_records(store, "run-1").await, 1);
    assert!(store.verify_audit().await.unwrap().first_break.is_none());
}

async fn an_approval_disarms_the_expiry() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    awaiting_run(&fixture, "run-1").await;
    let approve = Input::Approve {
        by: "alice".into(),
        comment: None,
    };
    fixture.advance("run-1", approve, at(10_000)).await;
    assert_eq!(store.timers("run-1").await.unwrap()[0].status, "disarmed");
    assert!(
        store
            .claim_due_timers("a", at(DUE * 2), TTL, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_timer_check().await.unwrap(), None);
}

async fn a_claimed_timer_the_run_settled_meanwhile_does_not_fire() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    awaiting_run(&fixture, "run-1").await;
    let claimed = store.claim_due_timers("a", at(DUE), TTL, 10).await.unwrap();
    // The approver was quicker than the timer loop.
    let approve = Input::Approve {
        by: "alice".into(),
        comment: None,
    };
    fixture.advance("run-1", approve, at(DUE + 1)).await;
    assert_eq!(
        fire(store, &claimed[0], at(DUE + 2)).await.unwrap(),
        TimerFiring::AlreadySettled
    );
    assert_eq!(
        store.run("run-1").await.unwrap().unwrap().state,
        RunState::Approved
    );
    assert_eq!(expiry_records(store, "run-1").await, 0);
}

async fn a_timer_the_run_cannot_take_is_disarmed() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    awaiting_run(&fixture, "run-1").await;
    let claimed = store.claim_due_timers("a", at(DUE), TTL, 10).await.unwrap();
    let revision = store.run("run-1").await.unwrap().unwrap().revision;
    assert_eq!(
        store
            .fire_timer(&claimed[0], revision, None, "a", at(DUE))
            .await
            .unwrap(),
        TimerFiring::Disarmed
    );
    assert_eq!(store.timers("run-1").await.unwrap()[0].status, "disarmed");
    assert_eq!(
        store.run("run-1").await.unwrap().unwrap().state,
        RunState::AwaitingApproval
    );
}

async fn a_lapsed_claim_is_taken_over_and_its_holder_fenced_out() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    awaiting_run(&fixture, "run-1").await;
    let stale = store.claim_due_timers("a", at(DUE), TTL, 10).await.unwrap();
    // a stalls; its claim lapses and b takes the timer over.
    let current = store
        .claim_due_timers("b", at(DUE + TTL + 1), TTL, 10)
        .await
        .unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].lease.token, stale[0].lease.token + 1);
    assert!(matches!(
        fire(store, &stale[0], at(DUE + TTL + 2)).await,
        Err(Error::Fenced { .. })
    ));
    assert_eq!(
        store.run("run-1").await.unwrap().unwrap().state,
        RunState::AwaitingApproval,
        "the fenced firing wrote nothing"
    );
    assert_eq!(
        fire(store, &current[0], at(DUE + TTL + 3)).await.unwrap(),
        TimerFiring::Fired
    );
    assert_eq!(
        store.run("run-1").await.unwrap().unwrap().state,
        RunState::Expired
    );
    assert_eq!(expiry_records(store, "run-1").await, 1);
}

/// Several claimers at once (on PostgreSQL: several connections, as several
/// instances would be) never get the same timer, and every timer fires.
async fn concurrent_claimers_never_share_a_timer() {
    const RUNS: usize = 24;
    let fixture = Fixture::new().await;
    for index in 0..RUNS {
        awaiting_run(&fixture, &format!("run-{index:02}")).await;
    }
    let mut claimers = tokio::task::JoinSet::new();
    for claimer in 0..6 {
        let store = fixture.store.clone();
        claimers.spawn(async move {
            let owner = format!("instance-{claimer}");
            let mut fired = Vec::new();
            loop {
                let claimed = store
                    .claim_due_timers(&owner, at(DUE), TTL, 3)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return fired;
                }
                for timer in claimed {
                    assert_eq!(
                        fire(&store, &timer, at(DUE)).await.unwrap(),
                        TimerFiring::Fired
                    );
                    fired.push(timer.id);
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(fired) = claimers.join_next().await {
        all.extend(fired.unwrap());
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (RUNS, RUNS),
        "each timer fired once"
    );
    for index in 0..RUNS {
        let run_id = format!("run-{index:02}");
        assert_eq!(
            fixture.store.run(&run_id).await.unwrap().unwrap().state,
            RunState::Expired
        );
        assert_eq!(expiry_records(&fixture.store, &run_id).await, 1);
    }
    assert!(
        fixture
            .store
            .verify_audit()
            .await
            .unwrap()
            .first_break
            .is_none()
    );
}

crate::on_both_backends!(
    an_approval_expiry_fires_once_at_its_due_time,
    an_approval_disarms_the_expiry,
    a_claimed_timer_the_run_settled_meanwhile_does_not_fire,
    a_timer_the_run_cannot_take_is_disarmed,
    a_lapsed_claim_is_taken_over_and_its_holder_fenced_out,
    concurrent_claimers_never_share_a_timer,
);
