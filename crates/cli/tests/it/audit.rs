//! The audit chain: intact after real runs, and tamper-evident.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{
    Workspace, audit_records, cli, cli_with_env, event, eventually, http_runbook, skip, which,
};

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

/// The anchors' key, as the server and the auditor are given it.
const ANCHOR_KEY: &str = "the anchor key: thirty-two bytes at the very least";

/// A workspace whose server anchors the audit chain's head in a file,
/// after `every_records` records or `every_seconds`.
fn anchored_workspace(every_records: u64, every_seconds: u64) -> (Workspace, PathBuf) {
    let mut workspace = Workspace::new();
    let anchors = workspace.dir.path().join("anchors.jsonl");
    workspace.config_yaml = Some(format!(
        "audit_anchor:\n  sink: \"file:{}\"\n  key: env:OPSGATE_ANCHOR_KEY\n  \
         every_records: {every_records}\n  every_seconds: {every_seconds}\n",
        anchors.display()
    ));
    workspace
        .env
        .push(("OPSGATE_ANCHOR_KEY".into(), ANCHOR_KEY.into()));
    (workspace, anchors)
}

/// The anchors in the file, oldest first.
fn anchors_in(path: &Path) -> Vec<store::Anchor> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an anchor per line"))
        .collect()
}

/// `audit verify --anchor FILE --anchor-key env:…` with `key`.
pub(crate) fn verify_against(workspace: &Workspace, anchors: &Path, key: &str) -> (i32, String) {
    let (code, stdout, stderr) = cli_with_env(
        &[
            "audit",
            "verify",
            "--database",
            &workspace.database_url(),
            "--anchor",
            anchors.to_str().unwrap(),
            "--anchor-key",
            "env:AUDITOR_ANCHOR_KEY",
        ],
        &[("AUDITOR_ANCHOR_KEY", key)],
    );
    (code, format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn the_chain_is_anchored_every_n_records_and_at_shutdown_and_a_lost_tail_is_found() {
    let (workspace, anchors) = anchored_workspace(5, 3600);
    let mut server = workspace.start(&[]);
    for key in ["a", "b", "c"] {
        server.event(&event("nothing-matches", key)).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || anchors_in(&anchors)
            .iter()
            .any(|anchor| anchor.seq >= 5))
        .await,
        "no anchor after 5 records: {:?}",
        anchors_in(&anchors)
    );
    let (code, output) = verify_against(&workspace, &anchors, ANCHOR_KEY);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("anchor(s) hold"), "{output}");

    // A clean stop anchors what was written since the last anchor.
    server.event(&event("nothing-matches", "d")).await;
    server.stop().await;
    let records = audit_records(&workspace.database_url());
    let last = anchors_in(&anchors).pop().unwrap();
    let head = records.last().unwrap();
    assert_eq!(
        (last.seq, last.head_hash.as_str()),
        (
            head["seq"].as_i64().unwrap(),
            head["hash"].as_str().unwrap()
        ),
        "the last anchor is the head at shutdown"
    );

    // What a power loss leaves: the newest records gone. The chain alone
    // still verifies; against the anchors it does not.
    execute(
        &workspace,
        "DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 2 FROM audit)",
    )
    .await;
    let (code, stdout, _) = cli(&["audit", "verify", "--database", &workspace.database_url()]);
    assert_eq!(code, 0, "the chain alone cannot tell: {stdout}");
    let (code, output) = verify_against(&workspace, &anchors, ANCHOR_KEY);
    assert_eq!(code, 2, "{output}");
    let line = anchors_in(&anchors).len();
    assert!(
        output.contains(&format!(
            "BROKEN against anchor {}:{line}",
            anchors.display()
        )) && output.contains(&format!("record {}", last.seq))
            && output.contains("newest records were removed"),
        "{output}"
    );
}

