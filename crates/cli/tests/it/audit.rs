//! The audit chain: intact after real runs, and tamper-evident.

use serde_json::json;
use sqlx::Connection;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, cli, event, http_runbook};

async fn workspace_with_history() -> Workspace {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "audited",
            "audited",
            &[("act", "POST", "/act", "idempotent: true")],
            "",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    for key in ["a", "b"] {
        let report = server.event(&event("audited", key)).await;
        assert_eq!(
            server.wait(report["run_id"].as_str().unwrap()).await["state"],
            "succeeded"
        );
    }
    workspace
}

async fn execute(workspace: &Workspace, sql: &str) {
    let mut connection = sqlx::SqliteConnection::connect(&workspace.database_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_passes_on_an_untouched_chain_and_export_writes_every_record() {
    let workspace = workspace_with_history().await;
    let database = workspace.database_url();
    let (code, stdout, _) = cli(&["audit", "verify", "--database", &database]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("audit chain intact"), "{stdout}");
    let (code, stdout, _) = cli(&["audit", "export", "--database", &database]);
    assert_eq!(code, 0);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(records.len() > 10);
    assert!(
        records
            .windows(2)
            .all(|pair| pair[1]["prev_hash"] == pair[0]["hash"])
    );
    let run_id = records
        .iter()
        .find_map(|record| record["run_id"].as_str())
        .unwrap();
    let (code, stdout, _) = cli(&["audit", "show", run_id, "--database", &database]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("run.decided") && stdout.contains("attempt.finished"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_altered_record_is_named() {
    let workspace = workspace_with_history().await;
    execute(
        &workspace,
        "UPDATE audit SET actor = 'mallory' WHERE seq = 5",
    )
    .await;
    let (code, stdout, _) = cli(&["audit", "verify", "--database", &workspace.database_url()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("BROKEN at record 5"), "{stdout}");
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let workspace = workspace_with_history().await;
    execute(&workspace, "DELETE FROM audit WHERE seq = 7").await;
    let (code, stdout, _) = cli(&["audit", "verify", "--database", &workspace.database_url()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("record 7 is missing"), "{stdout}");
}

#[tokio::test]
async fn migrate_reports_the_version_and_serve_refuses_a_newer_schema() {
    let workspace = Workspace::new();
    let database = workspace.database_url();
    let (code, stdout, stderr) = cli(&["migrate", "--database", &database]);
    assert_eq!(code, 0, "{stderr}");
    let latest = store::latest_schema_version();
    assert!(
        stdout.contains(&format!("schema version {latest}")),
        "{stdout}"
    );
    // Twice is harmless.
    assert_eq!(cli(&["migrate", "--database", &database]).0, 0);
    // As if a newer opsgate had migrated this database.
    execute(
        &workspace,
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)",
    )
    .await;
    let runbooks = workspace.runbooks();
    let (code, _, stderr) = cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--database",
        &database,
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "schema is at version 99, newer than this opsgate knows ({latest})"
        )),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&["migrate", "--database", &database]);
    assert_eq!(code, 1);
    assert!(stderr.contains("newer than this opsgate knows"), "{stderr}");
}

#[tokio::test]
async fn an_exported_audit_log_moves_to_postgresql_intact_or_not_at_all() {
    let workspace = workspace_with_history().await;
    let export = workspace.dir.path().join("audit.jsonl");
    let (code, _, stderr) = cli(&[
        "audit",
        "export",
        "--database",
        &workspace.database_url(),
        "--output",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let Some(database) =
        crate::postgres::database("an_exported_audit_log_moves_to_postgresql_intact_or_not_at_all")
            .await
    else {
        return;
    };
    let export_path = export.to_str().unwrap();

    // A tampered export is refused whole: nothing lands.
    let text = std::fs::read_to_string(&export).unwrap();
    let tampered_path = workspace.dir.path().join("tampered.jsonl");
    std::fs::write(
        &tampered_path,
        text.replacen(
            "\"actor\":\"user:tests-operator\"",
            "\"actor\":\"mallory\"",
            1,
        ),
    )
    .unwrap();
    let (code, _, stderr) = cli(&[
        "audit",
        "import",
        "--input",
        tampered_path.to_str().unwrap(),
        "--database",
        &database.url,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("import refused: record 1"), "{stderr}");

    let (code, stdout, stderr) = cli(&[
        "audit",
        "import",
        "--input",
        export_path,
        "--database",
        &database.url,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let count = text.lines().count();
    assert!(
        stdout.contains(&format!("imported {count} record(s)")),
        "{stdout}"
    );
    let (code, stdout, _) = cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
    let (_, moved, _) = cli(&["audit", "export", "--database", &database.url]);
    assert_eq!(moved, text, "the same records, byte for byte");
    // Importing twice would fork the chain: refused.
    let (code, _, stderr) = cli(&[
        "audit",
        "import",
        "--input",
        export_path,
        "--database",
        &database.url,
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("already holds"), "{stderr}");
}
