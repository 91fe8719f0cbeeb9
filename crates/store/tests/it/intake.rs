//! Intake: an event, the run it may start and their audit records are
//! stored together or not at all, and a dedup key has one open run at most.

use std::sync::Arc;

use domain::{DecisionKind, RunState};
use sqlx::Row;
use store::{IntakeOutcome, RunFilter};

use crate::{
    Fixture, assert_chained, at, intake_starting_run, intake_without_run, plan, succeeded,
};

async fn intake_without_a_run_stores_the_event_and_its_records() {
    let fixture = Fixture::new().await;

    let outcome = fixture
        .store
        .intake(intake_without_run("event-1", "key-1", at(0)), at(0))
        .await
        .unwrap();

    assert_eq!(outcome, IntakeOutcome::Stored);
    let event = fixture
        .store
        .event("event-1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        (
            event.disposition.as_str(),
            event.detail.as_deref(),
            event.run_id
        ),
        ("no_match", Some("no runbook matches"), None)
    );
    assert_eq!(event.event, crate::event("event-1", "key-1", at(0)));
    assert!(
        fixture
            .store
            .runs(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    let audit = fixture.store.audit(None).await.unwrap();
    let kinds: Vec<_> = audit.iter().map(|row| row.kind.as_str()).collect();
    assert_eq!(kinds, ["event.received", "event.no_match"]);
    for row in &audit {
        assert_eq!(row.event_id.as_deref(), Some("event-1"));
        assert_eq!(row.run_id, None);
        assert_eq!(row.recorded_at, at(0).to_string());
    }
    assert_chained(&audit);
}

async fn intake_with_a_run_stores_event_run_and_records_together() {
    let fixture = Fixture::new().await;
    let plan = plan(2);
    let intake = intake_starting_run(
        "run-1",
        "key-1",
        &plan,
        DecisionKind::RequireApproval,
        at(0),
    );
    let expected_machine = intake.run.as_ref().unwrap().machine.clone();

    let outcome = fixture.store.intake(intake, at(0)).await.unwrap();

    assert_eq!(outcome, IntakeOutcome::Stored);
    let event = fixture
        .store
        .event("event-run-1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(event.disposition, "started_run");
    assert_eq!(event.run_id.as_deref(), Some("run-1"));

    let run = fixture.store.run("run-1").await.unwrap().expect("stored");
    assert_eq!(run.event_id, "event-run-1");
    assert_eq!(run.dedup_key, "key-1");
    assert_eq!(run.state, RunState::AwaitingApproval);
    assert_eq!(run.plan, plan);
    assert_eq!(run.decision.kind, DecisionKind::RequireApproval);
    assert_eq!(run.machine, expected_machine);
    assert_eq!(run.revision, 1);
    assert_eq!((run.created_at, run.updated_at), (at(0), at(0)));

    let audit = fixture.store.audit(None).await.unwrap();
    let rows: Vec<_> = audit
        .iter()
        .map(|row| {
            (
                row.kind.as_str(),
                row.run_id.as_deref(),
                row.event_id.as_deref(),
            )
        })
        .collect();
    let (event, run) = (Some("event-run-1"), Some("run-1"));
    assert_eq!(
        rows,
        [
            ("event.received", None, event),
            ("run.matched", run, event),
            ("run.planned", run, event),
            ("run.decided", run, event),
            ("run.state", run, event),
        ]
    );
    assert_chained(&audit);
    assert_eq!(fixture.store.audit(Some("run-1")).await.unwrap(), audit);
}

async fn a_failed_intake_leaves_nothing_behind() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Deny, at(0))
        .await;
    let audit_before = fixture.audit_count().await;
    // The same run id again (for another key): the run insert fails after
    // the event and its records were written in the same transaction.
    let mut intake = intake_starting_run("run-1", "key-2", &plan(1), DecisionKind::Allow, at(1));
    intake.event.id = "event-2".into();

    let result = fixture.store.intake(intake, at(1)).await;

    assert!(
        matches!(result, Err(store::Error::Database(_))),
        "{result:?}"
    );
    assert!(fixture.store.event("event-2").await.unwrap().is_none());
    assert_eq!(fixture.store.event_count().await.unwrap(), 1);
    assert_eq!(fixture.audit_count().await, audit_before);
    let report = fixture.store.verify_audit().await.unwrap();
    assert_eq!(report.first_break, None);
}

