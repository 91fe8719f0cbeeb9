//! What the store promises about an acknowledged write: every connection it
//! opens syncs its commits to disk before they return, whatever the
//! database's own defaults say; and the audit chain's times never go
//! backwards along its sequence numbers.

use serde_json::json;
use store::{AuditEntry, Store};

use crate::{BACKEND, Backend, Fixture, at};

/// The setting and value that make a commit wait for the disk, per backend.
fn durable_setting() -> (&'static str, &'static str) {
    match BACKEND
        .try_with(|backend| *backend)
        .unwrap_or(Backend::Sqlite)
    {
        Backend::Sqlite => ("synchronous", "full"),
        Backend::Postgres => ("synchronous_commit", "on"),
    }
}

async fn every_connection_syncs_its_commits() {
    let fixture = Fixture::new().await;
    let postgres = fixture.url().starts_with("postgres");
    if postgres {
        // A database whose default lets commits return before their WAL
        // is on disk; the store must not inherit it.
        fixture
            .execute(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', \
                 current_database()); END $$",
            )
            .await
            .expect("set the database's default");
        let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&fixture.url())
            .await
            .unwrap();
        let default: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            default, "off",
            "a plain session takes the database's default"
        );
    }
    // Opened after the default changed, so every session is a new one.
    let store = Store::open(&fixture.url()).await.expect("store opens");

    let settings = store.durability().await.expect("settings");

    let (setting, durable) = durable_setting();
    let sessions: Vec<_> = settings
        .iter()
        .filter(|found| found.setting == setting)
        .collect();
    // The writer, and each reader the pool may open.
    let expected_connections = if postgres { 1 + 8 } else { 1 + 4 };
    assert_eq!(sessions.len(), expected_connections, "{settings:?}");
    for found in sessions {
        assert_eq!(
            found.value, durable,
            "{} does not sync: {settings:?}",
            found.connection
        );
    }
    if postgres {
        assert!(
            settings.iter().any(|found| (
                found.connection.as_str(),
                found.setting,
                found.value.as_str()
            ) == ("server", "fsync", "on")),
            "{settings:?}"
        );
    }
}

/// Writers read the clock before their turn at the chain: the one that
/// waited longest carries the oldest time. Stamped in chain order, time
/// never goes backwards along `seq`.
async fn audit_times_never_go_backwards_along_the_chain() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    // One writer after another, the second with an older clock reading.
    store
        .append_audit(
            None,
            &[AuditEntry::new("test.later", "opsgate", json!({}))],
            at(5_000),
        )
        .await
        .unwrap();
    store
        .append_audit(
            None,
            &[AuditEntry::new("test.earlier", "opsgate", json!({}))],
            at(1_000),
        )
        .await
        .unwrap();
    // Many writers at once, each with its own (shuffled) clock reading.
    let writers: Vec<_> = (0..8i64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for append in 0..10i64 {
                    let now = at(6_000 + append * 10 + (7 - writer) * 3);
                    let entry =
                        AuditEntry::new("test.concurrent", "opsgate", json!({"writer": writer}));
                    store.append_audit(None, &[entry], now).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let records = store.audit(None).await.unwrap();
    assert_eq!(records.len(), 82);
    let times: Vec<jiff::Timestamp> = records
        .iter()
        .map(|record| record.recorded_at.parse().unwrap())
        .collect();
    for (index, pair) in times.windows(2).enumerate() {
        assert!(
            pair[0] <= pair[1],
            "record {} ({}) is older than record {} ({})",
            index + 2,
            pair[1],
            index + 1,
            pair[0]
        );
    }
    assert_eq!(
        times[1],
        at(5_000),
        "stamped with the head's time, not earlier"
    );
    let report = store.verify_audit().await.unwrap();
    assert_eq!((report.first_break, report.time_regressions), (None, 0));
}

/// Records written before times were stamped in chain order (or edited
/// with their hashes recomputed) still verify, but the report says where
/// time went backwards.
async fn verification_reports_a_time_that_goes_backwards() {
    let fixture = Fixture::new().await;
    for (offset, kind) in [(1_000, "a"), (2_000, "b"), (3_000, "c")] {
        fixture
            .store
            .append_audit(
                None,
                &[AuditEntry::new(kind, "opsgate", json!({}))],
                at(offset),
            )
            .await
            .unwrap();
    }
    // Rewrite record 2 as an old build would have stamped it, hashes and all.
    let records = fixture.store.audit(None).await.unwrap();
    let mut rewritten = records.clone();
    rewritten[1].recorded_at = at(500).to_string();
    for index in 1..rewritten.len() {
        rewritten[index].prev_hash = rewritten[index - 1].hash.clone();
        rewritten[index].hash =
            store::chain_hash(&rewritten[index].prev_hash, &rewritten[index].chained());
    }
    fixture.execute("DELETE FROM audit").await.unwrap();
    fixture.store.import_audit(&rewritten).await.unwrap();

    let report = fixture.store.verify_audit().await.unwrap();

    assert_eq!(report.first_break, None);
    assert_eq!(
        (report.time_regressions, report.first_time_regression),
        (1, Some(2))
    );
    assert_eq!(report.head_seq, 3);
}

crate::on_both_backends!(
    every_connection_syncs_its_commits,
    audit_times_never_go_backwards_along_the_chain,
    verification_reports_a_time_that_goes_backwards,
);
