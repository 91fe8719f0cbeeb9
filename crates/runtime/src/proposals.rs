//! Proposals, one of the runtime's services: an agent's intent in.
//!
//! An agent may recommend; only opsgate acts. A proposal therefore becomes
//! an event (`source: agent`, `kind: proposal`) and goes through intake's
//! one path — match (or the runbook it names), plan, the gate, approvals —
//! exactly as an alert or a ticket would. What is added here is only what
//! an agent's request needs besides:
//! - the limits of the agent's token (runbooks and targets by pattern, a
//!   highest risk), judged on the plan, so a pattern is checked against the
//!   targets the run would really act on; a refusal is audited;
//! - the targets the agent named, which must be the plan's own;
//! - idempotency: the key is the event's dedup key, so a proposal sent
//!   again is answered with the run the first one started (the store's
//!   one-run-per-dedup-key rule settles a race), never a second run, and a
//!   key reused for another proposal is refused;
//! - withdrawal of the agent's own proposal while it waits for a person.
//!
//! Rules that hold on every path (an agent never approves; a policy that
//! errors denies) live below, in `Decisions` and the gate, so this service
//! neither repeats nor weakens them.

use domain::{
    DecisionKind, Event, EventStatus, PROPOSAL_KIND, PROPOSAL_SOURCE, Principal, PrincipalKind,
    Proposal, RunState,
};
use serde::Serialize;
use serde_json::{Value, json};
use store::{AuditEntry, Disposition};

use crate::intake::{Assessment, DryRun, IntakeReport, assess, dry_run_of};
use crate::{Result, Runtime, new_id};

/// Proposals: an agent's intent in, judged and run as any event is.
#[derive(Clone, Copy)]
pub struct Proposals<'r>(&'r Runtime);

impl Runtime {
    /// Agents' proposals.
    pub fn proposals(&self) -> Proposals<'_> {
        Proposals(self)
    }
}

/// What became of a proposal.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalReport {
    #[serde(flatten)]
    pub intake: IntakeReport,
    /// The same idempotency key was sent before: this is that proposal's
    /// run, as it is now.
    pub replayed: bool,
}

