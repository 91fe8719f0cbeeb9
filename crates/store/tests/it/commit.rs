//! Committing transitions: optimistic concurrency, the attempt rows a
//! transition opens and closes, and which runs count as unfinished.

use domain::{AttemptOutcome, DecisionKind, FailureCause, RetryOn, RetryPolicy, RunState};
use engine::Input;
use serde_json::json;
use store::{Error, RunFilter};

use crate::{Fixture, assert_chained, at, plan, plan_with, planned_step, succeeded};

async fn commit_at_a_stale_revision_conflicts_and_writes_nothing() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(2), DecisionKind::Allow, at(0))
        .await;
    let run = fixture.store.run("run-1").await.unwrap().unwrap();
    let begin = engine::step(&run.machine, &run.plan, Input::Begin, at(1), 0.5).unwrap();
    let revision = fixture
        .store
        .commit("run-1", run.revision, &begin, "opsgate", at(1))
        .await
        .unwrap();
    assert_eq!(revision, run.revision + 1);
    let audit_before = fixture.store.audit(None).await.unwrap();
    let attempts_before = fixture.store.attempts("run-1").await.unwrap();

    // A second writer that read the run before the first one committed.
    let result = fixture
        .store
        .commit("run-1", run.revision, &begin, "someone-else", at(2))
        .await;

    match result {
        Err(Error::Conflict { run_id, expected }) => {
            assert_eq!((run_id.as_str(), expected), ("run-1", run.revision));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(fixture.store.audit(None).await.unwrap(), audit_before);
    assert_eq!(
        fixture.store.attempts("run-1").await.unwrap().len(),
        attempts_before.len()
    );
    let after = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!(after.revision, revision);
    assert_eq!(after.machine, begin.run);
    assert_eq!(after.updated_at, at(1));
}

async fn commit_stores_the_machine_and_chains_its_records() {
    let fixture = Fixture::new().await;
    fixture
        .start_run(
            "run-1",
            "key-1",
            &plan(1),
            DecisionKind::RequireApproval,
            at(0),
        )
        .await;
    let audit_before = fixture.audit_count().await;

    let approve = Input::Approve {
        by: "alice".into(),
        comment: Some("go".into()),
    };
    let run = fixture.store.run("run-1").await.unwrap().unwrap();
    let transition = engine::step(&run.machine, &run.plan, approve, at(5), 0.5).unwrap();
    fixture
        .store
        .commit("run-1", run.revision, &transition, "alice", at(5))
        .await
        .unwrap();

    let stored = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Approved);
    assert_eq!(stored.machine, transition.run);
    assert_eq!((stored.revision, stored.updated_at), (2, at(5)));
    let audit = fixture.store.audit(None).await.unwrap();
    let appended: Vec<_> = audit[audit_before..]
        .iter()
        .map(|row| {
            (
                row.kind.as_str(),
                row.actor.as_str(),
                row.run_id.as_deref(),
                &row.detail,
            )
        })
        .collect();
    let expected: Vec<_> = transition
        .records
        .iter()
        .map(|record| (record.kind.as_str(), "alice", Some("run-1"), &record.detail))
        .collect();
    assert_eq!(appended, expected);
    assert_chained(&audit);
}

async fn calls_open_attempts_and_finished_records_close_them() {
    let fixture = Fixture::new().await;
    let plan = plan(2);
    fixture
        .start_run("run-1", "key-1", &plan, DecisionKind::Allow, at(0))
        .await;

    fixture.advance("run-1", Input::Begin, at(1_000)).await;
    let attempts = fixture.store.attempts("run-1").await.unwrap();
    assert_eq!(attempts.len(), 1);
    let first = &attempts[0];
    assert_eq!(
        (
            first.seq,
            first.phase.as_str(),
            first.step_id.as_str(),
            first.attempt
        ),
        (1, "step", "step-1", 1)
    );
    assert_eq!(first.action, plan.steps[0].call.action);
    assert_eq!(first.request, plan.steps[0].call.request);
    assert_eq!(first.started_at, at(1_000).to_string());
    assert_eq!((&first.finished_at, &first.outcome), (&None, &None));

    fixture.advance("run-1", succeeded(), at(2_000)).await;
    fixture.advance("run-1", succeeded(), at(3_000)).await;

    let attempts = fixture.store.attempts("run-1").await.unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|attempt| {
            (
                attempt.seq,
                attempt.step_id.as_str(),
                attempt.started_at.clone(),
                attempt.finished_at.clone(),
                attempt.outcome.clone(),
            )
        })
        .collect();
    let outcome = Some(json!({"outcome": "succeeded", "response": {"status": 200}}));
    assert_eq!(
        summary,
        [
            (
                1,
                "step-1",
                at(1_000).to_string(),
                Some(at(2_000).to_string()),
                outcome.clone()
            ),
            (
                2,
                "step-2",
                at(2_000).to_string(),
                Some(at(3_000).to_string()),
                outcome
            ),
        ]
    );
    let run = fixture.store.run("run-1").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
}

async fn each_retry_gets_its_own_attempt_row() {
    let fixture = Fixture::new().await;
    let mut step = planned_step("restart");
    step.retry = RetryPolicy {
        attempts: 3,
        retry_on: vec![RetryOn::Status(503)],
        ..RetryPolicy::none()
    };
    fixture
        .start_run(
            "run-1",
            "key-1",
            &plan_with(vec![step]),
            DecisionKind::Allow,
            at(0),
        )
        .await;
    let unavailable = Input::CallFinished(AttemptOutcome::Failed {
        cause: FailureCause::Status(503),
        error: "503 Service Unavailable".into(),
        response: None,
        retry_after_ms: None,
    });

    fixture.advance("run-1", Input::Begin, at(0)).await;
    fixture.advance("run-1", unavailable, at(1_000)).await;
    fixture.advance("run-1", Input::Wake, at(60_000)).await;
    fixture.advance("run-1", succeeded(), at(61_000)).await;

    let attempts = fixture.store.attempts("run-1").await.unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|attempt| {
            let outcome = attempt
                .outcome
                .as_ref()
                .map(|outcome| outcome["outcome"].clone());
            (attempt.seq, attempt.attempt, outcome)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 1, Some(json!("failed"))),
            (2, 2, Some(json!("succeeded")))
        ]
    );
}

