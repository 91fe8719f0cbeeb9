//! All of opsgate's SQL: events, runs, attempts and the hash-chained audit log.
//!
//! The store's unit of work is the *transition*: a run's new state, the
//! attempt rows it opens or closes, and its audit records are committed in
//! one database transaction, so the audit log can never disagree with the
//! runs it describes, and nothing is half-stored. The runtime carries out a
//! side effect only after that commit returns.
//!
//! SQLite (WAL) is the embedded default. All writes go through one
//! connection: SQLite allows one writer at a time anyway, and a single
//! writer makes the audit chain's "read the last hash, append the next"
//! trivially race-free. Reads use a separate pool and never block on it.

mod anchor;
mod audit;
mod backend;
mod model;
mod postgres;
mod rows;
mod shared;
mod sqlite;
mod tokens;

pub use anchor::{Anchor, AnchorBreak, body_signature};
pub use audit::{AuditRow, ChainBreak, ChainReport, ChainedRecord, GENESIS_HASH, chain_hash};
pub use model::{
    AttemptRow, AuditEntry, ClaimedTimer, ClaimedWriteback, ConnectionDurability, Disposition,
    EventRow, Intake, IntakeOutcome, Lease, NewRun, NewWriteback, RunFilter, RunRow, TimerFiring,
    TimerRow, WritebackRow,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use tokens::TokenRow;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{url}`: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl { url: String },
    #[error("run `{run_id}` was changed by someone else (expected revision {expected})")]
    Conflict { run_id: String, expected: i64 },
    #[error(
        "the database's schema is at version {found}, newer than this opsgate knows ({known}): \
         upgrade opsgate, or point it at another database"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("run `{run_id}` was claimed by another instance: this one's lease is lost")]
    Fenced { run_id: String },
    #[error("audit import refused: {0}")]
    ImportRefused(String),
    #[error("run `{run_id}` does not exist")]
    UnknownRun { run_id: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::Corrupt(error.to_string())
    }
}

impl From<domain::Error> for Error {
    fn from(error: domain::Error) -> Self {
        Error::Corrupt(error.to_string())
    }
}

/// The columns every run query reads; a macro so that the queries stay
/// `&'static str` literals (sqlx refuses SQL built at run time).
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT id, event_id, dedup_key, state, plan, decision, machine, reason, revision, created_at, updated_at FROM runs ",
            $rest
        )
    };
}
pub(crate) use select_runs;

/// The newest schema version this build knows (the same on both backends).
pub fn latest_schema_version() -> i64 {
    shared::latest_version(sqlite::MIGRATIONS)
}

/// What other instances sharing the database announce (PostgreSQL
/// LISTEN/NOTIFY). The connection reconnects by itself after a failure.
pub struct WorkSignals(sqlx::postgres::PgListener);

/// One announcement.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A run released its lease: runs waiting for its targets may start.
    WorkReleased,
    /// A run asked for a timer: the next due time may be earlier.
    TimerScheduled,
    /// A run finished, or now waits for approval.
    RunSettled {
        run_id: String,
        state: domain::RunState,
    },
}

impl WorkSignals {
    /// Waits for the next announcement.
    pub async fn next(&mut self) -> Result<Signal> {
        loop {
            let notification = self.0.recv().await?;
            match notification.channel() {
                postgres::WORK_CHANNEL => return Ok(Signal::WorkReleased),
                postgres::TIMERS_CHANNEL => return Ok(Signal::TimerScheduled),
                _ => {}
            }
            // "run_id state"; anything else is not ours to act on.
            if let Some((run_id, state)) = notification.payload().split_once(' ')
                && let Ok(state) = domain::RunState::parse(state)
            {
                return Ok(Signal::RunSettled {
                    run_id: run_id.to_owned(),
                    state,
                });
            }
        }
    }
}

