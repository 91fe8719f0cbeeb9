//! Faults of the world around a run: a target that storms 429s, answers
//! garbage or hangs up, a PostgreSQL that drops every connection or restarts mid-run, and SQLite on
//! a disk that fills up or turns read-only. opsgate
//! keeps its promises through them — no acknowledged event lost, no
//! non-idempotent step sent twice, a failure that says why — and goes on
//! without anyone restarting it.

use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use test_support::scripted::{Reply, Scripted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Workspace, event, http_runbook};
use crate::postgres::{database, runs_still_open};

#[tokio::test]
async fn a_storm_of_429s_is_retried_as_the_peer_asks_then_fails_saying_so() {
    let target = Scripted::default();
    let busy = Reply::json(429, json!({"error": "slow down"})).header("retry-after", "1");
    target.on("POST /act", vec![busy]);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "stormy",
            "stormy",
            &[(
                "act",
                "POST",
                "/act",
                "idempotent: true\nretry: { attempts: 3, initial: 10ms, retry_on: [429] }",
            )],
            "",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("stormy", "k1")).await;
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "rolled_back", "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("429"), "{reason}");
    let times = target.call_times("POST /act");
    assert_eq!(times.len(), 3, "three attempts, no more");
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(950),
            "each retry waited the second the peer asked for: {:?}",
            pair[1] - pair[0]
        );
    }
}

/// A peer that reads each request and answers `answer` (nothing at all
/// when empty), then closes the connection; or, without an answer, holds
/// the connection open and never answers.
async fn broken_peer(
    answer: Option<&'static [u8]>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let Some(answer) = answer else {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                };
                let _ = socket.write_all(answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, requests)
}

/// A peer that answers garbage, hangs up on the request, or never
/// answers: the request reached it, so it may have acted. The
/// non-idempotent step is not sent again, though its retry policy covers
/// timeouts, nor is the step before it undone: the run waits for a person,
/// with the reason.
#[tokio::test]
async fn a_peer_that_answers_garbage_hangs_up_or_hangs_gets_a_non_idempotent_step_once() {
    for (case, answer) in [
        ("garbage", Some(&b"\x00\x01garbage, not HTTP\r\n\r\n"[..])),
        ("hung up", Some(&b""[..])),
        ("hangs", None),
    ] {
        let (url, requests) = broken_peer(answer).await;
        let workspace = Workspace::new();
        workspace.add_runbook(
            "r.yaml",
            &http_runbook(
                "broken",
                "broken",
                &[(
                    "act",
                    "POST",
                    "/act",
                    "idempotent: false\ntimeout: 1s\nretry: { attempts: 3, initial: 100ms, retry_on: [connect, timeout] }",
                )],
                "",
            ),
        );
        let server = workspace.start(&[("TARGET", &url)]);
        let report = server.event(&event("broken", "k1")).await;
        let run = server.wait(report["run_id"].as_str().unwrap()).await;
        assert_eq!(run["state"], "needs_human", "{case}: {run:#}");
        let reason = run["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("step `act` outcome unknown: ")
                && reason.ends_with("so it is not sent again"),
            "{case}: the reason names the step and says why: {run:#}"
        );
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{case}: a non-idempotent step is not sent again"
        );
    }
}

