//! Ticket write-backs: a run's audit records are the queue; a write-back is
//! claimed under a lease when records lie beyond its cursor, every update
//! is fenced by the claim's token, and concurrent claimers never share one.

use std::collections::BTreeSet;

use domain::DecisionKind;
use engine::Input;
use store::{Error, NewWriteback};

use crate::{Fixture, at, intake_starting_run, plan};

const TTL: i64 = 10_000;

async fn run_with_ticket(fixture: &Fixture, run_id: &str) {
    let mut intake = intake_starting_run(
        run_id,
        &format!("key-{run_id}"),
        &plan(1),
        DecisionKind::Allow,
        at(0),
    );
    intake.run.as_mut().expect("a run").writeback = Some(NewWriteback {
        system: "servicenow".to_owned(),
        ticket: format!("INC-{run_id}"),
    });
    fixture.store.intake(intake, at(0)).await.expect("intake");
}

async fn a_writeback_is_claimed_while_records_lie_beyond_its_cursor() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    run_with_ticket(&fixture, "run-1").await;
    // A run without a ticket has no write-back.
    fixture
        .start_run("run-2", "key-run-2", &plan(1), DecisionKind::Allow, at(0))
        .await;
    assert_eq!(store.writeback("run-2").await.unwrap(), None);

    let claimed = store.claim_writebacks("a", at(1), TTL, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let claim = &claimed[0];
    assert_eq!(
        (
            claim.run_id.as_str(),
            claim.ticket.as_str(),
            claim.cursor_seq
        ),
        ("run-1", "INC-run-1", 0)
    );
    assert!(
        store
            .claim_writebacks("b", at(2), TTL, 10)
            .await
            .unwrap()
            .is_empty(),
        "held by a"
    );
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
    let row = store.writeback("run-1").await.unwrap().unwrap();
    assert_eq!((row.cursor_seq, row.done, row.failures), (last, false, 0));
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
    let again = store.claim_writebacks("b", at(5), TTL, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].cursor_seq, last);
    store
        .finish_writeback_batch(&again[0], last + 1, true)
        .await
        .unwrap();
    assert!(store.writeback("run-1").await.unwrap().unwrap().done);
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
    let first = store
        .claim_writebacks("a", at(1), TTL, 10)
        .await
        .unwrap()
        .remove(0);
    store.begin_writeback_batch(&first, 3).await.unwrap();
    store
        .fail_writeback(&first, "503 from the ticket system", at(30_000))
        .await
        .unwrap();
    let row = store.writeback("run-1").await.unwrap().unwrap();
    assert_eq!(
        (row.failures, row.last_error.as_deref()),
        (1, Some("503 from the ticket system"))
    );
    assert!(
        store
            .claim_writebacks("b", at(29_999), TTL, 10)
            .await
            .unwrap()
            .is_empty(),
        "backing off"
    );
    let second = store
        .claim_writebacks("b", at(30_000), TTL, 10)
        .await
        .unwrap()
        .remove(0);
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
    let row = store.writeback("run-1").await.unwrap().unwrap();
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
            for _ in 0..10 {
                for claim in store
                    .claim_writebacks(&format!("claimer-{claimer}"), at(1), TTL, 3)
                    .await
                    .unwrap()
                {
                    mine.push(claim.run_id);
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
    assert_eq!((all.len(), distinct.len()), (20, 20), "{all:?}");
}

crate::on_both_backends!(
    a_writeback_is_claimed_while_records_lie_beyond_its_cursor,
    a_failed_writeback_backs_off_and_a_stale_claim_is_fenced_out,
    concurrent_claimers_never_share_a_writeback,
);
