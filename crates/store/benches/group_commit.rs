//! Syncs per acknowledged event, with 1 and 32 writers at once: what group
//! commit saves.
//!
//! Each writer stores events one after another as `POST /v1/events` does
//! (`Store::intake`: the event and its audit records, one transaction),
//! each event acknowledged when `intake` returns. On SQLite the workload
//! runs in a child process under `strace -c`, which counts the process's
//! `fsync` and `fdatasync` calls (every sync SQLite makes: the WAL at each
//! commit, and checkpoints); on PostgreSQL, `pg_stat_wal.wal_sync` counts
//! the server's WAL syncs (the whole cluster's: run it on a quiet one).
//!
//! ```sh
//! cargo bench -p store --bench group_commit
//! ```
//!
//! Without strace the SQLite rows still give events/s and the ack times,
//! without the sync count; without PostgreSQL its rows say SKIPPED.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use store::Store;

#[path = "common/unmatched.rs"]
mod unmatched;
use unmatched::unmatched_intake;

/// The child's environment variable: the workload's writer count.
const CHILD: &str = "OPSGATE_GROUP_COMMIT_CHILD";
const EVENTS_PER_RUN: usize = 6_400;
const WRITER_COUNTS: [usize; 2] = [1, 32];

struct Measured {
    writers: usize,
    events: usize,
    elapsed: Duration,
    /// Each event's time from `intake` called to returned, sorted.
    acks: Vec<Duration>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if let Ok(child) = std::env::var(CHILD) {
        let (commits, writers) = child.split_once(' ').expect("commits and writers");
        let writers = writers.parse().expect("a writer count");
        let directory = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", directory.path().join("bench.db").display());
        let measured = runtime.block_on(async {
            let store = match commits {
                "shared" => Store::open(&url).await,
                _ => Store::open_with_commits_one_by_one_for_benchmarks(&url).await,
            };
            run(&store.expect("the store opens"), writers).await
        });
        let backend = match commits {
            "shared" => "sqlite",
            _ => "sqlite, one by one",
        };
        println!("{}", row(&measured, backend, None));
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    println!(
        "| backend | writers | events | events/s | ack p50 | ack p99 | syncs | syncs per event |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for writers in WRITER_COUNTS {
        for commits in ["shared", "one-by-one"] {
            sqlite_under_strace(commits, writers);
        }
    }
    for writers in WRITER_COUNTS {
        runtime.block_on(postgres(writers));
    }
}

/// Runs this program again as the SQLite workload with `writers` writers,
/// their commits `shared` (group commit) or `one-by-one` (as before it),
/// under `strace -c` when there is one.
fn sqlite_under_strace(commits: &str, writers: usize) {
    let child = format!("{commits} {writers}");
    let me = std::env::current_exe().expect("this program's path");
    let summary = tempfile::NamedTempFile::new().expect("a temporary file");
    let traced = Command::new("strace")
        // `--seccomp-bpf`: only the traced calls stop the process.
        .args([
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-c",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
        ])
        .arg(summary.path())
        .arg(&me)
        .env(CHILD, &child)
        .output();
    let output = match traced {
        Ok(output) if output.status.success() => output,
        _ => {
            eprintln!("strace is not here (apt-get install strace): SQLite syncs not counted");
            let output = Command::new(&me)
                .env(CHILD, &child)
                .output()
                .expect("the workload runs");
            print!("{}", String::from_utf8_lossy(&output.stdout));
            return;
        }
    };
    let line = String::from_utf8_lossy(&output.stdout);
    let summary = std::fs::read_to_string(summary.path()).unwrap_or_default();
    let syncs = sync_calls(&summary);
    // The child printed its row with the sync columns empty: fill them in.
    let events: f64 = line
        .split('|')
        .nth(3)
        .and_then(|cell| cell.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let line = line.trim_end().trim_end_matches("| — | — |");
    println!("{line}| {syncs} | {:.3} |", syncs as f64 / events);
}

/// The calls of `fsync` and `fdatasync` in strace's `-c` summary.
fn sync_calls(summary: &str) -> u64 {
    summary
        .lines()
        .filter(|line| line.ends_with(" fsync") || line.ends_with(" fdatasync"))
        .filter_map(|line| line.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum()
}

async fn postgres(writers: usize) {
    let admin = std::env::var("OPSGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let Some(url) = fresh_postgres_database(&admin).await else {
        println!("| postgres | {writers} | SKIPPED: no PostgreSQL at {admin} | | | | | |");
        return;
    };
    let store = Store::open(&url).await.expect("the store opens");
    // Stores a first event so the schema and the pool are warm.
    store
        .intake(unmatched_intake("warm-up", now(0)), now(0))
        .await
        .expect("a first event");
    let before = wal_syncs(&admin).await;
    let measured = run(&store, writers).await;
    // A backend reports its WAL counters when it goes idle or exits:
    // closing the pool makes them count.
    drop(store);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = wal_syncs(&admin).await;
    let syncs = after.zip(before).map(|(after, before)| after - before);
    println!("{}", row(&measured, "postgres", syncs));
}

async fn wal_syncs(admin: &str) -> Option<i64> {
    use sqlx::{Connection, Row};
    let mut connection = sqlx::PgConnection::connect(admin).await.ok()?;
    let row = sqlx::query("SELECT wal_sync FROM pg_stat_wal")
        .fetch_one(&mut connection)
        .await
        .ok()?;
    row.try_get::<i64, _>(0).ok()
}

/// A new, empty database for the benchmark (left behind for inspection,
/// replaced on the next run).
async fn fresh_postgres_database(admin: &str) -> Option<String> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(admin).await.ok()?;
    for statement in [
        "DROP DATABASE IF EXISTS opsgate_bench_group_commit WITH (FORCE)",
        "CREATE DATABASE opsgate_bench_group_commit",
    ] {
        sqlx::query(statement).execute(&mut connection).await.ok()?;
    }
    Some(format!(
        "{}/opsgate_bench_group_commit",
        admin.rsplit_once('/')?.0
    ))
}

/// `writers` tasks storing `EVENTS_PER_RUN` events in all, each one after
/// another.
async fn run(store: &Store, writers: usize) -> Measured {
    let per_writer = EVENTS_PER_RUN / writers;
    let store = Arc::new(store.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::with_capacity(per_writer);
            for index in 0..per_writer {
                let intake = unmatched_intake(&format!("{writer}-{index}"), now(index));
                let asked = Instant::now();
                store
                    .intake(intake, now(index))
                    .await
                    .expect("the event is stored");
                acks.push(asked.elapsed());
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("the writer finished"));
    }
    let elapsed = started.elapsed();
    acks.sort();
    Measured {
        writers,
        events: acks.len(),
        elapsed,
        acks,
    }
}

/// One table row; the sync columns are left for the parent to fill in on
/// SQLite.
fn row(measured: &Measured, backend: &str, syncs: Option<i64>) -> String {
    let quantile = |q: f64| {
        let index = ((measured.acks.len() as f64 - 1.0) * q).round() as usize;
        measured.acks[index].as_secs_f64() * 1000.0
    };
    let per_second = measured.events as f64 / measured.elapsed.as_secs_f64();
    let sync_cells = match syncs {
        None => "| — | — |".to_owned(),
        Some(syncs) => format!("| {syncs} | {:.3} |", syncs as f64 / measured.events as f64),
    };
    format!(
        "| {backend} | {} | {} | {per_second:.0} | {:.2} ms | {:.2} ms {sync_cells}",
        measured.writers,
        measured.events,
        quantile(0.5),
        quantile(0.99),
    )
}

fn now(index: usize) -> Timestamp {
    Timestamp::from_second(1_750_000_000).expect("a valid time")
        + SignedDuration::from_millis(index as i64)
}
