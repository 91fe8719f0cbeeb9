//! The gate: a plan in, a [`Decision`] out, always with reasons.
//!
//! This is the built-in part of policy: the runbook's own guardrails and its
//! approval setting. Organisation policies (Rego) and approval chains build
//! on it later; they can only tighten what is decided here (deny beats
//! require_approval beats allow), so every reason is kept.

use domain::{Decision, DecisionKind, Event, Plan};
use runbook::{ApprovalMode, Runbook};

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Decides whether `plan` (made from `runbook` for `event`) may run.
pub fn decide(runbook: &Runbook, plan: &Plan, event: &Event) -> Decision {
    let mut denials = Vec::new();
    if plan.targets.is_empty() {
        denials.push("the plan has no targets".to_owned());
    }
    let max_targets = runbook.targets.max_targets as usize;
    if plan.targets.len() > max_targets {
        denials.push(format!(
            "blast radius: {} targets exceed the runbook's max_targets of {max_targets}",
            plan.targets.len()
        ));
    }
    let allowed = &runbook.guardrails.environments;
    if !allowed.is_empty() {
        match event.fields.get("environment").and_then(|value| value.as_str()) {
            Some(environment) if !allowed.iter().any(|name| name == environment) => denials.push(format!(
                "environment `{environment}` is not one of the runbook's environments ({})",
                allowed.join(", ")
            )),
            Some(_) => {}
            None => denials.push(format!(
                "the event names no environment (fields.environment) and the runbook only runs in: {}",
                allowed.join(", ")
            )),
        }
    }
    if !denials.is_empty() {
        return Decision {
            kind: DecisionKind::Deny,
            reasons: denials,
        };
    }
    match runbook.approval {
        ApprovalMode::Auto => Decision {
            kind: DecisionKind::Allow,
            reasons: vec![format!(
                "runbook `{}` is set to approval: auto and its guardrails hold",
                runbook.id
            )],
        },
        ApprovalMode::Required => Decision {
            kind: DecisionKind::RequireApproval,
            reasons: vec![format!("runbook `{}` requires approval", runbook.id)],
        },
    }
}
