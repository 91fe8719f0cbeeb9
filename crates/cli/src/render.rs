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

/// One audit record as a sentence.
pub fn describe(kind: &str, detail: &Value, actor: &str) -> String {
    let Some(known) = RecordKind::parse(kind) else {
        return format!("{kind} {detail}");
    };
    match known {
        RecordKind::EventReceived => format!(
            "event received from {actor}: {} on {} ({})",
            text(&detail["kind"]),
            text(&detail["subject"]),
            text(&detail["status"])
        ),
        RecordKind::EventNoMatch => "no runbook matched".to_owned(),
        RecordKind::EventDuplicate => {
            format!("duplicate of open run {}", text(&detail["existing_run"]))
        }
        RecordKind::EventWithdrawsRun => format!("withdraws run {}", text(&detail["run"])),
        RecordKind::PlanFailed => format!(
            "planning with {} failed: {}",
            text(&detail["runbook"]),
            text(&detail["error"])
        ),
        RecordKind::RunMatched => format!(
            "matched runbook {} @ {}",
            text(&detail["runbook"]),
            domain::short_hash(&text(&detail["version"]))
        ),
        RecordKind::RunPlanned => format!(
            "planned {} step(s) on {} (plan {})",
            detail["steps"].as_array().map_or(0, Vec::len),
            detail["targets"],
            domain::short_hash(&text(&detail["plan_hash"]))
        ),
        RecordKind::RunDecided => format!(
            "decision: {} — {}",
            text(&detail["decision"]),
            reasons(&detail["reasons"])
        ),
        RecordKind::RunState => match detail.get("reason").filter(|reason| !reason.is_null()) {
            Some(reason) => format!("→ {} ({})", text(&detail["to"]), text(reason)),
            None => format!("→ {}", text(&detail["to"])),
        },
        RecordKind::ApprovalGranted => format!(
            "approved by {}{}{}",
            text(&detail["by"]),
            match detail["stage"].as_str() {
                Some(stage) => format!(
                    " (stage {stage}, {} of {})",
                    detail["approvals"], detail["needed"]
                ),
                None => String::new(),
            },
            comment(&detail["comment"])
        ),
        RecordKind::ApprovalRequested => {
            let stages: Vec<String> = detail["stages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|stage| {
                    let people: Vec<String> = stage["approvers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    let people = if people.is_empty() {
                        "any approver".to_owned()
                    } else {
                        people.join(", ")
                    };
                    format!(
                        "{} ({} of {people})",
                        text(&stage["name"]),
                        stage["required"]
                    )
                })
                .collect();
            match detail["step"].as_str() {
                Some(step) => format!("step {step} waits for approval: {}", stages.join(" → ")),
                None => format!("approval requested: {}", stages.join(" → ")),
            }
        }
        RecordKind::ApprovalEscalated => format!(
            "stage {}: {} added ({})",
            text(&detail["stage"]),
            detail["to"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect::<Vec<_>>()
                .join(", "),
            text(&detail["reason"])
        ),
        RecordKind::ApprovalStagePassed => format!("stage {} passed", text(&detail["stage"])),
        RecordKind::ApprovalDenied => format!(
            "denied by {}{}",
            text(&detail["by"]),
            comment(&detail["comment"])
        ),
        RecordKind::RunCancelled => format!(
            "cancelled by {}: {}",
            text(&detail["by"]),
            text(&detail["reason"])
        ),
        RecordKind::AttemptStarted => format!(
            "{} `{}` attempt {} ({})",
            text(&detail["phase"]),
            text(&detail["step"]),
            detail["attempt"],
            text(&detail["action"])
        ),
        RecordKind::AttemptFinished => {
            let outcome = &detail["outcome"];
            let what = match outcome["outcome"].as_str() {
                Some("succeeded") => match outcome["response"].get("status") {
                    Some(status) => format!("succeeded ({status})"),
                    None => format!("succeeded (exit {})", outcome["response"]["exit_code"]),
                },
                Some("failed") => format!("failed: {}", text(&outcome["error"])),
                Some("unknown") => format!("outcome unknown: {}", text(&outcome["reason"])),
                _ => outcome.to_string(),
            };
            format!(
                "{} `{}` attempt {} {what}",
                text(&detail["phase"]),
                text(&detail["step"]),
                detail["attempt"]
            )
        }
        RecordKind::AttemptRetryScheduled if detail["phase"] == "verify" => {
            format!("not yet; next probe in {} ms", detail["delay_ms"])
        }
        RecordKind::AttemptRetryScheduled => format!(
            "retry {} in {} ms",
            detail["next_attempt"], detail["delay_ms"]
        ),
        RecordKind::VerifySatisfied => format!("verified: {}", text(&detail["expect"])),
        RecordKind::VerifyFailed => format!(
            "verification failed after {} probe(s): {}",
            detail["attempts"],
            text(&detail["last"])
        ),
        RecordKind::RunRecovered => format!(
            "recovered after restart: {} `{}` → {}",
            text(&detail["phase"]),
            text(&detail["step"]),
            text(&detail["action"])
        ),
        RecordKind::TimeBoundScheduled => format!("in effect until {}", text(&detail["until"])),
        RecordKind::TimeBoundEnded => match detail["by"].as_str() {
            Some(by) => format!("ended early by {by}: {}", text(&detail["reason"])),
            None => format!("end date {} reached", text(&detail["until"])),
        },
        RecordKind::RunInputRefused => format!("refused: {}", text(&detail["reason"])),
        _ => format!("{kind} {detail}"),
    }
}

fn comment(value: &Value) -> String {
    match value.as_str() {
        Some(comment) => format!(": \"{comment}\""),
        None => String::new(),
    }
}
