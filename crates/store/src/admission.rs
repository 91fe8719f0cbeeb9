//! Admission: the runs the gate counts (cooldowns, rate limits, the global
//! limit, concurrency caps), read where a new run is admitted.
//!
//! Counting and admitting are one step. A count read before the intake's
//! transaction lets a burst of events all count the same runs and all be
//! admitted; so the counts a new run is decided on are read inside the
//! transaction that stores it, which holds the lock every write
//! transaction holds (`writer.rs`): on SQLite the one writer's `BEGIN
//! IMMEDIATE`, on PostgreSQL the audit chain's advisory lock, taken when
//! the transaction's batch begins. Whichever instance an event reaches, the next
//! admission sees this one's run. The store counts what it is asked
//! ([`Counting`]) and knows nothing of the limits; the caller decides on
//! the [`Counts`] (`Store::intake_counted`).
//!
//! Each run is numbered in admission order (`admission_seq`). Before an
//! approved run starts, the gate decides again, and counts towards the
//! windowed limits only the runs admitted before it: those it was admitted
//! after, so it keeps the place it was given.

use std::collections::BTreeMap;

use domain::{Plan, RunState};
use jiff::Timestamp;

use crate::backend::Connection;
use crate::{Result, Store};

/// What to count for one plan of one runbook. A window's start is `None`
/// when the runbook (or the configuration) sets no such limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counting {
    pub runbook_id: String,
    /// The plan's targets: the runs on each are counted for the cooldown.
    pub targets: Vec<String>,
    /// Count the runbook's runs on each target whose event happened at or
    /// after this (event time: `Event::time`).
    pub on_target_since: Option<Timestamp>,
    /// Count the runbook's runs whose event happened at or after this.
    pub of_runbook_since: Option<Timestamp>,
    /// Count every runbook's runs whose event happened at or after this.
    pub all_since: Option<Timestamp>,
    /// Count the runbook's runs under way now ([`is_under_way`]).
    pub under_way: bool,
    /// The run being decided again: the windows count only the runs
    /// admitted before it, and it is never counted itself.
    pub admitted_before: Option<String>,
    /// The run is decided in shadow mode: the shadowed runs that would
    /// have acted count too, as they would have had they run.
    pub with_shadowed: bool,
}

impl Counting {
    /// Whether there is nothing to count: the run can be decided without
    /// the store.
    pub fn is_empty(&self) -> bool {
        self.on_target_since.is_none()
            && self.of_runbook_since.is_none()
            && self.all_since.is_none()
            && !self.under_way
    }
}

/// The runs counted, the gate let through (every state but `denied`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Per target of the plan, within the cooldown's window. A target not
    /// listed had none.
    pub on_target: BTreeMap<String, u32>,
    /// Of the runbook, any target, within the rate limit's window.
    pub of_runbook: u32,
    /// Of every runbook, within the global limit's window.
    pub all: u32,
    /// Of the runbook, under way now.
    pub under_way: u32,
}

/// Whether a run is under way, for a concurrency cap: it was let go and
/// has not finished, whether about to start (`approved`), acting
/// (`running`, `verifying`, `rolling_back`), holding a time-bound change
/// (`in_effect`) or paused before a gated step (`awaiting_approval` with a
/// gate). A run awaiting its first approval is not: it has not started,
/// and the gate decides again before it does.
pub fn is_under_way(state: RunState, machine: &engine::Run) -> bool {
    match state {
        RunState::AwaitingApproval => machine.progress.gate.is_some(),
        state => !state.is_terminal(),
    }
}

/// Counts what `counting` asks for, on `connection`: inside the intake's
/// transaction, after the admission lock, or on a reader for a run
/// decided again (whose predecessors have all committed: each was
/// admitted, under the lock, before it).
pub(crate) async fn count(connection: &mut impl Connection, counting: &Counting) -> Result<Counts> {
    let mut counts = Counts::default();
    let admitted_before = match &counting.admitted_before {
        None => i64::MAX,
        Some(run_id) => {
            let row = connection
                .query("SELECT admission_seq FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional()
                .await?;
            match row {
                Some(row) => row.get("admission_seq")?,
                None => i64::MAX,
            }
        }
    };
    let ms = |since: Option<Timestamp>| since.map(Timestamp::as_millisecond);
    let (on_target_ms, of_runbook_ms) =
        (ms(counting.on_target_since), ms(counting.of_runbook_since));
    let of_runbook = on_target_ms.is_some() || of_runbook_ms.is_some() || counting.under_way;
    if of_runbook {
        // The runbook's runs within the longest window, and its open ones.
        let since = on_target_ms
            .into_iter()
            .chain(of_runbook_ms)
            .min()
            .unwrap_or(i64::MAX);
        let rows = connection
            .query(
                "SELECT id, event_ms, admission_seq, state, plan, machine FROM runs \
                 WHERE runbook_id = $1 AND (event_ms >= $2 OR is_open = TRUE) \
                 AND (state NOT IN ('denied', 'shadowed') OR (state = 'shadowed' AND shadow_acts = TRUE AND $3 = TRUE))",
            )
            .bind(&counting.runbook_id)
            .bind(since)
            .bind(counting.with_shadowed)
            .fetch_all()
            .await?;
        for row in &rows {
            let id: String = row.get("id")?;
            if counting.admitted_before.as_deref() == Some(id.as_str()) {
                continue;
            }
            let event_ms: i64 = row.get("event_ms")?;
            let admission_seq: i64 = row.get("admission_seq")?;
            let state = RunState::parse(&row.get::<String, _>("state")?)?;
            let earlier = admission_seq < admitted_before;
            if earlier && on_target_ms.is_some_and(|since| event_ms >= since) {
                let plan: Plan = row.json("plan")?;
                for target in plan
                    .targets
                    .into_iter()
                    .filter(|target| counting.targets.contains(target))
                {
                    *counts.on_target.entry(target).or_default() += 1;
                }
            }
            if earlier && of_runbook_ms.is_some_and(|since| event_ms >= since) {
                counts.of_runbook += 1;
            }
            // Whoever was admitted first, runs acting now are acting: a
            // run approved late does not overtake the ones already at work.
            if counting.under_way && !state.is_terminal() {
                let machine: engine::Run = row.json("machine")?;
                if is_under_way(state, &machine) {
                    counts.under_way += 1;
                }
            }
        }
    }
    if let Some(since) = counting.all_since {
        let all: i64 = connection
            .query(
                "SELECT COUNT(*) FROM runs WHERE event_ms >= $1 AND admission_seq < $2 \
                 AND (state NOT IN ('denied', 'shadowed') OR (state = 'shadowed' AND shadow_acts = TRUE AND $3 = TRUE))",
            )
            .bind(since.as_millisecond())
            .bind(admitted_before)
            .bind(counting.with_shadowed)
            .fetch_one()
            .await?
            .get(0)?;
        counts.all = u32::try_from(all).unwrap_or(u32::MAX);
    }
    Ok(counts)
}

impl Store {
    /// Counts what the gate judges a run already stored against, before it
    /// starts: see [`Counting::admitted_before`].
    pub async fn count_for_admission(&self, counting: &Counting) -> Result<Counts> {
        let mut reader = self.read().await?;
        count(&mut reader, counting).await
    }
}
