//! One run per problem, not per update: what intake asks before it stores
//! a run, and what the answer makes of the event.
//!
//! Ticket systems send an update on every change — a field edited, a note
//! added, opsgate's own notes among them — and alerts are sent again while
//! they fire. A dedup key's open run already turns such a repeat into a
//! duplicate (the unique index on open runs, `events.rs`); this module
//! also holds back the repeats that arrive after that run finished. A
//! dedup key that had a run of the runbook starts no other until the
//! problem was resolved since that run was created — an inactive event of
//! the dedup key received after it — or until the runbook's `rerun.after`
//! has passed since. And a new ticket about a subject that already has an
//! open run of the runbook, under another dedup key, is linked to that run
//! instead of starting a second one.
//!
//! The question is asked inside the intake's transaction, after the
//! admission lock every intake that stores a run takes (`admission.rs`),
//! so the answer and the run stored on it are one step on every instance.
//! A run finishing while an update is taken in cannot let a second run
//! through either way: the answer never depends on whether the earlier
//! run is still open — open, the update is a duplicate; finished, it is
//! suppressed — only on whether a resolution arrived since, and a
//! resolution and an update racing are ordered by the lock.

use domain::Event;
use jiff::Timestamp;

use crate::backend::Connection;
use crate::writebacks::NewWriteback;
use crate::{Result, Store};

/// What intake checks before it stores a run of `runbook_id`.
#[derive(Debug, Clone)]
pub struct OneRunPerProblem {
    pub runbook_id: String,
    /// The runbook's `rerun.after`, as the time the event of a run of the
    /// dedup key must have happened at or before (event time) for the run
    /// to no longer hold a new one back; `None` when only a resolution
    /// ends the hold.
    pub rerun_once_happened_by: Option<Timestamp>,
    /// Set for an event about a ticket: an open run of the runbook on the
    /// event's subject, started by another dedup key, takes the ticket in.
    pub link: Option<Link>,
}

/// A ticket linked to a run that already works on its problem.
#[derive(Debug, Clone)]
pub struct Link {
    /// The ticket, as its system names it in write-backs.
    pub ticket: String,
    /// The write-back the run gains, so the ticket is told the run's
    /// story; `None` when the runbook tells no ticket.
    pub writeback: Option<NewWriteback>,
}

/// A dedup key's run that bears on a new one: an open run of the dedup
/// key (of any runbook), or else the runbook's last run of it — a run the
/// dedup key's ticket was linked to counting as one of its own, so the
/// linked ticket's next updates are held back as the run's own ticket's
/// are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierRun {
    pub run_id: String,
    pub is_open: bool,
    /// When the run's event happened (`runs.event_ms`).
    pub event_ms: i64,
    /// Whether an inactive event of the dedup key (resolved, closed)
    /// arrived at or after the run was created.
    pub resolved_since: bool,
}

/// What holds a new run back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// The dedup key's run is open: the event is a duplicate of it.
    Open { run_id: String },
    /// The dedup key had a run and the problem was not resolved since.
    Suppressed { earlier_run_id: String },
    /// Another ticket's open run of the runbook works on the same subject.
    Linked { run_id: String },
}

impl EarlierRun {
    /// Whether this run holds back a new run under `rule`.
    fn holds_back(&self, rule: Option<&OneRunPerProblem>) -> Option<Held> {
        if self.is_open {
            return Some(Held::Open {
                run_id: self.run_id.clone(),
            });
        }
        let rule = rule?;
        let rerun_is_due = rule
            .rerun_once_happened_by
            .is_some_and(|by| self.event_ms <= by.as_millisecond());
        (!self.resolved_since && !rerun_is_due).then(|| Held::Suppressed {
            earlier_run_id: self.run_id.clone(),
        })
    }
}

/// What [`earlier_run`] asks. The inactive statuses are those
/// `domain::EventStatus::is_active` says are not. The linked runs are
/// found by id: `runbook_id || ''` keeps SQLite from reaching them through
/// the runbook's index instead, which reads every run the runbook ever had.
pub(crate) const EARLIER_RUN: &str = "SELECT id, is_open, event_ms, EXISTS (SELECT 1 FROM events \
     WHERE events.dedup_key = $1 AND events.received_ms >= runs.created_ms \
     AND events.status IN ('resolved', 'closed')) AS resolved_since \
     FROM runs WHERE (dedup_key = $1 AND (is_open = TRUE OR runbook_id = $2)) \
     OR (id IN (SELECT run_id FROM events \
     WHERE dedup_key = $1 AND disposition = 'linked') AND runbook_id || '' = $2) \
     ORDER BY is_open DESC, created_ms DESC, admission_seq DESC LIMIT 1";

