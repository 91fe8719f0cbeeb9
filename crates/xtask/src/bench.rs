//! `cargo xtask bench [--quick]`: every headline figure of opsgate in one
//! invocation, printed as one Markdown table with each goal beside the
//! figure measured, then the same remediation as a Prefect 3 flow and the
//! ratio between the two.
//!
//! Everything runs the real thing: the release binary (built first) as a
//! separate process, over HTTP, against loopback targets in this process,
//! on a fresh database per measurement (SQLite files in a scratch
//! directory; PostgreSQL databases made and dropped on the local server,
//! each PostgreSQL row printed as skipped, with the reason, when it is not
//! reachable). Figures that can be read where the effect lands are read
//! there: a step's overhead and an approval's dispatch at the target that
//! receives the calls, an ingest's durability by counting the rows after a
//! kill -9. docs/benchmarks.md says how each figure is computed and keeps
//! a table this printed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::Connection;
use test_support::postgres::Database;
use test_support::scripted::{Reply, Scripted};
use tokio::io::AsyncReadExt;

use crate::{
    Instance, client_as, event, percentiles, release_build, settle_one, start, target_dir, token,
};

/// How many of each: the defaults take about twelve minutes on two cores,
/// `--quick` about two (a smoke check, not figures to quote).
struct Counts {
    /// Runs of each runbook one after another, after `WARM_UP` more.
    sequential_runs: usize,
    /// Runs of each runbook posted by `CONCURRENCY` senders.
    concurrent_runs: usize,
    /// Runs approved one after another.
    approvals: usize,
    /// Events posted by `CONCURRENCY` senders.
    ingest_events: usize,
    /// Runs left waiting for approval when resident memory is read.
    pending_approvals: usize,
    /// Runs with a call in flight when the instance is killed, asked for.
    in_flight_runs: usize,
    /// How long those runs are posted for, at most: the instance is killed
    /// with as many in flight as there are by then.
    in_flight_seconds: u64,
    /// How long policy decisions are counted.
    policy_seconds: f64,
    /// Prefect flow runs measured, after `PREFECT_WARM_UP` more.
    prefect_runs: usize,
}

const DEFAULT_COUNTS: Counts = Counts {
    sequential_runs: 500,
    concurrent_runs: 3_000,
    approvals: 200,
    ingest_events: 30_000,
    pending_approvals: 10_000,
    in_flight_runs: 10_000,
    in_flight_seconds: 90,
    policy_seconds: 3.0,
    prefect_runs: 50,
};

const QUICK_COUNTS: Counts = Counts {
    sequential_runs: 50,
    concurrent_runs: 320,
    approvals: 20,
    ingest_events: 2_000,
    pending_approvals: 1_000,
    in_flight_runs: 500,
    in_flight_seconds: 20,
    policy_seconds: 0.5,
    prefect_runs: 5,
};

/// Runs (and flow runs) made before the measured ones, so that
/// connections, caches and the database's pages are warm.
const WARM_UP: usize = 20;
const PREFECT_WARM_UP: usize = 3;

/// Senders at once, for the concurrent runs and the ingest.
const CONCURRENCY: usize = 32;

/// opsgate's default lease, for every instance but the one killed.
const LEASE_TTL_MS: u64 = 15_000;

/// The lease of the instance killed for the recovery figure: shorter than
/// the default, so that the wait for it to expire (reported apart) does
/// not hide the recovery's own work; not so short that thousands of runs'
/// heartbeats (one write per run every third of it) swamp the store.
const RECOVERY_LEASE_TTL_MS: u64 = 5_000;

/// The runbooks measured. `one` and `three` are the remediation of one
/// step and of three (look, act, look again: the last call is the
/// verification); `gated` waits for an approval; `held` calls a target
/// that never answers, so that its run stays in flight.
const RUNBOOKS: [(&str, &str); 4] = [
    (
        "one.yaml",
        r#"
id: one
title: One call per incident
owner: bench
risk: reversible
approval: auto
match: { kind: one }
targets: { from: "[event.subject]" }
steps:
  - id: act
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/one" }
    idempotent: false
"#,
    ),
    (
        "three.yaml",
        r#"
id: three
title: Look, act, look again
owner: bench
risk: reversible
approval: auto
match: { kind: three }
targets: { from: "[event.subject]" }
steps:
  - id: look
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/check" }
    idempotent: true
  - id: act
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/act" }
    idempotent: false
  - id: look-again
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/verify" }
    idempotent: true
"#,
    ),
    (
        "gated.yaml",
        r#"
id: gated
title: One call, once approved
owner: bench
risk: reversible
approval: required
match: { kind: gated }
targets: { from: "[event.subject]" }
steps:
  - id: act
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/gated" }
    idempotent: true
"#,
    ),
    (
        "held.yaml",
        r#"
id: held
title: One call that does not come back
owner: bench
risk: reversible
approval: auto
match: { kind: held }
targets: { from: "[event.subject]" }
steps:
  - id: act
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/hold" }
    timeout: 1h
    idempotent: false
"#,
    ),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let counts = if args.iter().any(|arg| arg == "--quick") {
        QUICK_COUNTS
    } else {
        DEFAULT_COUNTS
    };
    tokio::runtime::Runtime::new()?.block_on(bench(&counts))
}

/// Where the bench keeps what it makes: the binary it measures, its
/// scratch directory and the Prefect virtualenv.
struct Setup {
    opsgate: String,
    target_dir: PathBuf,
    scratch: PathBuf,
    runbooks: PathBuf,
}

