//! The store's one writer connection, shared by concurrent write
//! transactions so that their commits share one sync (group commit).
//!
//! Every commit waits for the log to reach the disk (`synchronous = FULL`
//! on SQLite, `synchronous_commit = on` on PostgreSQL), and writers take
//! turns anyway: SQLite has one writer, and on PostgreSQL every write
//! appends to the one audit chain under its lock. Transactions committed
//! one after another would cap the store at one sync per transaction,
//! however many writers wait. So a write transaction here is a savepoint
//! inside one open database transaction, shared with the transactions
//! that wait for the writer meanwhile: the *batch*.
//!
//! - [`Writer::begin`] takes the writer (transactions still take turns),
//!   opens the batch when none is open (SQLite: `BEGIN IMMEDIATE`, which
//!   takes the write lock up front; PostgreSQL: `BEGIN` and the audit
//!   chain's advisory lock, see below), or sets a savepoint in the open
//!   one: the transaction that opens a batch is alone in it until it
//!   commits, so it needs none, and a writer on its own pays nothing for
//!   batching;
//! - [`Write::commit`] releases the savepoint into the batch. If nobody
//!   waits for the writer, it commits the batch at once; otherwise it hands
//!   the writer on, and the batch is committed (one COMMIT, one sync) by
//!   the first of its transactions to hold the writer again, after the
//!   ones that were waiting have joined it. Every transaction of the batch
//!   returns only once the batch is on disk, with the batch's outcome: so
//!   nothing it wrote is acknowledged or acted on before it is durable, as
//!   with a COMMIT of its own;
//! - [`Write::rollback`], or a drop, rolls back to the savepoint: the
//!   others' work in the batch stays (the batch's first transaction, alone
//!   in it, rolls the batch back).
//!
//! A batch whose transactions all stop waiting (their callers went away)
//! is committed all the same, by a task of its own, rather than left open
//! holding the write lock until the next write.
//!
//! A transaction sees what the earlier transactions of its batch wrote, as
//! it would have seen it committed; if the batch fails, they all fail.
//! When anything about the batch goes wrong (a COMMIT fails, or a
//! savepoint is gone because the database rolled the whole transaction
//! back after a full disk or an I/O error), the connection is closed,
//! which rolls back whatever is left, every transaction of the batch gets
//! the error, and the next write opens a fresh connection.
//!
//! On PostgreSQL the batch takes the audit chain's advisory lock
//! (transaction-scoped) right after `BEGIN`, before any of its
//! transactions takes a row lock, so every write transaction of every
//! instance holds it: audit appends, and the admissions counted under it
//! (`admission.rs`), take turns across the cluster, and since the lock
//! always comes first, a batch holding it never waits for a row another
//! instance's batch has locked while that one waits for the lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sqlx::{Connection, Database, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::{Error, Result};

/// Whether transactions that wait for the writer share a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commits {
    /// Group commit: what the store does.
    Shared,
    /// One COMMIT, one sync per transaction: only for measuring what
    /// sharing them saves (`benches/group_commit.rs`).
    OneByOne,
}

type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// The writer connection and the batch open on it.
pub(crate) struct Writer<DB: Database> {
    options: Options<DB>,
    /// What opens a batch.
    begin: &'static str,
    commits: Commits,
    state: Arc<Mutex<State<DB>>>,
    /// Tasks waiting to take the writer: while there are some, a commit
    /// leaves its batch open for them to join.
    waiting: AtomicUsize,
    /// Batches committed (COMMITs that succeeded) since the store opened.
    batches_committed: AtomicU64,
}

impl<DB: Database> std::fmt::Debug for Writer<DB> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Writer")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct State<DB: Database> {
    /// `None` after a failure closed it; the next write opens another.
    connection: Option<DB::Connection>,
    /// The open SQLite transaction, if any.
    batch: Option<Batch>,
    /// A transaction was dropped before it committed or rolled back;
    /// whoever takes the writer next rolls it back first.
    abandoned: Option<Scope>,
    /// A statement that opens, marks or ends a transaction was interrupted
    /// ([`State::execute`]): whoever takes the writer next closes the
    /// connection (which rolls back whatever it left open) and fails the
    /// batch, rather than guess what took effect.
    in_doubt: bool,
}