async fn a_second_event_for_an_open_run_is_a_duplicate() {
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

    let outcome = fixture
        .start_run(
            "run-2",
            "key-1",
            &plan(1),
            DecisionKind::RequireApproval,
            at(1),
        )
        .await;

    assert_eq!(
        outcome,
        IntakeOutcome::Duplicate {
            existing_run_id: "run-1".into()
        }
    );
    assert!(fixture.store.run("run-2").await.unwrap().is_none());
    assert_eq!(
        fixture
            .store
            .runs(&RunFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let event = fixture
        .store
        .event("event-run-2")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(event.disposition, "duplicate");
    assert_eq!(event.run_id.as_deref(), Some("run-1"));

    let audit = fixture.store.audit(None).await.unwrap();
    let duplicate: Vec<_> = audit
        .iter()
        .filter(|row| row.event_id.as_deref() == Some("event-run-2"))
        .map(|row| (row.kind.as_str(), row.run_id.as_deref()))
        .collect();
    assert_eq!(
        duplicate,
        [("event.received", None), ("event.duplicate", None)],
        "none of the refused run's own records are kept"
    );
    let detail = &audit.last().unwrap().detail;
    assert_eq!(detail["existing_run"], "run-1");
    assert_chained(&audit);
}

async fn a_finished_run_frees_its_dedup_key() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0))
        .await;
    fixture.advance("run-1", engine::Input::Begin, at(1)).await;
    let finished = fixture.advance("run-1", succeeded(), at(2)).await;
    assert_eq!(finished.run.state, RunState::Succeeded);

    let outcome = fixture
        .start_run("run-2", "key-1", &plan(1), DecisionKind::Allow, at(3))
        .await;

    assert_eq!(outcome, IntakeOutcome::Stored);
    let second = fixture.store.run("run-2").await.unwrap().expect("created");
    assert_eq!(second.state, RunState::Approved);
    assert_eq!(
        fixture
            .store
            .open_run_for_dedup_key("key-1")
            .await
            .unwrap()
            .as_deref(),
        Some("run-2")
    );
}

async fn a_run_denied_at_intake_does_not_hold_its_dedup_key() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Deny, at(0))
        .await;
    assert_eq!(
        fixture.store.run("run-1").await.unwrap().unwrap().state,
        RunState::Denied
    );

    let outcome = fixture
        .start_run(
            "run-2",
            "key-1",
            &plan(1),
            DecisionKind::RequireApproval,
            at(1),
        )
        .await;

    assert_eq!(outcome, IntakeOutcome::Stored);
}