impl Proposals<'_> {
    /// Takes `proposal` from `agent` in: refused (and audited) outside the
    /// agent's scope, else stored and decided as any event.
    pub async fn propose(&self, proposal: Proposal, agent: &Principal) -> Result<ProposalReport> {
        let event = self.event_of(&proposal, agent)?;
        if let Some(report) = self.replay(&event, &proposal).await? {
            return Ok(report);
        }
        let intake = self.0.intake();
        let slot = intake.slot()?;
        let assessment = self.assess(&event, &proposal);
        self.judge(&proposal, agent, &assessment, Audited::Yes)
            .await?;
        let intake = intake
            .take(slot, event.clone(), agent, Some(assessment))
            .await?;
        if matches!(
            intake.disposition,
            Disposition::Duplicate | Disposition::Suppressed
        ) && let Some(report) = self.replay(&event, &proposal).await?
        {
            // Sent twice at once: the other request stored the run first.
            return Ok(report);
        }
        Ok(ProposalReport {
            intake,
            replayed: false,
        })
    }

    /// What would become of `proposal`: its plan and decision, with nothing
    /// stored and nothing run. The scope is judged as for a proposal.
    pub async fn dry_run(&self, proposal: Proposal, agent: &Principal) -> Result<DryRun> {
        let event = self.event_of(&proposal, agent)?;
        let assessment = self.assess(&event, &proposal);
        self.judge(&proposal, agent, &assessment, Audited::No)
            .await?;
        let inner = &self.0.inner;
        let also_matching = match proposal.runbook {
            Some(_) => Vec::new(),
            None => inner
                .catalog
                .matching(&event)
                .skip(1)
                .map(|runbook| runbook.id.clone())
                .collect(),
        };
        Ok(dry_run_of(
            &event,
            assessment,
            also_matching,
            inner.policies.as_ref(),
        ))
    }

    /// Withdraws `agent`'s own proposal while its run waits for a person:
    /// the run is cancelled and never acts. Another's run, or one that
    /// acts already, is refused.
    pub async fn withdraw(
        &self,
        run_id: &str,
        agent: &Principal,
        reason: String,
    ) -> Result<RunState> {
        let actor = agent.actor();
        let run = self.0.load_run(run_id).await?;
        if !self.0.decisions().is_requester(&run, &actor).await? {
            return Err(crate::Error::ApprovalRefused {
                reason: format!(
                    "{actor} did not propose run {run_id}: only its proposer withdraws it"
                ),
            });
        }
        if run.state != RunState::AwaitingApproval {
            return Err(crate::Error::InvalidProposal {
                message: format!(
                    "run {run_id} is {}: a proposal is withdrawn only while it waits for approval",
                    run.state.as_str()
                ),
            });
        }
        let reason = if reason.trim().is_empty() {
            "withdrawn by its proposer".to_owned()
        } else {
            format!("withdrawn by its proposer: {}", reason.trim())
        };
        self.0.decisions().cancel(run_id, &actor, reason).await
    }

    /// Intake's assessment of the event `proposal` became: planned with
    /// the runbook it names, or matched as any event is.
    fn assess(&self, event: &Event, proposal: &Proposal) -> Assessment<'_> {
        let inner = &self.0.inner;
        assess(
            &inner.catalog,
            &inner.template_env,
            Some(&inner.connectors),
            event,
            proposal.runbook.as_deref(),
        )
    }

    /// The event a proposal becomes: the agent's `fields`, with what the
    /// proposal says kept whole under `fields.proposal` (and its
    /// confidence, rationale and ticket where the gate and the ticket
    /// systems read them).
    fn event_of(&self, proposal: &Proposal, agent: &Principal) -> Result<Event> {
        if agent.kind() != PrincipalKind::Agent {
            return Err(crate::Error::ApprovalRefused {
                reason: format!(
                    "{} is not an agent: a proposal comes from an agent's token",
                    agent.actor()
                ),
            });
        }
        if let Some(message) = proposal.problem() {
            return Err(crate::Error::InvalidProposal { message });
        }
        if let Some(runbook) = &proposal.runbook
            && self.0.inner.catalog.get(runbook).is_none()
        {
            return Err(crate::Error::InvalidProposal {
                message: {
                    let known: Vec<&str> =
                        self.0.inner.catalog.iter().map(|r| r.id.as_str()).collect();
                    format!(
                        "no runbook `{runbook}`: {}",
                        runbook::suggestion(runbook, &known, "the runbooks are")
                    )
                },
            });
        }
        let mut fields = proposal.fields.clone();
        fields.insert("confidence".into(), json!(proposal.confidence));
        fields.insert("rationale".into(), json!(proposal.rationale));
        if let Some(ticket) = &proposal.ticket {
            fields.insert("ticket".into(), json!(ticket));
        }
        let mut said = serde_json::to_value(proposal).expect("a proposal serialises");
        said["agent"] = json!(agent.actor());
        said["hash"] = json!(proposal.hash());
        fields.insert("proposal".into(), said);
        let new = domain::NewEvent {
            source: PROPOSAL_SOURCE.to_owned(),
            kind: PROPOSAL_KIND.to_owned(),
            dedup_key: dedup_key(agent, &proposal.idempotency_key),
            subject: proposal.subject().to_owned(),
            fields: Value::Object(fields),
            status: EventStatus::Open,
            occurred_at: None,
        };
        Ok(Event::from_new(new_id("evt"), new, self.0.now()))
    }

    /// The run an earlier proposal with this key started, as it is now;
    /// a different proposal under the same key is refused.
    async fn replay(&self, event: &Event, proposal: &Proposal) -> Result<Option<ProposalReport>> {
        let store = self.0.store();
        let Some(run) = store.latest_run_for_dedup_key(&event.dedup_key).await? else {
            return Ok(None);
        };
        let earlier = store.event(&run.event_id).await?;
        let earlier_hash = earlier.as_ref().and_then(|earlier| {
            earlier.event.fields["proposal"]["hash"]
                .as_str()
                .map(str::to_owned)
        });
        if earlier_hash.as_deref() != Some(proposal.hash().as_str()) {
            return Err(crate::Error::ProposalConflict {
                message: format!(
                    "idempotency key `{}` was used for another proposal (run {}): \
                     send a new key for a new proposal",
                    proposal.idempotency_key, run.id
                ),
            });
        }
        let disposition = match run.decision.kind {
            DecisionKind::Deny => Disposition::DeniedRun,
            _ if run.state == RunState::Shadowed => Disposition::Shadowed,
            _ => Disposition::StartedRun,
        };
        Ok(Some(ProposalReport {
            intake: IntakeReport {
                event_id: run.event_id.clone(),
                disposition,
                runbook: Some(run.plan.runbook_id.clone()),
                runbook_version: Some(run.plan.runbook_version.clone()),
                run_id: Some(run.id.clone()),
                state: Some(run.state),
                decision: Some(run.decision.clone()),
                message: format!(
                    "this proposal was taken in before (idempotency key `{}`): run {} is {}",
                    proposal.idempotency_key,
                    run.id,
                    run.state.as_str()
                ),
            },
            replayed: true,
        }))
    }

    /// Whether the planned proposal stays within what the agent may ask
    /// and names the targets its plan acts on. A plan that could not be
    /// made is the agent's mistake, said as such.
    async fn judge(
        &self,
        proposal: &Proposal,
        agent: &Principal,
        assessment: &Assessment<'_>,
        audited: Audited,
    ) -> Result<()> {
        let (runbook, plan) = match assessment {
            Assessment::Planned { runbook, plan } => (*runbook, plan),
            Assessment::PlanFailed { runbook, error } => {
                return Err(crate::Error::InvalidProposal {
                    message: format!(
                        "runbook `{}` cannot be planned as proposed: {error}",
                        runbook.id
                    ),
                });
            }
            Assessment::NoMatch | Assessment::Inactive => return Ok(()),
        };
        let refusal = scope_refusal(
            agent.scope.as_ref(),
            &runbook.id,
            runbook.risk,
            &plan.targets,
        )
        .or_else(|| {
            let named = proposal.targets.as_ref()?;
            let mut named: Vec<&str> = named.iter().map(String::as_str).collect();
            let mut planned: Vec<&str> = plan.targets.iter().map(String::as_str).collect();
            named.sort_unstable();
            planned.sort_unstable();
            (named != planned).then(|| {
                format!(
                    "the proposal names targets {named:?}, but runbook `{}` with these \
                         inputs acts on {planned:?}",
                    runbook.id
                )
            })
        });
        let Some(reason) = refusal else {
            return Ok(());
        };
        if audited == Audited::Yes {
            let refused = AuditEntry::new(
                domain::RecordKind::ProposalRefused,
                agent.actor(),
                json!({
                    "runbook": runbook.id, "targets": plan.targets, "risk": runbook.risk,
                    "idempotency_key": proposal.idempotency_key,
                    "confidence": proposal.confidence, "reason": reason,
                }),
            );
            self.0.audit_log().append(None, &[refused]).await?;
            self.0.records_written();
        }
        Err(crate::Error::ProposalRefused { reason })
    }
}