/// What a write transaction is in its batch.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// It opened the batch and is alone in it: the batch is its own.
    Batch,
    /// It joined the open batch: a savepoint in it.
    Savepoint,
}

/// What a batch's transactions wait for: `None` until it is committed or
/// has failed.
type Outcome = Option<Result<(), Arc<Error>>>;

struct Batch {
    outcome: watch::Sender<Outcome>,
}

impl<DB: Database> Writer<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// The writer on `connection`, opened with `options` (the next one is
    /// too, after a failure); `begin` opens a batch.
    pub(crate) fn new(
        connection: DB::Connection,
        options: Options<DB>,
        begin: &'static str,
        commits: Commits,
    ) -> Writer<DB> {
        Writer {
            options,
            begin,
            commits,
            state: Arc::new(Mutex::new(State {
                connection: Some(connection),
                batch: None,
                abandoned: None,
                in_doubt: false,
            })),
            waiting: AtomicUsize::new(0),
            batches_committed: AtomicU64::new(0),
        }
    }

    /// How many batches have been committed: each one COMMIT, one sync.
    pub(crate) fn batches_committed(&self) -> u64 {
        self.batches_committed.load(Ordering::Relaxed)
    }

    /// A write transaction: a savepoint in the open batch, or in a new one.
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<Write<DB>> {
        let mut state = self.take().await;
        if state.connection.is_none() {
            state.connection = Some(DB::Connection::connect_with(&self.options).await?);
        }
        let scope = if state.batch.is_none() {
            if let Err(error) = state.execute(self.begin).await {
                // Whatever part of it took effect goes with the connection.
                state.connection = None;
                return Err(error);
            }
            let (outcome, _) = watch::channel(None);
            state.batch = Some(Batch { outcome });
            Scope::Batch
        } else {
            if let Err(error) = state.execute("SAVEPOINT write").await {
                return Err(state.fail_batch(error));
            }
            Scope::Savepoint
        };
        Ok(Write {
            writer: Arc::clone(self),
            scope,
            state: Some(state),
        })
    }

    /// The writer's connection, for what is not a write transaction (the
    /// durability check); no batch is open while it is held.
    pub(crate) async fn with_connection<T>(
        self: &Arc<Self>,
        use_it: impl AsyncFnOnce(&mut DB::Connection) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.take().await;
        if let Some(batch) = &state.batch {
            let done = batch.outcome.subscribe();
            state.commit_batch(&self.batches_committed).await;
            outcome_of(&done)?;
        }
        if state.connection.is_none() {
            state.connection = Some(DB::Connection::connect_with(&self.options).await?);
        }
        let connection = state.connection.as_mut().ok_or(Error::WriterClosed)?;
        use_it(connection).await
    }

    /// Takes the writer, waiting for the transaction that holds it, and
    /// rolls back what a dropped transaction left.
    async fn take(&self) -> OwnedMutexGuard<State<DB>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Counted down however the wait ends, even when it is abandoned.
        let counted = WaitingFor(&self.waiting);
        let mut state = Arc::clone(&self.state).lock_owned().await;
        drop(counted);
        if state.in_doubt {
            state.in_doubt = false;
            state.abandoned = None;
            state.fail_batch(Error::Interrupted);
        }
        if let Some(scope) = state.abandoned.take() {
            // A failure here ends the batch with the error, which its
            // transactions get; this one starts afresh.
            let _ = state.undo(scope).await;
        }
        state
    }

    /// Waits until the batch of `done` is on disk (committing it if this
    /// transaction is the one to) and returns its outcome.
    async fn settle(
        self: &Arc<Self>,
        state: OwnedMutexGuard<State<DB>>,
        mut done: watch::Receiver<Outcome>,
    ) -> Result<()> {
        if self.commits == Commits::OneByOne || self.waiting.load(Ordering::SeqCst) == 0 {
            self.commit_whatever_happens(state, &mut done).await;
            return outcome_of(&done);
        }
        drop(state);
        let _left_to_commit = CommitIfAbandoned {
            writer: Arc::clone(self),
            done: done.clone(),
        };
        let state = tokio::select! {
            biased;
            _ = done.wait_for(Option::is_some) => None,
            state = self.take() => Some(state),
        };
        // Batches end only under the writer: if ours has not, it is the
        // one open now, and this transaction commits it.
        if let Some(state) = state
            && done.borrow().is_none()
        {
            self.commit_whatever_happens(state, &mut done).await;
        }
        outcome_of(&done)
    }
}

