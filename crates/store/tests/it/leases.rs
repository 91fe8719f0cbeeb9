//! Leases and fencing: one instance drives a run at a time, and an instance
//! that lost its lease cannot write any more.

use domain::{DecisionKind, RunState};
use engine::Input;
use store::Error;

use crate::{Fixture, at, plan, succeeded};

const TTL: i64 = 10_000;

async fn approved_run(fixture: &Fixture) {
    fixture
        .start_run("run-1", "key-1", &plan(2), DecisionKind::Allow, at(0))
        .await;
}

async fn a_run_is_held_by_one_instance_until_its_lease_expires() {
    let fixture = Fixture::new().await;
    approved_run(&fixture).await;
    assert_eq!(
        fixture.store.claimable_runs(at(1)).await.unwrap(),
        ["run-1"]
    );

    let first = fixture
        .store
        .claim_run("run-1", "instance-a", at(1_000), TTL)
        .await
        .unwrap()
        .expect("free run");
    assert_eq!(
        (first.owner.as_str(), first.token, first.expires_ms),
        ("instance-a", 1, at(11_000).as_millisecond())
    );
    assert!(
        fixture
            .store
            .claim_run("run-1", "instance-b", at(5_000), TTL)
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    assert!(
        fixture
            .store
            .claimable_runs(at(5_000))
            .await
            .unwrap()
            .is_empty()
    );

    // Renewed in time: still held past the first expiry.
    let renewed = fixture
        .store
        .renew_lease("run-1", &first, at(9_000), TTL)
        .await
        .unwrap()
        .expect("still ours");
    assert!(
        fixture
            .store
            .claim_run("run-1", "instance-b", at(12_000), TTL)
            .await
            .unwrap()
            .is_none()
    );

    // Not renewed: another instance takes over with a higher token.
    let second = fixture
        .store
        .claim_run("run-1", "instance-b", at(20_000), TTL)
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(second.token, 2);
    assert!(
        fixture
            .store
            .renew_lease("run-1", &renewed, at(20_001), TTL)
            .await
            .unwrap()
            .is_none(),
        "lost"
    );
}

async fn a_stale_lease_holder_is_fenced_out_and_writes_nothing() {
    let fixture = Fixture::new().await;
    approved_run(&fixture).await;
    let stale = fixture
        .store
        .claim_run("run-1", "instance-a", at(1_000), TTL)
        .await
        .unwrap()
        .unwrap();
    let run = fixture.store.run("run-1").await.unwrap().unwrap();
    let begin = engine::step(&run.machine, &run.plan, Input::Begin, at(2_000), 0.5).unwrap();
    let revision = fixture
        .store
        .commit_fenced(
            "run-1",
            run.revision,
            &stale,
            &begin,
            "instance-a",
            at(2_000),
        )
        .await
        .unwrap();

    // instance-a stalls; its lease expires and instance-b takes over.
    let fresh = fixture
        .store
        .claim_run("run-1", "instance-b", at(30_000), TTL)
        .await
        .unwrap()
        .unwrap();
    let audit_before = fixture.audit_count().await;
    let finished = engine::step(&begin.run, &run.plan, succeeded(), at(31_000), 0.5).unwrap();
    let refused = fixture
        .store
        .commit_fenced(
            "run-1",
            revision,
            &stale,
            &finished,
            "instance-a",
            at(31_000),
        )
        .await;
    assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
    assert_eq!(fixture.audit_count().await, audit_before, "nothing written");
    let row = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!((row.state, row.revision), (RunState::Running, revision));

    // The holder of the new lease writes as usual.
    fixture
        .store
        .commit_fenced(
            "run-1",
            revision,
            &fresh,
            &finished,
            "instance-b",
            at(31_000),
        )
        .await
        .unwrap();
}

async fn a_released_or_finished_run_is_not_held() {
    let fixture = Fixture::new().await;
    approved_run(&fixture).await;
    let lease = fixture
        .store
        .claim_run("run-1", "instance-a", at(1_000), TTL)
        .await
        .unwrap()
        .unwrap();
    fixture.store.release_lease("run-1", &lease).await.unwrap();
    assert_eq!(
        fixture.store.claimable_runs(at(1_001)).await.unwrap(),
        ["run-1"]
    );
    let again = fixture
        .store
        .claim_run("run-1", "instance-b", at(1_002), TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token, 2);

    // Awaiting approval is not claimable work; finished runs cannot be claimed.
    fixture
        .start_run(
            "run-2",
            "key-2",
            &plan(1),
            DecisionKind::RequireApproval,
            at(2_000),
        )
        .await;
    fixture
        .start_run("run-3", "key-3", &plan(1), DecisionKind::Deny, at(3_000))
        .await;
    assert!(
        fixture
            .store
            .claimable_runs(at(100_000))
            .await
            .unwrap()
            .iter()
            .all(|id| id == "run-1")
    );
    assert!(
        fixture
            .store
            .claim_run("run-3", "instance-a", at(4_000), TTL)
            .await
            .unwrap()
            .is_none()
    );
}

crate::on_both_backends!(
    a_run_is_held_by_one_instance_until_its_lease_expires,
    a_stale_lease_holder_is_fenced_out_and_writes_nothing,
    a_released_or_finished_run_is_not_held,
);

async fn a_run_cannot_be_claimed_while_another_run_holds_one_of_its_targets() {
    let fixture = Fixture::new().await;
    // plan() targets HOST-1; both runs are about it.
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0))
        .await;
    fixture
        .start_run("run-2", "key-2", &plan(1), DecisionKind::Allow, at(1))
        .await;
    let first = fixture
        .store
        .claim_run("run-1", "instance-a", at(1_000), TTL)
        .await
        .unwrap()
        .expect("free");
    assert!(
        fixture
            .store
            .claim_run("run-2", "instance-b", at(2_000), TTL)
            .await
            .unwrap()
            .is_none(),
        "the target is held by run-1"
    );
    // A refused claim leaves no trace: run-2 is still claimable later.
    let run_2 = fixture.store.run("run-2").await.unwrap().unwrap();
    assert_eq!(run_2.machine.state, RunState::Approved);
    // Renewal keeps the target; release frees it at once.
    fixture
        .store
        .renew_lease("run-1", &first, at(9_000), TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(
        fixture
            .store
            .claim_run("run-2", "instance-b", at(15_000), TTL)
            .await
            .unwrap()
            .is_none()
    );
    fixture.store.release_lease("run-1", &first).await.unwrap();
    let second = fixture
        .store
        .claim_run("run-2", "instance-b", at(15_001), TTL)
        .await
        .unwrap();
    assert!(second.is_some(), "released");
}

