//! Write-backs: a run's audit records are the queue; each system a run
//! tells (its ticket, a chat channel) has its own write-back, claimed under
//! a lease when records lie beyond its cursor; every update is fenced by the
//! claim's token, and concurrent claimers never share one.

use std::collections::BTreeSet;

use domain::DecisionKind;
use engine::Input;
use store::{ClaimedWriteback, Error, NewWriteback};

use crate::{Fixture, at, intake_starting_run, plan};

const TTL: i64 = 10_000;

/// A run that tells its ticket and a chat channel.
async fn run_with_ticket(fixture: &Fixture, run_id: &str) {
    let mut intake = intake_starting_run(
        run_id,
        &format!("key-{run_id}"),
        &plan(1),
        DecisionKind::Allow,
        at(0),
    );
    intake.run.as_mut().expect("a run").writebacks = vec![
        NewWriteback {
            system: "servicenow".to_owned(),
            destination: format!("INC-{run_id}"),
        },
        NewWriteback {
            system: "slack".to_owned(),
            destination: "C0OPS".to_owned(),
        },
    ];
    fixture.store.intake(intake, at(0)).await.expect("intake");
}

/// The ticket's claim among `claimed`.
fn servicenow(claimed: Vec<ClaimedWriteback>) -> ClaimedWriteback {
    claimed
        .into_iter()
        .find(|claim| claim.system == "servicenow")
        .expect("the ticket's write-back is claimed")
}

async fn a_writeback_is_claimed_while_records_lie_beyond_its_cursor() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    run_with_ticket(&fixture, "run-1").await;
    // A run without a ticket has no write-back.
    fixture
        .start_run("run-2", "key-run-2", &plan(1), DecisionKind::Allow, at(0))
        .await;
    assert_eq!(store.writebacks("run-2").await.unwrap(), []);

    let mut claimed = store.claim_writebacks("a", at(1), TTL, 10).await.unwrap();
    claimed.sort_by(|a, b| a.system.cmp(&b.system));
    let systems: Vec<(&str, &str, i64)> = claimed
        .iter()
        .map(|claim| {
            (
                claim.system.as_str(),
                claim.destination.as_str(),
                claim.cursor_seq,
            )
        })
        .collect();
    assert_eq!(
        systems,
        [("servicenow", "INC-run-1", 0), ("slack", "C0OPS", 0)],
        "one write-back per system"
    );
    assert!(
        store
            .claim_writebacks("b", at(2), TTL, 10)
            .await
            .unwrap()
            .is_empty(),
        "held by a"
    );
    // The chat's write-back goes its own way; follow the ticket's.
    let slack = claimed.pop().unwrap();
    store
        .finish_writeback_batch(&slack, 999, true)
        .await
        .unwrap();
    let claim = &claimed[0];
    let records = store
        .run_audit_after("run-1", claim.cursor_seq, 100)
        .await
        .unwrap();
    assert!(!records.is_empty());
    let last = records.last().unwrap().seq;
    store.begin_writeback_batch(claim, last).await.unwrap();
    store
        .finish_writeback_batch(claim, last, false)
        .await
        .unwrap();
    let row = store.writebacks("run-1").await.unwrap().remove(0);
    assert_eq!(
        (row.system.as_str(), row.cursor_seq, row.done, row.failures),
        ("servicenow", last, false, 0)
    );
    assert!(
        store
            .claim_writebacks("a", at(3), TTL, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing beyond the cursor: nothing to claim"
    );

    // The run moves on: there is something to write again.
    fixture.advance("run-1", Input::Begin, at(4)).await;
    let again = servicenow(store.claim_writebacks("b", at(5), TTL, 10).await.unwrap());
    assert_eq!(again.cursor_seq, last);
    store
        .finish_writeback_batch(&again, last + 1, true)
        .await
        .unwrap();
    assert!(store.writebacks("run-1").await.unwrap()[0].done);
    fixture.advance("run-1", crate::succeeded(), at(6)).await;
    assert!(
        store
            .claim_writebacks("a", at(7), TTL, 10)
            .await
            .unwrap()
            .is_empty(),
        "a finished write-back is not claimed again"
    );
}

async fn a_failed_writeback_backs_off_and_a_stale_claim_is_fenced_out() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    run_with_ticket(&fixture, "run-1").await;
    let first = servicenow(store.claim_writebacks("a", at(1), TTL, 10).await.unwrap());
    store.begin_writeback_batch(&first, 3).await.unwrap();
    store
        .fail_writeback(&first, "503 from the ticket system", at(30_000))
        .await
        .unwrap();
    let row = store.writebacks("run-1").await.unwrap().remove(0);
    assert_eq!(
        (row.failures, row.last_error.as_deref()),
        (1, Some("503 from the ticket system"))
    );
    let during = store
        .claim_writebacks("b", at(29_999), TTL, 10)
        .await
        .unwrap();
    assert!(
        during.iter().all(|claim| claim.system != "servicenow"),
        "backing off"
    );
    let second = servicenow(
        store
            .claim_writebacks("b", at(30_000), TTL, 10)
            .await
            .unwrap(),
    );
    assert_eq!(
        second.pending_to_seq,
        Some(3),
        "the begun batch is known to the next claimer"
    );
    assert!(second.lease.token > first.lease.token);
    // The first claimer wakes up late: it can change nothing.
    assert!(matches!(
        store.finish_writeback_batch(&first, 3, false).await,
        Err(Error::Fenced { .. })
    ));
    store
        .finish_writeback_batch(&second, 3, false)
        .await
        .unwrap();
    let row = store.writebacks("run-1").await.unwrap().remove(0);
    assert_eq!((row.cursor_seq, row.failures, row.last_error), (3, 0, None));
}

async fn concurrent_claimers_never_share_a_writeback() {
    let fixture = Fixture::new().await;
    for index in 0..20 {
        run_with_ticket(&fixture, &format!("run-{index}")).await;
    }
    let mut tasks = Vec::new();
    for claimer in 0..4 {
        let store = fixture.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..20 {
                for claim in store
                    .claim_writebacks(&format!("claimer-{claimer}"), at(1), TTL, 3)
                    .await
                    .unwrap()
                {
                    mine.push((claim.run_id, claim.system));
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), distinct.len()), (40, 40), "{all:?}");
}

crate::on_both_backends!(
    a_writeback_is_claimed_while_records_lie_beyond_its_cursor,
    a_failed_writeback_backs_off_and_a_stale_claim_is_fenced_out,
    concurrent_claimers_never_share_a_writeback,
);
