//! Shadow mode's report: per runbook, what opsgate saw and would have done
//! while it only watched, beside what people then did — the evidence a
//! team reads before it switches a runbook from `mode: shadow` to live
//! (a versioned runbook change).
//!
//! Intake makes the shadowed runs (`intake.rs`: stopped before any call,
//! with the requests they would have sent) and records a person's
//! resolution beside them when the ticket or alert is resolved; this file
//! only reads and adds up.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;

use domain::{NewEvent, Principal};

use crate::{Error, Result, Runtime};

/// The pattern that puts every proposer in shadow: a runtime built for a
/// replay (`Config::shadow_principals`) has it, and nothing else may
/// replay.
pub const EVERYONE: &str = "*";

/// One event of a replay: as it was sent, by whom, and where it was read.
#[derive(Debug, Clone)]
pub struct ReplayRow {
    /// Where the row was read (a line number), for the order of rows that
    /// happened at the same time.
    pub line: usize,
    /// The event, with `occurred_at` set: a replay judges it at that time.
    pub event: NewEvent,
    pub requester: Principal,
}

/// What a replay did with its rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayTally {
    pub rows: usize,
    /// The first and last event times replayed.
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// How many rows ended in each disposition (`shadowed`,
    /// `shadow_held`, `no_match`, `below_recurrence`, …).
    pub dispositions: BTreeMap<String, u64>,
}

/// The shadow report since a time.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub since: Timestamp,
    /// One entry per runbook that shadowed or held off an event, by id.
    pub runbooks: Vec<RunbookShadow>,
}

/// One runbook's shadow record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunbookShadow {
    pub runbook: String,
    /// The runbook's mode now: `shadow`, `live` (shadowed earlier, or for a
    /// principal in shadow), or `unknown` (no longer in the catalog).
    pub mode: &'static str,
    /// Events that matched it: shadowed, plus held off.
    pub events_seen: u64,
    /// Shadowed runs: matched, planned, decided and stopped before any call.
    pub shadowed: u64,
    /// Events on a subject shadowed within the runbook's `shadow_hold`.
    pub held_off: u64,
    /// What the shadowed runs were decided to do.
    pub would_run: u64,
    pub would_ask: u64,
    pub would_refuse: u64,
    /// Shadowed runs whose problem a person has resolved since.
    pub resolved: u64,
    /// Resolved the way opsgate would have: the runbook's close code.
    pub agreed: u64,
    /// Resolved otherwise, or opsgate would have refused.
    pub differed: u64,
    /// Resolved, but the runbook declares no close code to compare.
    pub not_comparable: u64,
    /// `agreed / (agreed + differed)`, when anything was compared.
    pub agreement: Option<f64>,
    /// The cases that differ, oldest first.
    pub differing: Vec<ShadowCase>,
}

/// A shadowed run a person resolved otherwise than opsgate would have.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowCase {
    pub run_id: String,
    pub subject: String,
    /// The ticket, when the event named one.
    pub ticket: Option<String>,
    pub shadowed_at: Timestamp,
    /// `run`, `ask for approval` or `refuse`.
    pub would: String,
    /// The close code the runbook would have resolved with.
    pub would_close_code: Option<String>,
    /// What the person did.
    pub resolved_by: Option<String>,
    pub close_code: Option<String>,
    pub close_notes: Option<String>,
    pub group: Option<String>,
}

/// The shadow report.
pub struct Shadow<'a>(&'a Runtime);

impl Runtime {
    pub fn shadow(&self) -> Shadow<'_> {
        Shadow(self)
    }
}

