//! The store's integration tests: each test opens a fresh database — a
//! SQLite file in its own temporary directory, or a new PostgreSQL database
//! — and drives it with the real engine, so what is checked is what the
//! runtime would actually commit. Tests listed in `on_both_backends!` run
//! once per backend; the PostgreSQL run needs a server (by default
//! postgres://postgres@127.0.0.1:5432, or `OPSGATE_TEST_POSTGRES_URL`) and
//! says when it skips; `OPSGATE_REQUIRE_EXTERNAL=1` makes a skip a failure.
//!
//! Tampering tests reach past the store with a raw sqlx connection to the
//! same file, as an attacker (or a careless operator) with the file would.

mod admission;
mod audit;
mod commit;
mod durability;
mod freezes;
mod intake;
mod leases;
mod open;
mod problems;
mod signatures;
mod timers;
mod tokens;
mod writebacks;

use std::path::PathBuf;

use domain::{
    AttemptOutcome, Decision, DecisionKind, Event, EventStatus, Plan, PlannedCall, PlannedStep,
    RetryPolicy, RiskClass,
};
use engine::{Input, Transition};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sqlx::{Connection, SqliteConnection};
use store::{AuditEntry, Disposition, Intake, IntakeOutcome, NewRun, Store};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// The backend the current test runs on (SQLite outside `on_both_backends!`).
    pub(crate) static BACKEND: Backend;
}

/// Generates, for each named `async fn`, a module with one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    $crate::BACKEND.scope($crate::Backend::Sqlite, super::$name()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if $crate::postgres_reachable().await {
                        $crate::BACKEND.scope($crate::Backend::Postgres, super::$name()).await
                    }
                }
            }
        )*
    };
}

/// Whether the test PostgreSQL answers; if not, says the test skips (a
/// failure when `OPSGATE_REQUIRE_EXTERNAL=1`).
pub(crate) async fn postgres_reachable() -> bool {
    let url = test_support::postgres::admin_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(_) => true,
        Err(error) => {
            let required =
                std::env::var("OPSGATE_REQUIRE_EXTERNAL").is_ok_and(|value| value == "1");
            assert!(
                !required,
                "PostgreSQL at {url} is unreachable ({error}) and OPSGATE_REQUIRE_EXTERNAL=1"
            );
            eprintln!("SKIPPED: PostgreSQL at {url} is unreachable ({error})");
            false
        }
    }
}

/// A store on a new database; the database lives as long as the fixture.
struct Fixture {
    store: Store,
    place: Place,
}

enum Place {
    SqliteFile { path: PathBuf, _dir: TempDir },
    PostgresDatabase(test_support::postgres::Database),
}