/// After a power loss took the tail, the restarted server says so at once,
/// before new records take the lost ones' sequence numbers.
#[tokio::test]
async fn a_restarted_server_reports_a_tail_lost_since_its_newest_anchor() {
    let (mut workspace, anchors) = anchored_workspace(1, 3600);
    workspace.capture_log = true;
    let mut server = workspace.start(&[]);
    server.event(&event("nothing-matches", "a")).await;
    server.stop().await;
    let log = std::fs::read_to_string(workspace.log_path()).unwrap();
    assert!(!log.contains("does not hold its newest anchor"), "{log}");

    execute(
        &workspace,
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
    )
    .await;
    let server = workspace.start(&[]);
    let newest = anchors_in(&anchors).pop().unwrap();

    let reported = || {
        std::fs::read_to_string(workspace.log_path())
            .unwrap()
            .contains("the audit chain does not hold its newest anchor")
    };
    assert!(
        eventually(Duration::from_secs(5), reported).await,
        "{}",
        std::fs::read_to_string(workspace.log_path()).unwrap()
    );
    let log = std::fs::read_to_string(workspace.log_path()).unwrap();
    let problem = format!(
        "the chain ends at record {}, but record {} was anchored",
        newest.seq - 1,
        newest.seq
    );
    assert!(log.contains(&problem), "{log}");
    drop(server);
}

#[tokio::test]
async fn a_forged_anchor_or_a_wrong_key_is_refused() {
    let (workspace, anchors) = anchored_workspace(1, 3600);
    let server = workspace.start(&[]);
    server.event(&event("nothing-matches", "a")).await;
    assert!(
        eventually(Duration::from_secs(10), || !anchors_in(&anchors).is_empty()).await,
        "no anchor"
    );
    assert_eq!(verify_against(&workspace, &anchors, ANCHOR_KEY).0, 0);

    let (code, output) = verify_against(
        &workspace,
        &anchors,
        "another key, also thirty-two bytes or more",
    );
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("signature does not hold"), "{output}");

    // Whoever holds the database but not the key: an anchor of a head of
    // their choosing (the real head's hash, a later sequence number).
    let genuine = anchors_in(&anchors).pop().unwrap();
    let forged = store::Anchor::sign(
        genuine.seq,
        &genuine.head_hash,
        jiff::Timestamp::now(),
        b"a key of the attacker's own, thirty-two bytes",
    );
    let forged_file = workspace.dir.path().join("forged.jsonl");
    std::fs::write(&forged_file, format!("{}\n", forged.to_json_line())).unwrap();
    let (code, output) = verify_against(&workspace, &forged_file, ANCHOR_KEY);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("signature does not hold"), "{output}");
}

#[tokio::test]
async fn the_chain_is_anchored_every_t_seconds_when_it_grew() {
    let (workspace, anchors) = anchored_workspace(1_000_000, 1);
    let server = workspace.start(&[]);
    server.event(&event("nothing-matches", "a")).await;
    let records = audit_records(&workspace.database_url()).len() as i64;

    assert!(
        eventually(Duration::from_secs(5), || anchors_in(&anchors)
            .iter()
            .any(|anchor| anchor.seq == records))
        .await,
        "no anchor of record {records} within the period: {:?}",
        anchors_in(&anchors)
    );
    assert_eq!(verify_against(&workspace, &anchors, ANCHOR_KEY).0, 0);
}

/// Requests a webhook received: (lower-case headers, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, String)>>>;

