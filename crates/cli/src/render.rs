//! Human-readable output: run tables and timelines.

use domain::RecordKind;
use serde_json::Value;

/// One line per run.
pub fn runs_table(runs: &[Value]) -> String {
    let mut out = format!(
        "{:<30} {:<18} {:<30} {:<16} {}\n",
        "RUN", "STATE", "RUNBOOK", "TARGETS", "CREATED"
    );
    for run in runs {
        let targets: Vec<&str> = run["targets"]
            .as_array()
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<30} {:<18} {:<30} {:<16} {}\n",
            text(&run["id"]),
            text(&run["state"]),
            text(&run["runbook"]),
            targets.join(","),
            text(&run["created_at"]),
        ));
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A run's header and its timeline, from `GET /v1/runs/{id}`.
pub fn run_detail(run: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!("run       {}\n", text(&run["id"])));
    out.push_str(&format!("state     {}\n", text(&run["state"])));
    out.push_str(&format!(
        "runbook   {} @ {}\n",
        text(&run["runbook"]),
        domain::short_hash(&text(&run["runbook_version"]))
    ));
    out.push_str(&format!(
        "event     {} ({})\n",
        text(&run["event"]["id"]),
        text(&run["dedup_key"])
    ));
    out.push_str(&format!("targets   {}\n", run["targets"]));
    out.push_str(&format!(
        "decision  {}: {}\n",
        text(&run["decision"]["kind"]),
        reasons(&run["decision"]["reasons"])
    ));
    if !run["reason"].is_null() {
        out.push_str(&format!("reason    {}\n", text(&run["reason"])));
    }
    out.push_str("\ntimeline\n");
    for record in run["timeline"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {}\n",
            time_of_day(&text(&record["at"])),
            describe(
                &text(&record["kind"]),
                &record["detail"],
                &text(&record["actor"])
            )
        ));
    }
    out
}

fn reasons(value: &Value) -> String {
    value
        .as_array()
        .map(|list| list.iter().map(text).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
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