/// The dedup key's [`EarlierRun`]: one query, on `runs_by_dedup_key`,
/// `events_by_dedup_key_and_time` (the resolution, the links) and the runs'
/// primary key. Without a runbook, only an open run.
pub(crate) async fn earlier_run(
    connection: &mut impl Connection,
    dedup_key: &str,
    runbook_id: Option<&str>,
) -> Result<Option<EarlierRun>> {
    let row = connection
        .query(EARLIER_RUN)
        .bind(dedup_key)
        .bind(runbook_id)
        .fetch_optional()
        .await?;
    row.map(|row| {
        Ok(EarlierRun {
            run_id: row.get("id")?,
            is_open: row.get("is_open")?,
            event_ms: row.get("event_ms")?,
            resolved_since: row.get("resolved_since")?,
        })
    })
    .transpose()
}

/// The open run of `runbook_id` on `subject` started by another dedup key
/// than `dedup_key`, the oldest when there are several.
async fn open_run_on_subject(
    connection: &mut impl Connection,
    runbook_id: &str,
    subject: &str,
    dedup_key: &str,
) -> Result<Option<String>> {
    let row = connection
        .query(
            "SELECT runs.id FROM runs JOIN events ON events.id = runs.event_id \
             WHERE runs.is_open = TRUE AND runs.runbook_id = $1 AND events.subject = $2 \
             AND runs.dedup_key <> $3 ORDER BY runs.created_ms, runs.id LIMIT 1",
        )
        .bind(runbook_id)
        .bind(subject)
        .bind(dedup_key)
        .fetch_optional()
        .await?;
    row.map(|row| row.get("id")).transpose()
}

/// What holds back the run `event` would start under `rule`, if anything.
pub(crate) async fn held(
    connection: &mut impl Connection,
    event: &Event,
    rule: Option<&OneRunPerProblem>,
) -> Result<Option<Held>> {
    let runbook_id = rule.map(|rule| rule.runbook_id.as_str());
    let earlier = earlier_run(connection, &event.dedup_key, runbook_id).await?;
    if let Some(held) = earlier.and_then(|earlier| earlier.holds_back(rule)) {
        return Ok(Some(held));
    }
    let Some(rule) = rule.filter(|rule| rule.link.is_some()) else {
        return Ok(None);
    };
    let linked = open_run_on_subject(
        connection,
        &rule.runbook_id,
        &event.subject,
        &event.dedup_key,
    )
    .await?;
    Ok(linked.map(|run_id| Held::Linked { run_id }))
}

impl Store {
    /// What would hold back the run `event` would start under `rule`, as
    /// intake's transaction will see it if nothing changes meanwhile: the
    /// look intake takes before deciding (a held event is not counted
    /// towards a recurrence).
    pub async fn held(
        &self,
        event: &Event,
        rule: Option<&OneRunPerProblem>,
    ) -> Result<Option<Held>> {
        let mut reader = self.read().await?;
        held(&mut reader, event, rule).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rerun_once_happened_by: Option<i64>) -> OneRunPerProblem {
        OneRunPerProblem {
            runbook_id: "restart".to_owned(),
            rerun_once_happened_by: rerun_once_happened_by
                .map(|ms| Timestamp::from_millisecond(ms).unwrap()),
            link: None,
        }
    }

    #[test]
    fn what_an_earlier_run_holds_back() {
        let open = Some(Held::Open {
            run_id: "run_1".to_owned(),
        });
        let suppressed = Some(Held::Suppressed {
            earlier_run_id: "run_1".to_owned(),
        });
        // (open, event_ms, resolved since, rule, expected)
        let cases = [
            (true, 1_000, false, Some(rule(None)), open.clone()),
            (true, 1_000, true, Some(rule(Some(5_000))), open.clone()),
            (true, 1_000, false, None, open),
            (false, 1_000, false, Some(rule(None)), suppressed.clone()),
            (false, 1_000, true, Some(rule(None)), None),
            (false, 1_000, false, Some(rule(Some(999))), suppressed),
            (false, 1_000, false, Some(rule(Some(1_000))), None),
            (false, 1_000, false, None, None),
        ];
        for (is_open, event_ms, resolved_since, rule, expected) in cases {
            let earlier = EarlierRun {
                run_id: "run_1".to_owned(),
                is_open,
                event_ms,
                resolved_since,
            };
            assert_eq!(
                earlier.holds_back(rule.as_ref()),
                expected,
                "{earlier:?} under {rule:?}"
            );
        }
    }
}
