//! Freezes: issued and lifted with their audit records, active until lifted
//! or expired, read back as they were written; on PostgreSQL every change
//! is announced to the other instances.

use domain::{Freeze, FreezeScope, Lifted, OnRuns, RecordKind};
use serde_json::json;
use store::AuditEntry;

use crate::{Backend, Fixture, at};

const MINUTE_MS: i64 = 60_000;

fn freeze(id: &str, scope: FreezeScope, expires_at: Option<jiff::Timestamp>) -> Freeze {
    Freeze {
        id: id.to_owned(),
        scope,
        on_runs: OnRuns::Pause,
        reason: "INC-7: stop".to_owned(),
        issued_by: "user:olga".to_owned(),
        issued_at: at(0),
        expires_at,
        lifted: None,
    }
}

fn issued(freeze: &Freeze) -> AuditEntry {
    AuditEntry::new(
        RecordKind::FreezeIssued,
        &freeze.issued_by,
        json!({"freeze": freeze.id}),
    )
}

async fn freezes_are_active_until_lifted_or_expired() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    let mut signals = store.work_signals().await.unwrap();
    let everything = freeze("frz-a", FreezeScope::Everything, None);
    let mut cancelling = freeze(
        "frz-b",
        FreezeScope::Targets("db-*".to_owned()),
        Some(at(10 * MINUTE_MS)),
    );
    cancelling.on_runs = OnRuns::Cancel;
    for freeze in [&everything, &cancelling] {
        store.issue_freeze(freeze, &issued(freeze)).await.unwrap();
    }
    if let Some(signals) = &mut signals {
        let signal = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next())
            .await
            .expect("the freeze is announced")
            .unwrap();
        assert_eq!(signal, store::Signal::FreezesChanged);
    }
    assert_eq!(
        store.active_freezes(at(1)).await.unwrap(),
        [everything.clone(), cancelling.clone()]
    );
    // Expired: no longer active, but still there.
    assert_eq!(
        store.active_freezes(at(10 * MINUTE_MS)).await.unwrap(),
        std::slice::from_ref(&everything)
    );
    assert_eq!(store.freeze("frz-b").await.unwrap(), Some(cancelling));
    // An expired freeze cannot be lifted; an active one once.
    let lifted = Lifted {
        by: "user:ben".to_owned(),
        at: at(11 * MINUTE_MS),
        reason: Some("over".to_owned()),
    };
    let record = AuditEntry::new(RecordKind::FreezeLifted, "user:ben", json!({}));
    assert_eq!(
        store.lift_freeze("frz-b", &lifted, &record).await.unwrap(),
        None
    );
    let after = store
        .lift_freeze("frz-a", &lifted, &record)
        .await
        .unwrap()
        .expect("lifted");
    assert_eq!(after.lifted, Some(lifted.clone()));
    assert_eq!(
        store.lift_freeze("frz-a", &lifted, &record).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .lift_freeze("frz-none", &lifted, &record)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .active_freezes(at(12 * MINUTE_MS))
            .await
            .unwrap()
            .is_empty()
    );
    // Who issued and lifted what is in the chained audit log.
    let kinds: Vec<String> = store
        .audit(None)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.kind)
        .collect();
    assert_eq!(
        kinds,
        ["freeze.issued", "freeze.issued", "freeze.lifted"],
        "on {:?}",
        crate::BACKEND
            .try_with(|backend| *backend)
            .unwrap_or(Backend::Sqlite)
    );
}

crate::on_both_backends!(freezes_are_active_until_lifted_or_expired);
