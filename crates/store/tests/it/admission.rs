//! Admission: a run decided on counts read in its intake's transaction,
//! under the lock every admission takes, so a burst of intakes — on one
//! store or on two sharing a database — admits exactly what the counts
//! allow; and a run decided again counts only the runs admitted before it.

use std::sync::Arc;

use domain::DecisionKind;
use jiff::SignedDuration;
use store::{Admitted, Counting, Counts, Disposition, IntakeOutcome, Store};

use crate::{Fixture, at, intake_starting_run, intake_without_run, plan};

/// The runbook's runs within an hour of `at(0)`.
fn rate_counting() -> Counting {
    Counting {
        runbook_id: "restart-service".into(),
        targets: vec!["edge-1".into()],
        of_runbook_since: Some(at(0) - SignedDuration::from_hours(1)),
        ..Counting::default()
    }
}

/// Admits `run_id` while fewer than `limit` runs are counted, and stores
/// it denied otherwise: the decision the runtime's gate makes.
fn admit_below(limit: u32, run_id: &str, counts: &Counts) -> Admitted {
    let counted = counts.of_runbook.max(counts.under_way);
    let (kind, disposition) = if counted < limit {
        (DecisionKind::Allow, Disposition::StartedRun)
    } else {
        (DecisionKind::Deny, Disposition::DeniedRun)
    };
    let intake = intake_starting_run(run_id, &format!("key-{run_id}"), &plan(1), kind, at(0));
    Admitted {
        disposition,
        detail: format!("counted {counted}"),
        run: intake.run.expect("a run"),
    }
}

/// Intakes `run_id` on `store`, decided on the counts of `counting`.
async fn counted_intake(
    store: &Store,
    run_id: &str,
    counting: &Counting,
    limit: u32,
) -> Option<Admitted> {
    let intake = intake_without_run(&format!("event-{run_id}"), &format!("key-{run_id}"), at(0));
    let admit = |counts: &Counts| admit_below(limit, run_id, counts);
    let (outcome, admitted) = store
        .intake_counted(intake, counting, &admit, at(0))
        .await
        .expect("intake");
    assert_eq!(outcome, IntakeOutcome::Stored);
    admitted
}

async fn a_burst_of_counted_intakes_on_two_stores_admits_exactly_the_limit() {
    const TASKS: usize = 30;
    let fixture = Fixture::new().await;
    // Two stores on one database, as two instances would have.
    let stores = Arc::new([
        fixture.store.clone(),
        Store::open(&fixture.url()).await.expect("a second store"),
    ]);
    let tasks: Vec<_> = (0..TASKS)
        .map(|index| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let store = &stores[index % 2];
                counted_intake(store, &format!("run-{index}"), &rate_counting(), 3).await
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for task in tasks {
        admitted.push(task.await.unwrap().expect("a run decided"));
    }
    let allowed = admitted
        .iter()
        .filter(|admitted| admitted.run.decision.kind == DecisionKind::Allow)
        .count();
    assert_eq!(allowed, 3);
    let counted_three = admitted
        .iter()
        .filter(|admitted| admitted.detail == "counted 3")
        .count();
    assert_eq!(counted_three, TASKS - 3, "every denied run counted three");
    let report = fixture.store.verify_audit().await.unwrap();
    assert_eq!(report.first_break, None);
}

async fn a_run_decided_again_counts_the_windows_before_it_and_every_run_under_way() {
    let fixture = Fixture::new().await;
    let counting = Counting {
        under_way: true,
        ..rate_counting()
    };
    for run_id in ["run-1", "run-2", "run-3"] {
        counted_intake(&fixture.store, run_id, &counting, 10).await;
    }
    // (run decided again, runs admitted before it, other runs under way)
    for (run_id, before, under_way) in [("run-1", 0, 2), ("run-2", 1, 2), ("run-3", 2, 2)] {
        let again = Counting {
            admitted_before: Some(run_id.to_owned()),
            ..counting.clone()
        };
        let counts = fixture.store.count_for_admission(&again).await.unwrap();
        assert_eq!(
            (counts.of_runbook, counts.under_way),
            (before, under_way),
            "{run_id}"
        );
    }
    let counts = fixture.store.count_for_admission(&counting).await.unwrap();
    assert_eq!((counts.of_runbook, counts.under_way), (3, 3), "a new run");
    // Outside the window, nothing counts; runs under way count whenever
    // they began.
    let later = Counting {
        of_runbook_since: Some(at(1)),
        ..counting
    };
    let counts = fixture.store.count_for_admission(&later).await.unwrap();
    assert_eq!((counts.of_runbook, counts.under_way), (0, 3));
}

crate::on_both_backends!(
    a_burst_of_counted_intakes_on_two_stores_admits_exactly_the_limit,
    a_run_decided_again_counts_the_windows_before_it_and_every_run_under_way,
);
