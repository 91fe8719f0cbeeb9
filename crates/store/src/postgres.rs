//! The PostgreSQL backend: the scale-out store several instances share.
//!
//! Every session is opened with `synchronous_commit = on`, as a startup
//! option, so that a database or role default of `off` cannot make a commit
//! return before its WAL record is on disk: what opsgate acknowledged must
//! survive a crash of the database server's machine. A server running with
//! `fsync = off` cannot keep that promise whatever the session asks;
//! [`PostgresDatabase::open`] says so loudly.
//!
//! Same tables and semantics as SQLite. What differs is concurrency: many
//! processes. Each has one writer connection whose transactions share
//! their commits (`writer.rs`), and every batch of them holds a
//! transaction-scoped advisory lock ([`BEGIN_BATCH`]), so the audit chain
//! stays a single chain and writes take turns across the cluster; the
//! unique index on open dedup keys stays as a second guard: an intake it
//! refuses retries and finds the other run.
//!
//! The table families (see `lib.rs`) run the same SQL here as on SQLite;
//! what is PostgreSQL's alone is opening the writer and the reader pool,
//! its migrations, the durability check, the audit chain's lock, and
//! NOTIFY/LISTEN between instances ([`announce`], [`WorkSignals`]).

use std::time::Duration;

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Row};

use crate::backend::Announcement;
use crate::writer::{Commits, Write, Writer};
use crate::{ConnectionDurability, Result};

/// Migrations are embedded in the binary, numbered, and never edited once
/// they have landed.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "run leases",
        include_str!("../migrations/postgres/0002_run_leases.sql"),
    ),
    (
        3,
        "target holds",
        include_str!("../migrations/postgres/0003_target_holds.sql"),
    ),
    (
        4,
        "timers",
        include_str!("../migrations/postgres/0004_timers.sql"),
    ),
    (
        5,
        "api tokens",
        include_str!("../migrations/postgres/0005_api_tokens.sql"),
    ),
    (
        6,
        "approval links",
        include_str!("../migrations/postgres/0006_approval_links.sql"),
    ),
    (
        7,
        "writebacks",
        include_str!("../migrations/postgres/0007_writebacks.sql"),
    ),
    (
        8,
        "used signatures",
        include_str!("../migrations/postgres/0008_used_signatures.sql"),
    ),
    (
        9,
        "freezes",
        include_str!("../migrations/postgres/0009_freezes.sql"),
    ),
    (
        10,
        "run admission",
        include_str!("../migrations/postgres/0010_run_admission.sql"),
    ),
    (
        11,
        "one run per problem",
        include_str!("../migrations/postgres/0011_one_run_per_problem.sql"),
    ),
    (
        12,
        "event time",
        include_str!("../migrations/postgres/0012_event_time.sql"),
    ),
    (
        13,
        "token scope",
        include_str!("../migrations/postgres/0013_token_scope.sql"),
    ),
    (
        14,
        "audit by event",
        include_str!("../migrations/postgres/0014_audit_by_event.sql"),
    ),
];

/// A database migrated by a newer opsgate may hold data this build would
/// misread or corrupt: refuse it rather than guess.
async fn refuse_newer_schema(pool: &PgPool) -> Result<()> {
    let exists: bool = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    crate::schema::refuse_newer_than(found, MIGRATIONS)
}

/// A server with `fsync = off` loses committed transactions when its
/// machine crashes, whatever the session asks. That is the database
/// administrator's setting, not opsgate's, and a test or a throwaway
/// server may use it knowingly: opsgate opens the store, but says on every
/// start that its acknowledgements are not durable there.
async fn warn_when_the_server_does_not_sync(pool: &PgPool) -> Result<()> {
    let fsync: String = sqlx::query("SHOW fsync")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    if fsync != "on" {
        tracing::error!(
            fsync = %fsync,
            "the PostgreSQL server runs with fsync = off: a crash of its machine can lose runs, approvals \
             and audit records opsgate has already acknowledged (set fsync = on)"
        );
    }
    Ok(())
}

/// How long a transaction may sit idle before the server ends it (see
/// [`PostgresDatabase::open`]). Far longer than any of opsgate's own
/// transactions, well under a run lease.
const STALLED_TRANSACTION_TIMEOUT_MS: u64 = 5_000;

/// The PostgreSQL database: one writer connection whose transactions
/// share their commits (`writer.rs`), a pool for reads and listening.
#[derive(Debug, Clone)]
pub(crate) struct PostgresDatabase {
    writer: Arc<Writer<Postgres>>,
    pool: PgPool,
}