/// What happens to PostgreSQL, every tenth event, while runs go on.
#[derive(Debug, Clone, Copy)]
enum PostgresFault {
    /// Every connection of opsgate's is dropped (`pg_terminate_backend`).
    EveryConnectionDropped,
    /// As a restart: every connection cut and new ones refused for two
    /// seconds, through a relay in front of the server.
    Restarted,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropping_every_connection_mid_run_loses_nothing_and_repeats_nothing() {
    let test = "postgres_dropping_every_connection_mid_run_loses_nothing_and_repeats_nothing";
    runs_through(test, PostgresFault::EveryConnectionDropped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_loses_nothing_and_repeats_nothing() {
    let test = "postgres_restarted_mid_run_loses_nothing_and_repeats_nothing";
    runs_through(test, PostgresFault::Restarted).await;
}

/// Runs of two non-idempotent steps, one per event, through `fault`: every
/// acknowledged event has its run, every run finishes without a restart
/// of opsgate (succeeded, or waiting for a person with the outcome of a
/// step it cannot know), no step is sent twice, and the audit chain holds.
async fn runs_through(test: &str, fault: PostgresFault) {
    const EVENTS: usize = 30;
    let Some(database) = database(test).await else {
        return;
    };
    let relay = Relay::start().await;
    let target = Scripted::default();
    for step in ["first", "second"] {
        let slow = Reply::json(200, json!({})).delayed(Duration::from_millis(100));
        target.on(&format!("POST /{step}"), vec![slow]);
    }
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "dropped",
            "dropped",
            &[
                (
                    "first",
                    "POST",
                    "/first?key={{ event.dedup_key }}",
                    "idempotent: false",
                ),
                (
                    "second",
                    "POST",
                    "/second?key={{ event.dedup_key }}",
                    "idempotent: false",
                ),
            ],
            "",
        ),
    );
    let name: String = database.url.rsplit('/').next().unwrap().to_owned();
    if let PostgresFault::Restarted = fault {
        workspace.database = Some(relay.url(&name));
    }
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let mut admin = sqlx::PgConnection::connect(&test_support::postgres::admin_url())
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for index in 0..EVENTS {
        let key = format!("D{index:03}");
        if index % 10 == 5 {
            match fault {
                PostgresFault::EveryConnectionDropped => {
                    sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&name)
                    .execute(&mut admin)
                    .await
                    .unwrap();
                }
                PostgresFault::Restarted => relay.down_for(Duration::from_secs(2)),
            }
        }
        for attempt in 0.. {
            assert!(attempt < 50, "{key} was never acknowledged");
            let (status, _) = server.post("/v1/events", &event("dropped", &key)).await;
            if status == 202 {
                acknowledged.push(key.clone());
                break;
            }
            refused += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let PostgresFault::Restarted = fault {
        assert!(
            refused > 0,
            "events were refused while the database was down"
        );
    }
    let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
    assert_eq!(
        runs_still_open(&mut connection).await,
        0,
        "every run finished, without a restart"
    );
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        runs as usize,
        acknowledged.len(),
        "a run per acknowledged event"
    );
    let unexplained: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT state, reason FROM runs WHERE state <> 'succeeded' \
         AND (state <> 'needs_human' OR reason NOT LIKE '%outcome unknown%')",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert_eq!(unexplained, [], "a run that did not succeed says why");
    for step in ["POST /first", "POST /second"] {
        let mut keys = target.queries(step);
        let sent = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(sent, keys.len(), "{step}: no run sent it twice");
    }
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}

/// A TCP relay in front of the test PostgreSQL that can be taken down for
/// a while, as a restart takes the server down: every connection through
/// it is cut at once, and new ones are closed as soon as they are made
/// until it is up again.
struct Relay {
    port: u16,
    upstream: sqlx::postgres::PgConnectOptions,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    async fn start() -> Relay {
        let upstream: sqlx::postgres::PgConnectOptions =
            test_support::postgres::admin_url().parse().unwrap();
        let address = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(tokio::sync::watch::Sender::new(true));
        let watching = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = watching.subscribe();
                if !*up.borrow_and_update() {
                    continue;
                }
                let address = address.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&address).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { port, upstream, up }
    }

    /// The URL of database `name` through the relay.
    fn url(&self, name: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{name}",
            self.upstream.get_username(),
            self.port
        )
    }

    /// Takes the relay down now, and up again after `outage`.
    fn down_for(&self, outage: Duration) {
        self.up.send_replace(false);
        let up = self.up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            up.send_replace(true);
        });
    }
}

