//! All of opsgate's SQL: events, runs, attempts, timers, write-backs,
//! credentials and the hash-chained audit log, on SQLite or PostgreSQL.
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
//! PostgreSQL is the backend several instances share.
//!
//! # One module per table family
//!
//! [`Store`] is one type whose methods live with the tables they touch:
//! `events.rs` (intake), `admission.rs` (what the gate counts, read under
//! the admission lock), `problems.rs` (what holds a new run back: one run
//! per problem, read under the same lock), `runs.rs` (runs, attempts, leases and target
//! holds), `timers.rs`, `writebacks.rs`, `tokens.rs` (API tokens, used
//! approval links and webhook signatures) and `audit.rs` (the chain, its
//! verifier and anchors). A family that writes inside another's
//! transaction (intake stores a run, a commit appends audit records and
//! arms timers) calls that family's `pub(crate)` function with the
//! transaction, so each table's SQL is written in one place. There is no
//! trait per family: every consumer holds the one `Store` (a cheap clone
//! over shared pools), and tests run the real one on a temporary SQLite
//! file; a narrow trait belongs here once a consumer must be handed
//! something else.
//!
//! # Both backends, one text
//!
//! The SQL is written once, with `$1, $2, ...` placeholders, which
//! PostgreSQL reads natively and sqlx's SQLite driver binds by number. The
//! code runs it through `backend.rs`: a write transaction or read
//! connection on either backend, sqlx's own query bound value by value, a
//! row decoded alike — each a two-armed `match`, so the families are plain
//! code that rustfmt and rust-analyzer see, with no generics to bound. Being
//! generic over `sqlx::Database` was the alternative; every function would
//! then restate "this backend's connection is an `Executor`, and it can
//! encode and decode each of these types" (bounds Rust does not carry from
//! a trait to its users), and `Store` would still need a forwarder from
//! its enum of backends to the generic code. sqlx's `Any` driver also
//! picks the backend at run time, but converts every argument and row on
//! the way and hides what is one backend's own (`BEGIN IMMEDIATE`,
//! LISTEN/NOTIFY). What truly differs between
//! the backends is small and named in `backend.rs`: how a write
//! transaction starts, how audit appends take turns, how other instances
//! are told, and `FOR UPDATE SKIP LOCKED` in two claims; `sqlite.rs` and
//! `postgres.rs` hold it, with opening, migrations and durability checks.

mod admission;
mod audit;
mod backend;
mod events;
mod freezes;
mod postgres;
mod problems;
#[cfg(test)]
mod query_plans;
mod runs;
mod schema;
mod shadow;
mod sqlite;
mod timers;
mod tokens;
mod writebacks;
mod writer;

use std::sync::Arc;

use serde::Serialize;
use sqlx::sqlite::SqliteSynchronous;

pub use admission::{Counting, Counts, is_under_way};
pub use audit::AuditEntry;
pub use audit::anchor::{Anchor, AnchorBreak, AnchorLines, body_signature};
pub use audit::chain::{
    AuditRow, ChainBreak, ChainReport, ChainedRecord, GENESIS_HASH, chain_hash,
};
pub use events::{Admit, Admitted, Disposition, EventRow, Intake, IntakeOutcome};
pub use postgres::{Signal, WorkSignals};
pub use problems::{EarlierRun, Held, Link, OneRunPerProblem};
pub use runs::{AttemptRow, Lease, NewRun, RunFilter, RunRow, Start};
pub use shadow::ShadowedRun;
pub use timers::{ClaimedTimer, TimerFiring, TimerRow};
pub use tokens::TokenRow;
pub use writebacks::{ClaimedWriteback, NewWriteback, WritebackRow};

use backend::{Database, ReadConnection, WriteTransaction};
use postgres::PostgresDatabase;
use sqlite::SqliteDatabase;
use writer::Commits;

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
    /// The commit this transaction shared with others failed (group
    /// commit: `writer.rs`); nothing of theirs is stored.
    #[error("the commit failed: {0}")]
    CommitFailed(std::sync::Arc<Error>),
    #[error("the database's writer connection is closed")]
    WriterClosed,
    /// A statement opening or ending a transaction was interrupted (its
    /// caller went away): what it did is not known, so its connection was
    /// closed and its batch failed.
    #[error(
        "a transaction was interrupted before the database answered; nothing of it is counted on"
    )]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the database refused to write because it cannot store
    /// anything now — its disk is full, read-only or failing — and not
    /// because of what was asked: the same write may succeed later.
    pub fn is_out_of_room(&self) -> bool {
        if let Error::CommitFailed(error) = self {
            return error.is_out_of_room();
        }
        let Error::Database(sqlx::Error::Database(error)) = self else {
            return false;
        };
        let Some(code) = error.code() else {
            return false;
        };
        match code.as_ref() {
            // PostgreSQL: disk_full, read_only_sql_transaction.
            "53100" | "25006" => true,
            // SQLite: SQLITE_FULL, SQLITE_READONLY and SQLITE_IOERR (a
            // write the filesystem refused: remounted read-only, or
            // failing), with their extended codes (the primary code is
            // the low byte).
            code => code
                .parse::<i64>()
                .is_ok_and(|code| matches!(code & 0xff, 13 | 8 | 10) && code < 0x10000),
        }
    }
}

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