impl PostgresDatabase {
    /// Connects to `url` (`postgres://...`) and applies the embedded
    /// migrations; sqlx takes an advisory lock while migrating, so instances
    /// starting together do not race.
    ///
    /// Every session is opened with `idle_in_transaction_session_timeout`:
    /// opsgate never waits on anything outside the database inside a
    /// transaction, so a transaction left idle that long belongs to a stalled
    /// instance (paused, swapping, partitioned away). The server then ends its
    /// session and releases its locks — the audit chain's advisory lock among
    /// them — instead of letting one frozen process stop the whole cluster.
    pub(crate) async fn open(url: &str) -> Result<PostgresDatabase> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.options([
            (
                "idle_in_transaction_session_timeout",
                STALLED_TRANSACTION_TIMEOUT_MS.to_string(),
            ),
            ("synchronous_commit", "on".to_owned()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        refuse_newer_schema(&pool).await?;
        crate::schema::migrator(MIGRATIONS).run(&pool).await?;
        warn_when_the_server_does_not_sync(&pool).await?;
        let connection = PgConnection::connect_with(&options).await?;
        let writer = Writer::new(connection, options, BEGIN_BATCH, Commits::Shared);
        Ok(PostgresDatabase {
            writer: Arc::new(writer),
            pool,
        })
    }

    pub(crate) async fn begin_write(&self) -> Result<Write<Postgres>> {
        self.writer.begin().await
    }

    pub(crate) fn batches_committed(&self) -> u64 {
        self.writer.batches_committed()
    }

    pub(crate) async fn read(&self) -> Result<PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// `synchronous_commit` as the writer and every connection of the
    /// pool see it (all held at once, so each is a session of its own),
    /// and the server's `fsync`.
    pub(crate) async fn durability(&self) -> Result<Vec<ConnectionDurability>> {
        let writer = self
            .writer
            .with_connection(async |connection| {
                Ok(sqlx::query("SHOW synchronous_commit")
                    .fetch_one(connection)
                    .await?
                    .try_get::<String, _>(0)?)
            })
            .await?;
        let mut settings = vec![ConnectionDurability {
            connection: "writer".to_owned(),
            setting: "synchronous_commit",
            value: writer,
        }];
        let mut sessions = Vec::new();
        for _ in 0..self.pool.options().get_max_connections() {
            sessions.push(self.pool.acquire().await?);
        }
        for (index, session) in sessions.iter_mut().enumerate() {
            let value: String = sqlx::query("SHOW synchronous_commit")
                .fetch_one(&mut **session)
                .await?
                .try_get(0)?;
            settings.push(ConnectionDurability {
                connection: format!("session {}", index + 1),
                setting: "synchronous_commit",
                value,
            });
        }
        let fsync: String = sqlx::query("SHOW fsync")
            .fetch_one(&mut *sessions[0])
            .await?
            .try_get(0)?;
        settings.push(ConnectionDurability {
            connection: "server".to_owned(),
            setting: "fsync",
            value: fsync,
        });
        Ok(settings)
    }
}

/// How a batch of write transactions begins (`writer.rs`): with the
/// advisory lock that serialises audit appends across all instances, so
/// the chain stays one chain, in commit order. The key is "opsgate" in
/// ASCII (0x006f_7073_6761_7465). Taken first, before any row lock, and
/// held until the batch ends.
const BEGIN_BATCH: &str = "BEGIN; SELECT pg_advisory_xact_lock(31367363372872805)";

/// The channel on which instances announce that work may be claimable.
const WORK_CHANNEL: &str = "opsgate_work";

/// The channel on which instances announce that a run asked for a timer.
const TIMERS_CHANNEL: &str = "opsgate_timers";

/// The channel on which instances announce that a run settled
/// ([`domain::RunState::is_settled`]), as `run_id state`.
const SETTLED_CHANNEL: &str = "opsgate_settled";

/// The channel on which instances announce that a freeze was issued or
/// lifted.
const FREEZES_CHANNEL: &str = "opsgate_freezes";

/// Tells every listening instance, when (and only if) the transaction
/// commits: that a run released its lease (so runs waiting for its targets
/// may start), asked for a timer, settled (as `run_id state`), or that the
/// freezes changed.
pub(crate) async fn announce(tx: &mut PgConnection, announcement: Announcement<'_>) -> Result<()> {
    match announcement {
        Announcement::WorkReleased { run_id } => notify(tx, WORK_CHANNEL, run_id).await,
        Announcement::TimerScheduled { run_id } => notify(tx, TIMERS_CHANNEL, run_id).await,
        Announcement::FreezesChanged => notify(tx, FREEZES_CHANNEL, "").await,
        Announcement::RunSettled { run_id, state } => {
            let payload = format!("{run_id} {}", state.as_str());
            notify(tx, SETTLED_CHANNEL, &payload).await
        }
    }
}

/// NOTIFY on `channel`, delivered when (and only if) the transaction commits.
async fn notify(tx: &mut PgConnection, channel: &str, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(tx)
        .await?;
    Ok(())
}

impl PostgresDatabase {
    /// Listens for what [`announce`] sends, from any instance.
    pub(crate) async fn work_signals(&self) -> Result<WorkSignals> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([
                WORK_CHANNEL,
                TIMERS_CHANNEL,
                SETTLED_CHANNEL,
                FREEZES_CHANNEL,
            ])
            .await?;
        Ok(WorkSignals(listener))
    }
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
    /// A freeze was issued or lifted: the active freezes are to be read
    /// again.
    FreezesChanged,
    /// The listening connection was lost and is made again: whatever was
    /// announced meanwhile was missed, so everything is to be looked at
    /// again (work, timers, freezes).
    Reconnected,
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
            let Some(notification) = self.0.try_recv().await? else {
                return Ok(Signal::Reconnected);
            };
            match notification.channel() {
                WORK_CHANNEL => return Ok(Signal::WorkReleased),
                TIMERS_CHANNEL => return Ok(Signal::TimerScheduled),
                FREEZES_CHANNEL => return Ok(Signal::FreezesChanged),
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