async fn bench(counts: &Counts) -> anyhow::Result<()> {
    connectors::install_crypto_provider();
    let opsgate = release_build()?;
    let target_dir = target_dir()?;
    let scratch = std::env::temp_dir().join(format!("opsgate-bench-all-{}", std::process::id()));
    let runbooks = scratch.join("runbooks");
    std::fs::create_dir_all(&runbooks)?;
    for (file, text) in RUNBOOKS {
        std::fs::write(runbooks.join(file), text)?;
    }
    let setup = Setup {
        opsgate,
        target_dir,
        scratch,
        runbooks,
    };

    say("policy decisions on one thread");
    let policy = tokio::task::spawn_blocking({
        let seconds = counts.policy_seconds;
        move || policy_decisions_per_second(seconds)
    })
    .await?
    .map_err(|error| format!("{error:#}"));

    let sqlite = Ok(measure_backend(&setup, Backend::Sqlite, counts).await);
    let postgres = match Database::create("opsgate_bench_probe").await {
        Ok(probe) => {
            drop(probe);
            Ok(measure_backend(&setup, Backend::Postgres, counts).await)
        }
        Err(error) => Err(format!(
            "SKIPPED: PostgreSQL unreachable at {} ({error})",
            test_support::postgres::admin_url()
        )),
    };
    let prefect = measure_prefect(&setup, counts)
        .await
        .map_err(|error| format!("{error:#}"));

    print_report(counts, &[sqlite, postgres], &policy, &prefect);
    let _ = std::fs::remove_dir_all(&setup.scratch);
    Ok(())
}

fn say(what: &str) {
    eprintln!("bench: {what}");
}

/// Counts done out of a total, said on stderr at every tenth.
struct Progress {
    what: String,
    total: usize,
    done: AtomicUsize,
}

impl Progress {
    fn new(what: String, total: usize) -> Arc<Progress> {
        say(&format!("{what}: 0/{total}"));
        Arc::new(Progress {
            what,
            total,
            done: AtomicUsize::new(0),
        })
    }