async fn a_target_hold_expires_with_its_lease() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0))
        .await;
    fixture
        .start_run("run-2", "key-2", &plan(1), DecisionKind::Allow, at(1))
        .await;
    fixture
        .store
        .claim_run("run-1", "instance-a", at(1_000), TTL)
        .await
        .unwrap()
        .unwrap();
    // instance-a dies; after expiry run-2 may act on the target.
    assert!(
        fixture
            .store
            .claim_run("run-2", "instance-b", at(11_001), TTL)
            .await
            .unwrap()
            .is_some()
    );
}

crate::on_both_backends!(
    a_run_cannot_be_claimed_while_another_run_holds_one_of_its_targets,
    a_target_hold_expires_with_its_lease,
);

/// On PostgreSQL a released lease is announced to every listening store;
/// SQLite has no one to tell.
async fn a_released_lease_is_announced_to_other_instances() {
    let fixture = Fixture::new().await;
    let Some(mut signals) = fixture.store.work_signals().await.unwrap() else {
        assert!(
            fixture.url().starts_with("sqlite:"),
            "only SQLite has no announcements"
        );
        return;
    };
    approved_run(&fixture).await;
    let other_instance = store::Store::open(&fixture.url()).await.unwrap();
    let lease = other_instance
        .claim_run("run-1", "instance-b", at(1_000), TTL)
        .await
        .unwrap()
        .unwrap();
    other_instance.release_lease("run-1", &lease).await.unwrap();
    let signal = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next())
        .await
        .expect("announced")
        .unwrap();
    assert_eq!(signal, store::Signal::WorkReleased);

    // A run that settles is announced with its state.
    fixture
        .start_run(
            "run-2",
            "key-2",
            &plan(1),
            DecisionKind::RequireApproval,
            at(2_000),
        )
        .await;
    // Its approval's expiry timer is announced to every timer loop.
    let signal = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next())
        .await
        .expect("announced")
        .unwrap();
    assert_eq!(signal, store::Signal::TimerScheduled);
    let run = fixture.store.run("run-2").await.unwrap().unwrap();
    let deny = engine::step(
        &run.machine,
        &run.plan,
        Input::Deny {
            by: "bob".into(),
            comment: None,
        },
        at(3_000),
        0.5,
    )
    .unwrap();
    other_instance
        .commit("run-2", run.revision, &deny, "bob", at(3_000))
        .await
        .unwrap();
    let signal = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next())
        .await
        .expect("announced")
        .unwrap();
    assert_eq!(
        signal,
        store::Signal::RunSettled {
            run_id: "run-2".into(),
            state: RunState::Denied
        }
    );
}