/// The newest schema version this build knows (the same on both backends).
pub fn latest_schema_version() -> i64 {
    schema::latest_version(sqlite::MIGRATIONS)
}

/// The store, on whichever backend the database URL names. Both backends
/// have the same tables, migrations and behaviour; the store test suite runs
/// against each.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    /// Bumped after each commit of this process that appended audit
    /// records (see [`Store::audit_appends`]).
    audit_appends: Arc<tokio::sync::watch::Sender<u64>>,
}

/// A setting that decides whether a commit reaches the disk before it
/// returns, as one connection of the store sees it
/// ([`Store::durability`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionDurability {
    /// Which connection: `writer`, `reader 2`, `session 5`, or `server`
    /// for a setting of the database server itself.
    pub connection: String,
    /// `synchronous` (SQLite), `synchronous_commit` or `fsync` (PostgreSQL).
    pub setting: &'static str,
    /// Its value, as the database names it (`full`, `on`).
    pub value: String,
}

impl Store {
    /// Opens `sqlite://PATH` (created on first use) or `postgres://...`,
    /// applying the embedded migrations; refuses a newer schema.
    pub async fn open(url: &str) -> Result<Store> {
        let database = if url.starts_with("sqlite:") {
            Database::Sqlite(
                SqliteDatabase::open(url, SqliteSynchronous::Full, Commits::Shared).await?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres(PostgresDatabase::open(url).await?)
        } else {
            return Err(Error::UnsupportedUrl {
                url: url.to_owned(),
            });
        };
        Ok(Store::on(database))
    }

    /// Opens a SQLite store with `synchronous = NORMAL`, which does not
    /// sync a commit to the disk. Only for measuring what durability costs
    /// (docs/benchmarks.md): a store opened this way can lose acknowledged
    /// work in an operating-system crash.
    #[doc(hidden)]
    pub async fn open_without_sync_for_benchmarks(url: &str) -> Result<Store> {
        let database =
            SqliteDatabase::open(url, SqliteSynchronous::Normal, Commits::Shared).await?;
        Ok(Store::on(Database::Sqlite(database)))
    }

    /// Opens a SQLite store whose transactions each commit, and sync, on
    /// their own, as before group commit. Only for measuring what sharing
    /// commits saves (docs/benchmarks.md); as durable as [`Store::open`].
    #[doc(hidden)]
    pub async fn open_with_commits_one_by_one_for_benchmarks(url: &str) -> Result<Store> {
        let database =
            SqliteDatabase::open(url, SqliteSynchronous::Full, Commits::OneByOne).await?;
        Ok(Store::on(Database::Sqlite(database)))
    }

    fn on(database: Database) -> Store {
        Store {
            database,
            audit_appends: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        let mut reader = self.read().await?;
        let version: Option<i64> = reader
            .query("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one()
            .await?
            .get(0)?;
        Ok(version.unwrap_or(0))
    }

    /// How many batches of write transactions this store has committed
    /// since it opened: each is one COMMIT and one sync, shared by the
    /// transactions that waited for the writer meanwhile (`writer.rs`).
    pub fn batches_committed(&self) -> u64 {
        match &self.database {
            Database::Sqlite(database) => database.batches_committed(),
            Database::Postgres(database) => database.batches_committed(),
        }
    }

    /// Whether each connection the store may use syncs its commits to disk:
    /// SQLite's `synchronous` on the writer and every reader, PostgreSQL's
    /// `synchronous_commit` on every pooled session and the server's
    /// `fsync`. Holds every connection of the pools while it asks.
    pub async fn durability(&self) -> Result<Vec<ConnectionDurability>> {
        match &self.database {
            Database::Sqlite(database) => database.durability().await,
            Database::Postgres(database) => database.durability().await,
        }
    }

    /// Signals that work may be claimable, announced by other instances
    /// sharing the database; `None` where there are none (SQLite).
    pub async fn work_signals(&self) -> Result<Option<WorkSignals>> {
        match &self.database {
            Database::Sqlite(_) => Ok(None),
            Database::Postgres(database) => Ok(Some(database.work_signals().await?)),
        }
    }

    async fn begin_write(&self) -> Result<WriteTransaction> {
        self.database.begin_write().await
    }

    async fn read(&self) -> Result<ReadConnection> {
        self.database.read().await
    }
}