    fn one_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let tenth = (self.total / 10).max(1);
        if done.is_multiple_of(tenth) && done < self.total {
            say(&format!("{}: {done}/{}", self.what, self.total));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A database of its own for one measurement; a PostgreSQL one is
/// dropped with this value.
struct FreshDatabase {
    url: String,
    _postgres: Option<Database>,
}

async fn fresh_database(
    setup: &Setup,
    backend: Backend,
    name: &str,
) -> anyhow::Result<FreshDatabase> {
    Ok(match backend {
        Backend::Sqlite => FreshDatabase {
            url: format!(
                "sqlite://{}",
                setup.scratch.join(format!("{name}.db")).display()
            ),
            _postgres: None,
        },
        Backend::Postgres => {
            let database = Database::create(&format!("opsgate_bench_{name}"))
                .await
                .context("creating a database on PostgreSQL")?;
            FreshDatabase {
                url: database.url.clone(),
                _postgres: Some(database),
            }
        }
    })
}

/// An instance on a fresh database `name` whose target is never reached
/// (what the measurement posts calls nothing, or waits for approval), and
/// an operator's client for it.
async fn instance_calling_nothing(
    setup: &Setup,
    backend: Backend,
    name: &str,
) -> anyhow::Result<(FreshDatabase, reqwest::Client, Instance)> {
    let database = fresh_database(setup, backend, name).await?;
    let http = client_as(&token(&setup.opsgate, &database.url, "bench", "operator")?)?;
    let server = start(
        &setup.opsgate,
        &setup.runbooks,
        &database.url,
        "http://127.0.0.1:9",
        LEASE_TTL_MS,
    )?;
    Ok((database, http, server))
}

/// The bench's own connection to a database an instance uses (or used),
/// to count what it stored.
enum Peek {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Peek {
    async fn open(url: &str) -> anyhow::Result<Peek> {
        Ok(if url.starts_with("sqlite:") {
            Peek::Sqlite(sqlx::SqliteConnection::connect(url).await?)
        } else {
            Peek::Postgres(sqlx::PgConnection::connect(url).await?)
        })
    }

    /// The one number `sql` selects; 0 for NULL.
    async fn number(&mut self, sql: &'static str) -> anyhow::Result<i64> {
        let number: Option<i64> = match self {
            Peek::Sqlite(connection) => sqlx::query_scalar(sql).fetch_one(connection).await?,
            Peek::Postgres(connection) => sqlx::query_scalar(sql).fetch_one(connection).await?,
        };
        Ok(number.unwrap_or(0))
    }

    /// How many runs are in each state, as `state: count, …`.
    async fn run_states(&mut self) -> anyhow::Result<String> {
        const SQL: &str = "SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state";
        let rows: Vec<(String, i64)> = match self {
            Peek::Sqlite(connection) => sqlx::query_as(SQL).fetch_all(connection).await?,
            Peek::Postgres(connection) => sqlx::query_as(SQL).fetch_all(connection).await?,
        };
        Ok(rows
            .iter()
            .map(|(state, count)| format!("{state}: {count}"))
            .collect::<Vec<_>>()
            .join(", "))
    }
}

/// p50 and p99 of a sample, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Latencies {
    p50: f64,
    p99: f64,
}

impl Latencies {
    fn of(sample: &mut [f64]) -> anyhow::Result<Latencies> {
        if sample.is_empty() {
            bail!("nothing was measured");
        }
        let [p50, _, p99, _] = percentiles(sample);
        Ok(Latencies { p50, p99 })
    }

    fn show(self) -> String {
        format!("{} / {} ms", ms(self.p50), ms(self.p99))
    }
}

/// A figure in milliseconds, with the precision it deserves.
fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A count with thousands separated, as the table prints it.
fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[derive(Debug, Clone, Copy)]
struct Throughput {
    runs_per_second: f64,
    latency: Latencies,
}

/// What one instance measured with runs of every kind, on one database.
struct RunFigures {
    step_overhead: Latencies,
    /// Of a 3-step run one after another: from the event posted until the
    /// target receives the first call (intake, decision, claim).
    to_first_call: Latencies,
    /// From the target receiving the last call until the client has the
    /// run's answer, settled (the last commit and the long-poll's wake-up).
    after_last_call: Latencies,
    target_round_trip: Latencies,
    one_step: Latencies,
    three_steps: Latencies,
    one_step_concurrent: Throughput,
    three_steps_concurrent: Throughput,
    approval_to_dispatch: Latencies,
}

struct IngestFigures {
    events_per_second: f64,
    ack: Latencies,
    acknowledged: usize,
    refused: usize,
    failed: usize,
    first_failure: Option<String>,
    stored: i64,
}

struct RecoveryFigures {
    /// Runs started before the kill.
    posted: usize,
    /// Calls the target held open when the instance was killed.
    in_flight: usize,
    /// Runs a driver still had work to do for, after the kill.
    unsettled_at_kill: i64,
    resident_at_kill_mb: f64,
    after_restart_ms: f64,
    lease_wait_ms: f64,
    left_unsettled: i64,
    states: String,
}

struct MemoryFigures {
    idle_mb: f64,
    pending: usize,
    pending_mb: f64,
}

type Measured<T> = Result<T, String>;

/// Every figure of one backend, each measured on its own.
struct Figures {
    runs: Measured<RunFigures>,
    ingest: Measured<IngestFigures>,
    recovery: Measured<RecoveryFigures>,
    memory: Measured<MemoryFigures>,
}

async fn measure_backend(setup: &Setup, backend: Backend, counts: &Counts) -> Figures {
    fn kept<T>(result: anyhow::Result<T>) -> Measured<T> {
        result.map_err(|error| format!("failed: {error:#}"))
    }
    Figures {
        runs: kept(measure_runs(setup, backend, counts).await),
        ingest: kept(measure_ingest(setup, backend, counts).await),
        memory: kept(measure_memory(setup, backend, counts).await),
        recovery: kept(measure_recovery(setup, backend, counts).await),
    }
}

/// A loopback target that answers every call of the runbooks at once.
async fn answering_target() -> anyhow::Result<(Scripted, test_support::Running)> {
    let target = Scripted::default();
    for route in [
        "GET /check",
        "POST /act",
        "GET /verify",
        "POST /one",
        "GET /gated",
        "GET /direct",
    ] {
        target.on(route, vec![Reply::json(200, json!({"ok": true}))]);
    }
    let running = target.start().await?;
    Ok((target, running))
}

/// Runs one after another and at 32 concurrent, the time between a run's
/// calls at the target, and approvals, on one instance.
async fn measure_runs(
    setup: &Setup,
    backend: Backend,
    counts: &Counts,
) -> anyhow::Result<RunFigures> {
    let name = backend.name();
    let (target, target_server) = answering_target().await?;
    let database = fresh_database(setup, backend, "runs").await?;
    let operator = client_as(&token(&setup.opsgate, &database.url, "bench", "operator")?)?;
    let approver = client_as(&token(
        &setup.opsgate,
        &database.url,
        "bench-approver",
        "approver",
    )?)?;
    let server = start(
        &setup.opsgate,
        &setup.runbooks,
        &database.url,
        &target_server.url,
        LEASE_TTL_MS,
    )?;
    let base = &server.1;

    // What one call costs without opsgate: the target's own reply and the
    // loopback, from a client that keeps its connection, as opsgate does.
    let plain = reqwest::Client::new();
    let mut round_trips = Vec::new();
    for index in 0..WARM_UP + counts.sequential_runs {
        let started = Instant::now();
        plain
            .get(format!("{}/direct", target_server.url))
            .send()
            .await?
            .error_for_status()?;
        if index >= WARM_UP {
            round_trips.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let target_round_trip = Latencies::of(&mut round_trips)?;

    let (mut one_step, mut three_steps) = (Vec::new(), Vec::new());
    // When each 3-step run was posted, and answered settled.
    let mut three_step_ends = Vec::new();
    let sequential = Progress::new(
        format!("[{name}] 1-step and 3-step runs, one after another"),
        WARM_UP + counts.sequential_runs,
    );
    for index in 0..WARM_UP + counts.sequential_runs {
        let one = settle_one(&operator, base, "one", &format!("S1-{index}")).await?;
        let posted_at = Instant::now();
        let three = settle_one(&operator, base, "three", &format!("S3-{index}")).await?;
        three_step_ends.push((posted_at, Instant::now()));
        if index >= WARM_UP {
            one_step.push(one);
            three_steps.push(three);
        }
        sequential.one_done();
    }
    // One 3-step run at a time: the target's n-th call of each route
    // belongs to the n-th run.
    let (looks, acts, verifies) = (
        target.call_times("GET /check"),
        target.call_times("POST /act"),
        target.call_times("GET /verify"),
    );
    let (mut step_overhead, mut to_first_call, mut after_last_call) =
        (Vec::new(), Vec::new(), Vec::new());
    let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
    for run in WARM_UP..looks.len().min(acts.len()).min(verifies.len()) {
        for gap in [acts[run] - looks[run], verifies[run] - acts[run]] {
            step_overhead.push(millis(gap) - target_round_trip.p50);
        }
        let (posted_at, answered_at) = three_step_ends[run];
        to_first_call.push(millis(looks[run] - posted_at));
        after_last_call.push(millis(answered_at - verifies[run]));
    }

    let one_step_concurrent = concurrently(&operator, base, "one", counts, name).await?;
    let three_steps_concurrent = concurrently(&operator, base, "three", counts, name).await?;
    let approval_to_dispatch = approvals(&operator, &approver, base, &target, counts, name).await?;
    drop(server);
    Ok(RunFigures {
        step_overhead: Latencies::of(&mut step_overhead)?,
        to_first_call: Latencies::of(&mut to_first_call)?,
        after_last_call: Latencies::of(&mut after_last_call)?,
        target_round_trip,
        one_step: Latencies::of(&mut one_step)?,
        three_steps: Latencies::of(&mut three_steps)?,
        one_step_concurrent,
        three_steps_concurrent,
        approval_to_dispatch,
    })
}

/// `counts.concurrent_runs` runs of `kind`, posted by `CONCURRENCY`
/// senders, each waiting for its run to succeed before it posts the next.
async fn concurrently(
    http: &reqwest::Client,
    base: &str,
    kind: &'static str,
    counts: &Counts,
    backend: &str,
) -> anyhow::Result<Throughput> {
    let runs = counts.concurrent_runs;
    let next = Arc::new(AtomicUsize::new(0));
    let progress = Progress::new(
        format!("[{backend}] runs of `{kind}` from {CONCURRENCY} senders"),
        runs,
    );
    let started = Instant::now();
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, base, next, progress) = (
                http.clone(),
                base.to_owned(),
                next.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut took = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= runs {
                        return anyhow::Ok(took);
                    }
                    took.push(settle_one(&http, &base, kind, &format!("C-{kind}-{index}")).await?);
                    progress.one_done();
                }
            })
        })
        .collect();
    let mut took = Vec::with_capacity(runs);
    for sender in senders {
        took.extend(sender.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Throughput {
        runs_per_second: runs as f64 / seconds,
        latency: Latencies::of(&mut took)?,
    })
}