crate::on_both_backends!(a_released_lease_is_announced_to_other_instances);

/// What a driver does: claim a run with its first transition in one
/// commit, and give it back with its last. A claim refused (another run
/// holds the target) writes nothing, not even the transition.
async fn a_run_is_claimed_with_its_first_transition_and_released_with_its_last() {
    let fixture = Fixture::new().await;
    // plan() targets HOST-1; both runs are about it.
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0))
        .await;
    fixture
        .start_run("run-2", "key-2", &plan(1), DecisionKind::Allow, at(1))
        .await;
    let run = fixture.store.run("run-1").await.unwrap().unwrap();
    let begin = engine::step(&run.machine, &run.plan, Input::Begin, at(1_000), 0.5).unwrap();
    let (lease, revision) = fixture
        .store
        .claim_and_commit("run-1", "instance-a", TTL, run.revision, &begin, at(1_000))
        .await
        .unwrap()
        .expect("free");
    assert_eq!((lease.owner.as_str(), lease.token), ("instance-a", 1));
    let row = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!((row.state, row.revision), (RunState::Running, revision));

    // run-2 waits for the target: its claim, and its transition, are refused.
    let waiting = fixture.store.run("run-2").await.unwrap().unwrap();
    let audit_before = fixture.audit_count().await;
    let begin_2 = engine::step(
        &waiting.machine,
        &waiting.plan,
        Input::Begin,
        at(2_000),
        0.5,
    )
    .unwrap();
    let refused = fixture
        .store
        .claim_and_commit(
            "run-2",
            "instance-b",
            TTL,
            waiting.revision,
            &begin_2,
            at(2_000),
        )
        .await
        .unwrap();
    assert!(refused.is_none(), "the target is held by run-1");
    assert_eq!(fixture.audit_count().await, audit_before, "nothing written");
    let row = fixture.store.run("run-2").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.revision),
        (RunState::Approved, waiting.revision)
    );

    // run-1's last transition gives its lease and target back.
    let finished = engine::step(&begin.run, &run.plan, succeeded(), at(3_000), 0.5).unwrap();
    fixture
        .store
        .commit_fenced_and_release(
            "run-1",
            revision,
            &lease,
            &finished,
            "instance-a",
            at(3_000),
        )
        .await
        .unwrap();
    let row = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!(row.state, RunState::Succeeded);
    let claimed = fixture
        .store
        .claim_and_commit(
            "run-2",
            "instance-b",
            TTL,
            waiting.revision,
            &begin_2,
            at(3_001),
        )
        .await
        .unwrap();
    assert!(
        claimed.is_some(),
        "run-1 released the target with its last commit"
    );
}

