//! Opening a store: the file, the journal mode, the migrations.

use sqlx::Row;
use store::{Error, Store};

use crate::{Fixture, at, intake_without_run, url_for};

#[tokio::test]
async fn open_creates_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());

    Store::open(&url_for(&path)).await.expect("store opens");

    assert!(path.is_file(), "{} was not created", path.display());
}

#[tokio::test]
async fn open_puts_the_database_in_wal_mode() {
    let fixture = Fixture::new().await;

    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut fixture.raw().await)
        .await
        .unwrap();

    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn reopening_applies_no_migration_twice() {
    let fixture = Fixture::new().await;
    fixture
        .store
        .intake(intake_without_run("event-1", "key-1", at(0)), at(0))
        .await
        .unwrap();

    for _ in 0..2 {
        let reopened = Store::open(&fixture.url()).await.expect("store reopens");
        assert_eq!(reopened.event_count().await.unwrap(), 1, "data survives");
    }

    let applied = sqlx::query("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut fixture.raw().await)
        .await
        .unwrap();
    let applied: Vec<(i64, bool)> = applied
        .iter()
        .map(|row| (row.get("version"), row.get("success")))
        .collect();
    // Each once, in order, every one a success, up to the newest. (Not
    // every number need be there: a migration may land on another branch
    // before one numbered below it.)
    assert!(
        applied.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{applied:?}"
    );
    assert!(applied.iter().all(|(_, success)| *success), "{applied:?}");
    assert_eq!(applied.first().map(|(version, _)| *version), Some(1));
    assert_eq!(
        applied.last().map(|(version, _)| *version),
        Some(store::latest_schema_version())
    );
}

#[tokio::test]
async fn open_refuses_urls_of_other_databases() {
    for url in [
        "mysql://localhost/opsgate",
        "redis://localhost/0",
        "/var/lib/opsgate.db",
        "",
    ] {
        match Store::open(url).await {
            Err(Error::UnsupportedUrl { url: named }) => assert_eq!(named, url),
            other => panic!("{url:?}: expected UnsupportedUrl, got {other:?}"),
        }
    }
}

/// Migrations are numbered and never edited once they have landed
/// (CONVENTIONS.md #12): a database created by an earlier build records each
/// migration's checksum and would refuse to open. This pins every landed
/// migration; a new migration adds a line here, an edited one fails.
const LANDED_MIGRATIONS: &[(&str, &str)] = &[
    (
        "postgres/0001_initial.sql",
        "8d5dfabbb087a34e24379ceb3f2ac7936f2a0a4e2ad50215c3c2f3417388c5e8",
    ),
    (
        "postgres/0002_run_leases.sql",
        "fd1b3a23c8fc42be9d25643c251451b04275b1cfe29fc062a555baccbe5c623d",
    ),
    (
        "postgres/0003_target_holds.sql",
        "0c67b8918506d17464e91e9f73fdd8170724fdaeff27c222cfa064ca8a0e84a9",
    ),
    (
        "postgres/0004_timers.sql",
        "37f4a43deb1d6a6e8c1beedf6200469727aa9d89a8c0515b6817f78dc0576ca6",
    ),
    (
        "postgres/0005_api_tokens.sql",
        "a067a1ba7bd13553832b755f20f4ccd450ef327ed17c3df5b33f5f3f0e17a915",
    ),
    (
        "postgres/0006_approval_links.sql",
        "2c5ec670433d576279a9b36317d86d82fe6e0602385e73128ca6cf9965327806",
    ),
    (
        "postgres/0007_writebacks.sql",
        "54fc4bb98be547d8e56b448c6e4a508bbc808b93922bcc175981fe2daa3859ad",
    ),
    (
        "postgres/0008_used_signatures.sql",
        "9da120f1e90186418e7ac11facf95b419b43c43a7c8ce5089a7e0a5d47d1bd6c",
    ),
    (
        "postgres/0009_freezes.sql",
        "8fbf908535ad4b8228752ba65f8ec77fea7ae15a68d53273e1f904d9d38a69c6",
    ),
    (
        "postgres/0010_run_admission.sql",
        "17f04e05fd547ffc02d1aaa359489870188ac6bc7fa6c610591535322c5d8627",
    ),
    (
        "postgres/0011_one_run_per_problem.sql",
        "ef46c9aaa313e74639284e88400a76e78a74a65a465398da32462825af315fbe",
    ),
    (
        "postgres/0012_event_time.sql",
        "0e506dd12f8f5579c2404e0a44db2599944e062e42d1ed5745865fdc6e437356",
    ),
    (
        "postgres/0013_token_scope.sql",
        "fb8bb6c3987f57621fb28f0ed3e931795c230c338c689e06ea5615066757a160",
    ),
    (
        "postgres/0014_audit_by_event.sql",
        "dba1ba053962ff6625a5eb5bf47803705af761a8c67b18fc155f63d9d8808151",
    ),
    (
        "sqlite/0001_initial.sql",
        "f16b49840129258c09fe5d0fdca678f7683f89aa586be15ec7839ee27e483733",
    ),
    (
        "sqlite/0002_run_leases.sql",
        "b92a4599daa8add6a9019227ec595e7e11b28bdce14dcae1615435ca76c2bf4f",
    ),
    (
        "sqlite/0003_target_holds.sql",
        "858ce385d37e6f67bc1746d278224b4b615beed089d845f8fe7e1178791a9327",
    ),
    (
        "sqlite/0004_timers.sql",
        "9de0703e59fde878dff0de7a6824f263fc4ba02e735d7d420a1f725b19e65d0a",
    ),
    (
        "sqlite/0005_api_tokens.sql",
        "a067a1ba7bd13553832b755f20f4ccd450ef327ed17c3df5b33f5f3f0e17a915",
    ),
    (
        "sqlite/0006_approval_links.sql",
        "2c5ec670433d576279a9b36317d86d82fe6e0602385e73128ca6cf9965327806",
    ),
    (
        "sqlite/0007_writebacks.sql",
        "0516212a0b3ca30406b7292453361f671a83b22c91b1d7eea9af10d3dd831257",
    ),
    (
        "sqlite/0008_used_signatures.sql",
        "fddf939224aa714d143cb978d93631102507bf373a4be29093f2933a11166fde",
    ),
    (
        "sqlite/0009_freezes.sql",
        "545a31a5aeb3b864fb3803a05a038d97a5bc38456f07e1f943f8d3b7f9466f26",
    ),
    (
        "sqlite/0010_run_admission.sql",
        "17f04e05fd547ffc02d1aaa359489870188ac6bc7fa6c610591535322c5d8627",
    ),
    (
        "sqlite/0011_one_run_per_problem.sql",
        "ad7aabdd61ec7ad79de05178164b09a20a23ea4647cfc4de6e844e6501fc0702",
    ),
    (
        "sqlite/0012_event_time.sql",
        "0e506dd12f8f5579c2404e0a44db2599944e062e42d1ed5745865fdc6e437356",
    ),
    (
        "sqlite/0013_token_scope.sql",
        "fb8bb6c3987f57621fb28f0ed3e931795c230c338c689e06ea5615066757a160",
    ),
    (
        "sqlite/0014_audit_by_event.sql",
        "dba1ba053962ff6625a5eb5bf47803705af761a8c67b18fc155f63d9d8808151",
    ),
];

#[test]
fn landed_migrations_are_never_edited() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut files = Vec::new();
    for backend in ["postgres", "sqlite"] {
        for entry in std::fs::read_dir(format!("{root}/{backend}")).unwrap() {
            files.push(format!(
                "{backend}/{}",
                entry.unwrap().file_name().into_string().unwrap()
            ));
        }
    }
    files.sort();
    let pinned: Vec<&str> = LANDED_MIGRATIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        files, pinned,
        "every migration file is pinned here, and both backends have the same migrations"
    );
    for (name, sha256) in LANDED_MIGRATIONS {
        let text = std::fs::read(format!("{root}/{name}")).unwrap();
        assert_eq!(
            &domain::sha256_hex(&text),
            sha256,
            "{name} was edited after it landed: add a new migration instead"
        );
    }
}