/// The store, on whichever backend the database URL names. Both backends
/// have the same tables, migrations and behaviour; the store test suite runs
/// against each.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Calls the same method on whichever backend this is.
macro_rules! on_backend {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Begins a write transaction: on SQLite on the one writer connection,
    /// taking the write lock up front.
    async fn begin_write(&self) -> Result<backend::WriteTransaction> {
        Ok(match self {
            Store::Sqlite(store) => backend::WriteTransaction::Sqlite(store.begin_write().await?),
            Store::Postgres(store) => {
                backend::WriteTransaction::Postgres(store.begin_write().await?)
            }
        })
    }

    /// A connection for reading, which never waits for the writer.
    async fn read(&self) -> Result<backend::ReadConnection> {
        Ok(match self {
            Store::Sqlite(store) => {
                backend::ReadConnection::Sqlite(store.reader().acquire().await?)
            }
            Store::Postgres(store) => {
                backend::ReadConnection::Postgres(store.reader().acquire().await?)
            }
        })
    }

    /// Opens `sqlite://PATH` (created on first use) or `postgres://...`,
    /// applying the embedded migrations; refuses a newer schema.
    pub async fn open(url: &str) -> Result<Store> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PostgresStore::open(url).await?))
        } else {
            Err(Error::UnsupportedUrl {
                url: url.to_owned(),
            })
        }
    }

    pub async fn schema_version(&self) -> Result<i64> {
        on_backend!(self, store => store.schema_version().await)
    }

    /// Whether each connection the store may use syncs its commits to disk:
    /// SQLite's `synchronous` on the writer and every reader, PostgreSQL's
    /// `synchronous_commit` on every pooled session and the server's
    /// `fsync`. Holds every connection of the pools while it asks.
    pub async fn durability(&self) -> Result<Vec<ConnectionDurability>> {
        on_backend!(self, store => store.durability().await)
    }

    /// Stores an event and, when intake decided so, the run it starts — in
    /// one transaction; a run already open for the dedup key wins.
    pub async fn intake(&self, intake: Intake, now: jiff::Timestamp) -> Result<IntakeOutcome> {
        on_backend!(self, store => store.intake(intake, now).await)
    }

    pub async fn open_run_for_dedup_key(&self, dedup_key: &str) -> Result<Option<String>> {
        on_backend!(self, store => store.open_run_for_dedup_key(dedup_key).await)
    }

    /// Commits one transition of a run (state, attempts, audit records) if
    /// the run is still at `expected_revision`; returns the new revision.
    pub async fn commit(
        &self,
        run_id: &str,
        expected_revision: i64,
        transition: &engine::Transition,
        actor: &str,
        now: jiff::Timestamp,
    ) -> Result<i64> {
        on_backend!(self, store => store.commit(run_id, expected_revision, transition, actor, now).await)
    }

    pub async fn commit_fenced(
        &self,
        run_id: &str,
        expected_revision: i64,
        lease: &Lease,
        transition: &engine::Transition,
        actor: &str,
        now: jiff::Timestamp,
    ) -> Result<i64> {
        on_backend!(self, store => store.commit_fenced(run_id, expected_revision, lease, transition, actor, now).await)
    }

    pub async fn claim_run(
        &self,
        run_id: &str,
        owner: &str,
        now: jiff::Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        on_backend!(self, store => store.claim_run(run_id, owner, now, ttl_ms).await)
    }

    pub async fn renew_lease(
        &self,
        run_id: &str,
        lease: &Lease,
        now: jiff::Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        on_backend!(self, store => store.renew_lease(run_id, lease, now, ttl_ms).await)
    }

    pub async fn release_lease(&self, run_id: &str, lease: &Lease) -> Result<()> {
        on_backend!(self, store => store.release_lease(run_id, lease).await)
    }

    pub async fn claimable_runs(&self, now: jiff::Timestamp) -> Result<Vec<String>> {
        on_backend!(self, store => store.claimable_runs(now).await)
    }

    /// Signals that work may be claimable, announced by other instances
    /// sharing the database; `None` where there are none (SQLite).
    pub async fn work_signals(&self) -> Result<Option<WorkSignals>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(store) => Ok(Some(WorkSignals(store.work_signals().await?))),
        }
    }

    /// Changes each time this process commits audit records; what other
    /// instances append is not seen here.
    pub fn audit_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        on_backend!(self, store => store.audit_appends())
    }

    /// The audit chain's newest record: its sequence number and hash.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        on_backend!(self, store => store.audit_head().await)
    }

    /// The hash of audit record `seq`, if the chain holds it.
    pub async fn audit_hash(&self, seq: i64) -> Result<Option<String>> {
        on_backend!(self, store => store.audit_hash(seq).await)
    }

    /// Claims due timers nobody holds; see [`SqliteStore::claim_due_timers`].
    pub async fn claim_due_timers(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        ttl_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedTimer>> {
        on_backend!(self, store => store.claim_due_timers(owner, now, ttl_ms, limit).await)
    }

    /// Fires a claimed timer with the run's transition, exactly once; see
    /// [`SqliteStore::fire_timer`].
    pub async fn fire_timer(
        &self,
        timer: &ClaimedTimer,
        run_revision: i64,
        transition: Option<&engine::Transition>,
        actor: &str,
        now: jiff::Timestamp,
    ) -> Result<TimerFiring> {
        on_backend!(self, store => store.fire_timer(timer, run_revision, transition, actor, now).await)
    }

    /// When a timer may next be due (or its claim expire).
    pub async fn next_timer_check(&self) -> Result<Option<jiff::Timestamp>> {
        on_backend!(self, store => store.next_timer_check().await)
    }

    pub async fn timers(&self, run_id: &str) -> Result<Vec<TimerRow>> {
        on_backend!(self, store => store.timers(run_id).await)
    }

    /// Claims write-backs with records to write; see
    /// [`SqliteStore::claim_writebacks`].
    pub async fn claim_writebacks(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        ttl_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedWriteback>> {
        on_backend!(self, store => store.claim_writebacks(owner, now, ttl_ms, limit).await)
    }

    pub async fn run_audit_after(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>> {
        on_backend!(self, store => store.run_audit_after(run_id, after_seq, limit).await)
    }

    pub async fn begin_writeback_batch(
        &self,
        claimed: &ClaimedWriteback,
        to_seq: i64,
    ) -> Result<()> {
        on_backend!(self, store => store.begin_writeback_batch(claimed, to_seq).await)
    }

    pub async fn finish_writeback_batch(
        &self,
        claimed: &ClaimedWriteback,
        to_seq: i64,
        done: bool,
    ) -> Result<()> {
        on_backend!(self, store => store.finish_writeback_batch(claimed, to_seq, done).await)
    }

    pub async fn fail_writeback(
        &self,
        claimed: &ClaimedWriteback,
        error: &str,
        retry_at: jiff::Timestamp,
    ) -> Result<()> {
        on_backend!(self, store => store.fail_writeback(claimed, error, retry_at).await)
    }

    pub async fn writebacks(&self, run_id: &str) -> Result<Vec<WritebackRow>> {
        on_backend!(self, store => store.writebacks(run_id).await)
    }

    pub async fn append_audit(
        &self,
        run_id: Option<&str>,
        entries: &[AuditEntry],
        now: jiff::Timestamp,
    ) -> Result<()> {
        on_backend!(self, store => store.append_audit(run_id, entries, now).await)
    }

    pub async fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        on_backend!(self, store => store.run(run_id).await)
    }

    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        on_backend!(self, store => store.runs(filter).await)
    }

    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        on_backend!(self, store => store.attempts(run_id).await)
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        on_backend!(self, store => store.event(event_id).await)
    }

    pub async fn count_recurrences(
        &self,
        recurrence_key: &str,
        since: jiff::Timestamp,
        except_dedup_key: &str,
    ) -> Result<i64> {
        on_backend!(self, store => store.count_recurrences(recurrence_key, since, except_dedup_key).await)
    }

    /// When each run of `runbook_id` the gate let through since `since`
    /// was created, and its targets: for cooldowns and rate limits.
    pub async fn recent_run_targets(
        &self,
        runbook_id: &str,
        since: jiff::Timestamp,
        except_run_id: Option<&str>,
    ) -> Result<Vec<(jiff::Timestamp, Vec<String>)>> {
        on_backend!(self, store => store.recent_run_targets(runbook_id, since, except_run_id).await)
    }

    /// Runs of any runbook the gate let through since `since`: what a
    /// global rate limit counts.
    pub async fn count_runs_since(
        &self,
        since: jiff::Timestamp,
        except_run_id: Option<&str>,
    ) -> Result<i64> {
        on_backend!(self, store => store.count_runs_since(since, except_run_id).await)
    }

    pub async fn event_count(&self) -> Result<i64> {
        on_backend!(self, store => store.event_count().await)
    }

    pub async fn audit(&self, run_id: Option<&str>) -> Result<Vec<AuditRow>> {
        on_backend!(self, store => store.audit(run_id).await)
    }

    pub async fn import_audit(&self, rows: &[AuditRow]) -> Result<u64> {
        on_backend!(self, store => store.import_audit(rows).await)
    }

    pub async fn verify_audit(&self) -> Result<ChainReport> {
        on_backend!(self, store => store.verify_audit().await)
    }
}