async fn recovery_marks_the_call_in_flight_interrupted() {
    // (idempotent, the run's state after recovery, the attempts afterwards)
    let cases = [
        (
            true,
            RunState::Running,
            vec![(1, Some("interrupted")), (2, None)],
        ),
        (false, RunState::NeedsHuman, vec![(1, Some("interrupted"))]),
    ];
    for (idempotent, expected_state, expected_attempts) in cases {
        let fixture = Fixture::new().await;
        let mut step = planned_step("restart");
        step.idempotent = idempotent;
        fixture
            .start_run(
                "run-1",
                "key-1",
                &plan_with(vec![step]),
                DecisionKind::Allow,
                at(0),
            )
            .await;
        fixture.advance("run-1", Input::Begin, at(0)).await;

        // The process died with the call in flight; on restart:
        let recovered = fixture.advance("run-1", Input::Recover, at(5_000)).await;

        assert_eq!(
            recovered.run.state, expected_state,
            "idempotent: {idempotent}"
        );
        let attempts = fixture.store.attempts("run-1").await.unwrap();
        let summary: Vec<_> = attempts
            .iter()
            .map(|attempt| {
                let outcome = attempt
                    .outcome
                    .as_ref()
                    .map(|outcome| outcome["outcome"].as_str().unwrap().to_owned());
                (attempt.attempt, outcome)
            })
            .collect();
        let expected: Vec<_> = expected_attempts
            .into_iter()
            .map(|(attempt, outcome)| (attempt, outcome.map(str::to_owned)))
            .collect();
        assert_eq!(summary, expected, "idempotent: {idempotent}");
        assert_eq!(attempts[0].finished_at, Some(at(5_000).to_string()));
    }
}

async fn claimable_runs_are_the_open_executing_ones_oldest_first() {
    let fixture = Fixture::new().await;
    let plan = plan(1);
    let start = |run_id: &'static str, decision, seconds: i64| {
        let plan = plan.clone();
        let fixture = &fixture;
        async move {
            let key = format!("key-{run_id}");
            fixture
                .start_run(run_id, &key, &plan, decision, at(seconds * 1_000))
                .await;
        }
    };
    start("awaiting", DecisionKind::RequireApproval, 1).await;
    start("running", DecisionKind::Allow, 2).await;
    start("denied", DecisionKind::Deny, 3).await;
    start("succeeded", DecisionKind::Allow, 4).await;
    start("cancelled", DecisionKind::RequireApproval, 5).await;
    start("approved", DecisionKind::Allow, 6).await;
    fixture.advance("running", Input::Begin, at(10_000)).await;
    fixture.advance("succeeded", Input::Begin, at(10_000)).await;
    fixture.advance("succeeded", succeeded(), at(11_000)).await;
    let cancel = Input::Cancel {
        by: "bob".into(),
        reason: "not now".into(),
    };
    fixture.advance("cancelled", cancel, at(12_000)).await;

    // Awaiting approval is not work yet; finished runs never are.
    let claimable = fixture.store.claimable_runs(at(20_000)).await.unwrap();
    assert_eq!(claimable, ["running", "approved"]);
    let finished = fixture
        .store
        .runs(&RunFilter {
            state: Some(RunState::Cancelled),
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].id, "cancelled");
}

/// `created_at` is stored as text; the order of runs must still be the
/// order of time when runs start within the same second.
async fn runs_are_listed_in_time_order_within_one_second() {
    let fixture = Fixture::new().await;
    // (run, milliseconds after a whole second)
    for (run_id, offset_ms) in [("a", 0), ("b", 250), ("c", 500), ("d", 1_000)] {
        fixture
            .start_run(run_id, run_id, &plan(1), DecisionKind::Allow, at(offset_ms))
            .await;
    }

    let newest_first: Vec<_> = fixture
        .store
        .runs(&RunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    let oldest_first = fixture.store.claimable_runs(at(2_000)).await.unwrap();

    assert_eq!(newest_first, ["d", "c", "b", "a"]);
    assert_eq!(oldest_first, ["a", "b", "c", "d"]);
}

async fn runs_honour_the_limit_newest_first() {
    let fixture = Fixture::new().await;
    for (index, run_id) in ["a", "b", "c"].into_iter().enumerate() {
        fixture
            .start_run(
                run_id,
                run_id,
                &plan(1),
                DecisionKind::Allow,
                at(index as i64 * 1_000),
            )
            .await;
    }

    let runs = fixture
        .store
        .runs(&RunFilter {
            state: None,
            limit: Some(2),
        })
        .await
        .unwrap();

    let ids: Vec<_> = runs.iter().map(|run| run.id.as_str()).collect();
    assert_eq!(ids, ["c", "b"]);
}

crate::on_both_backends!(
    commit_at_a_stale_revision_conflicts_and_writes_nothing,
    commit_stores_the_machine_and_chains_its_records,
    calls_open_attempts_and_finished_records_close_them,
    each_retry_gets_its_own_attempt_row,
    recovery_marks_the_call_in_flight_interrupted,
    claimable_runs_are_the_open_executing_ones_oldest_first,
    runs_are_listed_in_time_order_within_one_second,
    runs_honour_the_limit_newest_first,
);