/// Runs of `gated`, one at a time: each waits for approval, is approved,
/// and is timed from the approval sent until the target receives the
/// step's call.
async fn approvals(
    operator: &reqwest::Client,
    approver: &reqwest::Client,
    base: &str,
    target: &Scripted,
    counts: &Counts,
    backend: &str,
) -> anyhow::Result<Latencies> {
    let warm_up = 5;
    let progress = Progress::new(
        format!("[{backend}] approvals, one after another"),
        warm_up + counts.approvals,
    );
    let mut took = Vec::new();
    for index in 0..warm_up + counts.approvals {
        let posted =
            post_until_taken(operator, base, &event("gated", &format!("A-{index}"))).await?;
        let run_id = posted.answer["run_id"]
            .as_str()
            .context("the gated event started no run")?
            .to_owned();
        let waiting: serde_json::Value = operator
            .get(format!("{base}/v1/runs/{run_id}/wait"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if waiting["state"] != "awaiting_approval" {
            bail!(
                "run {run_id} is {}, not awaiting approval",
                waiting["state"]
            );
        }
        let calls_before = target.calls("GET /gated");
        let approved_at = Instant::now();
        approver
            .post(format!("{base}/v1/runs/{run_id}/approve"))
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        let dispatched_at = loop {
            if let Some(at) = target.call_times("GET /gated").get(calls_before) {
                break *at;
            }
            if approved_at.elapsed() > Duration::from_secs(30) {
                bail!("run {run_id} was approved and its step never called");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        crate::wait_settled(operator, base, &run_id).await?;
        if index >= warm_up {
            took.push((dispatched_at - approved_at).as_secs_f64() * 1000.0);
        }
        progress.one_done();
    }
    Latencies::of(&mut took)
}

/// An event taken in: the intake's answer, how long the accepted post
/// took, and how many times it was refused for back-pressure before.
struct Posted {
    answer: serde_json::Value,
    ack_ms: f64,
    refused: usize,
}

/// Posts `event` until the instance takes it, waiting as `Retry-After`
/// asks after each 503.
async fn post_until_taken(
    http: &reqwest::Client,
    base: &str,
    event: &serde_json::Value,
) -> anyhow::Result<Posted> {
    let mut refused = 0;
    loop {
        let started = Instant::now();
        let response = http
            .post(format!("{base}/v1/events"))
            .json(event)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            refused += 1;
            let seconds = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            continue;
        }
        let answer = response.error_for_status()?.json().await?;
        return Ok(Posted {
            answer,
            ack_ms: started.elapsed().as_secs_f64() * 1000.0,
            refused,
        });
    }
}

/// What `CONCURRENCY` senders saw posting `total` events of `kind`.
struct Posting {
    seconds: f64,
    acks_ms: Vec<f64>,
    refused: usize,
    failures: Vec<String>,
}

/// Posts `total` events of `kind` from `CONCURRENCY` senders as fast as
/// the instance takes them, or as many as it takes until `deadline`; a
/// failed post is counted, not retried.
async fn post_many(
    http: &reqwest::Client,
    base: &str,
    kind: &'static str,
    total: usize,
    deadline: Option<Instant>,
    progress: Arc<Progress>,
) -> anyhow::Result<Posting> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, base, next, progress) = (
                http.clone(),
                base.to_owned(),
                next.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let (mut acks_ms, mut refused, mut failures) = (Vec::new(), 0, Vec::new());
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total || deadline.is_some_and(|deadline| Instant::now() > deadline)
                    {
                        return (acks_ms, refused, failures);
                    }
                    match post_until_taken(&http, &base, &event(kind, &format!("{kind}-{index}")))
                        .await
                    {
                        Ok(posted) => {
                            acks_ms.push(posted.ack_ms);
                            refused += posted.refused;
                        }
                        Err(error) => failures.push(format!("{error:#}")),
                    }
                    progress.one_done();
                }
            })
        })
        .collect();
    let mut posting = Posting {
        seconds: 0.0,
        acks_ms: Vec::with_capacity(total),
        refused: 0,
        failures: Vec::new(),
    };
    for sender in senders {
        let (acks_ms, refused, failures) = sender.await?;
        posting.acks_ms.extend(acks_ms);
        posting.refused += refused;
        posting.failures.extend(failures);
    }
    posting.seconds = started.elapsed().as_secs_f64();
    Ok(posting)
}

