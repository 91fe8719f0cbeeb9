//! What governance costs per step on SQLite: committing one engine
//! transition (the run's new state, the attempt row it closes and the one it
//! opens, two audit records with their hashes), next to the pure engine step
//! that produces it, and how fast the audit chain verifies.
//!
//! The transition measured is the common one: step k's call succeeded, step
//! k+1's call starts. Runs are short (as real runbooks are), so the machine
//! JSON stays realistic; a new run is started outside the timed section
//! whenever the current one reaches its last step. The database is a file in
//! a temporary directory, opened exactly as the server opens it (WAL,
//! `synchronous = FULL`: every commit synced to disk), and once more with
//! `synchronous = NORMAL`, which does not sync, to show what durability
//! costs. Results: docs/benchmarks.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use domain::{
    AttemptOutcome, Decision, DecisionKind, Event, EventStatus, Plan, PlannedCall, PlannedStep,
    RetryPolicy, RiskClass,
};
use engine::{Effect, Input, Transition};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use store::{AuditEntry, Disposition, Intake, NewRun, Store};

#[path = "common/unmatched.rs"]
mod unmatched;
use unmatched::unmatched_intake;

/// Steps per run: a long runbook, still a realistic one.
const STEPS_PER_RUN: usize = 12;
/// The size of the chain `verify_audit` walks.
const AUDIT_RECORDS: u64 = 10_000;

fn plan() -> Plan {
    let steps = (1..=STEPS_PER_RUN)
        .map(|index| PlannedStep {
            id: format!("step-{index}"),
            call: PlannedCall {
                action: "http.request".into(),
                request: json!({
                    "method": "POST",
                    "url": format!("https://mdm.example.com/api/v2/devices/edge-1/services/vpn/step-{index}"),
                    "headers": {"content-type": "application/json"},
                    "body": {"reason": "opsgate remediation", "ticket": "INC-1234"},
                }),
                timeout_ms: 10_000,
            },
            retry: RetryPolicy::none(),
            idempotent: true,
            rollback: None,
            requires_approval: false,
            if_unverified: false,
        })
        .collect();
    let mut plan = Plan {
        precheck: None,
        runbook_id: "restart-vpn".into(),
        runbook_version: "sha256:0f3a".into(),
        title: "Restart the VPN service on a device".into(),
        risk: RiskClass::Reversible,
        inputs: json!({"device": "edge-1", "service": "vpn"}),
        targets: vec!["edge-1".into()],
        steps,
        verify: None,
        ends_at: None,
        on_call: None,
        rollout: None,
        plan_hash: String::new(),
    };
    plan.plan_hash = plan.compute_hash();
    plan
}

fn call_succeeded() -> Input {
    Input::CallFinished(AttemptOutcome::Succeeded {
        response: json!({"status": 200, "body": {"state": "running"}}),
    })
}

/// Drives runs through a store, one committed transition at a time.
struct Driver {
    store: Store,
    plan: Plan,
    clock: Timestamp,
    runs_started: u64,
    run_id: String,
    machine: engine::Run,
    revision: i64,
    /// Audit records written so far.
    records: u64,
}

impl Driver {
    async fn new(store: Store) -> Driver {
        let mut driver = Driver {
            store,
            plan: plan(),
            clock: Timestamp::from_second(1_750_000_000).unwrap(),
            runs_started: 0,
            run_id: String::new(),
            machine: engine::start(&allow(), &plan(), Vec::new(), jiff::Timestamp::UNIX_EPOCH).run,
            revision: 0,
            records: 0,
        };
        driver.start_run().await;
        driver
    }

    fn tick(&mut self) -> Timestamp {
        self.clock += SignedDuration::from_millis(7);
        self.clock
    }

