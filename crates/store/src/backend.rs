//! The two backends as the table families see them: a read connection or a
//! write transaction on either, statements bound and run on it, and the
//! rows they return.
//!
//! SQL is written once, with numbered placeholders (`$1`, `$2`, ...):
//! PostgreSQL takes them natively and sqlx's SQLite driver binds them by
//! number too, so the same text runs on both. A [`Query`] is sqlx's own
//! query for the connection's backend; [`Query::bind`] binds a value into
//! it directly (the value's type must encode on both backends, as every
//! type the store binds does), and [`Row::get`] decodes a column the same
//! way. One `match` per call is all that sharing the code costs; there is
//! no conversion of values or rows in between.
//!
//! A write transaction is the writer's on either backend (`writer.rs`):
//! it takes turns with every other write, so audit appends and admissions
//! need no lock of their own. What really differs lives behind the write
//! transaction's methods, which call into `sqlite.rs` or `postgres.rs`:
//! how other instances learn that something happened
//! ([`WriteTransaction::announce`]), and, for the few claims that need it,
//! a statement whose text differs ([`WriteTransaction::query_per_backend`]).

use futures_util::future::Either;
use futures_util::{Stream, TryStreamExt};
use jiff::Timestamp;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    ColumnIndex, Decode, Encode, PgConnection, Postgres, Row as _, Sqlite, SqliteConnection, Type,
};

use crate::postgres::PostgresDatabase;
use crate::sqlite::SqliteDatabase;
use crate::writer::Write;
use crate::{Error, Result};

/// The database the store is on, with the pools its backend keeps.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    Sqlite(SqliteDatabase),
    Postgres(PostgresDatabase),
}

impl Database {
    /// Begins a write transaction on the one writer connection, in the
    /// batch open there or a new one (`writer.rs`); it holds the database's
    /// write lock (SQLite) or the audit chain's lock (PostgreSQL), so it is
    /// the only writer, here or in another instance, until it commits.
    pub(crate) async fn begin_write(&self) -> Result<WriteTransaction> {
        Ok(match self {
            Database::Sqlite(database) => WriteTransaction::Sqlite(database.begin_write().await?),
            Database::Postgres(database) => {
                WriteTransaction::Postgres(database.begin_write().await?)
            }
        })
    }

    /// A connection for reading, which never waits for the writer.
    pub(crate) async fn read(&self) -> Result<ReadConnection> {
        Ok(match self {
            Database::Sqlite(database) => ReadConnection::Sqlite(database.read().await?),
            Database::Postgres(database) => ReadConnection::Postgres(database.read().await?),
        })
    }
}

/// A write transaction on either backend. Dropped without
/// [`Self::commit`], it rolls back.
pub(crate) enum WriteTransaction {
    Sqlite(Write<Sqlite>),
    Postgres(Write<Postgres>),
}