impl Fixture {
    async fn new() -> Fixture {
        match BACKEND
            .try_with(|backend| *backend)
            .unwrap_or(Backend::Sqlite)
        {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path = dir.path().join("opsgate.db");
                let store = Store::open(&url_for(&path)).await.expect("store opens");
                Fixture {
                    store,
                    place: Place::SqliteFile { path, _dir: dir },
                }
            }
            Backend::Postgres => {
                let database = test_support::postgres::Database::create("opsgate_test")
                    .await
                    .expect("create a test database");
                let store = Store::open(&database.url).await.expect("store opens");
                Fixture {
                    store,
                    place: Place::PostgresDatabase(database),
                }
            }
        }
    }

    fn url(&self) -> String {
        match &self.place {
            Place::SqliteFile { path, .. } => url_for(path),
            Place::PostgresDatabase(database) => database.url.clone(),
        }
    }

    /// A SQLite connection that bypasses the store (SQLite-only tests).
    async fn raw(&self) -> SqliteConnection {
        assert!(
            matches!(self.place, Place::SqliteFile { .. }),
            "raw() is for SQLite-only tests"
        );
        SqliteConnection::connect(&self.url())
            .await
            .expect("raw connection")
    }

    /// Runs test-authored SQL past the store, as an attacker (or a careless
    /// operator) with database access would; returns the rows affected.
    async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.place {
            Place::SqliteFile { .. } => sqlx::query(sql)
                .execute(&mut self.raw().await)
                .await?
                .rows_affected(),
            Place::PostgresDatabase(database) => {
                let mut connection = sqlx::PgConnection::connect(&database.url).await?;
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Stores an event that starts a run of `plan`, decided `decision`.
    async fn start_run(
        &self,
        run_id: &str,
        dedup_key: &str,
        plan: &Plan,
        decision: DecisionKind,
        now: Timestamp,
    ) -> IntakeOutcome {
        let intake = intake_starting_run(run_id, dedup_key, plan, decision, now);
        self.store.intake(intake, now).await.expect("intake")
    }

    /// Feeds `input` to the run through the engine and commits the
    /// transition at the run's current revision, as the runtime does.
    async fn advance(&self, run_id: &str, input: Input, now: Timestamp) -> Transition {
        let run = self
            .store
            .run(run_id)
            .await
            .expect("read run")
            .expect("run exists");
        let transition =
            engine::step(&run.machine, &run.plan, input, now, 0.5).expect("engine accepts input");
        self.store
            .commit(run_id, run.revision, &transition, "opsgate", now)
            .await
            .expect("commit");
        transition
    }

    async fn audit_count(&self) -> usize {
        self.store.audit(None).await.expect("audit").len()
    }
}

fn url_for(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A fixed, whole-second point in time plus `offset_ms`.
fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap() + SignedDuration::from_millis(offset_ms)
}

fn call(path: &str) -> PlannedCall {
    PlannedCall {
        action: "http.request".into(),
        request: json!({"method": "POST", "url": format!("http://device.test{path}")}),
        timeout_ms: 5_000,
    }
}

/// An idempotent step with no retry and no rollback.
fn planned_step(id: &str) -> PlannedStep {
    PlannedStep {
        id: id.to_owned(),
        call: call(&format!("/{id}")),
        retry: RetryPolicy::none(),
        idempotent: true,
        rollback: None,
        requires_approval: false,
        if_unverified: false,
    }
}

fn plan_with(steps: Vec<PlannedStep>) -> Plan {
    let mut plan = Plan {
        precheck: None,
        runbook_id: "restart-service".into(),
        runbook_version: "v1".into(),
        title: "Restart a wedged service".into(),
        risk: RiskClass::Reversible,
        inputs: json!({"device": "edge-1"}),
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

/// A plan of `count` plain steps named `step-1` .. `step-N`.
fn plan(count: usize) -> Plan {
    plan_with(
        (1..=count)
            .map(|index| planned_step(&format!("step-{index}")))
            .collect(),
    )
}

fn event(event_id: &str, dedup_key: &str, now: Timestamp) -> Event {
    Event {
        id: event_id.to_owned(),
        source: "alertmanager".into(),
        kind: "ServiceDown".into(),
        dedup_key: dedup_key.to_owned(),
        subject: "edge-1".into(),
        fields: json!({"severity": "critical"}),
        status: EventStatus::Firing,
        received_at: now,
        occurred_at: None,
    }
}

fn received(event: &Event) -> AuditEntry {
    AuditEntry::new(
        "event.received",
        "opsgate",
        json!({"source": event.source, "dedup_key": event.dedup_key}),
    )
}

/// An intake that stores an event and starts no run.
fn intake_without_run(event_id: &str, dedup_key: &str, now: Timestamp) -> Intake {
    let event = event(event_id, dedup_key, now);
    Intake {
        records: vec![
            received(&event),
            AuditEntry::new("event.no_match", "opsgate", json!({"runbooks": 3})),
        ],
        event,
        disposition: Disposition::NoMatch,
        detail: Some("no runbook matches".into()),
        recurrence_key: None,
        requester: Some("source:alertmanager".into()),
        run: None,
        one_run_per_problem: None,
        earlier_run_records: None,
    }
}

/// How long a run started by [`intake_starting_run`] waits for approval.
const APPROVAL_EXPIRES_MS: u64 = 3_600_000;

/// An intake that stores an event (`event-<run_id>`) and starts `run_id`,
/// with the records the runtime writes.
fn intake_starting_run(
    run_id: &str,
    dedup_key: &str,
    plan: &Plan,
    decision: DecisionKind,
    now: Timestamp,
) -> Intake {
    let event = event(&format!("event-{run_id}"), dedup_key, now);
    let decision = Decision {
        kind: decision,
        reasons: vec!["policy says so".into()],
        expires_after_ms: Some(APPROVAL_EXPIRES_MS),
        approvals_required: 1,
        stages: Vec::new(),
        policy_version: None,
    };
    let started = engine::start(&decision, plan, Vec::new(), now);
    let machine = started.run;
    let run = NewRun {
        id: run_id.to_owned(),
        plan: plan.clone(),
        records: vec![
            AuditEntry::new(
                "run.matched",
                "opsgate",
                json!({"runbook": plan.runbook_id}),
            ),
            AuditEntry::new(
                "run.planned",
                "opsgate",
                serde_json::to_value(plan).unwrap(),
            ),
            AuditEntry::new(
                "run.decided",
                "opsgate",
                json!({"decision": decision.kind.as_str(), "plan_hash": plan.plan_hash}),
            ),
            AuditEntry::new(
                "run.state",
                "opsgate",
                json!({"to": machine.state.as_str()}),
            ),
        ],
        decision,
        machine,
        timers: started.timers,
        writebacks: Vec::new(),
    };
    Intake {
        records: vec![received(&event)],
        event,
        disposition: Disposition::StartedRun,
        detail: Some("started run".into()),
        recurrence_key: None,
        requester: Some("source:alertmanager".into()),
        run: Some(run),
        one_run_per_problem: None,
        earlier_run_records: None,
    }
}

fn succeeded() -> Input {
    Input::CallFinished(AttemptOutcome::Succeeded {
        response: json!({"status": 200}),
    })
}

/// Asserts that the store's audit rows form an unbroken chain from genesis,
/// each hash recomputable from the row.
fn assert_chained(rows: &[store::AuditRow]) {
    let mut prev_hash = store::GENESIS_HASH.to_owned();
    for (index, row) in rows.iter().enumerate() {
        assert_eq!(row.seq, index as i64 + 1, "sequence numbers are dense");
        assert_eq!(
            row.prev_hash, prev_hash,
            "record {} links to its predecessor",
            row.seq
        );
        let recomputed = store::chain_hash(&row.prev_hash, &row.chained());
        assert_eq!(
            row.hash, recomputed,
            "record {} hashes its content",
            row.seq
        );
        prev_hash = row.hash.clone();
    }
}