    /// Stores an event with a new run and begins it: step 1's call is in flight.
    async fn start_run(&mut self) {
        self.runs_started += 1;
        let now = self.tick();
        let run_id = format!("run-{}", self.runs_started);
        let event = Event {
            id: format!("event-{}", self.runs_started),
            source: "alertmanager".into(),
            kind: "VpnDown".into(),
            dedup_key: format!("vpn-down-{}", self.runs_started),
            subject: "edge-1".into(),
            fields: json!({"severity": "critical", "device": "edge-1"}),
            status: EventStatus::Firing,
            received_at: now,
            occurred_at: None,
        };
        let decision = allow();
        let machine = engine::start(
            &decision,
            &self.plan,
            Vec::new(),
            jiff::Timestamp::UNIX_EPOCH,
        )
        .run;
        let intake = Intake {
            records: vec![AuditEntry::new(
                "event.received",
                "opsgate",
                json!({"source": "alertmanager"}),
            )],
            event,
            disposition: Disposition::StartedRun,
            detail: None,
            recurrence_key: None,
            requester: Some("source:alertmanager".into()),
            run: Some(NewRun {
                id: run_id.clone(),
                plan: self.plan.clone(),
                records: vec![AuditEntry::new(
                    "run.decided",
                    "opsgate",
                    json!({"decision": "allow", "plan_hash": self.plan.plan_hash}),
                )],
                decision,
                timers: Vec::new(),
                writebacks: Vec::new(),
                machine: machine.clone(),
            }),
            one_run_per_problem: None,
            earlier_run_records: None,
        };
        self.store.intake(intake, now).await.unwrap();
        self.records += 2;
        (self.run_id, self.machine, self.revision) = (run_id, machine, 1);
        let begin = self.transition(Input::Begin, now);
        self.commit(&begin, now).await;
    }

    fn transition(&self, input: Input, now: Timestamp) -> Transition {
        engine::step(&self.machine, &self.plan, input, now, 0.5).unwrap()
    }

    async fn commit(&mut self, transition: &Transition, now: Timestamp) {
        self.revision = self
            .store
            .commit(&self.run_id, self.revision, transition, "opsgate", now)
            .await
            .unwrap();
        self.records += transition.records.len() as u64;
        self.machine = transition.run.clone();
    }

    /// The transition "step k succeeded, step k+1 starts", starting a new
    /// run first when the current one is on its last step.
    async fn next_step(&mut self) -> (Transition, Timestamp) {
        let current = self
            .machine
            .progress
            .current
            .as_ref()
            .expect("a call is in flight");
        if current.step_index + 1 == STEPS_PER_RUN {
            let now = self.tick();
            let last = self.transition(call_succeeded(), now);
            self.commit(&last, now).await;
            self.start_run().await;
        }
        let now = self.tick();
        let transition = self.transition(call_succeeded(), now);
        debug_assert!(matches!(transition.effect, Some(Effect::Call { .. })));
        debug_assert_eq!(transition.records.len(), 2);
        (transition, now)
    }

    /// Commits `iterations` step transitions; only the commits are timed.
    async fn timed_step_commits(&mut self, iterations: u64) -> Duration {
        let mut timed = Duration::ZERO;
        for _ in 0..iterations {
            let (transition, now) = self.next_step().await;
            let started = Instant::now();
            let revision = self
                .store
                .commit(
                    &self.run_id,
                    self.revision,
                    black_box(&transition),
                    "opsgate",
                    now,
                )
                .await
                .unwrap();
            timed += started.elapsed();
            self.revision = revision;
            self.records += transition.records.len() as u64;
            self.machine = transition.run;
        }
        timed
    }
}

fn allow() -> Decision {
    Decision {
        kind: DecisionKind::Allow,
        reasons: vec!["risk reversible, target in the allow list".into()],
        expires_after_ms: None,
        approvals_required: 1,
        stages: Vec::new(),
        policy_version: None,
    }
}

async fn open_store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    Store::open(&url).await.unwrap()
}

