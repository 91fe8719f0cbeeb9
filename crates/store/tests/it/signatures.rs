//! Used webhook signatures: a signature is accepted once while it could
//! pass the timestamp check, whichever instance sees it; a released one is
//! accepted again; expired ones are forgotten.

use std::collections::BTreeSet;

use crate::{Fixture, at};

const MINUTE_MS: i64 = 60_000;

async fn first_use_is_true_once_until_released_or_expired() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    let expires = at(10 * MINUTE_MS);
    // (signature, now, first use?)
    let cases = [
        ("opsgate:servicenow:aa01", at(0), true),
        ("opsgate:servicenow:aa01", at(1), false),
        ("opsgate:servicenow:aa01", at(9 * MINUTE_MS), false),
        // Another verifier's signature with the same bytes is another one.
        ("slack:aa01", at(2), true),
        ("jira:aa01", at(3), true),
        ("jira:aa01", at(4), false),
    ];
    for (signature, now, first) in cases {
        assert_eq!(
            store.use_signature(signature, expires, now).await.unwrap(),
            first,
            "{signature} at {now}"
        );
    }

    store.release_signature("jira:aa01").await.unwrap();
    assert!(
        store
            .use_signature("jira:aa01", expires, at(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_signature("jira:aa01", expires, at(6))
            .await
            .unwrap()
    );

    // Once expired, a signature is forgotten (its timestamp no longer
    // passes anyway), and every expired row goes with the next use.
    let later = at(10 * MINUTE_MS);
    assert!(
        store
            .use_signature("opsgate:servicenow:aa01", at(20 * MINUTE_MS), later)
            .await
            .unwrap()
    );
    let expired_left = fixture
        .execute(&format!(
            "DELETE FROM used_signatures WHERE expires_at <= {}",
            later.as_second()
        ))
        .await
        .unwrap();
    assert_eq!(expired_left, 0, "expired rows were deleted");
}

async fn concurrent_uses_of_one_signature_admit_exactly_one() {
    let fixture = Fixture::new().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = fixture.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut firsts = Vec::new();
            for index in 0..10 {
                let signature = format!("opsgate:tests:{index:02x}");
                if store
                    .use_signature(&signature, at(MINUTE_MS), at(0))
                    .await
                    .unwrap()
                {
                    firsts.push(signature);
                }
            }
            firsts
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), distinct.len()), (10, 10), "{all:?}");
}

crate::on_both_backends!(
    first_use_is_true_once_until_released_or_expired,
    concurrent_uses_of_one_signature_admit_exactly_one,
);
