//! The statements every run makes, as SQLite plans them: each reaches the
//! rows it needs through an index, so that a run costs the same on the
//! first day as after a year of history. The plans are read from
//! `EXPLAIN QUERY PLAN` on a migrated database; a statement planned
//! through an index that reads a runbook's whole history, or a scan of a
//! table that grows with every run, fails here before it shows in a
//! benchmark.

use sqlx::{Connection as _, Row};

/// SQLite's plan for `sql`, one line per step, on a fresh migrated file.
async fn plan(sql: &str) -> Vec<String> {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("plans.db").display());
    drop(crate::Store::open(&url).await.unwrap());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // The statement is one of ours, a constant.
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(&mut connection)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect()
}

#[tokio::test]
async fn a_runs_audit_trail_is_read_through_its_run_and_its_event() {
    let plan = plan(crate::audit::RUN_TRAIL).await;
    assert!(
        plan.iter()
            .any(|step| step.contains("USING INDEX audit_by_run (run_id=?)"))
            && plan
                .iter()
                .any(|step| step.contains("USING INDEX audit_by_event (event_id=?)")),
        "{plan:#?}"
    );
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN audit")),
        "{plan:#?}"
    );
}

#[tokio::test]
async fn an_earlier_run_is_found_by_dedup_key_and_by_id_never_by_runbook() {
    let plan = plan(crate::problems::EARLIER_RUN).await;
    assert!(
        plan.iter()
            .any(|step| step == "SEARCH runs USING INDEX runs_by_dedup_key (dedup_key=?)"),
        "{plan:#?}"
    );
    assert!(
        plan.iter()
            .any(|step| step.starts_with("SEARCH runs USING INDEX sqlite_autoindex_runs_1 (id=?)")),
        "{plan:#?}"
    );
    assert!(
        !plan
            .iter()
            .any(|step| step.contains("runbook_id=?") || step.starts_with("SCAN")),
        "{plan:#?}"
    );
}