async fn concurrent_intakes_of_one_dedup_key_start_exactly_one_run() {
    const TASKS: usize = 24;
    let fixture = Arc::new(Fixture::new().await);
    let plan = Arc::new(plan(1));

    let tasks: Vec<_> = (0..TASKS)
        .map(|index| {
            let (fixture, plan) = (fixture.clone(), plan.clone());
            tokio::spawn(async move {
                let run_id = format!("run-{index}");
                let intake =
                    intake_starting_run(&run_id, "key-1", &plan, DecisionKind::Allow, at(0));
                let outcome = fixture.store.intake(intake, at(0)).await.expect("intake");
                (run_id, outcome)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    let started: Vec<_> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == IntakeOutcome::Stored)
        .map(|(run_id, _)| run_id.clone())
        .collect();
    assert_eq!(started.len(), 1, "{outcomes:?}");
    let winner = &started[0];
    for (_, outcome) in &outcomes {
        if let IntakeOutcome::Duplicate { existing_run_id } = outcome {
            assert_eq!(existing_run_id, winner);
        }
    }
    let runs = fixture.store.runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(&runs[0].id, winner);
    assert_eq!(fixture.store.event_count().await.unwrap(), TASKS as i64);
    let report = fixture.store.verify_audit().await.unwrap();
    assert_eq!(report.first_break, None);
}

/// Group commit: intakes that wait for the writer meanwhile share one
/// COMMIT (one sync), and each is acknowledged only once that is on disk.
async fn concurrent_intakes_share_commits_and_every_one_is_stored() {
    const TASKS: usize = 32;
    let fixture = Arc::new(Fixture::new().await);
    let before = fixture.store.batches_committed();

    let tasks: Vec<_> = (0..TASKS)
        .map(|index| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                let intake =
                    intake_without_run(&format!("event-{index}"), &format!("key-{index}"), at(0));
                fixture.store.intake(intake, at(0)).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), IntakeOutcome::Stored);
    }

    let batches = fixture.store.batches_committed() - before;
    assert!(
        (1..=TASKS as u64 / 4).contains(&batches),
        "{TASKS} intakes at once took {batches} commits"
    );
    assert_eq!(fixture.store.event_count().await.unwrap(), TASKS as i64);
    let report = fixture.store.verify_audit().await.unwrap();
    assert_eq!(report.first_break, None);
    assert_eq!(report.records, 2 * TASKS as u64);
}

/// The guarantee does not rest on the store's check alone: the schema
/// refuses a second open run for a key, and allows any number of closed ones.
#[tokio::test]
async fn the_schema_allows_one_open_run_per_dedup_key() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0))
        .await;
    let mut raw = fixture.raw().await;
    let copy_of_run_1 = |id: &'static str, is_open: bool| {
        sqlx::query(
            "INSERT INTO runs (id, event_id, dedup_key, runbook_id, runbook_version, state, is_open, plan, \
             decision, machine, reason, revision, created_at, created_ms, updated_at, admission_seq) \
             SELECT ?, event_id, dedup_key, runbook_id, runbook_version, state, ?, plan, decision, machine, \
             reason, revision, created_at, created_ms, updated_at, \
             (SELECT MAX(admission_seq) + 1 FROM runs) FROM runs WHERE id = 'run-1'",
        )
        .bind(id)
        .bind(is_open)
    };

    let second_open = copy_of_run_1("run-2", true).execute(&mut raw).await;
    let error = second_open.expect_err("a second open run is refused");
    assert!(error.to_string().contains("UNIQUE"), "{error}");

    for closed in ["run-3", "run-4"] {
        copy_of_run_1(closed, false)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM runs WHERE dedup_key = 'key-1'")
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
}

async fn a_runs_audit_holds_its_event_and_its_own_records_only() {
    let fixture = Fixture::new().await;
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(0))
        .await;
    fixture
        .start_run("run-2", "key-2", &plan(1), DecisionKind::Allow, at(1))
        .await;
    fixture.advance("run-1", engine::Input::Begin, at(2)).await;

    let audit = fixture.store.audit(Some("run-1")).await.unwrap();

    let kinds: Vec<_> = audit.iter().map(|row| row.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "event.received",
            "run.matched",
            "run.planned",
            "run.decided",
            "run.state",
            "run.state",
            "attempt.started"
        ]
    );
    assert!(
        audit
            .iter()
            .all(|row| row.run_id.as_deref() != Some("run-2")
                && row.event_id.as_deref() != Some("event-run-2"))
    );
}

crate::on_both_backends!(
    intake_without_a_run_stores_the_event_and_its_records,
    intake_with_a_run_stores_event_run_and_records_together,
    a_failed_intake_leaves_nothing_behind,
    a_second_event_for_an_open_run_is_a_duplicate,
    a_finished_run_frees_its_dedup_key,
    a_run_denied_at_intake_does_not_hold_its_dedup_key,
    concurrent_intakes_of_one_dedup_key_start_exactly_one_run,
    concurrent_intakes_share_commits_and_every_one_is_stored,
    a_runs_audit_holds_its_event_and_its_own_records_only,
);
