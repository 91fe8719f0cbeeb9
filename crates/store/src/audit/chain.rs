//! The audit log's hash chain.
//!
//! Each record's hash is SHA-256 over the previous record's hash and the
//! canonical JSON of the record itself (sequence number, time, run, event,
//! kind, actor, detail). Altering any field of a stored record breaks its
//! own hash; deleting a record breaks the next record's link. Verification
//! walks the chain in order and names the first record that does not hold.
//! Removing the newest records breaks no link: anchors kept outside the
//! database (`anchor.rs`) catch that.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRow {
    pub seq: i64,
    pub recorded_at: String,
    pub run_id: Option<String>,
    pub event_id: Option<String>,
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What the hash of a record covers: everything but its own hashes.
#[derive(Debug, Clone, Copy)]
pub struct ChainedRecord<'a> {
    pub seq: i64,
    pub recorded_at: &'a str,
    pub run_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub kind: &'a str,
    pub actor: &'a str,
    pub detail: &'a serde_json::Value,
}

impl AuditRow {
    /// The part of this row its hash covers.
    pub fn chained(&self) -> ChainedRecord<'_> {
        ChainedRecord {
            seq: self.seq,
            recorded_at: &self.recorded_at,
            run_id: self.run_id.as_deref(),
            event_id: self.event_id.as_deref(),
            kind: &self.kind,
            actor: &self.actor,
            detail: &self.detail,
        }
    }
}

/// The hash of a record, given the hash of the record before it.
pub fn chain_hash(prev_hash: &str, record: &ChainedRecord<'_>) -> String {
    let body = json!({
        "seq": record.seq,
        "recorded_at": record.recorded_at,
        "run_id": record.run_id,
        "event_id": record.event_id,
        "kind": record.kind,
        "actor": record.actor,
        "detail": record.detail,
    });
    let mut material = String::with_capacity(prev_hash.len() + 256);
    material.push_str(prev_hash);
    material.push('\n');
    material.push_str(&domain::canonical_json(&body));
    domain::sha256_hex(material.as_bytes())
}

/// The time to stamp a new record with: `now`, or the chain head's time
/// when that is later (see `append_audit`). A head whose time does not
/// parse (written by hand) does not hold the chain up; it is logged.
pub(crate) fn not_before_head(now: Timestamp, head_time: Option<&str>, head_seq: i64) -> Timestamp {
    let Some(head_time) = head_time else {
        return now;
    };
    match head_time.parse::<Timestamp>() {
        Ok(head_time) => now.max(head_time),
        Err(error) => {
            tracing::warn!(seq = head_seq, recorded_at = %head_time, error = %error, "the audit head's time does not parse");
            now
        }
    }
}

/// The first record where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainReport {
    pub records: u64,
    /// The sequence number of the last record checked: the newest when the
    /// chain holds, 0 for an empty chain.
    pub head_seq: i64,
    pub head_hash: String,
    pub first_break: Option<ChainBreak>,
    /// Records whose time is earlier than the record before them. The
    /// chain still holds (their hashes cover those times), but the times
    /// tell a false story: records written before opsgate stamped them in
    /// chain order, or edited with their hashes recomputed.
    pub time_regressions: u64,
    /// The first such record.
    pub first_time_regression: Option<i64>,
}

/// Checks rows given in sequence order; stops at the first break.
pub(crate) struct ChainChecker {
    expected_seq: i64,
    expected_prev: String,
    previous_time: Option<Timestamp>,
    pub(crate) records: u64,
    pub(crate) first_break: Option<ChainBreak>,
    time_regressions: u64,
    first_time_regression: Option<i64>,
}

impl ChainChecker {
    pub(crate) fn new() -> Self {
        ChainChecker {
            expected_seq: 1,
            expected_prev: GENESIS_HASH.to_owned(),
            previous_time: None,
            records: 0,
            first_break: None,
            time_regressions: 0,
            first_time_regression: None,
        }
    }

    /// Returns false once the chain is broken.
    pub(crate) fn check(&mut self, row: &AuditRow) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        self.records += 1;
        let broken = if row.seq != self.expected_seq {
            Some(ChainBreak {
                seq: row.seq,
                reason: format!(
                    "record {} is missing (deleted?): found {} next",
                    self.expected_seq, row.seq
                ),
            })
        } else if row.prev_hash != self.expected_prev {
            Some(ChainBreak {
                seq: row.seq,
                reason: "its prev_hash does not match the hash of the record before it".into(),
            })
        } else {
            let computed = chain_hash(&row.prev_hash, &row.chained());
            (computed != row.hash).then(|| ChainBreak {
                seq: row.seq,
                reason: "its content does not match its hash (altered?)".into(),
            })
        };
        if broken.is_none()
            && let Ok(time) = row.recorded_at.parse::<Timestamp>()
        {
            if self.previous_time.is_some_and(|previous| time < previous) {
                self.time_regressions += 1;
                self.first_time_regression.get_or_insert(row.seq);
            }
            self.previous_time = Some(time);
        }
        self.expected_seq = row.seq + 1;
        self.expected_prev = row.hash.clone();
        self.first_break = broken;
        self.first_break.is_none()
    }

    /// Records a break found outside [`ChainChecker::check`] (a row that
    /// cannot even be read).
    pub(crate) fn break_at(&mut self, seq: i64, reason: String) {
        if self.first_break.is_none() {
            self.records += 1;
            self.first_break = Some(ChainBreak { seq, reason });
        }
    }

    pub(crate) fn report(self) -> ChainReport {
        ChainReport {
            records: self.records,
            head_seq: self.expected_seq - 1,
            head_hash: self.expected_prev,
            first_break: self.first_break,
            time_regressions: self.time_regressions,
            first_time_regression: self.first_time_regression,
        }
    }
}
