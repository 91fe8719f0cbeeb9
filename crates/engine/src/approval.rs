//! Approval chains: stages in order, each passed by enough distinct eligible
//! people, escalated when it times out.
//!
//! The runtime resolves who may approve (the directory, out-of-office
//! dates) before the chain starts; from then on the chain is data in the
//! run's progress, and every rule about it — who is eligible, distinct
//! people across stages, when a stage passes, what a timeout adds — is
//! decided here, with the clock as an argument.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One stage of a run's approval chain, with its approvers resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// Who may approve in this stage, as actors (`user:alice`). Empty:
    /// anyone with the approver role.
    pub eligible: Vec<String>,
    /// How many distinct people must approve.
    pub required: u32,
    /// Who approved in this stage, in order.
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// How long the stage waits before it escalates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Who is added to `eligible` at each timeout, one level per timeout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<Escalation>,
    /// How many escalation levels have been applied.
    #[serde(default)]
    pub escalated: usize,
    /// When the open stage times out next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// Approvers who were out of office when the chain was resolved, and
    /// who stands in for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stand_ins: Vec<StandIn>,
}

/// People a stage adds when it times out, and how they were found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// What they are to the stage: `backup of user:alice`, `group:on-call`.
    pub to: String,
    pub people: Vec<String>,
}

/// An approver who was away when the chain was resolved, and who acts for
/// them instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandIn {
    pub absent: String,
    pub stand_in: String,
    pub why: String,
}

impl Stage {
    /// The stage a decision without stages asks for: `required` distinct
    /// people, anyone with the approver role.
    pub fn any_approver(required: u32) -> Stage {
        Stage {
            name: "approval".to_owned(),
            eligible: Vec::new(),
            required: required.max(1),
            approved_by: Vec::new(),
            timeout_ms: None,
            escalations: Vec::new(),
            escalated: 0,
            deadline: None,
            stand_ins: Vec::new(),
        }
    }

    pub fn is_passed(&self) -> bool {
        self.approved_by.len() as u32 >= self.required
    }

    fn admits(&self, by: &str) -> bool {
        self.eligible.is_empty() || self.eligible.iter().any(|person| person == by)
    }
}

/// Why `by` may not approve the open stage of `stages`, if they may not:
/// they are not among its approvers, or they approved already (in this
/// stage or an earlier one — a chain needs distinct people).
pub fn approval_refusal(stages: &[Stage], open: usize, by: &str) -> Option<String> {
    let stage = stages.get(open)?;
    if let Some(earlier) = stages[..=open]
        .iter()
        .find(|stage| stage.approved_by.iter().any(|person| person == by))
    {
        return Some(if earlier.name == stage.name {
            format!(
                "{by} approved stage `{}` already: it needs {} approvals from distinct people",
                stage.name, stage.required
            )
        } else {
            format!(
                "{by} approved stage `{}` already: each stage needs different people",
                earlier.name
            )
        });
    }
    if !stage.admits(by) {
        return Some(format!(
            "wrong person: {by} is not an approver of stage `{}` (its approvers: {})",
            stage.name,
            stage.eligible.join(", ")
        ));
    }
    None
}

/// Widens the open stage to its next escalation level, if it has one
/// left; returns what was added.
pub(crate) fn escalate(stage: &mut Stage) -> Option<Escalation> {
    let level = stage.escalations.get(stage.escalated)?.clone();
    stage.escalated += 1;
    for person in &level.people {
        if !stage.eligible.contains(person) {
            stage.eligible.push(person.clone());
        }
    }
    Some(level)
}
