//! The audit log: appends (inside the caller's transaction or on their
//! own), reads, import of an exported log, and verification of the chain.
//!
//! Records are only ever inserted. An append reads the chain's head and
//! links after it, so appends must take turns: they do, as every write
//! transaction does (`writer.rs`: on SQLite there is one writer, on
//! PostgreSQL every write transaction holds a transaction-scoped advisory
//! lock, across instances). The hash chain
//! itself is in `chain.rs`; signed statements of its head kept outside the
//! database in `anchor.rs`.

pub(crate) mod anchor;
pub(crate) mod chain;

use futures_util::TryStreamExt;
use jiff::Timestamp;

use crate::backend::{Row, WriteTransaction};
use crate::{Error, Result, Store};
use chain::{AuditRow, ChainChecker, ChainReport, ChainedRecord, GENESIS_HASH, chain_hash};

/// An audit record to append: the store adds the sequence number, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        kind: impl Into<String>,
        actor: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        AuditEntry {
            kind: kind.into(),
            actor: actor.into(),
            detail,
        }
    }
}

/// The columns of an audit row, in [`audit_row`]'s terms.
macro_rules! select_audit {
    ($rest:literal) => {
        concat!(
            "SELECT seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash FROM audit ",
            $rest
        )
    };
}

/// A run's audit trail: its own records and its event's, on `audit_by_run`
/// and `audit_by_event`.
pub(crate) const RUN_TRAIL: &str = select_audit!(
    "WHERE run_id = $1 OR event_id = (SELECT event_id FROM runs WHERE id = $1) ORDER BY seq"
);

fn audit_row(row: &Row) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: row.get("seq")?,
        recorded_at: row.get("recorded_at")?,
        run_id: row.get("run_id")?,
        event_id: row.get("event_id")?,
        kind: row.get("kind")?,
        actor: row.get("actor")?,
        detail: row.json("detail")?,
        prev_hash: row.get("prev_hash")?,
        hash: row.get("hash")?,
    })
}

/// Appends records to the chain inside the caller's transaction, which
/// holds the chain until it ends, so "read the head, append after it"
/// cannot race.
///
/// `now` was read by the caller before it got its turn at the chain, so a
/// writer that waited may hold an older time than the record it now
/// follows. Records are stamped with the later of the two, so that time
/// never goes backwards along the chain and two runs never seem to overlap.
pub(crate) async fn append(
    tx: &mut WriteTransaction,
    now: Timestamp,
    run_id: Option<&str>,
    event_id: Option<&str>,
    entries: &[AuditEntry],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let head = tx
        .query("SELECT seq, hash, recorded_at FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional()
        .await?;
    let (mut seq, mut prev_hash, head_time) = match head {
        Some(row) => (
            row.get::<i64, _>("seq")?,
            row.get::<String, _>("hash")?,
            Some(row.get::<String, _>("recorded_at")?),
        ),
        None => (0, GENESIS_HASH.to_owned(), None),
    };
    let recorded_at = chain::not_before_head(now, head_time.as_deref(), seq).to_string();
    // All the records in one statement, as a JSON array of
    // `[seq, kind, actor, detail, prev_hash, hash]`: a statement costs a
    // round trip to the database, and a transition appends several.
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let hash = chain_hash(
            &prev_hash,
            &ChainedRecord {
                seq,
                recorded_at: &recorded_at,
                run_id,
                event_id,
                kind: &entry.kind,
                actor: &entry.actor,
                detail: &entry.detail,
            },
        );
        let linked_to = std::mem::replace(&mut prev_hash, hash.clone());
        rows.push((
            seq,
            entry.kind.as_str(),
            entry.actor.as_str(),
            domain::canonical_json(&entry.detail),
            linked_to,
            hash,
        ));
    }
    tx.query_per_backend(
        "INSERT INTO audit (seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash) \
         SELECT value ->> 0, $1, $2, $3, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
         FROM json_each($4)",
        "INSERT INTO audit (seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash) \
         SELECT (value ->> 0)::BIGINT, $1, $2, $3, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
         FROM json_array_elements($4::JSON)",
    )
    .bind(&recorded_at)
    .bind(run_id)
    .bind(event_id)
    .bind(serde_json::to_string(&rows)?)
    .execute()
    .await?;
    Ok(())
}