/// A loopback HTTP receiver that answers 200 to every request and keeps
/// what it was sent; returns its URL.
async fn webhook_receiver(received: Received) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/anchors", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let mut headers = Vec::new();
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        stream.read_line(&mut line).await.unwrap();
                        let Some((name, value)) = line.trim_end().split_once(':') else {
                            break;
                        };
                        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                    }
                    let length = headers
                        .iter()
                        .find(|(name, _)| name == "content-length")
                        .map_or(0, |(_, value)| value.parse().unwrap());
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    received
                        .lock()
                        .unwrap()
                        .push((headers, String::from_utf8(body).unwrap()));
                    stream
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn anchors_go_to_a_webhook_signed() {
    let received = Received::default();
    let url = webhook_receiver(received.clone()).await;
    let mut workspace = Workspace::new();
    workspace.config_yaml = Some(format!(
        "audit_anchor: {{ sink: \"{url}\", key: env:OPSGATE_ANCHOR_KEY, every_records: 1 }}\n"
    ));
    workspace
        .env
        .push(("OPSGATE_ANCHOR_KEY".into(), ANCHOR_KEY.into()));
    let server = workspace.start(&[]);
    server.event(&event("nothing-matches", "a")).await;
    let records = audit_records(&workspace.database_url());
    let head = records.last().unwrap();

    let anchored = || {
        received.lock().unwrap().iter().any(|(_, body)| {
            serde_json::from_str::<store::Anchor>(body)
                .is_ok_and(|anchor| anchor.seq == head["seq"].as_i64().unwrap())
        })
    };
    assert!(
        eventually(Duration::from_secs(10), anchored).await,
        "no anchor of the head reached the webhook: {:?}",
        received.lock().unwrap()
    );
    for (headers, body) in received.lock().unwrap().iter() {
        let anchor: store::Anchor = serde_json::from_str(body).unwrap();
        assert!(anchor.signed_with(ANCHOR_KEY.as_bytes()), "{body}");
        let signature = headers
            .iter()
            .find(|(name, _)| name == "x-opsgate-signature")
            .map(|(_, value)| value.as_str());
        assert_eq!(
            signature,
            Some(store::body_signature(ANCHOR_KEY.as_bytes(), body.as_bytes()).as_str()),
            "{headers:?}"
        );
    }
}

/// An event answered 202 is on disk: the server syncs the commit that
/// stored it before it answers. Watched with `strace` on the real server.
#[tokio::test]
async fn every_acknowledged_event_is_synced_to_disk_before_the_answer() {
    const TEST: &str = "every_acknowledged_event_is_synced_to_disk_before_the_answer";
    let Some(strace) = which("strace") else {
        return skip(TEST, "strace is not installed");
    };
    let workspace = Workspace::new();
    let server = workspace.start(&[]);
    let trace = workspace.dir.path().join("sync.trace");
    let mut tracer = std::process::Command::new(strace)
        .args(["-f", "-ttt", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &server.pid().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start strace");
    // strace says on stderr when it holds the process.
    let mut attached = std::io::BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut attached, &mut line).unwrap();
    if !line.contains("attached") {
        let _ = tracer.kill();
        let _ = tracer.wait();
        return skip(TEST, &format!("strace cannot trace the server: {line}"));
    }
    std::thread::spawn(move || std::io::copy(&mut attached, &mut std::io::sink()));

    const EVENTS: usize = 20;
    let mut windows = Vec::new();
    for index in 0..EVENTS {
        let sent = seconds_since_epoch();
        server
            .event(&event("nothing-matches", &format!("key-{index}")))
            .await;
        windows.push((sent, seconds_since_epoch()));
    }
    // SIGINT: strace detaches and writes out what it saw.
    let status = std::process::Command::new("kill")
        .args(["-INT", &tracer.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tracer.wait().unwrap();

    // `PID SECONDS.MICROS fdatasync(5) = 0`, or split in two lines by
    // another thread (`<unfinished ...>`, then `<... fdatasync resumed>`).
    let text = std::fs::read_to_string(&trace).unwrap();
    let syncs: Vec<f64> = text
        .lines()
        .filter(|line| {
            (line.contains(" fsync(") || line.contains(" fdatasync(")) && !line.contains("resumed>")
        })
        .map(|line| line.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    for (index, (sent, answered)) in windows.iter().enumerate() {
        let during = syncs
            .iter()
            .filter(|time| (*sent..=*answered).contains(*time))
            .count();
        assert!(
            during >= 1,
            "event {index} was answered without a sync to disk ({} syncs in all for {EVENTS} events):\n{text}",
            syncs.len()
        );
    }
}

fn seconds_since_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
