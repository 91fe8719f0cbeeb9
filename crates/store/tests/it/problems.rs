//! One run per problem: a dedup key that had a run starts no other until
//! the problem was resolved since (or the runbook's `rerun.after` passed),
//! and a new ticket on a subject another ticket's open run works on is
//! linked to that run — checked in the intake's transaction, so racing
//! intakes cannot get past it.

use std::sync::Arc;

use domain::{DecisionKind, EventStatus, RunState};
use jiff::Timestamp;
use store::{Intake, IntakeOutcome, Link, NewWriteback, OneRunPerProblem, RunFilter};

use crate::{Fixture, at, intake_starting_run, intake_without_run, plan, succeeded};

/// The rule the runtime hands intake for `plan(1)`'s runbook.
fn rule(rerun_once_happened_by: Option<Timestamp>) -> OneRunPerProblem {
    OneRunPerProblem {
        runbook_id: plan(1).runbook_id,
        rerun_once_happened_by,
        link: None,
    }
}

fn starting(
    run_id: &str,
    dedup_key: &str,
    decision: DecisionKind,
    now: Timestamp,
    rule: OneRunPerProblem,
) -> Intake {
    let mut intake = intake_starting_run(run_id, dedup_key, &plan(1), decision, now);
    intake.one_run_per_problem = Some(rule);
    intake
}

/// An inactive event of `dedup_key`: the problem resolved.
fn resolution(event_id: &str, dedup_key: &str, now: Timestamp) -> Intake {
    let mut intake = intake_without_run(event_id, dedup_key, now);
    intake.event.status = EventStatus::Resolved;
    intake.disposition = store::Disposition::Inactive;
    intake
}