impl Store {
    /// Appends audit records that belong to no transition (an API refusal,
    /// an operator action).
    pub async fn append_audit(
        &self,
        run_id: Option<&str>,
        entries: &[AuditEntry],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        append(&mut tx, now, run_id, None, entries).await?;
        tx.commit().await?;
        self.audit_appended();
        Ok(())
    }

    /// Tells whoever waits on [`Self::audit_appends`] that this process
    /// committed audit records.
    pub(crate) fn audit_appended(&self) {
        self.audit_appends.send_modify(|commits| *commits += 1);
    }

    /// Changes each time this process commits audit records (a count of
    /// such commits); records other instances append are not seen here.
    pub fn audit_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.audit_appends.subscribe()
    }

    /// The chain's newest record: its sequence number and hash.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let mut reader = self.read().await?;
        let row = reader
            .query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional()
            .await?;
        row.map(|row| Ok((row.get("seq")?, row.get("hash")?)))
            .transpose()
    }

    /// The hash of record `seq`, if the chain holds it.
    pub async fn audit_hash(&self, seq: i64) -> Result<Option<String>> {
        let mut reader = self.read().await?;
        let row = reader
            .query("SELECT hash FROM audit WHERE seq = $1")
            .bind(seq)
            .fetch_optional()
            .await?;
        row.map(|row| row.get("hash")).transpose()
    }

    /// Audit records of one run (or all, when `run_id` is `None`), in order.
    pub async fn audit(&self, run_id: Option<&str>) -> Result<Vec<AuditRow>> {
        let mut reader = self.read().await?;
        let rows = match run_id {
            Some(run_id) => reader.query(RUN_TRAIL).bind(run_id).fetch_all().await?,
            None => {
                reader
                    .query(select_audit!("ORDER BY seq"))
                    .fetch_all()
                    .await?
            }
        };
        rows.iter().map(audit_row).collect()
    }

    /// The run's audit records after `after_seq`, in order, at most `limit`.
    pub async fn run_audit_after(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(select_audit!(
                "WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ))
            .bind(run_id)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all()
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Walks the whole audit chain and names the first broken record.
    pub async fn verify_audit(&self) -> Result<ChainReport> {
        let mut checker = ChainChecker::new();
        let mut reader = self.read().await?;
        let mut rows = std::pin::pin!(reader.query(select_audit!("ORDER BY seq")).fetch());
        while let Some(row) = rows.try_next().await? {
            match audit_row(&row) {
                Ok(record) if checker.check(&record) => {}
                Ok(_) => break,
                // A detail that no longer parses was edited by hand.
                Err(Error::Corrupt(problem)) => {
                    checker.break_at(
                        row.get("seq")?,
                        format!("its detail is not valid JSON ({problem}): altered?"),
                    );
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(checker.report())
    }

    /// Imports an exported audit log (another database's, in order) into
    /// this database's empty audit table, verbatim: sequence numbers, times
    /// and hashes are kept, so the chain verifies here as it did there, and
    /// new records continue it. Refused whole when the chain does not hold
    /// or the table is not empty. Returns how many records were imported.
    pub async fn import_audit(&self, rows: &[AuditRow]) -> Result<u64> {
        let mut checker = ChainChecker::new();
        for row in rows {
            if !checker.check(row) {
                break;
            }
        }
        let report = checker.report();
        if let Some(broken) = report.first_break {
            return Err(Error::ImportRefused(format!(
                "record {}: {}",
                broken.seq, broken.reason
            )));
        }
        let mut tx = self.begin_write().await?;
        let existing: i64 = tx
            .query("SELECT COUNT(*) FROM audit")
            .fetch_one()
            .await?
            .get(0)?;
        if existing > 0 {
            return Err(Error::ImportRefused(format!(
                "the audit table already holds {existing} record(s)"
            )));
        }
        for row in rows {
            tx.query(
                "INSERT INTO audit (seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(row.seq)
            .bind(&row.recorded_at)
            .bind(&row.run_id)
            .bind(&row.event_id)
            .bind(&row.kind)
            .bind(&row.actor)
            .bind(domain::canonical_json(&row.detail))
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute()
            .await?;
        }
        tx.commit().await?;
        self.audit_appended();
        Ok(rows.len() as u64)
    }
}
