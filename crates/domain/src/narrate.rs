//! One narrator for the audit log: what a record says, told in the voice
//! of whoever reads it. An operator reading a run's timeline wants a terse
//! line per record; a ticket's work note wants whole sentences, and only
//! about what a person following the ticket cares for. Both are told here,
//! kind by kind, so a new kind of record is narrated in one place, and the
//! two voices cannot drift apart on what a record means.

use serde_json::Value;

use crate::RecordKind;

/// Who a record is told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    /// An operator reading a run's timeline (the CLI, the demo): a terse
    /// line for every record.
    Timeline,
    /// The people following a ticket (a work note, a chat message): whole
    /// sentences, and only about what they care for.
    Ticket,
}

/// An audit record as the narrator needs it.
#[derive(Debug, Clone, Copy)]
pub struct Told<'a> {
    pub kind: RecordKind,
    pub detail: &'a Value,
    /// Who caused it (`user:alice`, `opsgate`).
    pub actor: &'a str,
    /// The run it belongs to, when it does.
    pub run_id: Option<&'a str>,
}

/// What `record` says to `voice`; `None` when that voice says nothing of
/// it (a ticket is not told of every attempt that starts).
pub fn narrate(record: Told<'_>, voice: Voice) -> Option<String> {
    use Voice::{Ticket, Timeline};
    let Told {
        kind,
        detail,
        actor,
        run_id,
    } = record;
    Some(match (kind, voice) {
        (RecordKind::EventReceived, Timeline) => format!(
            "event received from {actor}: {} on {} ({})",
            text(&detail["kind"]),
            text(&detail["subject"]),
            text(&detail["status"])
        ),
        (RecordKind::EventNoMatch, Timeline) => "no runbook matched".to_owned(),
        (RecordKind::EventDuplicate, Timeline) => {
            format!("duplicate of open run {}", text(&detail["existing_run"]))
        }
        (RecordKind::EventSuppressed, Timeline) => match detail["reason"].as_str() {
            Some("made_by_opsgate") => "suppressed: the change was opsgate's own".to_owned(),
            _ => format!(
                "suppressed: run {} already handled this dedup key, not resolved since",
                text(&detail["earlier_run"])
            ),
        },
        (RecordKind::RunLinked, Timeline) => format!(
            "linked: ticket {} ({}) reports the same problem on {}",
            text(&detail["ticket"]),
            text(&detail["event"]),
            text(&detail["subject"])
        ),
        // Told alike to the run's own ticket and to the linked one.
        (RecordKind::RunLinked, Ticket) => format!(
            "Another ticket, {}, reports the same problem on {}: it is linked to run {}, \
             which works on both.",
            text(&detail["ticket"]),
            text(&detail["subject"]),
            run_id.unwrap_or("?")
        ),
        (RecordKind::EventWithdrawsRun, Timeline) => {
            format!("withdraws run {}", text(&detail["run"]))
        }
        (RecordKind::PlanFailed, Timeline) => format!(
            "planning with {} failed: {}",
            text(&detail["runbook"]),
            text(&detail["error"])
        ),
        (RecordKind::RunProposed, Timeline) => format!(
            "proposed by {}{} with confidence {}: {}",
            text(&detail["agent"]),
            model(detail),
            number(&detail["confidence"]),
            text(&detail["rationale"])
        ),
        (RecordKind::RunProposed, Ticket) => proposed_note(detail),
        (RecordKind::ProposalRefused, Timeline) => format!(
            "proposal refused ({}): {}",
            text(&detail["runbook"]),
            text(&detail["reason"])
        ),
        (RecordKind::RunMatched, Timeline) => format!(
            "matched runbook {} @ {}",
            text(&detail["runbook"]),
            crate::short_hash(&text(&detail["version"]))
        ),
        (RecordKind::RunMatched, Ticket) if detail["shadow"] == true => format!(
            "Shadow mode: run {}, runbook {} (version {}), matched this ticket; nothing is executed.",
            run_id.unwrap_or("?"),
            text(&detail["runbook"]),
            crate::short_hash(&text(&detail["version"]))
        ),
        (RecordKind::RunMatched, Ticket) => format!(
            "Automation started: run {}, runbook {} (version {}).",
            run_id.unwrap_or("?"),
            text(&detail["runbook"]),
            crate::short_hash(&text(&detail["version"]))
        ),
        (RecordKind::RunPlanned, Timeline) => format!(
            "planned {} step(s) on {} (plan {})",
            detail["steps"].as_array().map_or(0, Vec::len),
            detail["targets"],
            crate::short_hash(&text(&detail["plan_hash"]))
        ),
        (RecordKind::RunDecided, Timeline) => format!(
            "decision: {} — {}",
            text(&detail["decision"]),
            reasons(&detail["reasons"])
        ),
        (RecordKind::RunDecided, Ticket) => format!(
            "Decision: {} — {}.",
            text(&detail["decision"]).replace('_', " "),
            reasons(&detail["reasons"])
        ),
        (RecordKind::RunState, Timeline) => {
            match detail.get("reason").filter(|reason| !reason.is_null()) {
                Some(reason) => format!("→ {} ({})", text(&detail["to"]), text(reason)),
                None => format!("→ {}", text(&detail["to"])),
            }
        }
        (RecordKind::RunState, Ticket) => match detail["to"].as_str()? {
            "succeeded" if detail["from"] == "rolling_back" => {
                "The time-bound change was undone; the run is complete.".to_owned()
            }
            "succeeded" | "in_effect" => "Automation succeeded.".to_owned(),
            "needs_human" => format!(
                "Automation failed → needs human: {}.",
                text(&detail["reason"])
            ),
            "rolled_back" => format!(
                "Automation failed and was rolled back: {}.",
                text(&detail["reason"])
            ),
            "denied" => format!("Not run: {}.", text(&detail["reason"])),
            "cancelled" => format!("Cancelled: {}.", text(&detail["reason"])),
            _ => return None,
        },
        (RecordKind::ApprovalRequested, Timeline) => {
            let stages: Vec<String> = stages(detail)
                .map(|(name, people, required)| format!("{name} ({required} of {people})"))
                .collect();
            match detail["step"].as_str() {
                Some(step) => format!(
                    "step {step}{} waits for approval: {}",
                    on_target(detail),
                    stages.join(" → ")
                ),
                None => format!("approval requested: {}", stages.join(" → ")),
            }
        }
        (RecordKind::ApprovalRequested, Ticket) => {
            let stages: Vec<String> = stages(detail)
                .map(|(name, people, _)| format!("{name} ({people})"))
                .collect();
            format!("Waiting for approval: {}.", stages.join(", then "))
        }
        (RecordKind::ApprovalEscalated, Timeline) => format!(
            "stage {}: {} added ({})",
            text(&detail["stage"]),
            listed(&detail["to"]),
            text(&detail["reason"])
        ),
        (RecordKind::ApprovalEscalated, Ticket) => format!(
            "Approval stage {}: {} may now approve ({}).",
            text(&detail["stage"]),
            listed(&detail["to"]),
            text(&detail["reason"])
        ),
        (RecordKind::ApprovalGranted, Timeline) => format!(
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
        (RecordKind::ApprovalGranted, Ticket) => format!(
            "Approved by {}{}.",
            text(&detail["by"]),
            comment(&detail["comment"])
        ),
        (RecordKind::ApprovalStagePassed, Timeline) => {
            format!("stage {} passed", text(&detail["stage"]))
        }
        (RecordKind::ApprovalDenied, Timeline) => format!(
            "denied by {}{}",
            text(&detail["by"]),
            comment(&detail["comment"])
        ),
        (RecordKind::ApprovalDenied, Ticket) => format!("Denied by {}.", text(&detail["by"])),
        (RecordKind::ApprovalExpired, Ticket) => {
            "Blocked: approval expired — nobody approved in time.".to_owned()
        }
        (RecordKind::RunShadowed, Timeline) => format!(
            "shadow: would {}; requests: {}",
            text(&detail["would"]),
            requests(&detail["requests"])
        ),
        (RecordKind::RunShadowed, Ticket) => format!(
            "Shadow mode, nothing was executed: opsgate would {}. The requests it would have sent: {}.",
            text(&detail["would"]),
            requests(&detail["requests"])
        ),
        (RecordKind::ShadowResolved, Timeline) => format!(
            "resolved by a person ({}): close code {}{}; {}",
            text(&detail["by"]),
            text(&detail["close_code"]),
            match detail["group"].as_str().filter(|group| !group.is_empty()) {
                Some(group) => format!(", group {group}"),
                None => String::new(),
            },
            match detail["agrees"].as_bool() {
                Some(true) => "as opsgate would have",
                Some(false) => "not as opsgate would have",
                None => "opsgate's resolution cannot be compared",
            }
        ),
        (RecordKind::EventFrozen, Timeline) => format!(
            "frozen: runbook {} not run (freeze {} by {}: {})",
            text(&detail["runbook"]),
            text(&detail["freeze"]),
            text(&detail["by"]),
            text(&detail["reason"])
        ),
        (RecordKind::RunPaused, Timeline) => format!(
            "paused before step `{}`{}: freeze {} by {} ({})",
            text(&detail["step"]),
            on_target(detail),
            text(&detail["freeze"]),
            text(&detail["by"]),
            text(&detail["reason"])
        ),
        (RecordKind::RunPaused, Ticket) => format!(
            "Paused before step {}{}: automation was frozen by {} ({}). It goes on when the freeze is lifted.",
            text(&detail["step"]),
            on_target(detail),
            text(&detail["by"]),
            text(&detail["reason"])
        ),
        (RecordKind::RunResumed, Timeline) => {
            format!(
                "resumed at step `{}`: no freeze holds it",
                text(&detail["step"])
            )
        }
        (RecordKind::RunResumed, Ticket) => {
            format!(
                "Resumed at step {}: the freeze was lifted.",
                text(&detail["step"])
            )
        }
        (RecordKind::FreezeIssued, Timeline) => format!(
            "freeze {} issued by {actor} on {}: {}",
            text(&detail["freeze"]),
            text(&detail["scope"]),
            text(&detail["reason"])
        ),
        (RecordKind::FreezeLifted, Timeline) => {
            format!("freeze {} lifted by {actor}", text(&detail["freeze"]))
        }
        (RecordKind::RunCancelled, Timeline) => format!(
            "cancelled by {}: {}",
            text(&detail["by"]),
            text(&detail["reason"])
        ),
        (RecordKind::AttemptStarted, Timeline) => format!(
            "{} `{}`{} attempt {} ({})",
            text(&detail["phase"]),
            text(&detail["step"]),
            on_target(detail),
            detail["attempt"],
            text(&detail["action"])
        ),
        (RecordKind::AttemptFinished, Timeline) => {
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
        (RecordKind::AttemptFinished, Ticket) => {
            let outcome = &detail["outcome"];
            let what = match outcome["outcome"].as_str() {
                Some("succeeded") => "succeeded".to_owned(),
                Some("failed") => format!("failed: {}", text(&outcome["error"])),
                Some("unknown") => format!("outcome unknown: {}", text(&outcome["reason"])),
                _ => return None,
            };
            format!(
                "{} {} (attempt {}) {what}.",
                capitalised(&text(&detail["phase"])),
                text(&detail["step"]),
                detail["attempt"]
            )
        }
        (RecordKind::AttemptRetryScheduled, Timeline) if detail["phase"] == "verify" => {
            format!("not yet; next probe in {} ms", detail["delay_ms"])
        }
        (RecordKind::AttemptRetryScheduled, Timeline) => format!(
            "retry {} in {} ms",
            detail["next_attempt"], detail["delay_ms"]
        ),
        (RecordKind::PrecheckConfirmed, Timeline) => {
            format!(
                "precheck: the problem is still there ({})",
                text(&detail["expect"])
            )
        }
        (RecordKind::PrecheckCleared, Timeline) => {
            format!(
                "precheck: the problem is gone (`{}` no longer holds)",
                text(&detail["expect"])
            )
        }
        (RecordKind::VerifySatisfied, Timeline) => {
            format!("verified: {}", text(&detail["expect"]))
        }
        (RecordKind::VerifySatisfied, Ticket) => format!("Verified: {}.", text(&detail["expect"])),
        (RecordKind::VerifyFailed, Timeline) => format!(
            "verification failed after {} probe(s): {}",
            detail["attempts"],
            text(&detail["last"])
        ),
        (RecordKind::VerifyFailed, Ticket) => {
            format!("Verification failed after {} probe(s).", detail["attempts"])
        }
        (RecordKind::RemedyEscalated, Timeline) => format!(
            "first remedy did not verify{}: second remedy next ({})",
            on_target(detail),
            listed(&detail["steps"])
        ),
        (RecordKind::RemedyEscalated, Ticket) => format!(
            "The first remedy did not fix it{}: the second remedy ({}) is next.",
            on_target(detail),
            listed(&detail["steps"])
        ),
        (RecordKind::OnCallAlerted, Timeline) => format!(
            "on-call {} alerted{}: {}",
            on_call_group(detail),
            on_target(detail),
            text(&detail["reason"])
        ),
        // What the on-call group reads in the chat, and the ticket's note.
        (RecordKind::OnCallAlerted, Ticket) => format!(
            "On-call alerted ({}): both remedies were tried{} and it is still not fixed \
             ({}). A person takes over from here.",
            on_call_group(detail),
            on_target(detail),
            text(&detail["reason"])
        ),
        (RecordKind::RunRecovered, Timeline) => format!(
            "recovered after restart: {} `{}` → {}",
            text(&detail["phase"]),
            text(&detail["step"]),
            text(&detail["action"])
        ),
        (RecordKind::RunHandedOver, Timeline) => format!(
            "handed over by {}, which was shutting down: {} `{}` is due next",
            text(&detail["by"]),
            text(&detail["phase"]),
            text(&detail["step"])
        ),
        (RecordKind::TimeBoundScheduled, Timeline) => {
            format!("in effect until {}", text(&detail["until"]))
        }
        (RecordKind::TimeBoundScheduled, Ticket) => format!(
            "In effect until {}; opsgate undoes it then (a scheduled removal).",
            text(&detail["until"])
        ),
        (RecordKind::TimeBoundEnded, Timeline) => match detail["by"].as_str() {
            Some(by) => format!("ended early by {by}: {}", text(&detail["reason"])),
            None => format!("end date {} reached", text(&detail["until"])),
        },
        (RecordKind::TimeBoundEnded, Ticket) => match detail["by"].as_str() {
            Some(by) => format!(
                "Ended early by {by} ({}): undoing the change.",
                text(&detail["reason"])
            ),
            None => format!(
                "End date reached ({}): undoing the change.",
                text(&detail["until"])
            ),
        },
        (RecordKind::RolloutBatchStarted, Timeline) => format!(
            "rollout batch {} of {} started: {}",
            detail["batch"],
            detail["of"],
            listed(&detail["targets"])
        ),
        (RecordKind::RolloutTargetFinished, Timeline) => {
            match detail.get("reason").and_then(Value::as_str) {
                Some(reason) => format!(
                    "target {}: {} ({reason})",
                    text(&detail["target"]),
                    text(&detail["outcome"]).replace('_', " ")
                ),
                None => format!(
                    "target {}: {}",
                    text(&detail["target"]),
                    text(&detail["outcome"]).replace('_', " ")
                ),
            }
        }
        (RecordKind::RolloutBatchFinished, Timeline) => format!(
            "rollout batch {} of {} finished: done {}; failed {}",
            detail["batch"],
            detail["of"],
            or_none(&detail["done"]),
            or_none(&detail["failed"])
        ),
        // Long rollouts tell the ticket as each batch ends.
        (RecordKind::RolloutBatchFinished, Ticket) => format!(
            "Rollout batch {} of {} finished. Done: {}. Failed: {}.",
            detail["batch"],
            detail["of"],
            or_none(&detail["done"]),
            or_none(&detail["failed"])
        ),
        (RecordKind::RolloutHalted | RecordKind::RolloutFinished, Timeline) => format!(
            "rollout {}: {}; done {}; failed {}; untouched {}; rolled back {}",
            if kind == RecordKind::RolloutHalted {
                "halted"
            } else {
                "finished"
            },
            text(&detail["reason"]),
            or_none(&detail["done"]),
            or_none(&detail["failed"]),
            or_none(&detail["untouched"]),
            or_none(&detail["rolled_back"])
        ),
        (RecordKind::RolloutHalted, Ticket) => format!(
            "Rollout halted: {}. Done: {}. Failed: {}. Untouched: {}. Rolled back: {}.",
            text(&detail["reason"]),
            or_none(&detail["done"]),
            or_none(&detail["failed"]),
            or_none(&detail["untouched"]),
            or_none(&detail["rolled_back"])
        ),
        (RecordKind::RolloutFinished, Ticket) => match detail.get("reason") {
            Some(reason) if !reason.is_null() => format!(
                "Rollout finished with failures: {}. Done: {}. Failed: {}. Rolled back: {}.",
                text(reason),
                or_none(&detail["done"]),
                or_none(&detail["failed"]),
                or_none(&detail["rolled_back"])
            ),
            _ => format!("Rollout finished. Done: {}.", or_none(&detail["done"])),
        },
        (RecordKind::RunHeldBack, Timeline) => format!(
            "held back ({}): this keeps coming back; automation is not fixing the root cause",
            listed(&detail["guardrails"])
        ),
        // The decision's reasons are told just before: not again here.
        (RecordKind::RunHeldBack, Ticket) => "This keeps coming back; automation is not fixing \
             the root cause. The runbook's limits kept it from running again: a person needs \
             to look at it."
            .to_owned(),
        (RecordKind::RunInputRefused, Timeline) => {
            format!("refused: {}", text(&detail["reason"]))
        }
        // The request and the answer stay in the record: too long for a line.
        (RecordKind::TriageSuggested, Timeline) => match detail["runbook"].as_str() {
            Some(runbook) => format!(
                "triage suggested {runbook} at confidence {}, {} {} ({}): {}",
                text(&detail["confidence"]),
                if detail["disposition"] == "propose" {
                    "to be proposed: at or above"
                } else {
                    "for the ticket only: below"
                },
                text(&detail["threshold"]),
                model_and_prompt(detail),
                text(&detail["rationale"])
            ),
            None => format!(
                "triage found no runbook that fits (confidence {}; {}): {}",
                text(&detail["confidence"]),
                model_and_prompt(detail),
                text(&detail["rationale"])
            ),
        },
        (RecordKind::TriageSuggested, Ticket) if detail["disposition"] == "note" => format!(
            "Suggested runbook {} (\"{}\"), confidence {}, because: {}. That is below the \
             threshold of {}, so nothing was run; a person decides.",
            text(&detail["runbook"]),
            text(&detail["runbook_title"]),
            text(&detail["confidence"]),
            text(&detail["rationale"]).trim_end_matches(['.', ' ']),
            text(&detail["threshold"])
        ),
        (RecordKind::TriageFailed, Timeline) => format!(
            "triage gave no suggestion, {}: {} ({})",
            text(&detail["failure"]).replace('_', " "),
            text(&detail["message"]),
            model_and_prompt(detail)
        ),
        (_, Timeline) => format!("{kind} {detail}"),
        (_, Ticket) => return None,
    })
}

/// The requests a shadowed run would have sent, one after the other:
/// `1. POST https://… (step restart)`.
fn requests(value: &Value) -> String {
    let Some(requests) = value.as_array() else {
        return "none".to_owned();
    };
    if requests.is_empty() {
        return "none".to_owned();
    }
    requests
        .iter()
        .enumerate()
        .map(|(index, request)| {
            let call = &request["request"];
            let what = match (call["method"].as_str(), call["url"].as_str()) {
                (method, Some(url)) => format!("{} {url}", method.unwrap_or("GET")),
                _ => text(&request["action"]),
            };
            format!("{}. {what} ({})", index + 1, text(&request["step"]))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON value as text: a string as it is, nothing as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn reasons(value: &Value) -> String {
    value
        .as_array()
        .map(|list| list.iter().map(text).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

fn listed(value: &Value) -> String {
    value
        .as_array()
        .map(|list| list.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// ` on web-03` for a record of a rollout's target; nothing otherwise.
fn on_target(detail: &Value) -> String {
    match detail.get("target").and_then(Value::as_str) {
        Some(target) => format!(" on {target}"),
        None => String::new(),
    }
}

/// The on-call group an `oncall.alerted` names (`endpoint-l2`), or the
/// words for none.
fn on_call_group(detail: &Value) -> String {
    match detail["group"].as_str() {
        Some(group) => group.strip_prefix("group:").unwrap_or(group).to_owned(),
        None => "no group named in `on_failure.escalate_to`".to_owned(),
    }
}

/// `model gpt-x, prompt triage-v1`: what a triage record was answered by.
fn model_and_prompt(detail: &Value) -> String {
    format!(
        "model {}, prompt {}",
        text(&detail["model"]),
        text(&detail["prompt_version"])
    )
}

/// A list of names, or `none` when it is empty.
fn or_none(value: &Value) -> String {
    let names = listed(value);
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
    }
}

fn comment(value: &Value) -> String {
    match value.as_str() {
        Some(comment) => format!(": \"{comment}\""),
        None => String::new(),
    }
}

/// The stages an `approval.requested` record names, each with who may
/// approve it and how many approvals it needs.
fn stages(detail: &Value) -> impl Iterator<Item = (String, String, &Value)> + '_ {
    detail["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|stage| {
            let people = listed(&stage["approvers"]);
            let people = if people.is_empty() {
                "any approver".to_owned()
            } else {
                people
            };
            (text(&stage["name"]), people, &stage["required"])
        })
}

fn capitalised(word: &str) -> String {
    let mut characters = word.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

/// The model behind a proposal, as ` (model NAME VERSION, prompt P)`;
/// empty when the agent did not say.
fn model(detail: &Value) -> String {
    let mut said = Vec::new();
    if let Some(name) = detail["model"]["name"].as_str() {
        let version = detail["model"]["version"]
            .as_str()
            .map_or(String::new(), |version| format!(" {version}"));
        said.push(format!("model {name}{version}"));
    }
    if let Some(prompt) = detail["prompt_version"].as_str() {
        said.push(format!("prompt {prompt}"));
    }
    if said.is_empty() {
        String::new()
    } else {
        format!(" ({})", said.join(", "))
    }
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map_or("?".to_owned(), |number| number.to_string())
}

/// A proposal told to a ticket: who proposed what and why, with its
/// evidence, so a reviewer reads the agent's case beside opsgate's answer.
fn proposed_note(detail: &Value) -> String {
    let mut note = format!(
        "Proposed by {}{}, confidence {}: {}",
        text(&detail["agent"]),
        model(detail),
        number(&detail["confidence"]),
        text(&detail["rationale"])
    );
    let evidence = detail["evidence"].as_array().map_or(&[][..], Vec::as_slice);
    for item in evidence {
        let what = item["url"]
            .as_str()
            .or(item["text"].as_str())
            .unwrap_or_default();
        let what: String = what.chars().take(300).collect();
        note.push_str(&format!("\n- evidence ({}): {what}", text(&item["kind"])));
    }
    note
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn told(kind: RecordKind, detail: &Value, voice: Voice) -> Option<String> {
        narrate(
            Told {
                kind,
                detail,
                actor: "user:alice",
                run_id: Some("run_1"),
            },
            voice,
        )
    }

    #[test]
    fn each_voice_tells_a_record_its_own_way() {
        let granted = json!({"by": "user:bob", "stage": "manager", "approvals": 1, "needed": 1, "comment": "ok"});
        let cases: &[(RecordKind, Value, Option<&str>, Option<&str>)] = &[
            (
                RecordKind::ApprovalGranted,
                granted,
                Some("approved by user:bob (stage manager, 1 of 1): \"ok\""),
                Some("Approved by user:bob: \"ok\"."),
            ),
            (
                RecordKind::RunState,
                json!({"from": "verifying", "to": "needs_human", "reason": "still down"}),
                Some("→ needs_human (still down)"),
                Some("Automation failed → needs human: still down."),
            ),
            (
                RecordKind::RunState,
                json!({"from": "rolling_back", "to": "succeeded"}),
                Some("→ succeeded"),
                Some("The time-bound change was undone; the run is complete."),
            ),
            (
                RecordKind::ApprovalRequested,
                json!({"stages": [{"name": "manager", "approvers": ["user:carol"], "required": 1}, {"name": "security", "approvers": [], "required": 2}]}),
                Some(
                    "approval requested: manager (1 of user:carol) → security (2 of any approver)",
                ),
                Some("Waiting for approval: manager (user:carol), then security (any approver)."),
            ),
            (
                RecordKind::RemedyEscalated,
                json!({"target": "ws-03", "steps": ["rollback-driver"], "reason": "verification failed"}),
                Some("first remedy did not verify on ws-03: second remedy next (rollback-driver)"),
                Some(
                    "The first remedy did not fix it on ws-03: the second remedy (rollback-driver) is next.",
                ),
            ),
            (
                RecordKind::OnCallAlerted,
                json!({"group": "group:endpoint-oncall", "target": "ws-07", "reason": "step `rollback-driver` failed after 1 attempt: 500"}),
                Some(
                    "on-call endpoint-oncall alerted on ws-07: step `rollback-driver` failed after 1 attempt: 500",
                ),
                Some(
                    "On-call alerted (endpoint-oncall): both remedies were tried on ws-07 and it is still not fixed (step `rollback-driver` failed after 1 attempt: 500). A person takes over from here.",
                ),
            ),
            (
                RecordKind::RunHeldBack,
                json!({"guardrails": ["cooldown"], "reasons": ["cooldown: the runbook ran 1 time in the last 1h on `web-01`; it allows 1 per target"]}),
                Some(
                    "held back (cooldown): this keeps coming back; automation is not fixing the root cause",
                ),
                Some(
                    "This keeps coming back; automation is not fixing the root cause. The runbook's limits kept it from running again: a person needs to look at it.",
                ),
            ),
            (
                RecordKind::RunLinked,
                json!({"event": "evt_2", "ticket": "INC0020002", "subject": "LAPTOP-0042"}),
                Some("linked: ticket INC0020002 (evt_2) reports the same problem on LAPTOP-0042"),
                Some(
                    "Another ticket, INC0020002, reports the same problem on LAPTOP-0042: it is linked to run run_1, which works on both.",
                ),
            ),
            (
                RecordKind::EventSuppressed,
                json!({"earlier_run": "run_1", "reason": "not_resolved_since"}),
                Some("suppressed: run run_1 already handled this dedup key, not resolved since"),
                None,
            ),
            (
                RecordKind::EventSuppressed,
                json!({"reason": "made_by_opsgate"}),
                Some("suppressed: the change was opsgate's own"),
                None,
            ),
            (
                RecordKind::AttemptStarted,
                json!({"phase": "step", "step": "restart", "attempt": 1, "action": "http.request"}),
                Some("step `restart` attempt 1 (http.request)"),
                None,
            ),
            (
                RecordKind::RolloutHalted,
                json!({
                    "reason": "2 target(s) failed (`stop_when.failures: 2`)",
                    "done": ["web-01"], "failed": ["web-02", "web-03"],
                    "untouched": ["web-04"], "rolled_back": ["web-02", "web-03"],
                }),
                Some(
                    "rollout halted: 2 target(s) failed (`stop_when.failures: 2`); done web-01; failed web-02, web-03; untouched web-04; rolled back web-02, web-03",
                ),
                Some(
                    "Rollout halted: 2 target(s) failed (`stop_when.failures: 2`). Done: web-01. Failed: web-02, web-03. Untouched: web-04. Rolled back: web-02, web-03.",
                ),
            ),
            (
                RecordKind::RolloutBatchFinished,
                json!({"batch": 2, "of": 4, "done": ["web-02", "web-03"], "failed": []}),
                Some("rollout batch 2 of 4 finished: done web-02, web-03; failed none"),
                Some("Rollout batch 2 of 4 finished. Done: web-02, web-03. Failed: none."),
            ),
            (
                RecordKind::AttemptStarted,
                json!({"phase": "step", "step": "restart", "attempt": 1, "action": "http.request", "target": "web-02"}),
                Some("step `restart` on web-02 attempt 1 (http.request)"),
                None,
            ),
            (
                RecordKind::TriageSuggested,
                json!({
                    "runbook": "clear-print-queue", "runbook_title": "Restart the print spooler",
                    "confidence": 0.62, "threshold": 0.8, "disposition": "note",
                    "model": "m-1", "prompt_version": "triage-v1",
                    "rationale": "jobs stay in the queue on one laptop.",
                    "request": {"model": "m-1"}, "answer": "{}",
                }),
                Some(
                    "triage suggested clear-print-queue at confidence 0.62, for the ticket only: below 0.8 (model m-1, prompt triage-v1): jobs stay in the queue on one laptop.",
                ),
                Some(
                    "Suggested runbook clear-print-queue (\"Restart the print spooler\"), confidence 0.62, because: jobs stay in the queue on one laptop. That is below the threshold of 0.8, so nothing was run; a person decides.",
                ),
            ),
            (
                RecordKind::TriageSuggested,
                json!({
                    "runbook": "clear-print-queue", "confidence": 0.93, "threshold": 0.8,
                    "disposition": "propose", "model": "m-1", "prompt_version": "triage-v1",
                    "rationale": "the queue is stuck",
                }),
                Some(
                    "triage suggested clear-print-queue at confidence 0.93, to be proposed: at or above 0.8 (model m-1, prompt triage-v1): the queue is stuck",
                ),
                None,
            ),
            (
                RecordKind::TriageSuggested,
                json!({
                    "runbook": null, "confidence": 0.9, "threshold": 0.8, "disposition": "none",
                    "model": "m-1", "prompt_version": "triage-v1", "rationale": "a password reset",
                }),
                Some(
                    "triage found no runbook that fits (confidence 0.9; model m-1, prompt triage-v1): a password reset",
                ),
                None,
            ),
            (
                RecordKind::TriageFailed,
                json!({
                    "failure": "rate_limited", "message": "429 Too Many Requests: slow down",
                    "model": "m-1", "prompt_version": "triage-v1", "request": null, "answer": null,
                }),
                Some(
                    "triage gave no suggestion, rate limited: 429 Too Many Requests: slow down (model m-1, prompt triage-v1)",
                ),
                None,
            ),
            (
                RecordKind::ApiRefused,
                json!({"status": 401}),
                Some("api.refused {\"status\":401}"),
                None,
            ),
        ];
        for (kind, detail, timeline, ticket) in cases {
            assert_eq!(
                told(*kind, detail, Voice::Timeline).as_deref(),
                *timeline,
                "{kind} to the timeline"
            );
            assert_eq!(
                told(*kind, detail, Voice::Ticket).as_deref(),
                *ticket,
                "{kind} to a ticket"
            );
        }
    }

    #[test]
    fn the_timeline_tells_every_kind() {
        for kind in RecordKind::ALL {
            assert!(told(*kind, &json!({}), Voice::Timeline).is_some(), "{kind}");
        }
    }
}