/// A runbook as an agent choosing one needs it: what it does, how risky it
/// is, what it takes, and what a proposal of it will meet.
#[derive(Debug, Clone, Serialize)]
pub struct RunbookBrief {
    pub id: String,
    pub title: String,
    pub owner: String,
    pub risk: domain::RiskClass,
    pub version: String,
    /// `live`, or `shadow`: a proposal is recorded and never run.
    pub mode: String,
    /// `auto` (the policy may still ask a person) or `required`.
    pub approval: String,
    /// The lowest confidence it takes from an agent, when it sets one.
    pub min_confidence: Option<f64>,
    /// The inputs a proposal fills: a JSON Schema.
    pub inputs: Value,
    /// What the runbook fills from the event itself when a proposal
    /// leaves an input out.
    pub inputs_from_event: Vec<String>,
    /// How the targets follow from the inputs, and how many at most.
    pub targets_from: String,
    pub max_targets: u32,
    /// What it does, step by step: `id (action)`.
    pub steps: Vec<String>,
    /// Whether it proves its outcome with a probe afterwards.
    pub verified: bool,
}

impl RunbookBrief {
    fn of(runbook: &runbook::Runbook) -> RunbookBrief {
        RunbookBrief {
            id: runbook.id.clone(),
            title: runbook.title.clone(),
            owner: runbook.owner.clone(),
            risk: runbook.risk,
            version: runbook.version.clone(),
            mode: runbook.mode.as_str().to_owned(),
            approval: match runbook.approval.mode {
                runbook::ApprovalMode::Auto => "auto",
                runbook::ApprovalMode::Required => "required",
            }
            .to_owned(),
            min_confidence: runbook.guardrails.min_confidence,
            inputs: runbook.inputs.schema.clone(),
            inputs_from_event: runbook.inputs.from_event.keys().cloned().collect(),
            targets_from: runbook.targets.from.clone(),
            max_targets: runbook.targets.max_targets,
            steps: runbook
                .steps
                .iter()
                .map(|step| {
                    let gate = if step.requires_approval {
                        ", asks a person first"
                    } else {
                        ""
                    };
                    format!("{} ({}{gate})", step.id, step.call.action.name)
                })
                .collect(),
            verified: runbook.verify.is_some(),
        }
    }
}