/// Events that match no runbook, from `CONCURRENCY` senders; then the
/// instance is killed (-9) and the events stored are counted against the
/// ones acknowledged.
async fn measure_ingest(
    setup: &Setup,
    backend: Backend,
    counts: &Counts,
) -> anyhow::Result<IngestFigures> {
    let (database, http, server) = instance_calling_nothing(setup, backend, "ingest").await?;
    let progress = Progress::new(
        format!("[{}] events that match no runbook", backend.name()),
        counts.ingest_events,
    );
    let mut posting = post_many(
        &http,
        &server.1,
        "ingest",
        counts.ingest_events,
        None,
        progress,
    )
    .await?;
    drop(server);
    let stored = Peek::open(&database.url)
        .await?
        .number("SELECT COUNT(*) FROM events WHERE kind = 'ingest'")
        .await?;
    Ok(IngestFigures {
        events_per_second: posting.acks_ms.len() as f64 / posting.seconds,
        ack: Latencies::of(&mut posting.acks_ms)?,
        acknowledged: posting.acks_ms.len(),
        refused: posting.refused,
        failed: posting.failures.len(),
        first_failure: posting.failures.into_iter().next(),
        stored,
    })
}

/// The instance's resident memory (`VmRSS`), in MB.
fn resident_mb(instance: &Instance) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", instance.0.id()))?;
    let kilobytes: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kilobytes / 1024.0)
}

/// Resident memory idle after start, and with `counts.pending_approvals`
/// runs waiting for an approval.
async fn measure_memory(
    setup: &Setup,
    backend: Backend,
    counts: &Counts,
) -> anyhow::Result<MemoryFigures> {
    let (database, http, server) = instance_calling_nothing(setup, backend, "memory").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_mb = resident_mb(&server)?;
    let progress = Progress::new(
        format!("[{}] runs left waiting for approval", backend.name()),
        counts.pending_approvals,
    );
    let posting = post_many(
        &http,
        &server.1,
        "gated",
        counts.pending_approvals,
        None,
        progress,
    )
    .await?;
    if let Some(failure) = posting.failures.first() {
        bail!(
            "{} events were not taken: {failure}",
            posting.failures.len()
        );
    }
    let pending = Peek::open(&database.url)
        .await?
        .number("SELECT COUNT(*) FROM runs WHERE state = 'awaiting_approval'")
        .await?;
    if pending != counts.pending_approvals as i64 {
        bail!(
            "{pending} runs await approval, not {}",
            counts.pending_approvals
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(MemoryFigures {
        idle_mb,
        pending: counts.pending_approvals,
        pending_mb: resident_mb(&server)?,
    })
}

/// A target that reads each call and never answers it: every call stays
/// in flight, its connection open, until this value is dropped.
struct HeldTarget {
    url: String,
    calls: Arc<AtomicUsize>,
    accepting: tokio::task::JoinHandle<()>,
}

impl HeldTarget {
    async fn start() -> anyhow::Result<HeldTarget> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let accepting = tokio::spawn(async move {
            // Dropped with the accepting task: every connection closes.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut connection, _)) = listener.accept().await {
                let counted = counted.clone();
                connections.spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0; 4096];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                        match connection.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    counted.fetch_add(1, Ordering::Relaxed);
                    std::future::pending::<()>().await;
                });
                // Reap the ones that ended, so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(HeldTarget {
            url,
            calls,
            accepting,
        })
    }
}