/// Commits the batch of `done` if whoever waited for it stops waiting (its
/// future dropped: a client that went away) before the batch is committed.
/// Otherwise the batch could stay open, holding the database's write lock
/// (and on PostgreSQL the audit chain's, which every instance waits for),
/// until this process next writes.
struct CommitIfAbandoned<DB: Database>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    writer: Arc<Writer<DB>>,
    done: watch::Receiver<Outcome>,
}

impl<DB: Database> Drop for CommitIfAbandoned<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn drop(&mut self) {
        if self.done.borrow().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (writer, done) = (Arc::clone(&self.writer), self.done.clone());
        runtime.spawn(async move {
            let mut state = writer.take().await;
            if done.borrow().is_none() {
                state.commit_batch(&writer.batches_committed).await;
            }
        });
    }
}

impl<DB: Database> Writer<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Commits the open batch in a task of its own, which goes on should
    /// this caller go away, and waits for its outcome (in `done`).
    async fn commit_whatever_happens(
        self: &Arc<Self>,
        mut state: OwnedMutexGuard<State<DB>>,
        done: &mut watch::Receiver<Outcome>,
    ) {
        let writer = Arc::clone(self);
        tokio::spawn(async move {
            state.commit_batch(&writer.batches_committed).await;
        });
        let _ = done.wait_for(Option::is_some).await;
    }
}

fn outcome_of(done: &watch::Receiver<Outcome>) -> Result<()> {
    match &*done.borrow() {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(Error::CommitFailed(Arc::clone(error))),
        // The sender is dropped only with its outcome set.
        None => Err(Error::WriterClosed),
    }
}

struct WaitingFor<'a>(&'a AtomicUsize);

impl Drop for WaitingFor<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<DB: Database> State<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Runs one of the statements that open, mark or end transactions.
    /// Until it has answered, the connection's transaction is in doubt:
    /// should the caller go away meanwhile, the statement may or may not
    /// have run, and the next to take the writer starts afresh.
    async fn execute(&mut self, sql: &'static str) -> Result<()> {
        let connection = self.connection.as_mut().ok_or(Error::WriterClosed)?;
        self.in_doubt = true;
        connection.execute(sql).await?;
        self.in_doubt = false;
        Ok(())
    }

    /// Undoes the current transaction: back to its savepoint, keeping the
    /// rest of the batch; or, the batch being its own, the batch.
    async fn undo(&mut self, scope: Scope) -> Result<()> {
        let sql = match scope {
            Scope::Savepoint => "ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write",
            Scope::Batch => "ROLLBACK",
        };
        match self.execute(sql).await {
            Ok(()) => {
                if let Scope::Batch = scope {
                    self.batch = None;
                }
                Ok(())
            }
            Err(error) => Err(self.fail_batch(error)),
        }
    }

    /// Commits the open batch, if any, and tells its transactions.
    async fn commit_batch(&mut self, committed: &AtomicU64) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        match self.execute("COMMIT").await {
            Ok(()) => {
                committed.fetch_add(1, Ordering::Relaxed);
                batch.outcome.send_replace(Some(Ok(())));
            }
            Err(error) => {
                self.batch = Some(batch);
                self.fail_batch(error);
            }
        }
    }

    /// Ends the batch with `error` for all its transactions: the connection
    /// is closed, which rolls back what SQLite has not already.
    fn fail_batch(&mut self, error: Error) -> Error {
        let error = Arc::new(error);
        self.connection = None;
        if let Some(batch) = self.batch.take() {
            batch.outcome.send_replace(Some(Err(Arc::clone(&error))));
        }
        Error::CommitFailed(error)
    }
}

/// One write transaction: a batch of its own, or a savepoint in the
/// writer's open batch; it holds the writer until it commits or rolls back.
pub(crate) struct Write<DB: Database> {
    writer: Arc<Writer<DB>>,
    scope: Scope,
    /// `None` once committed or rolled back.
    state: Option<OwnedMutexGuard<State<DB>>>,
}

