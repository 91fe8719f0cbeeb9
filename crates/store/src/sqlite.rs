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
//!
//! The table families (see `lib.rs`) run the same SQL here as on
//! PostgreSQL; what is SQLite's alone is opening the file, its migrations,
//! the durability check, and the one writer whose transactions share
//! their commits (`writer.rs`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite, SqliteConnection};

use crate::writer::{Commits, Write, Writer};
use crate::{ConnectionDurability, Error, Result};

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
    (
        9,
        "freezes",
        include_str!("../migrations/sqlite/0009_freezes.sql"),
    ),
    (
        10,
        "run admission",
        include_str!("../migrations/sqlite/0010_run_admission.sql"),
    ),
    (
        11,
        "one run per problem",
        include_str!("../migrations/sqlite/0011_one_run_per_problem.sql"),
    ),
    (
        12,
        "event time",
        include_str!("../migrations/sqlite/0012_event_time.sql"),
    ),
    (
        13,
        "token scope",
        include_str!("../migrations/sqlite/0013_token_scope.sql"),
    ),
    (
        14,
        "audit by event",
        include_str!("../migrations/sqlite/0014_audit_by_event.sql"),
    ),
];

/// A database migrated by a newer opsgate may hold data this build would
/// misread or corrupt: refuse it rather than guess.
async fn refuse_newer_schema(connection: &mut SqliteConnection) -> Result<()> {
    let table = sqlx::query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    if table.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *connection)
        .await?
        .try_get(0)?;
    crate::schema::refuse_newer_than(found, MIGRATIONS)
}

/// The SQLite database: one writer connection whose concurrent
/// transactions share their commits (`writer.rs`), a pool of
/// readers.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDatabase {
    writer: Arc<Writer<Sqlite>>,
    reader: SqlitePool,
}

impl SqliteDatabase {
    /// Opens (creating on first use) the database at `url` (`sqlite://PATH`
    /// or `sqlite::memory:`) with `synchronous` on every connection, and
    /// applies the embedded migrations.
    pub(crate) async fn open(
        url: &str,
        synchronous: SqliteSynchronous,
        commits: Commits,
    ) -> Result<SqliteDatabase> {
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
        let mut connection = options.connect().await?;
        refuse_newer_schema(&mut connection).await?;
        crate::schema::migrator(MIGRATIONS)
            .run(&mut connection)
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(SqliteDatabase {
            writer: Arc::new(Writer::new(connection, options, "BEGIN IMMEDIATE", commits)),
            reader,
        })
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock up front
    /// (when it opens a batch), so a transaction never has to upgrade from
    /// reading to writing (which another process's writer could refuse at
    /// once, `busy_timeout` notwithstanding).
    pub(crate) async fn begin_write(&self) -> Result<Write<Sqlite>> {
        self.writer.begin().await
    }

    pub(crate) fn batches_committed(&self) -> u64 {
        self.writer.batches_committed()
    }

    pub(crate) async fn read(&self) -> Result<PoolConnection<Sqlite>> {
        Ok(self.reader.acquire().await?)
    }

    /// `PRAGMA synchronous` as every connection of the store sees it: the
    /// writer, and each reader the pool may open (all held at once, so each
    /// is a connection of its own).
    pub(crate) async fn durability(&self) -> Result<Vec<ConnectionDurability>> {
        let mut settings = Vec::new();
        let writer = self.writer.with_connection(synchronous_name).await?;
        settings.push(ConnectionDurability {
            connection: "writer".to_owned(),
            setting: "synchronous",
            value: writer,
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
