//! The gate: a plan in, a [`Decision`] out, always with reasons.
//!
//! This is the built-in part of policy: the runbook's own guardrails
//! (`guardrails.rs`, judged against [`Facts`] the runtime supplies: the
//! clock, recent runs, who asks) and its approval setting. Organisation
//! policies (`rego.rs`: Rego files evaluated in process) combine with it in
//! [`decide_with_policies`]; they can only tighten what is decided here
//! (deny beats require_approval beats allow), so every reason is kept.
//!
//! The directory (`directory.rs`) — people, groups, managers, backups and
//! who owns which CI — lives here too, because approval stages and policies
//! name approvers through it (`manager_of(requester)`, `owner_of(ci)`).

mod directory;
mod glob;
mod guardrails;
mod rego;
mod time_window;

use std::path::PathBuf;

use domain::{Decision, DecisionKind, Event, Plan};
use runbook::{ApprovalMode, Diagnostic, Runbook};

pub use directory::{Absence, Chat, ChatPlatform, Directory, Person, RelationContext};
pub use glob::glob_matches;
pub use guardrails::{
    Facts, Finding, GlobalRateLimit, RecentRuns, Requester, Verdict, check_guardrails,
    facts_document, human_duration,
};
pub use rego::{
    PackageOutcome, PolicyOutcome, PolicyReason, PolicySet, TestOutcome, TestResult,
    decide_with_policies, policy_input, run_tests,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The directory file is not valid: every problem, each at its line.
    #[error("invalid directory {}:\n{}", path.display(), render(diagnostics))]
    Directory {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// An approver reference names no one (`user:bob` when there is no
    /// bob, `manager_of(requester)` for a requester without a manager).
    #[error("cannot resolve `{reference}`: {problem}")]
    Reference { reference: String, problem: String },
    /// Policy files that do not parse, or whose package is not under
    /// `opsgate.`: every problem, each at its line.
    #[error("invalid policies in {}:\n{}", dir.display(), render(diagnostics))]
    Policies {
        dir: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// A policy failed while deciding, or answered outside the output
    /// contract. Nothing was decided: the caller fails closed.
    #[error("policy `{package}`, rule `{rule}`: {message}")]
    PolicyEvaluation {
        package: String,
        rule: String,
        message: String,
    },
    /// Two policies (or a policy and the runbook) ask for an approval stage
    /// of one name with different contents.
    #[error("approval stage `{stage}` is defined differently by {first} and {second}")]
    StageConflict {
        stage: String,
        first: String,
        second: String,
    },
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Decides whether `plan` (made from `runbook` for `event`) may run, with
/// only what the event tells ([`Facts::from_event`] at its arrival): recent
/// runs are unknown, so cooldown and rate limits are not checked. The
/// runtime, which knows them, calls [`decide_with_facts`].
pub fn decide(runbook: &Runbook, plan: &Plan, event: &Event) -> Decision {
    decide_with_facts(
        runbook,
        plan,
        event,
        &Facts::from_event(event, event.received_at),
    )
}

/// Decides whether `plan` (made from `runbook` for `event`) may run, given
/// `facts`. When `facts.environment` is `None` the event's
/// `fields.environment` is used.
///
/// The strictest verdict wins — deny, then require approval, then allow —
/// and the reasons list every finding, strictest first: a denial also says
/// what else would have needed approval, an allowed plan says which
/// guardrails held.
pub fn decide_with_facts(runbook: &Runbook, plan: &Plan, event: &Event, facts: &Facts) -> Decision {
    decision_from(runbook, findings(runbook, plan, event, facts))
}

/// The runbook's findings for `plan` under `facts`, in the order they are
/// judged: every guardrail, then the approval setting. When
/// `facts.environment` is `None` the event's `fields.environment` is used.
pub fn findings(runbook: &Runbook, plan: &Plan, event: &Event, facts: &Facts) -> Vec<Finding> {
    let mut facts = facts.clone();
    if facts.environment.is_none() {
        facts.environment = guardrails::event_environment(event);
    }
    let mut findings = check_guardrails(runbook, plan, &facts);
    findings.push(match runbook.approval.mode {
        ApprovalMode::Auto => Finding {
            guardrail: "approval",
            verdict: Verdict::Pass,
            reason: format!("runbook `{}` is set to approval: auto", runbook.id),
        },
        ApprovalMode::Required => Finding {
            guardrail: "approval",
            verdict: Verdict::RequireApproval,
            reason: format!("runbook `{}` requires approval", runbook.id),
        },
    });
    findings
}

/// The decision `findings` make: the strictest verdict wins, and the
/// reasons list every finding, strictest first (a denial leaves out what
/// passed).
pub(crate) fn decision_from(runbook: &Runbook, mut findings: Vec<Finding>) -> Decision {
    // Stable: findings of one verdict keep the order they were judged in.
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.verdict));
    let strictest = findings[0].verdict;
    let reasons = findings
        .into_iter()
        .filter(|finding| strictest != Verdict::Deny || finding.verdict != Verdict::Pass)
        .map(|finding| finding.reason)
        .collect();
    match strictest {
        Verdict::Deny => Decision {
            kind: DecisionKind::Deny,
            reasons,
            expires_after_ms: None,
            approvals_required: 1,
            stages: Vec::new(),
            policy_version: None,
        },
        Verdict::RequireApproval => {
            let mut reasons = reasons;
            let approvals_required = approvals_required(runbook, &mut reasons);
            Decision {
                kind: DecisionKind::RequireApproval,
                reasons,
                expires_after_ms: Some(runbook.approval.expires_ms),
                approvals_required,
                stages: runbook.approval.stages.clone(),
                policy_version: None,
            }
        }
        Verdict::Pass => Decision {
            kind: DecisionKind::Allow,
            reasons,
            expires_after_ms: None,
            approvals_required: 1,
            stages: Vec::new(),
            policy_version: None,
        },
    }
}

/// How many distinct people must approve: what the runbook says, and at
/// least two for an irreversible action (nothing undoes a mistake, so no
/// one person decides it alone).
fn approvals_required(runbook: &Runbook, reasons: &mut Vec<String>) -> u32 {
    let asked = runbook.approval.approvals;
    if runbook.risk == domain::RiskClass::Irreversible && asked < 2 {
        reasons.push("the action is irreversible: two distinct people must approve".to_owned());
        return 2;
    }
    if asked > 1 {
        reasons.push(format!(
            "runbook `{}` asks for {asked} distinct approvers",
            runbook.id
        ));
    }
    asked
}