impl<DB: Database> Write<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub(crate) fn connection(&mut self) -> &mut DB::Connection {
        match self
            .state
            .as_mut()
            .and_then(|state| state.connection.as_mut())
        {
            Some(connection) => connection,
            // `begin` returns a transaction only on an open connection,
            // and `commit`/`rollback` consume it.
            None => unreachable!("a write transaction always holds an open connection"),
        }
    }

    /// Releases the savepoint (if any) into the batch and returns once the
    /// batch is on disk.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let Some(mut state) = self.state.take() else {
            return Err(Error::WriterClosed);
        };
        let done = match &state.batch {
            Some(batch) => batch.outcome.subscribe(),
            None => return Err(Error::WriterClosed),
        };
        if let Scope::Savepoint = self.scope
            && let Err(error) = state.execute("RELEASE SAVEPOINT write").await
        {
            return Err(state.fail_batch(error));
        }
        self.writer.settle(state, done).await
    }

    /// Undoes this transaction's writes. What it read may have come from
    /// the batch's other transactions, so it too returns only once they
    /// are on disk, and fails with them.
    pub(crate) async fn rollback(mut self) -> Result<()> {
        let Some(mut state) = self.state.take() else {
            return Err(Error::WriterClosed);
        };
        let done = match &state.batch {
            Some(batch) => batch.outcome.subscribe(),
            None => return Err(Error::WriterClosed),
        };
        state.undo(self.scope).await?;
        match self.scope {
            // Alone in its batch: there is nothing else to wait for.
            Scope::Batch => Ok(()),
            Scope::Savepoint => self.writer.settle(state, done).await,
        }
    }
}

impl<DB: Database> Drop for Write<DB> {
    fn drop(&mut self) {
        if let Some(state) = &mut self.state {
            state.abandoned = Some(self.scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Row, Sqlite};

    use super::*;

    /// A writer on a fresh file with one table, `rows(n)`, and another
    /// whose foreign key is checked only at COMMIT.
    async fn writer(directory: &tempfile::TempDir) -> Arc<Writer<Sqlite>> {
        let path = directory.path().join("writer.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .foreign_keys(true);
        let mut connection = options.connect().await.unwrap();
        connection
            .execute(
                "CREATE TABLE rows (n INTEGER PRIMARY KEY);
                 CREATE TABLE refs (n INTEGER REFERENCES rows (n) DEFERRABLE INITIALLY DEFERRED);",
            )
            .await
            .unwrap();
        Arc::new(Writer::new(
            connection,
            options,
            "BEGIN IMMEDIATE",
            Commits::Shared,
        ))
    }

    /// A transaction that has inserted `n`, neither committed nor
    /// rolled back.
    async fn begun(writer: &Arc<Writer<Sqlite>>, n: i64) -> Result<Write<Sqlite>> {
        let mut write = writer.begin().await?;
        sqlx::query("INSERT INTO rows (n) VALUES ($1)")
            .bind(n)
            .execute(write.connection())
            .await?;
        Ok(write)
    }

    async fn insert(writer: &Arc<Writer<Sqlite>>, n: i64) -> Result<()> {
        begun(writer, n).await?.commit().await
    }

    async fn stored(writer: &Arc<Writer<Sqlite>>) -> Vec<i64> {
        writer
            .with_connection(async |connection| {
                let rows = sqlx::query("SELECT n FROM rows ORDER BY n")
                    .fetch_all(connection)
                    .await?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            })
            .await
            .unwrap()
    }

    /// A transaction that has inserted `n` and holds the writer until
    /// `others` tasks wait for it.
    async fn while_others_wait(
        writer: &Arc<Writer<Sqlite>>,
        others: usize,
        n: i64,
    ) -> Write<Sqlite> {
        let write = begun(writer, n).await.unwrap();
        while writer.waiting.load(Ordering::SeqCst) < others {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        write
    }

    #[tokio::test]
    async fn transactions_that_wait_for_the_writer_share_one_commit() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory).await;
        let mut others = Vec::new();
        for n in 1..32 {
            let writer = Arc::clone(&writer);
            others.push(tokio::spawn(async move { insert(&writer, n).await }));
        }
        let first = while_others_wait(&writer, 31, 0).await;
        first.commit().await.unwrap();
        for other in others {
            other.await.unwrap().unwrap();
        }
        assert_eq!(stored(&writer).await, (0..32).collect::<Vec<_>>());
        assert_eq!(writer.batches_committed(), 1, "32 transactions, one COMMIT");
    }

    #[tokio::test]
    async fn a_transaction_alone_commits_at_once() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory).await;
        for n in 0..5 {
            insert(&writer, n).await.unwrap();
            assert_eq!(writer.batches_committed(), n as u64 + 1);
        }
    }