/// Stores run-1 of key-1 and lets it succeed.
async fn finished_run(fixture: &Fixture) {
    let outcome = fixture
        .store
        .intake(
            starting("run-1", "key-1", DecisionKind::Allow, at(0), rule(None)),
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(outcome, IntakeOutcome::Stored);
    fixture.advance("run-1", engine::Input::Begin, at(1)).await;
    let finished = fixture.advance("run-1", succeeded(), at(2)).await;
    assert_eq!(finished.run.state, RunState::Succeeded);
}

async fn a_finished_run_holds_its_dedup_key_until_the_problem_resolves() {
    let fixture = Fixture::new().await;
    finished_run(&fixture).await;

    let repeat = fixture
        .store
        .intake(
            starting("run-2", "key-1", DecisionKind::Allow, at(3), rule(None)),
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(
        repeat,
        IntakeOutcome::Suppressed {
            earlier_run_id: "run-1".into()
        }
    );
    assert!(fixture.store.run("run-2").await.unwrap().is_none());
    let event = fixture.store.event("event-run-2").await.unwrap().unwrap();
    assert_eq!(event.disposition, "suppressed");
    assert_eq!(event.run_id.as_deref(), Some("run-1"));
    let records = fixture.store.audit(None).await.unwrap();
    let suppressed = records.last().unwrap();
    assert_eq!(suppressed.kind, domain::RecordKind::EventSuppressed);
    assert_eq!(suppressed.event_id.as_deref(), Some("event-run-2"));
    assert_eq!(suppressed.detail["earlier_run"], "run-1");

    // Resolved, then back: a new run.
    fixture
        .store
        .intake(resolution("resolved-1", "key-1", at(4)), at(4))
        .await
        .unwrap();
    let back = fixture
        .store
        .intake(
            starting("run-3", "key-1", DecisionKind::Allow, at(5), rule(None)),
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(back, IntakeOutcome::Stored);

    // A resolution before the new run does not count for it.
    fixture.advance("run-3", engine::Input::Begin, at(6)).await;
    fixture.advance("run-3", succeeded(), at(7)).await;
    let again = fixture
        .store
        .intake(
            starting("run-4", "key-1", DecisionKind::Allow, at(8), rule(None)),
            at(8),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        IntakeOutcome::Suppressed {
            earlier_run_id: "run-3".into()
        }
    );
}

async fn a_denied_run_holds_its_dedup_key_too() {
    let fixture = Fixture::new().await;
    fixture
        .store
        .intake(
            starting("run-1", "key-1", DecisionKind::Deny, at(0), rule(None)),
            at(0),
        )
        .await
        .unwrap();
    let repeat = fixture
        .store
        .intake(
            starting("run-2", "key-1", DecisionKind::Deny, at(1), rule(None)),
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(
        repeat,
        IntakeOutcome::Suppressed {
            earlier_run_id: "run-1".into()
        }
    );
}

async fn rerun_after_lets_a_new_run_start_once_the_last_is_old_enough() {
    let fixture = Fixture::new().await;
    finished_run(&fixture).await;
    // run-1 was created at 0: under a rule that reruns what was created a
    // moment before that it still holds; under one that reruns what was
    // created by 0, it does not.
    let early = fixture
        .store
        .intake(
            starting(
                "run-2",
                "key-1",
                DecisionKind::Allow,
                at(3),
                rule(Some(at(-1))),
            ),
            at(3),
        )
        .await
        .unwrap();
    assert!(
        matches!(early, IntakeOutcome::Suppressed { .. }),
        "{early:?}"
    );
    let due = fixture
        .store
        .intake(
            starting(
                "run-3",
                "key-1",
                DecisionKind::Allow,
                at(4),
                rule(Some(at(0))),
            ),
            at(4),
        )
        .await
        .unwrap();
    assert_eq!(due, IntakeOutcome::Stored);
}

async fn another_runbooks_run_does_not_hold_the_dedup_key() {
    let fixture = Fixture::new().await;
    finished_run(&fixture).await;
    let other = OneRunPerProblem {
        runbook_id: "another-runbook".into(),
        ..rule(None)
    };
    let outcome = fixture
        .store
        .intake(
            starting("run-2", "key-1", DecisionKind::Allow, at(3), other),
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(outcome, IntakeOutcome::Stored);
}

async fn a_new_ticket_on_the_subject_of_an_open_run_is_linked_to_it() {
    let fixture = Fixture::new().await;
    fixture
        .store
        .intake(
            starting(
                "run-1",
                "ticket-1",
                DecisionKind::RequireApproval,
                at(0),
                rule(None),
            ),
            at(0),
        )
        .await
        .unwrap();
    let linking = |ticket: &str| OneRunPerProblem {
        link: Some(Link {
            ticket: ticket.into(),
            writeback: Some(NewWriteback {
                system: "desk".into(),
                destination: ticket.into(),
            }),
        }),
        ..rule(None)
    };
    let outcome = fixture
        .store
        .intake(
            starting(
                "run-2",
                "ticket-2",
                DecisionKind::Allow,
                at(1),
                linking("TICKET-2"),
            ),
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        IntakeOutcome::Linked {
            run_id: "run-1".into()
        }
    );
    assert!(fixture.store.run("run-2").await.unwrap().is_none());
    let event = fixture.store.event("event-run-2").await.unwrap().unwrap();
    assert_eq!(event.disposition, "linked");
    assert_eq!(event.run_id.as_deref(), Some("run-1"));
    let timeline = fixture.store.audit(Some("run-1")).await.unwrap();
    let linked = timeline.last().unwrap();
    assert_eq!(linked.kind, domain::RecordKind::RunLinked);
    assert_eq!(linked.detail["ticket"], "TICKET-2");
    assert_eq!(linked.detail["event"], "event-run-2");
    let writebacks = fixture.store.writebacks("run-1").await.unwrap();
    assert_eq!(
        writebacks
            .iter()
            .map(|row| row.destination.as_str())
            .collect::<Vec<_>>(),
        ["TICKET-2"]
    );

    // The linked ticket's next update is a duplicate of the run it is
    // linked to, and tells nobody again.
    let update = fixture
        .store
        .intake(
            starting(
                "run-2b",
                "ticket-2",
                DecisionKind::Allow,
                at(1),
                linking("TICKET-2"),
            ),
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(
        update,
        IntakeOutcome::Duplicate {
            existing_run_id: "run-1".into()
        }
    );
    assert_eq!(fixture.store.writebacks("run-1").await.unwrap().len(), 1);

    // A third ticket is linked too; a run no longer open links nobody.
    let third = fixture
        .store
        .intake(
            starting(
                "run-3",
                "ticket-3",
                DecisionKind::Allow,
                at(2),
                linking("TICKET-3"),
            ),
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(
        third,
        IntakeOutcome::Linked {
            run_id: "run-1".into()
        }
    );
    fixture
        .advance(
            "run-1",
            engine::Input::Cancel {
                by: "user:alice".into(),
                reason: "not needed".into(),
            },
            at(3),
        )
        .await;
    let fourth = fixture
        .store
        .intake(
            starting(
                "run-4",
                "ticket-4",
                DecisionKind::Allow,
                at(4),
                linking("TICKET-4"),
            ),
            at(4),
        )
        .await
        .unwrap();
    assert_eq!(fourth, IntakeOutcome::Stored);

    // The run a ticket was linked to holds that ticket's updates back once
    // it finished, as it holds its own ticket's, until the ticket resolves.
    let after = fixture
        .store
        .intake(
            starting("run-5", "ticket-2", DecisionKind::Allow, at(5), rule(None)),
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(
        after,
        IntakeOutcome::Suppressed {
            earlier_run_id: "run-1".into()
        }
    );
    fixture
        .store
        .intake(resolution("resolved-2", "ticket-2", at(6)), at(6))
        .await
        .unwrap();
    let back = fixture
        .store
        .intake(
            starting("run-6", "ticket-2", DecisionKind::Allow, at(7), rule(None)),
            at(7),
        )
        .await
        .unwrap();
    assert_eq!(back, IntakeOutcome::Stored);
}

/// Updates racing each other while the dedup key's runs are born
/// finished (denied): the index on open runs cannot tell them apart, the
/// look under the admission lock does.
async fn racing_updates_of_a_dedup_key_store_one_run() {
    const TASKS: usize = 16;
    let fixture = Arc::new(Fixture::new().await);
    let tasks: Vec<_> = (0..TASKS)
        .map(|index| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                let run_id = format!("run-{index}");
                let intake = starting(&run_id, "key-1", DecisionKind::Deny, at(0), rule(None));
                fixture.store.intake(intake, at(0)).await.expect("intake")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let stored = outcomes
        .iter()
        .filter(|outcome| **outcome == IntakeOutcome::Stored)
        .count();
    assert_eq!(stored, 1, "{outcomes:?}");
    let runs = fixture.store.runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(fixture.store.event_count().await.unwrap(), TASKS as i64);
}

crate::on_both_backends!(
    a_finished_run_holds_its_dedup_key_until_the_problem_resolves,
    a_denied_run_holds_its_dedup_key_too,
    rerun_after_lets_a_new_run_start_once_the_last_is_old_enough,
    another_runbooks_run_does_not_hold_the_dedup_key,
    a_new_ticket_on_the_subject_of_an_open_run_is_linked_to_it,
    racing_updates_of_a_dedup_key_store_one_run,
);
