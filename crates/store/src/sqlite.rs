//! The SQLite backend: one writer connection, a pool of readers, WAL mode.
//!
//! Every connection runs with `synchronous = FULL`: in WAL mode that makes
//! each commit wait for the log to reach the disk, so what opsgate has
//! acknowledged (an event answered 202, an approval, a used link, the
//! transition written before a call) survives an operating-system crash or
//! a power loss, not only the process dying. `NORMAL` would leave the last
//! commits in the page cache until the next checkpoint. Readers never
//! write, but they get the same setting so that no connection of the store
//! can commit without syncing.

use std::str::FromStr;
use std::time::Duration;

use domain::Event;
use engine::{Effect, Transition};
use jiff::Timestamp;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Pool, Row, Sqlite, SqliteConnection, Transaction};

use crate::audit::{AuditRow, ChainChecker, ChainReport, ChainedRecord, GENESIS_HASH, chain_hash};
use crate::model::{
    AttemptRow, AuditEntry, ClaimedTimer, ClaimedWriteback, ConnectionDurability, Disposition,
    EventRow, Intake, IntakeOutcome, Lease, RunFilter, RunRow, TimerFiring, TimerRow, WritebackRow,
};
use crate::rows::{audit_row, event_row, run_row, timer_row};
use crate::shared::{store_methods, violates};
use crate::{Error, Result, select_runs};

/// Migrations are embedded in the binary, numbered, and never edited once
/// they have landed.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "run leases",
        include_str!("../migrations/sqlite/0002_run_leases.sql"),
    ),
    (
        3,
        "target holds",
        include_str!("../migrations/sqlite/0003_target_holds.sql"),
    ),
    (
        4,
        "timers",
        include_str!("../migrations/sqlite/0004_timers.sql"),
    ),
    (
        5,
        "api tokens",
        include_str!("../migrations/sqlite/0005_api_tokens.sql"),
    ),
    (
        6,
        "approval links",
        include_str!("../migrations/sqlite/0006_approval_links.sql"),
    ),
    (
        7,
        "writebacks",
        include_str!("../migrations/sqlite/0007_writebacks.sql"),
    ),
    (
        8,
        "used signatures",
        include_str!("../migrations/sqlite/0008_used_signatures.sql"),
    ),
];

/// A database migrated by a newer opsgate may hold data this build would
/// misread or corrupt: refuse it rather than guess.
async fn refuse_newer_schema(pool: &SqlitePool) -> Result<()> {
    let table = sqlx::query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if table.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    crate::shared::refuse_newer_than(found, MIGRATIONS)
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Bumped after each commit that appended audit records.
    audit_appends: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl SqliteStore {
    /// Opens (creating on first use) the database at `url` (`sqlite://PATH`
    /// or `sqlite::memory:`) and applies the embedded migrations.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        SqliteStore::open_with(url, SqliteSynchronous::Full).await
    }

    /// Opens the store with `synchronous = NORMAL`, which does not sync a
    /// commit to the disk. Only for measuring what durability costs
    /// (docs/benchmarks.md): a store opened this way can lose acknowledged
    /// work in an operating-system crash.
    #[doc(hidden)]
    pub async fn open_without_sync_for_benchmarks(url: &str) -> Result<SqliteStore> {
        SqliteStore::open_with(url, SqliteSynchronous::Normal).await
    }

    async fn open_with(url: &str, synchronous: SqliteSynchronous) -> Result<SqliteStore> {
        let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return Err(Error::UnsupportedUrl {
                url: url.to_owned(),
            });
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        refuse_newer_schema(&writer).await?;
        crate::shared::migrator(MIGRATIONS).run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            audit_appends: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    pub(crate) fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    /// `PRAGMA synchronous` as every connection of the store sees it: the
    /// writer, and each reader the pool may open (all held at once, so each
    /// is a connection of its own).
    pub async fn durability(&self) -> Result<Vec<ConnectionDurability>> {
        let mut settings = Vec::new();
        let mut writer = self.writer.acquire().await?;
        settings.push(ConnectionDurability {
            connection: "writer".to_owned(),
            setting: "synchronous",
            value: synchronous_name(&mut writer).await?,
        });
        let mut readers = Vec::new();
        for _ in 0..self.reader.options().get_max_connections() {
            readers.push(self.reader.acquire().await?);
        }
        for (index, reader) in readers.iter_mut().enumerate() {
            settings.push(ConnectionDurability {
                connection: format!("reader {}", index + 1),
                setting: "synchronous",
                value: synchronous_name(reader).await?,
            });
        }
        Ok(settings)
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so a transaction
    /// never has to upgrade from reading to writing (which another process's
    /// writer could refuse at once, `busy_timeout` notwithstanding).
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// `PRAGMA synchronous` by name (SQLite answers with a number).
async fn synchronous_name(connection: &mut SqliteConnection) -> Result<String> {
    let level: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut *connection)
        .await?
        .try_get(0)?;
    Ok(match level {
        0 => "off",
        1 => "normal",
        2 => "full",
        3 => "extra",
        _ => "unknown",
    }
    .to_owned())
}

type StoreImpl = SqliteStore;
type Db = Sqlite;
type Conn = SqliteConnection;

/// SQLite takes the shared SQL as written.
fn sql(text: &'static str) -> &'static str {
    text
}

/// All writes go through one connection in `BEGIN IMMEDIATE`
/// transactions: audit appends already take turns.
async fn lock_audit_chain(_tx: &mut Transaction<'_, Sqlite>) -> Result<()> {
    Ok(())
}

/// One process per SQLite file: nobody else to tell.
async fn announce_work(_tx: &mut Transaction<'_, Sqlite>, _run_id: &str) -> Result<()> {
    Ok(())
}

async fn announce_timers(_tx: &mut Transaction<'_, Sqlite>, _run_id: &str) -> Result<()> {
    Ok(())
}

async fn announce_settled(
    _tx: &mut Transaction<'_, Sqlite>,
    _run_id: &str,
    _state: domain::RunState,
) -> Result<()> {
    Ok(())
}

/// SQLite has one writer: nothing to skip.
macro_rules! skip_locked {
    () => {
        ""
    };
}

store_methods!();