    #[tokio::test]
    async fn a_transaction_rolled_back_or_dropped_in_a_batch_leaves_the_others() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory).await;
        let committed = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { insert(&writer, 1).await })
        };
        let rolled_back = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { begun(&writer, 2).await?.rollback().await })
        };
        let dropped = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                drop(begun(&writer, 3).await?);
                Ok::<_, Error>(())
            })
        };
        let also_committed = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { insert(&writer, 4).await })
        };
        let first = while_others_wait(&writer, 4, 0).await;
        first.commit().await.unwrap();
        committed.await.unwrap().unwrap();
        rolled_back.await.unwrap().unwrap();
        dropped.await.unwrap().unwrap();
        also_committed.await.unwrap().unwrap();
        assert_eq!(stored(&writer).await, vec![0, 1, 4]);
    }

    #[tokio::test]
    async fn a_transaction_alone_rolled_back_or_dropped_leaves_nothing_and_the_writer_goes_on() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory).await;
        begun(&writer, 1).await.unwrap().rollback().await.unwrap();
        drop(begun(&writer, 2).await.unwrap());
        insert(&writer, 3).await.unwrap();
        assert_eq!(stored(&writer).await, vec![3]);
        assert_eq!(writer.batches_committed(), 1);
    }

    #[tokio::test]
    async fn a_batch_whose_transactions_all_stop_waiting_is_committed_all_the_same() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory).await;
        let first = begun(&writer, 1).await.unwrap();
        // The second takes the writer after the first, and never finishes.
        let (holding, held) = tokio::sync::oneshot::channel();
        let second = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                let write = begun(&writer, 2).await.unwrap();
                let _ = holding.send(());
                std::future::pending::<()>().await;
                drop(write);
            })
        };
        while writer.waiting.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The first releases into the batch and waits for it; then both
        // callers go away.
        let committing = tokio::spawn(async move { first.commit().await });
        held.await.unwrap();
        committing.abort();
        let _ = committing.await;
        second.abort();
        let _ = second.await;

        // The batch is committed by a task of its own: wait for it (the
        // count goes up once its COMMIT has returned).
        for _ in 0..500 {
            if writer.batches_committed() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(writer.batches_committed(), 1);
        // What a reader sees: only what was committed.
        let path = directory.path().join("writer.db");
        let mut reader = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let committed: Vec<i64> = sqlx::query("SELECT n FROM rows ORDER BY n")
            .fetch_all(&mut reader)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            committed,
            vec![1],
            "the first's row, committed; not the second's"
        );
    }

    #[tokio::test]
    async fn a_batch_whose_commit_fails_fails_every_transaction_in_it_and_stores_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory).await;
        let innocent = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { insert(&writer, 1).await })
        };
        let culprit = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                // Refers to a row nobody inserts: refused only at COMMIT.
                let mut write = writer.begin().await?;
                sqlx::query("INSERT INTO refs (n) VALUES (99)")
                    .execute(write.connection())
                    .await?;
                write.commit().await
            })
        };
        let first = while_others_wait(&writer, 2, 0).await;
        let first = first.commit().await;
        let innocent = innocent.await.unwrap();
        let culprit = culprit.await.unwrap();
        for outcome in [first, innocent, culprit] {
            let error = outcome.expect_err("the batch's commit failed");
            assert!(
                error.to_string().contains("FOREIGN KEY constraint failed"),
                "{error}"
            );
        }
        assert_eq!(stored(&writer).await, Vec::<i64>::new());
        assert_eq!(writer.batches_committed(), 0);
        // The writer goes on, on a fresh connection.
        insert(&writer, 5).await.unwrap();
        assert_eq!(stored(&writer).await, vec![5]);
    }
}
