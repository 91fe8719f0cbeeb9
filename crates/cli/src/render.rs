//! Human-readable output: run tables and timelines.

use domain::RecordKind;
use serde_json::Value;
use server::api::{RunDetail, RunSummary};

/// One line per run.
pub fn runs_table(runs: &[RunSummary]) -> String {
    let mut out = format!(
        "{:<30} {:<18} {:<30} {:<16} {}\n",
        "RUN", "STATE", "RUNBOOK", "TARGETS", "CREATED"
    );
    for run in runs {
        out.push_str(&format!(
            "{:<30} {:<18} {:<30} {:<16} {}\n",
            run.id,
            run.state.as_str(),
            run.runbook,
            run.targets.join(","),
            run.created_at,
        ));
    }
    out
}

/// A run's header and its timeline, from `GET /v1/runs/{id}`.
pub fn run_detail(run: &RunDetail) -> String {
    let mut out = String::new();
    out.push_str(&format!("run       {}\n", run.id));
    out.push_str(&format!("state     {}\n", run.state.as_str()));
    out.push_str(&format!(
        "runbook   {} @ {}\n",
        run.runbook,
        domain::short_hash(&run.runbook_version)
    ));
    out.push_str(&format!(
        "event     {} ({})\n",
        run.event["id"].as_str().unwrap_or("-"),
        run.dedup_key
    ));
    out.push_str(&format!("targets   {:?}\n", run.targets));
    out.push_str(&format!(
        "decision  {}: {}\n",
        run.decision.kind.as_str(),
        run.decision.reasons.join("; ")
    ));
    if let Some(reason) = &run.reason {
        out.push_str(&format!("reason    {reason}\n"));
    }
    out.push_str("\ntimeline\n");
    for record in &run.timeline {
        out.push_str(&format!(
            "  {}  {}\n",
            time_of_day(&record.at),
            describe(&record.kind, &record.detail, &record.actor)
        ));
    }
    out
}

fn time_of_day(timestamp: &str) -> String {
    // "2026-11-22T10:04:05.123456Z" → "10:04:05.123"
    timestamp
        .split('T')
        .nth(1)
        .map(|time| time.trim_end_matches('Z').chars().take(12).collect())
        .unwrap_or_else(|| timestamp.to_owned())
}

/// One audit record, as a run's timeline tells it ([`domain::narrate`]).
pub fn describe(kind: &str, detail: &Value, actor: &str) -> String {
    let told = RecordKind::parse(kind).and_then(|kind| {
        let record = domain::Told {
            kind,
            detail,
            actor,
            run_id: None,
        };
        domain::narrate(record, domain::Voice::Timeline)
    });
    told.unwrap_or_else(|| format!("{kind} {detail}"))
}