crate::on_both_backends!(a_run_is_claimed_with_its_first_transition_and_released_with_its_last);

/// What intake does for a run this instance drives at once: the run is
/// stored, claimed and its first transition written in one commit. When
/// another run holds a target, the run is stored approved, unclaimed, and
/// nothing of the transition is written.
async fn an_intake_can_claim_and_start_its_run_unless_a_target_is_held() {
    let fixture = Fixture::new().await;
    let start_of = |intake: &store::Intake, owner: &str, now| {
        let run = intake.run.as_ref().unwrap();
        store::Start {
            owner: owner.to_owned(),
            ttl_ms: TTL,
            transition: engine::step(&run.machine, &run.plan, Input::Begin, now, 0.5).unwrap(),
        }
    };
    let batches = fixture.store.batches_committed();
    let first = crate::intake_starting_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0));
    let start = start_of(&first, "instance-a", at(0));
    let (outcome, started) = fixture
        .store
        .intake_and_start(first, &start, at(0))
        .await
        .unwrap();
    assert_eq!(outcome, store::IntakeOutcome::Stored);
    let (lease, revision) = started.expect("claimed");
    assert_eq!(fixture.store.batches_committed() - batches, 1, "one commit");
    assert_eq!((lease.owner.as_str(), lease.token), ("instance-a", 1));
    let row = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!((row.state, row.revision), (RunState::Running, revision));
    let attempts = fixture.store.attempts("run-1").await.unwrap();
    assert_eq!(attempts.len(), 1, "the first call's attempt is open");
    // Fenced by the lease it was given: the run goes on under it.
    let finished = engine::step(
        &start.transition.run,
        &row.plan,
        succeeded(),
        at(1_000),
        0.5,
    )
    .unwrap();
    fixture
        .store
        .commit_fenced_and_release(
            "run-1",
            revision,
            &lease,
            &finished,
            "instance-a",
            at(1_000),
        )
        .await
        .unwrap();

    // run-3 is about HOST-1 too, while run-2 holds it.
    let second =
        crate::intake_starting_run("run-2", "key-2", &plan(1), DecisionKind::Allow, at(2_000));
    let start = start_of(&second, "instance-a", at(2_000));
    let (_, held) = fixture
        .store
        .intake_and_start(second, &start, at(2_000))
        .await
        .unwrap();
    assert!(held.is_some());
    let third =
        crate::intake_starting_run("run-3", "key-3", &plan(1), DecisionKind::Allow, at(3_000));
    let start = start_of(&third, "instance-b", at(3_000));
    let audit_before = fixture.audit_count().await;
    let (outcome, refused) = fixture
        .store
        .intake_and_start(third, &start, at(3_000))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        store::IntakeOutcome::Stored,
        "the event and run are stored"
    );
    assert!(refused.is_none(), "the target is held by run-2");
    let row = fixture.store.run("run-3").await.unwrap().unwrap();
    assert_eq!((row.state, row.revision), (RunState::Approved, 1));
    assert!(fixture.store.attempts("run-3").await.unwrap().is_empty());
    // The event's and the run's creation records (5), none of the start.
    let records = fixture.store.audit(Some("run-3")).await.unwrap();
    assert!(
        records
            .iter()
            .all(|record| record.kind != "run.state" || record.detail["to"] == "approved"),
        "{records:#?}"
    );
    assert_eq!(fixture.audit_count().await - audit_before, records.len());
    let claimable = fixture.store.claimable_runs(at(3_001)).await.unwrap();
    assert_eq!(claimable, ["run-3"], "it waits to be claimed");
}

crate::on_both_backends!(an_intake_can_claim_and_start_its_run_unless_a_target_is_held);
