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

mod audit;
mod model;
mod sqlite;

pub use audit::{AuditRow, ChainBreak, ChainReport, ChainedRecord, GENESIS_HASH, chain_hash};
pub use model::{
    AttemptRow, AuditEntry, Disposition, EventRow, Intake, IntakeOutcome, NewRun, RunFilter, RunRow,
};
pub use sqlite::{Store, latest_schema_version};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{url}`: expected sqlite://PATH")]
    UnsupportedUrl { url: String },
    #[error("run `{run_id}` was changed by someone else (expected revision {expected})")]
    Conflict { run_id: String, expected: i64 },
    #[error(
        "the database's schema is at version {found}, newer than this opsgate knows ({known}): \
         upgrade opsgate, or point it at another database"
    )]
    SchemaTooNew { found: i64, known: i64 },
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
