//! `time_bound`: a change that holds until an end rendered into the plan,
//! and is undone then through the steps' rollbacks.

use std::path::Path;

use runbook::{Error, TemplateEnv};
use serde_json::json;

use crate::{MINIMAL, event};

/// MINIMAL, its step given a rollback, with `time_bound` (and `end` as an
/// input), or without the rollback when `rollback` is false.
fn text(time_bound: &str, rollback: bool) -> String {
    let mut text = MINIMAL
        .replace(
            "    device_id: { type: string }\n",
            "    device_id: { type: string }\n    end: { type: string }\n",
        )
        .replace(
            "    device_id: \"{{ event.subject }}\"\n",
            "    device_id: \"{{ event.subject }}\"\n    end: \"{{ event.fields.end }}\"\n",
        );
    if rollback {
        text.push_str(
            "    rollback:\n      action: http.request\n      with: { method: POST, url: \"{{ env.API }}/devices/{{ inputs.device_id }}/undo\" }\n",
        );
    }
    format!("{text}time_bound: {time_bound}\n")
}

fn diagnostics(text: &str) -> Vec<String> {
    match runbook::parse_runbook(Path::new("runbook.yaml"), text, connectors::STEP_ACTIONS) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
    }
}

/// The plan's end for an event received 2026-11-20T10:00:00Z whose
/// `fields.end` is `end`.
fn ends_at(time_bound: &str, end: &str) -> Result<String, String> {
    let runbook = runbook::parse_runbook(
        Path::new("runbook.yaml"),
        &text(time_bound, true),
        connectors::STEP_ACTIONS,
    )
    .map_err(|diagnostics| format!("{diagnostics:?}"))?;
    let mut env = TemplateEnv::default();
    env.vars.insert("API".into(), "http://api".into());
    let event = event(
        "servicenow",
        "LAPTOP-1",
        json!({"signature": "VPN client service stopped", "end": end}),
    );
    match runbook.plan(&event, &env) {
        Ok(plan) => Ok(plan
            .ends_at
            .expect("a time-bound plan has an end")
            .to_string()),
        Err(error @ Error::TimeBound { .. }) => Err(error.to_string()),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn a_timestamp_or_a_date_becomes_the_plans_end() {
    let until = "{ until: \"{{ inputs.end }}\", at_most: 90d }";
    assert_eq!(
        ends_at(until, "2026-12-01T17:30:00+01:00"),
        Ok("2026-12-01T16:30:00Z".into())
    );
    // A date alone: the change holds through that day (UTC).
    assert_eq!(
        ends_at(until, "2026-12-01"),
        Ok("2026-12-02T00:00:00Z".into())
    );
    assert_eq!(
        ends_at("{ until: \"2026-11-21T00:00:00Z\" }", "ignored"),
        Ok("2026-11-21T00:00:00Z".into())
    );
}

#[test]
fn an_end_that_is_not_a_time_is_past_or_too_far_fails_the_plan() {
    let until = "{ until: \"{{ inputs.end }}\", at_most: 30d }";
    assert_eq!(
        ends_at(until, "next friday"),
        Err(
            "cannot set the end of the time-bound change: `time_bound.until` gave `next friday`, \
             which is neither an RFC 3339 timestamp with an offset (2026-12-01T17:00:00Z) nor a \
             date (2026-12-01)"
                .into()
        )
    );
    assert_eq!(
        ends_at(until, "2026-11-20T09:00:00Z"),
        Err(
            "cannot set the end of the time-bound change: the end 2026-11-20T09:00:00Z is not \
             after the event (2026-11-20T10:00:00Z)"
                .into()
        )
    );
    assert_eq!(
        ends_at(until, "2027-01-01"),
        Err(
            "cannot set the end of the time-bound change: the end 2027-01-02T00:00:00Z is more \
             than 720h after the event (2026-11-20T10:00:00Z); the runbook allows at most that \
             (`time_bound.at_most`)"
                .into()
        )
    );
}

#[test]
fn a_plan_without_an_end_keeps_its_hash() {
    // Plans from before time-bound changes existed hash as they did.
    let runbook = crate::parse(MINIMAL);
    let mut env = TemplateEnv::default();
    env.vars.insert("API".into(), "http://api".into());
    let event = event(
        "servicenow",
        "LAPTOP-1",
        json!({"signature": "VPN client service stopped"}),
    );
    let plan = runbook.plan(&event, &env).expect("plans");
    assert_eq!(plan.ends_at, None);
    let json = serde_json::to_value(&plan).expect("serialises");
    assert!(json.get("ends_at").is_none(), "{json}");
}

#[test]
fn every_step_needs_a_rollback_and_the_template_is_checked() {
    assert_eq!(
        diagnostics(&text("{ until: \"{{ inputs.end }}\" }", false)),
        [
            "runbook.yaml:27:1: `time_bound` needs a rollback on every step, and step `restart` \
          has none\n    hint: the rollbacks are what undoes the change at its end"
        ]
    );
    assert_eq!(
        diagnostics(&text("{ until: \"{{ inputs.ends }}\", for: 8h }", true)),
        [
            "runbook.yaml:30:22: undefined template variable `inputs.ends` in time_bound.until\n    \
             hint: did you mean `end`?",
            "runbook.yaml:30:43: unknown key `for` in `time_bound`\n    hint: known keys: until, at_most",
        ]
    );
}