/// A size-limited filesystem of the test's own, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root, or no tmpfs).
    fn mount(path: std::path::PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk { path })
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount size={size}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test]
async fn sqlite_on_a_full_disk_refuses_what_it_cannot_store_and_goes_on_once_there_is_room() {
    let test = "sqlite_on_a_full_disk_refuses_what_it_cannot_store_and_goes_on_once_there_is_room";
    let mut workspace = Workspace::new();
    let Some(disk) = SmallDisk::mount(workspace.dir.path().join("disk"), "1m") else {
        crate::harness::skip(test, "cannot mount a small tmpfs (needs root)");
        return;
    };
    workspace.database = Some(format!("sqlite://{}/opsgate.db", disk.path.display()));
    let server = workspace.start(&[]);
    let padding = "x".repeat(8_000);
    let mut acknowledged = 0;
    let mut refusal = None;
    for index in 0..1_000 {
        let mut incident = event("nothing-matches", &format!("FULL-{index:04}"));
        incident["fields"]["padding"] = json!(padding);
        let (status, answer) = server.post("/v1/events", &incident).await;
        if status == 202 {
            acknowledged += 1;
        } else {
            refusal = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refusal.expect("the disk filled up");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("full"), "{message}");

    // Every acknowledged event is stored; the refused one is not.
    let mut database = sqlx::SqliteConnection::connect(&workspace.database_url())
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE source = 'tests'")
        .fetch_one(&mut database)
        .await
        .unwrap();
    assert_eq!(stored, acknowledged);
    drop(database);

    // Room again: the same server takes events in, without a restart.
    disk.resize("16m");
    let mut incident = event("nothing-matches", "FULL-AFTER");
    incident["fields"]["padding"] = json!(padding);
    let (status, answer) = server.post("/v1/events", &incident).await;
    assert_eq!(status, 202, "{answer}");
}

/// The database's files made unwritable — what a disk remounted read-only
/// does to a process that has them open — and writable again: `chattr +i`,
/// which even root cannot write through. The shared-memory index is left
/// alone (SQLite maps it; a write to an immutable map is a SIGBUS, a crash
/// a read-only disk does not cause).
struct ReadOnly<'a> {
    files: Vec<&'a std::path::Path>,
}

impl<'a> ReadOnly<'a> {
    /// `None` when this process or filesystem cannot set the attribute.
    fn make(files: Vec<&'a std::path::Path>) -> Option<ReadOnly<'a>> {
        let set = std::process::Command::new("chattr")
            .arg("+i")
            .args(&files)
            .status()
            .is_ok_and(|status| status.success());
        set.then_some(ReadOnly { files })
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .args(&self.files)
            .status();
    }
}

#[tokio::test]
async fn sqlite_on_a_read_only_disk_refuses_what_it_cannot_store_and_goes_on_once_writable() {
    let test = "sqlite_on_a_read_only_disk_refuses_what_it_cannot_store_and_goes_on_once_writable";
    let workspace = Workspace::new();
    let server = workspace.start(&[]);
    let (status, answer) = server
        .post("/v1/events", &event("nothing-matches", "RO-BEFORE"))
        .await;
    assert_eq!(status, 202, "{answer}");

    let database = workspace.database_path();
    let wal = database.with_extension("db-wal");
    let Some(read_only) = ReadOnly::make(vec![&database, &wal]) else {
        crate::harness::skip(test, "cannot make files immutable (needs root and chattr)");
        return;
    };
    for index in 0..3 {
        let (status, answer) = server
            .post(
                "/v1/events",
                &event("nothing-matches", &format!("RO-{index}")),
            )
            .await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("read-only"), "{message}");
    }
    // Reads still work.
    server.get("/v1/runs").await;
    drop(read_only);

    // Writable again: the same server takes events in, without a restart,
    // and only the acknowledged ones are stored.
    let (status, answer) = server
        .post("/v1/events", &event("nothing-matches", "RO-AFTER"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let mut connection = sqlx::SqliteConnection::connect(&workspace.database_url())
        .await
        .unwrap();
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT dedup_key FROM events WHERE source = 'tests' ORDER BY dedup_key",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert_eq!(stored, ["RO-AFTER", "RO-BEFORE"]);
}