impl Shadow<'_> {
    /// Replays past events in shadow: each is matched, planned and decided
    /// at the time it happened, one after the other in that order (rows of
    /// one time in the order given), and stopped before any call; `pace`
    /// waits between events. The answer depends on the events and their
    /// times only — not on the pace, nor on the order of the file. Only a runtime
    /// that shadows everyone ([`EVERYONE`]) replays: nothing may act.
    pub async fn replay(
        &self,
        mut rows: Vec<ReplayRow>,
        pace: Option<std::time::Duration>,
    ) -> Result<ReplayTally> {
        if !self
            .0
            .inner
            .shadow_principals
            .iter()
            .any(|pattern| pattern == EVERYONE)
        {
            return Err(Error::InvalidReplay {
                message: "a replay runs only on a runtime that shadows everyone: nothing may act"
                    .to_owned(),
            });
        }
        if let Some(row) = rows.iter().find(|row| row.event.occurred_at.is_none()) {
            return Err(Error::InvalidReplay {
                message: format!(
                    "row {}: a replayed event needs the time it happened (`occurred_at`)",
                    row.line
                ),
            });
        }
        rows.sort_by_key(|row| (row.event.occurred_at, row.line));
        let mut tally = ReplayTally {
            rows: rows.len(),
            from: rows.first().and_then(|row| row.event.occurred_at),
            to: rows.last().and_then(|row| row.event.occurred_at),
            ..ReplayTally::default()
        };
        for row in rows {
            if let Some(pace) = pace {
                tokio::time::sleep(pace).await;
            }
            let report = self.0.intake().ingest(row.event, &row.requester).await?;
            *tally
                .dispositions
                .entry(report.disposition.as_str().to_owned())
                .or_default() += 1;
        }
        Ok(tally)
    }

    /// Every runbook's shadowed runs and held-off events since `since`.
    pub async fn report(&self, since: Timestamp) -> Result<ShadowReport> {
        let store = &self.0.inner.store;
        let runs = store.shadowed_runs(since).await?;
        let held = store.shadow_held_events(since).await?;
        let catalog = self.0.catalog();
        let mut runbooks: BTreeMap<String, RunbookShadow> = BTreeMap::new();
        for run in &runs {
            let shadow = entry(&mut runbooks, catalog, &run.runbook_id);
            shadow.shadowed += 1;
            let would = text(&run.shadowed["would"]).unwrap_or_default();
            match would.as_str() {
                "run" => shadow.would_run += 1,
                "ask for approval" => shadow.would_ask += 1,
                _ => shadow.would_refuse += 1,
            }
            let Some(resolved) = &run.resolved else {
                continue;
            };
            shadow.resolved += 1;
            match resolved["agrees"].as_bool() {
                Some(true) => shadow.agreed += 1,
                Some(false) => {
                    shadow.differed += 1;
                    shadow.differing.push(ShadowCase {
                        run_id: run.run_id.clone(),
                        subject: run.subject.clone(),
                        ticket: text(&run.fields["ticket"]),
                        shadowed_at: run.created_at,
                        would,
                        would_close_code: text(&resolved["would_close_code"]),
                        resolved_by: text(&resolved["by"]),
                        close_code: text(&resolved["close_code"]),
                        close_notes: text(&resolved["close_notes"]),
                        group: text(&resolved["group"]),
                    });
                }
                None => shadow.not_comparable += 1,
            }
        }
        for (id, count) in held {
            entry(&mut runbooks, catalog, &id).held_off += count;
        }
        let runbooks = runbooks
            .into_values()
            .map(|mut shadow| {
                shadow.events_seen = shadow.shadowed + shadow.held_off;
                let compared = shadow.agreed + shadow.differed;
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let agreement = (compared > 0).then(|| shadow.agreed as f64 / compared as f64);
                shadow.agreement = agreement;
                shadow
            })
            .collect();
        Ok(ShadowReport { since, runbooks })
    }
}

/// How far back a report looks when not told: thirty days.
const DEFAULT_SINCE: SignedDuration = SignedDuration::from_hours(30 * 24);

/// A report's `since` as a person writes it: a time (RFC 3339), how long
/// ago (`7d`, `24h`, `90m`), or nothing (thirty days ago); the error
/// says what to write instead.
pub fn report_since(text: Option<&str>, now: Timestamp) -> std::result::Result<Timestamp, String> {
    let too_far = || "`since` is too far back".to_owned();
    let Some(text) = text.map(str::trim) else {
        return now.checked_sub(DEFAULT_SINCE).map_err(|_| too_far());
    };
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    match runbook::parse_duration(text) {
        Some(ago_ms) => i64::try_from(ago_ms)
            .ok()
            .and_then(|ms| now.checked_sub(SignedDuration::from_millis(ms)).ok())
            .ok_or_else(too_far),
        None => Err(format!(
            "`since` must be a time (2026-12-01T00:00:00Z) or how long ago (`7d`, `24h`), \
             not `{text}`"
        )),
    }
}

/// `id`'s entry, made on first sight with the runbook's mode now.
fn entry<'m>(
    runbooks: &'m mut BTreeMap<String, RunbookShadow>,
    catalog: &runbook::Catalog,
    id: &str,
) -> &'m mut RunbookShadow {
    runbooks
        .entry(id.to_owned())
        .or_insert_with(|| RunbookShadow {
            runbook: id.to_owned(),
            mode: catalog
                .get(id)
                .map_or("unknown", |runbook| runbook.mode.as_str()),
            ..RunbookShadow::default()
        })
}

fn text(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_a_time_or_how_long_ago() {
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let at = |text: &str| text.parse::<Timestamp>().unwrap();
        assert_eq!(
            report_since(Some("2026-12-01T00:00:00Z"), now),
            Ok(at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            report_since(Some("1d"), now),
            Ok(at("2026-12-04T12:00:00Z"))
        );
        assert_eq!(
            report_since(Some(" 90m "), now),
            Ok(at("2026-12-05T10:30:00Z"))
        );
        assert_eq!(report_since(None, now), Ok(at("2026-11-05T12:00:00Z")));
        for bad in ["yesterday", "-2h", "", "99999999999d"] {
            let error = report_since(Some(bad), now).unwrap_err();
            assert!(error.contains("since"), "{bad}: {error}");
        }
    }
}