impl Proposals<'_> {
    /// The runbooks `agent` may propose, in id order.
    pub fn runbooks(&self, agent: &Principal) -> Vec<RunbookBrief> {
        self.0
            .inner
            .catalog
            .iter()
            .filter(|runbook| {
                scope_refusal(agent.scope.as_ref(), &runbook.id, runbook.risk, &[]).is_none()
            })
            .map(RunbookBrief::of)
            .collect()
    }

    /// One runbook `agent` may propose; `None` when there is no such
    /// runbook or it is outside the agent's scope.
    pub fn runbook(&self, agent: &Principal, id: &str) -> Option<RunbookBrief> {
        let runbook = self.0.inner.catalog.get(id)?;
        scope_refusal(agent.scope.as_ref(), &runbook.id, runbook.risk, &[])
            .is_none()
            .then(|| RunbookBrief::of(runbook))
    }
}

/// Whether a refusal is audited: a proposal's is, a dry run's is not (it
/// asks, and nothing would have happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audited {
    Yes,
    No,
}

/// An agent's proposals are told apart by their idempotency keys.
fn dedup_key(agent: &Principal, key: &str) -> String {
    format!("{}:{key}", agent.actor())
}

/// Why `scope` does not let its agent propose `runbook_id` (of `risk`) on
/// `targets`; `None` when it does.
pub(crate) fn scope_refusal(
    scope: Option<&domain::Scope>,
    runbook_id: &str,
    risk: domain::RiskClass,
    targets: &[String],
) -> Option<String> {
    let scope = scope?;
    let allowed = |patterns: &[String], name: &str| {
        patterns.is_empty()
            || patterns
                .iter()
                .any(|pattern| policy::glob_matches(pattern, name))
    };
    if !allowed(&scope.runbooks, runbook_id) {
        return Some(format!(
            "runbook `{runbook_id}` is outside this agent's scope (runbooks: {})",
            scope.runbooks.join(", ")
        ));
    }
    if let Some(max_risk) = scope.max_risk
        && risk.rank() > max_risk.rank()
    {
        return Some(format!(
            "runbook `{runbook_id}` is {}, above this agent's highest risk, {}",
            risk.as_str(),
            max_risk.as_str()
        ));
    }
    if let Some(target) = targets
        .iter()
        .find(|target| !allowed(&scope.targets, target))
    {
        return Some(format!(
            "target `{target}` is outside this agent's scope (targets: {})",
            scope.targets.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::RiskClass;

    #[test]
    fn a_scope_limits_runbooks_targets_and_risk() {
        let scope = domain::Scope {
            runbooks: vec!["restart-*".into(), "clear-print-queue".into()],
            targets: vec!["LT-*".into()],
            max_risk: Some(RiskClass::Reversible),
        };
        let check = |runbook: &str, risk, targets: &[&str], expected: Option<&str>| {
            let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            let refusal = scope_refusal(Some(&scope), runbook, risk, &targets);
            match expected {
                None => assert_eq!(refusal, None, "{runbook} {targets:?}"),
                Some(expected) => {
                    let refusal = refusal.unwrap_or_else(|| panic!("{runbook} allowed"));
                    assert!(refusal.contains(expected), "{refusal}");
                }
            }
        };
        check(
            "restart-endpoint-service",
            RiskClass::Reversible,
            &["LT-1"],
            None,
        );
        check("clear-print-queue", RiskClass::ReadOnly, &["lt-2"], None);
        check(
            "grant-vpn-access",
            RiskClass::Reversible,
            &["LT-1"],
            Some("runbook `grant-vpn-access` is outside this agent's scope"),
        );
        check(
            "restart-everything",
            RiskClass::Irreversible,
            &["LT-1"],
            Some("is irreversible, above this agent's highest risk, reversible"),
        );
        check(
            "restart-endpoint-service",
            RiskClass::Reversible,
            &["LT-1", "DB-PROD-01"],
            Some("target `DB-PROD-01` is outside"),
        );
        assert_eq!(
            scope_refusal(None, "anything", RiskClass::Irreversible, &["x".into()]),
            None
        );
    }
}