impl Drop for HeldTarget {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// `counts.in_flight_runs` runs (or as many as are taken within
/// `counts.in_flight_seconds`), each with its call in flight, then kill -9
/// of the instance and a new one started on the database: how long until
/// no run is left unsettled, and how much of that was waiting for the dead
/// instance's leases to expire.
async fn measure_recovery(
    setup: &Setup,
    backend: Backend,
    counts: &Counts,
) -> anyhow::Result<RecoveryFigures> {
    // Runs whose state means a driver still has work to do.
    const UNSETTLED: &str = "SELECT COUNT(*) FROM runs \
        WHERE state IN ('planned', 'approved', 'running', 'verifying', 'rolling_back')";
    let name = backend.name();
    let target = HeldTarget::start().await?;
    let database = fresh_database(setup, backend, "recovery").await?;
    let http = client_as(&token(&setup.opsgate, &database.url, "bench", "operator")?)?;
    let first = start(
        &setup.opsgate,
        &setup.runbooks,
        &database.url,
        &target.url,
        RECOVERY_LEASE_TTL_MS,
    )?;
    let progress = Progress::new(
        format!("[{name}] runs whose call does not come back"),
        counts.in_flight_runs,
    );
    let deadline = Instant::now() + Duration::from_secs(counts.in_flight_seconds);
    let posting = post_many(
        &http,
        &first.1,
        "held",
        counts.in_flight_runs,
        Some(deadline),
        progress,
    )
    .await?;
    if let Some(failure) = posting.failures.first() {
        bail!(
            "{} events were not taken: {failure}",
            posting.failures.len()
        );
    }
    let posted = posting.acks_ms.len();
    // Every run's call in flight, or as many as there will be.
    let (mut seen, mut last_change) = (0, Instant::now());
    loop {
        let now = target.calls.load(Ordering::Relaxed);
        if now >= posted || last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        if now != seen {
            (seen, last_change) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight = target.calls.load(Ordering::Relaxed);
    say(&format!(
        "[{name}] {posted} runs posted, {in_flight} calls in flight; kill -9 and restart"
    ));
    let resident_at_kill_mb = resident_mb(&first)?;
    drop(first);
    drop(target);

    let mut peek = Peek::open(&database.url).await?;
    let unsettled_at_kill = peek.number(UNSETTLED).await?;
    let leases_expire_ms = peek
        .number("SELECT MAX(lease_expires_ms) FROM runs WHERE lease_expires_ms IS NOT NULL")
        .await?;
    let restarted_ms = jiff::Timestamp::now().as_millisecond();
    let restarted = Instant::now();
    let _second = start(
        &setup.opsgate,
        &setup.runbooks,
        &database.url,
        "http://127.0.0.1:9",
        RECOVERY_LEASE_TTL_MS,
    )?;
    let left_unsettled = loop {
        let unsettled = peek.number(UNSETTLED).await?;
        if unsettled == 0 || restarted.elapsed() > Duration::from_secs(300) {
            break unsettled;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after_restart_ms = restarted.elapsed().as_secs_f64() * 1000.0;
    Ok(RecoveryFigures {
        posted,
        in_flight,
        unsettled_at_kill,
        resident_at_kill_mb,
        after_restart_ms,
        lease_wait_ms: (leases_expire_ms - restarted_ms).max(0) as f64,
        left_unsettled,
        states: peek.run_states().await?,
    })
}

/// Decisions per second on one thread: the gate of the example runbook
/// `grant-vpn-access` for its example event, with the six example Rego
/// policies, as `cargo bench -p policy` (`decide`) measures one.
fn policy_decisions_per_second(seconds: f64) -> anyhow::Result<f64> {
    use domain::{Event, NewEvent};
    use policy::{Facts, PolicySet, decide_with_policies};

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let runbook_path = examples.join("runbooks/grant-vpn-access.yaml");
    let text = std::fs::read_to_string(&runbook_path)?;
    let runbook = runbook::parse_runbook(&runbook_path, &text, connectors::STEP_ACTIONS)
        .map_err(|diagnostics| anyhow::anyhow!("the example runbook: {diagnostics:?}"))?;
    let event: NewEvent = serde_json::from_str(&std::fs::read_to_string(
        examples.join("events/vpn-access-contractor.json"),
    )?)?;
    let event = Event::from_new("evt-bench".to_owned(), event, jiff::Timestamp::now());
    let mut template_env = runbook::TemplateEnv::default();
    template_env.vars.insert(
        "ENDPOINT_API".to_owned(),
        "http://endpoint.example".to_owned(),
    );
    let plan = runbook.plan(&event, &template_env)?;
    let facts = Facts::from_event(&event, event.received_at);
    let policies = PolicySet::load(&examples.join("policies"))?;
    let decide = || decide_with_policies(&runbook, &plan, &event, &facts, Some(&policies));
    for _ in 0..100 {
        decide()?;
    }
    let (started, mut decisions) = (Instant::now(), 0_u64);
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..100 {
            std::hint::black_box(decide()?);
        }
        decisions += 100;
    }
    Ok(decisions as f64 / started.elapsed().as_secs_f64())
}

/// The Prefect version compared with, and what it needs installed beside
/// it.
const PREFECT_REQUIREMENTS: [&str; 2] = ["prefect==3.8.8", "fastapi>=0.139,<0.141"];
const PREFECT_VERSION: &str = "3.8.8";

/// The same 3-step remediation as a Prefect flow (`prefect_flow.py`),
/// one flow run after another, in a virtualenv under the target dir
/// (made once, then reused).
async fn measure_prefect(setup: &Setup, counts: &Counts) -> anyhow::Result<Latencies> {
    let home = setup.target_dir.join("bench-prefect");
    let venv = home.join("venv");
    let python = venv.join("bin/python");
    if !prefect_installed(&python) {
        say(&format!(
            "Prefect: making a virtualenv and installing {}",
            PREFECT_REQUIREMENTS.join(" ")
        ));
        let _ = std::fs::remove_dir_all(&venv);
        run_quietly(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv),
            "python3 -m venv",
        )?;
        run_quietly(
            std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PREFECT_REQUIREMENTS),
            "pip install",
        )?;
        if !prefect_installed(&python) {
            bail!("prefect {PREFECT_VERSION} is not importable after pip install");
        }
    }
    let (_, target_server) = answering_target().await?;
    say(&format!(
        "Prefect: {} flow runs (after {PREFECT_WARM_UP} to warm up), one after another",
        counts.prefect_runs
    ));
    let output = tokio::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/prefect_flow.py"))
        .arg(&target_server.url)
        .arg(counts.prefect_runs.to_string())
        .arg(PREFECT_WARM_UP.to_string())
        .env("PREFECT_HOME", home.join("home"))
        .env("PREFECT_LOGGING_LEVEL", "WARNING")
        .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        .env("DO_NOT_TRACK", "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("starting the flow")?;
    if !output.status.success() {
        bail!("the flow exited {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("prefect-bench "))
        .context("the flow printed no result")?;
    let result: serde_json::Value = serde_json::from_str(result)?;
    let mut took: Vec<f64> = result["took_ms"]
        .as_array()
        .context("no took_ms")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    Latencies::of(&mut took)
}

fn prefect_installed(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import prefect, fastapi; print(prefect.__version__)"])
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).trim() == PREFECT_VERSION
        })
}

/// Runs `command`; on failure, the last lines it wrote are the reason.
fn run_quietly(command: &mut std::process::Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} exited {}: {}", output.status, tail.join(" | "));
    }
    Ok(())
}

/// One cell of the table: a figure (and the number its goal is judged
/// on), or why there is none.
enum Cell {
    Figure { text: String, judged: f64 },
    Note(String),
}

/// A goal: the limit on each backend, and which side of it is good.
struct Goal {
    text: &'static str,
    limits: [f64; 2],
    direction: Direction,
}

#[derive(Clone, Copy)]
enum Direction {
    AtMost,
    AtLeast,
}

struct Row {
    measure: String,
    cells: [Cell; 2],
    goal: Option<Goal>,
}