/// What a write transaction tells other instances sharing the database,
/// delivered when (and only if) it commits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Announcement<'a> {
    /// The run released its lease: runs waiting for its targets may start.
    WorkReleased { run_id: &'a str },
    /// The run asked for a timer: the next due time may be earlier.
    TimerScheduled { run_id: &'a str },
    /// A freeze was issued or lifted.
    FreezesChanged,
    /// The run finished, or now waits for approval.
    RunSettled {
        run_id: &'a str,
        state: domain::RunState,
    },
}

impl WriteTransaction {
    pub(crate) fn query(&mut self, sql: &'static str) -> Query<'_> {
        match self {
            WriteTransaction::Sqlite(tx) => Query::Sqlite(tx.connection(), sqlx::query(sql)),
            WriteTransaction::Postgres(tx) => Query::Postgres(tx.connection(), sqlx::query(sql)),
        }
    }

    /// A statement whose text differs between the backends (PostgreSQL's
    /// `FOR UPDATE SKIP LOCKED`, which SQLite, with its single writer,
    /// neither needs nor parses).
    pub(crate) fn query_per_backend(
        &mut self,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Query<'_> {
        match self {
            WriteTransaction::Sqlite(tx) => Query::Sqlite(tx.connection(), sqlx::query(sqlite)),
            WriteTransaction::Postgres(tx) => {
                Query::Postgres(tx.connection(), sqlx::query(postgres))
            }
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            WriteTransaction::Sqlite(tx) => tx.commit().await?,
            WriteTransaction::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            WriteTransaction::Sqlite(tx) => tx.rollback().await?,
            WriteTransaction::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// Tells the other instances, when this transaction commits. One
    /// process per SQLite file: there nobody else is listening.
    pub(crate) async fn announce(&mut self, announcement: Announcement<'_>) -> Result<()> {
        match self {
            WriteTransaction::Sqlite(_) => Ok(()),
            WriteTransaction::Postgres(tx) => {
                crate::postgres::announce(tx.connection(), announcement).await
            }
        }
    }
}

/// A connection for reading, from the backend's reader pool.
pub(crate) enum ReadConnection {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl ReadConnection {
    pub(crate) fn query(&mut self, sql: &'static str) -> Query<'_> {
        match self {
            ReadConnection::Sqlite(connection) => Query::Sqlite(connection, sqlx::query(sql)),
            ReadConnection::Postgres(connection) => Query::Postgres(connection, sqlx::query(sql)),
        }
    }
}

/// Either kind of connection, for a read that is made inside a write
/// transaction in one place and on its own in another.
pub(crate) trait Connection {
    fn query(&mut self, sql: &'static str) -> Query<'_>;
}

impl Connection for WriteTransaction {
    fn query(&mut self, sql: &'static str) -> Query<'_> {
        WriteTransaction::query(self, sql)
    }
}

impl Connection for ReadConnection {
    fn query(&mut self, sql: &'static str) -> Query<'_> {
        ReadConnection::query(self, sql)
    }
}

/// A statement with its arguments, ready to run on its connection.
pub(crate) enum Query<'c> {
    Sqlite(
        &'c mut SqliteConnection,
        sqlx::query::Query<'static, Sqlite, SqliteArguments>,
    ),
    Postgres(
        &'c mut PgConnection,
        sqlx::query::Query<'static, Postgres, PgArguments>,
    ),
}

impl<'c> Query<'c> {
    /// Binds the value of the next placeholder: `$1` first, then `$2`, ...
    /// (a placeholder the SQL names twice is bound once).
    pub(crate) fn bind<'t, T>(self, value: T) -> Self
    where
        T: Encode<'t, Sqlite> + Type<Sqlite> + Encode<'t, Postgres> + Type<Postgres>,
    {
        match self {
            Query::Sqlite(connection, query) => Query::Sqlite(connection, query.bind(value)),
            Query::Postgres(connection, query) => Query::Postgres(connection, query.bind(value)),
        }
    }

    /// Runs the statement; returns how many rows it changed.
    pub(crate) async fn execute(self) -> Result<u64> {
        Ok(match self {
            Query::Sqlite(connection, query) => query.execute(connection).await?.rows_affected(),
            Query::Postgres(connection, query) => query.execute(connection).await?.rows_affected(),
        })
    }

    pub(crate) async fn fetch_optional(self) -> Result<Option<Row>> {
        Ok(match self {
            Query::Sqlite(connection, query) => {
                query.fetch_optional(connection).await?.map(Row::Sqlite)
            }
            Query::Postgres(connection, query) => {
                query.fetch_optional(connection).await?.map(Row::Postgres)
            }
        })
    }

    pub(crate) async fn fetch_one(self) -> Result<Row> {
        Ok(match self {
            Query::Sqlite(connection, query) => Row::Sqlite(query.fetch_one(connection).await?),
            Query::Postgres(connection, query) => Row::Postgres(query.fetch_one(connection).await?),
        })
    }

    pub(crate) async fn fetch_all(self) -> Result<Vec<Row>> {
        Ok(match self {
            Query::Sqlite(connection, query) => {
                let rows = query.fetch_all(connection).await?;
                rows.into_iter().map(Row::Sqlite).collect()
            }
            Query::Postgres(connection, query) => {
                let rows = query.fetch_all(connection).await?;
                rows.into_iter().map(Row::Postgres).collect()
            }
        })
    }

    /// The rows one at a time, for reads too large to hold at once.
    pub(crate) fn fetch(self) -> impl Stream<Item = Result<Row>> + Send + 'c {
        match self {
            Query::Sqlite(connection, query) => Either::Left(
                query
                    .fetch(connection)
                    .map_ok(Row::Sqlite)
                    .map_err(Error::from),
            ),
            Query::Postgres(connection, query) => Either::Right(
                query
                    .fetch(connection)
                    .map_ok(Row::Postgres)
                    .map_err(Error::from),
            ),
        }
    }
}

/// A row from either backend. Columns are read as text, 64-bit integers
/// (32-bit where the column is one) and booleans, which both backends
/// store alike; JSON is kept as text.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// The column named (or numbered) `column`, decoded as `T`.
    pub(crate) fn get<T, I>(&self, column: I) -> Result<T>
    where
        I: ColumnIndex<SqliteRow> + ColumnIndex<PgRow>,
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>,
    {
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get(column)?,
        })
    }

    /// A column holding JSON text, parsed.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<T> {
        Ok(serde_json::from_str(&self.get::<String, _>(column)?)?)
    }

    /// A column holding a time as RFC 3339 text.
    pub(crate) fn timestamp(&self, column: &str) -> Result<Timestamp> {
        self.get::<String, _>(column)?
            .parse()
            .map_err(|error| Error::Corrupt(format!("column {column}: {error}")))
    }
}

/// Milliseconds since the epoch, as stored in the `*_ms` columns.
pub(crate) fn timestamp_from_ms(ms: i64, what: &str) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|error| Error::Corrupt(format!("{what} {ms}: {error}")))
}