/// The store as the server opened it before commits were synced.
async fn open_store_without_sync(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    Store::open_without_sync_for_benchmarks(&url).await.unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn per_step(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("per_step");
    group.throughput(Throughput::Elements(1));

    let plan = plan();
    let mut machine = engine::start(&allow(), &plan, Vec::new(), jiff::Timestamp::UNIX_EPOCH).run;
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    let mut next = |input| {
        machine = engine::step(&machine, &plan, input, now, 0.5).unwrap().run;
    };
    next(Input::Begin);
    for _ in 0..STEPS_PER_RUN / 2 {
        next(call_succeeded());
    }
    group.bench_function("engine_step", |b| {
        b.iter_batched(
            call_succeeded,
            |input| engine::step(black_box(&machine), &plan, input, now, 0.5).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let dir = tempfile::tempdir().unwrap();
    let mut driver = runtime.block_on(async { Driver::new(open_store(&dir).await).await });
    group.bench_function("sqlite_commit", |b| {
        b.iter_custom(|iterations| runtime.block_on(driver.timed_step_commits(iterations)))
    });
    let dir = tempfile::tempdir().unwrap();
    let mut driver =
        runtime.block_on(async { Driver::new(open_store_without_sync(&dir).await).await });
    group.bench_function("sqlite_commit_without_sync", |b| {
        b.iter_custom(|iterations| runtime.block_on(driver.timed_step_commits(iterations)))
    });

    // The same commit on PostgreSQL, when a server is reachable
    // (OPSGATE_TEST_POSTGRES_URL, or the local one with trust auth).
    let admin = std::env::var("OPSGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    match runtime.block_on(fresh_postgres_database(&admin)) {
        Some(url) => {
            let mut driver =
                runtime.block_on(async { Driver::new(Store::open(&url).await.unwrap()).await });
            group.bench_function("postgres_commit", |b| {
                b.iter_custom(|iterations| runtime.block_on(driver.timed_step_commits(iterations)))
            });
        }
        None => eprintln!("SKIPPED per_step/postgres_commit: no PostgreSQL at {admin}"),
    }
    group.finish();
}

/// A new, empty database for the benchmark (left behind for inspection,
/// replaced on the next run).
async fn fresh_postgres_database(admin: &str) -> Option<String> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(admin).await.ok()?;
    for statement in [
        "DROP DATABASE IF EXISTS opsgate_bench_commit WITH (FORCE)",
        "CREATE DATABASE opsgate_bench_commit",
    ] {
        sqlx::query(statement).execute(&mut connection).await.ok()?;
    }
    Some(format!(
        "{}/opsgate_bench_commit",
        admin.rsplit_once('/')?.0
    ))
}

/// Stores `iterations` events that start no run (the event and two audit
/// records, one transaction each), one after another as sequential posts
/// would; returns how long they took.
async fn timed_intakes(store: &Store, next_event: &mut u64, iterations: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        *next_event += 1;
        let now = Timestamp::from_second(1_750_000_000).unwrap()
            + SignedDuration::from_millis(*next_event as i64);
        let intake = unmatched_intake(&next_event.to_string(), now);
        store.intake(black_box(intake), now).await.unwrap();
    }
    started.elapsed()
}

/// What an acknowledged event costs with its commit synced to disk (as
/// the server runs) and without (as it ran before).
fn intake(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("intake");
    group.throughput(Throughput::Elements(1));
    for (name, synced) in [("sqlite_synced", true), ("sqlite_without_sync", false)] {
        let dir = tempfile::tempdir().unwrap();
        let store = runtime.block_on(async {
            if synced {
                open_store(&dir).await
            } else {
                open_store_without_sync(&dir).await
            }
        });
        let mut next_event = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(timed_intakes(&store, &mut next_event, iterations))
            })
        });
    }
    group.finish();
}

fn audit_verification(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime.block_on(async {
        let mut driver = Driver::new(open_store(&dir).await).await;
        // One step writes at most 8 records (when it starts a new run).
        while driver.records + 8 <= AUDIT_RECORDS {
            let (transition, now) = driver.next_step().await;
            driver.commit(&transition, now).await;
        }
        let filler: Vec<_> = (driver.records..AUDIT_RECORDS)
            .map(|_| AuditEntry::new("operator.note", "alice", json!({"note": "checked"})))
            .collect();
        let now = driver.tick();
        driver.store.append_audit(None, &filler, now).await.unwrap();
        driver.store
    });
    let report = runtime.block_on(store.verify_audit()).unwrap();
    assert_eq!((report.records, report.first_break), (AUDIT_RECORDS, None));

    let mut group = c.benchmark_group("audit");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(AUDIT_RECORDS));
    group.bench_function("verify_10k_records", |b| {
        b.iter(|| runtime.block_on(store.verify_audit()).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = governance;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = per_step, intake, audit_verification
}
criterion_main!(governance);