impl Row {
    fn verdict(&self) -> String {
        let Some(goal) = &self.goal else {
            return String::new();
        };
        let verdicts: Vec<(&str, bool)> = [Backend::Sqlite, Backend::Postgres]
            .iter()
            .zip(&self.cells)
            .zip(goal.limits)
            .filter_map(|((backend, cell), limit)| match cell {
                Cell::Figure { judged, .. } => Some((
                    backend.name(),
                    match goal.direction {
                        Direction::AtMost => *judged <= limit,
                        Direction::AtLeast => *judged >= limit,
                    },
                )),
                Cell::Note(_) => None,
            })
            .collect();
        let word = |met: bool| if met { "met" } else { "not met" };
        match verdicts.as_slice() {
            [] => "not measured".to_owned(),
            [(_, first), (_, second)] if first == second => word(*first).to_owned(),
            _ => verdicts
                .iter()
                .map(|(backend, met)| format!("{backend}: {}", word(*met)))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// The cells of one measurement on both backends: `show` gives the text
/// and the judged number from a measured part.
fn cells<T>(
    backends: &[Measured<Figures>; 2],
    part: impl Fn(&Figures) -> &Measured<T>,
    show: impl Fn(&T) -> (String, f64),
) -> [Cell; 2] {
    let cell = |figures: &Measured<Figures>| match figures.as_ref().map(&part) {
        Err(skipped) => Cell::Note(skipped.clone()),
        Ok(Err(failed)) => Cell::Note(failed.clone()),
        Ok(Ok(measured)) => {
            let (text, judged) = show(measured);
            Cell::Figure { text, judged }
        }
    };
    [cell(&backends[0]), cell(&backends[1])]
}

fn rows(counts: &Counts, backends: &[Measured<Figures>; 2], policy: &Measured<f64>) -> Vec<Row> {
    fn runs(figures: &Figures) -> &Measured<RunFigures> {
        &figures.runs
    }
    fn ingest(figures: &Figures) -> &Measured<IngestFigures> {
        &figures.ingest
    }
    fn memory(figures: &Figures) -> &Measured<MemoryFigures> {
        &figures.memory
    }
    fn recovery(figures: &Figures) -> &Measured<RecoveryFigures> {
        &figures.recovery
    }
    let latencies = |pick: fn(&RunFigures) -> Latencies| {
        move |figures: &RunFigures| (pick(figures).show(), pick(figures).p50)
    };
    let throughput = |pick: fn(&RunFigures) -> Throughput| {
        move |figures: &RunFigures| {
            let measured = pick(figures);
            (
                format!(
                    "{} runs/s; {}",
                    count(measured.runs_per_second),
                    measured.latency.show()
                ),
                measured.runs_per_second,
            )
        }
    };
    let sequential = counts.sequential_runs;
    let concurrent = counts.concurrent_runs;
    vec![
        Row {
            measure: format!("1-step run, event posted → succeeded, p50 / p99 ({sequential} one after another)"),
            cells: cells(backends, runs, latencies(|figures| figures.one_step)),
            goal: Some(Goal {
                text: "p50 ≤ 1.7 ms SQLite, ≤ 2 ms PostgreSQL",
                limits: [1.7, 2.0],
                direction: Direction::AtMost,
            }),
        },
        Row {
            measure: format!("3-step run, event posted → verified, p50 / p99 ({sequential} one after another)"),
            cells: cells(backends, runs, latencies(|figures| figures.three_steps)),
            goal: Some(Goal {
                text: "p50 ≤ 3 ms",
                limits: [3.0, 3.0],
                direction: Direction::AtMost,
            }),
        },
        Row {
            measure: "3-step run: event posted → first call at the target, p50 / p99".to_owned(),
            cells: cells(backends, runs, latencies(|figures| figures.to_first_call)),
            goal: None,
        },
        Row {
            measure: "per-step overhead p50 / p99 (between a run's calls at the target, less the target's own round trip)".to_owned(),
            cells: cells(backends, runs, latencies(|figures| figures.step_overhead)),
            goal: None,
        },
        Row {
            measure: "3-step run: last call at the target → settled run answered, p50 / p99".to_owned(),
            cells: cells(backends, runs, latencies(|figures| figures.after_last_call)),
            goal: None,
        },
        Row {
            measure: "the target's own round trip p50 / p99 (no opsgate)".to_owned(),
            cells: cells(backends, runs, latencies(|figures| figures.target_round_trip)),
            goal: None,
        },
        Row {
            measure: format!("1-step runs at {CONCURRENCY} concurrent ({concurrent} runs): runs/s; p50 / p99"),
            cells: cells(backends, runs, throughput(|figures| figures.one_step_concurrent)),
            goal: Some(Goal {
                text: "≥ 1,000 runs/s SQLite, ≥ 600 PostgreSQL",
                limits: [1_000.0, 600.0],
                direction: Direction::AtLeast,
            }),
        },
        Row {
            measure: format!("3-step runs at {CONCURRENCY} concurrent ({concurrent} runs): runs/s; p50 / p99"),
            cells: cells(backends, runs, throughput(|figures| figures.three_steps_concurrent)),
            goal: None,
        },
        Row {
            measure: format!("durable ingest, {} events from {CONCURRENCY} senders: events/s", count(counts.ingest_events as f64)),
            cells: cells(backends, ingest, |figures: &IngestFigures| {
                (format!("{} events/s", count(figures.events_per_second)), figures.events_per_second)
            }),
            goal: Some(Goal {
                text: "≥ 10,000 events/s",
                limits: [10_000.0, 10_000.0],
                direction: Direction::AtLeast,
            }),
        },
        Row {
            measure: "durable ingest: ack p50 / p99".to_owned(),
            cells: cells(backends, ingest, |figures: &IngestFigures| (figures.ack.show(), figures.ack.p99)),
            goal: Some(Goal {
                text: "p99 ≤ 20 ms",
                limits: [20.0, 20.0],
                direction: Direction::AtMost,
            }),
        },
        Row {
            measure: "durable ingest: acknowledged vs stored after kill -9 (refused 503s retried after Retry-After)".to_owned(),
            cells: cells(backends, ingest, |figures: &IngestFigures| {
                let lost = figures.acknowledged as i64 - figures.stored;
                let mut text = format!(
                    "{} acked, {} stored, {} lost; {} refused (503), {} failed",
                    count(figures.acknowledged as f64),
                    count(figures.stored as f64),
                    lost.max(0),
                    count(figures.refused as f64),
                    figures.failed
                );
                if let Some(failure) = &figures.first_failure {
                    text.push_str(&format!(" (first: {failure})"));
                }
                (text, lost as f64)
            }),
            goal: Some(Goal {
                text: "none lost",
                limits: [0.0, 0.0],
                direction: Direction::AtMost,
            }),
        },
        Row {
            measure: "policy decisions/s on one core (guardrails + 6 example Rego policies; no store)".to_owned(),
            cells: match policy {
                Ok(per_second) => [
                    Cell::Figure { text: format!("{} /s", count(*per_second)), judged: *per_second },
                    Cell::Note("(same code: no store involved)".to_owned()),
                ],
                Err(failed) => [Cell::Note(format!("failed: {failed}")), Cell::Note(String::new())],
            },
            goal: None,
        },
        Row {
            measure: format!("approval sent → first step's call at the target, p50 / p99 ({} approvals)", counts.approvals),
            cells: cells(backends, runs, latencies(|figures| figures.approval_to_dispatch)),
            goal: None,
        },
        Row {
            measure: format!(
                "recovery after kill -9 with up to {} runs' calls in flight (as many as are taken within {} s): restart → none left unsettled, of which waiting for the dead leases (ttl {} s) to expire",
                count(counts.in_flight_runs as f64),
                counts.in_flight_seconds,
                RECOVERY_LEASE_TTL_MS / 1000
            ),
            cells: cells(backends, recovery, |figures: &RecoveryFigures| {
                let mut text = format!(
                    "{} s, of which {} s lease wait; {} runs posted, {} calls in flight, {} unsettled at kill (opsgate {:.0} MB then); ended {}",
                    ms(figures.after_restart_ms / 1000.0),
                    ms(figures.lease_wait_ms / 1000.0),
                    count(figures.posted as f64),
                    count(figures.in_flight as f64),
                    count(figures.unsettled_at_kill as f64),
                    figures.resident_at_kill_mb,
                    figures.states
                );
                if figures.left_unsettled > 0 {
                    text.push_str(&format!("; {} still unsettled", figures.left_unsettled));
                }
                (text, figures.after_restart_ms)
            }),
            goal: Some(Goal {
                text: "≤ 2 s for 10,000",
                limits: [2_000.0, 2_000.0],
                direction: Direction::AtMost,
            }),
        },
        Row {
            measure: "resident memory (VmRSS of opsgate), idle after start".to_owned(),
            cells: cells(backends, memory, |figures: &MemoryFigures| (format!("{:.1} MB", figures.idle_mb), figures.idle_mb)),
            goal: Some(Goal {
                text: "≤ 50 MB",
                limits: [50.0, 50.0],
                direction: Direction::AtMost,
            }),
        },
        Row {
            measure: format!("resident memory with {} runs awaiting approval", count(counts.pending_approvals as f64)),
            cells: cells(backends, memory, |figures: &MemoryFigures| {
                (format!("{:.1} MB ({} pending)", figures.pending_mb, count(figures.pending as f64)), figures.pending_mb)
            }),
            goal: Some(Goal {
                text: "≤ 300 MB with 10,000",
                limits: [300.0, 300.0],
                direction: Direction::AtMost,
            }),
        },
    ]
}

fn print_report(
    counts: &Counts,
    backends: &[Measured<Figures>; 2],
    policy: &Measured<f64>,
    prefect: &Measured<Latencies>,
) {
    println!("| measure | SQLite | PostgreSQL | goal | met? |");
    println!("|---|---|---|---|---|");
    for row in rows(counts, backends, policy) {
        let text = |cell: &Cell| match cell {
            Cell::Figure { text, .. } | Cell::Note(text) => text.replace('|', "/"),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.measure,
            text(&row.cells[0]),
            text(&row.cells[1]),
            row.goal.as_ref().map_or("—", |goal| goal.text),
            row.verdict()
        );
    }
    println!();
    match prefect {
        Ok(prefect) => {
            println!(
                "Prefect {PREFECT_VERSION}, the same 3-step remediation as a flow of three tasks ({} flow runs one after another, local temporary server): p50 / p99 {}",
                counts.prefect_runs,
                prefect.show()
            );
            for (backend, figures) in [Backend::Sqlite, Backend::Postgres].iter().zip(backends) {
                match figures.as_ref().map(|figures| &figures.runs) {
                    Ok(Ok(runs)) => println!(
                        "Prefect p50 / opsgate 3-step p50 on {}: {:.0}×",
                        backend.name(),
                        prefect.p50 / runs.three_steps.p50
                    ),
                    _ => println!(
                        "Prefect p50 / opsgate 3-step p50 on {}: not measured",
                        backend.name()
                    ),
                }
            }
        }
        Err(reason) => println!("Prefect: not measured: {reason}"),
    }
    println!();
    println!("{}", machine());
}

/// The machine and the build measured, in one line.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kilobytes| kilobytes.parse::<f64>().ok())
        })
        .map_or(0.0, |kilobytes| kilobytes / 1024.0 / 1024.0);
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    format!(
        "Machine: {cores} cores, {model}, {memory_gb:.0} GB, Linux {}; build {commit}{dirty}",
        kernel.trim()
    )
}
