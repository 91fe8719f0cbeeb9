//! Intake: an event in, a stored event and (maybe) a run out.
//!
//! Matching, planning and the gate are pure and happen before anything is
//! written; the event, the run and their audit records are then stored in
//! one transaction. The database's unique index on open dedup keys has the
//! last word on duplicates, so two identical events racing each other still
//! start one run. A gate that counts other runs (cooldown, rate limit,
//! concurrency cap, global limit) decides inside that transaction, on
//! counts the store reads under its admission lock: counted before it, a
//! burst of events would all count the same runs and all be let through.
//!
//! One run per problem, not per update: ticket systems send an update on
//! every change and alerts are sent again while they fire, so a dedup key
//! that had a run of the runbook starts no other until the problem was
//! resolved since (or the runbook's `match.rerun.after` passed); a new
//! ticket about a subject another ticket's open run of the runbook works
//! on is linked to that run; and a change opsgate made itself (its source
//! says so) never starts anything. The store settles the first two inside
//! the intake's transaction ([`store::OneRunPerProblem`]).

use domain::{Decision, DecisionKind, Event, EventStatus, NewEvent, Plan, Principal, RunState};
use engine::Input;
use jiff::Timestamp;
use runbook::{Catalog, TemplateEnv};
use serde::Serialize;
use serde_json::json;
use store::{AuditEntry, Disposition, IntakeOutcome, NewRun};

use crate::Intake;

use crate::{Result, Runtime, SYSTEM_ACTOR, new_id};

/// What happened to one event, as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeReport {
    pub event_id: String,
    pub disposition: Disposition,
    pub runbook: Option<String>,
    pub runbook_version: Option<String>,
    pub run_id: Option<String>,
    pub state: Option<RunState>,
    pub decision: Option<Decision>,
    pub message: String,
}

/// A dry run: what intake would do with an event, with nothing touched.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub matched: Option<String>,
    pub runbook_version: Option<String>,
    /// Other runbooks that also match (the first one in id order wins).
    pub also_matching: Vec<String>,
    pub plan: Option<Plan>,
    pub decision: Option<Decision>,
    pub message: String,
}

/// The pure part of intake, shared by [`Intake::ingest`] and [`Intake::dry_run`].
pub(crate) enum Assessment<'a> {
    Inactive,
    NoMatch,
    PlanFailed {
        runbook: &'a runbook::Runbook,
        error: runbook::Error,
    },
    /// Planned; the gate has not decided yet (intake knows more facts
    /// than a dry run).
    Planned {
        runbook: &'a runbook::Runbook,
        // Boxed: a plan is large, and the other outcomes are common.
        plan: Box<Plan>,
    },
}

/// Plans `event` with `runbook`, as intake and the check before a run
/// starts both do: an agent's proposal with the inputs it filled first.
pub(crate) fn plan(
    runbook: &runbook::Runbook,
    event: &Event,
    template_env: &TemplateEnv,
) -> runbook::Result<Plan> {
    let proposed = (event.source == domain::PROPOSAL_SOURCE && event.kind == domain::PROPOSAL_KIND)
        .then(|| event.fields["proposal"]["inputs"].as_object())
        .flatten();
    match proposed {
        Some(inputs) => runbook.plan_proposed(event, template_env, inputs),
        None => runbook.plan(event, template_env),
    }
}

pub(crate) fn assess<'a>(
    catalog: &'a Catalog,
    template_env: &TemplateEnv,
    connectors: Option<&connectors::Connectors>,
    event: &Event,
    named: Option<&str>,
) -> Assessment<'a> {
    if !event.status.is_active() {
        return Assessment::Inactive;
    }
    // A proposal may name its runbook; everything else is matched. (A
    // proposal's inputs are in its event: `plan` reads them there.)
    let runbook = match named {
        Some(id) => catalog.get(id),
        None => catalog.matching(event).next(),
    };
    let Some(runbook) = runbook else {
        return Assessment::NoMatch;
    };
    let planned = plan(runbook, event, template_env).and_then(|plan| {
        match connectors.and_then(|connectors| credential_refusal(connectors, &plan)) {
            Some(error) => Err(error),
            None => Ok(plan),
        }
    });
    match planned {
        Ok(plan) => Assessment::Planned {
            runbook,
            plan: Box::new(plan),
        },
        Err(error) => Assessment::PlanFailed { runbook, error },
    }
}

/// A plan that would send a credential to a host outside its `hosts` is
/// refused when it is made, before anyone is asked to approve it (the
/// connector checks each request again before sending).
fn credential_refusal(connectors: &connectors::Connectors, plan: &Plan) -> Option<runbook::Error> {
    let precheck = plan
        .precheck
        .iter()
        .map(|precheck| ("precheck.probe".to_owned(), &precheck.probe));
    // A rollout's every target has calls of its own; the plan's steps are
    // the first target's.
    let per_target: Vec<(
        &[domain::PlannedStep],
        Option<&domain::Verification>,
        String,
    )> = match &plan.rollout {
        None => vec![(&plan.steps, plan.verify.as_ref(), String::new())],
        Some(rollout) => rollout
            .targets
            .iter()
            .map(|target| {
                (
                    target.steps.as_slice(),
                    target.verify.as_ref(),
                    format!(" (target `{}`)", target.target),
                )
            })
            .collect(),
    };
    let calls = per_target.iter().flat_map(|(steps, verify, on)| {
        let steps = steps.iter().flat_map(move |step| {
            let rollback = step
                .rollback
                .iter()
                .map(move |call| (format!("rollback of step `{}`{on}", step.id), call));
            std::iter::once((format!("step `{}`{on}", step.id), &step.call)).chain(rollback)
        });
        let probe = verify
            .iter()
            .map(move |verify| (format!("verify.probe{on}"), &verify.probe));
        steps.chain(probe)
    });
    precheck.chain(calls).find_map(|(location, call)| {
        connectors
            .credential_refusal(call)
            .map(|message| runbook::Error::Url { location, message })
    })
}

/// Plans `new` as intake would, and touches nothing: no store, no call.
/// `policies`, when given, take part in the decision as in intake.
pub fn dry_run(
    catalog: &Catalog,
    template_env: &TemplateEnv,
    connectors: Option<&connectors::Connectors>,
    policies: Option<&policy::PolicySet>,
    new: NewEvent,
) -> DryRun {
    let event = Event::from_new("dry-run".to_owned(), new, Timestamp::now());
    let also_matching: Vec<String> = catalog
        .matching(&event)
        .skip(1)
        .map(|runbook| runbook.id.clone())
        .collect();
    let assessment = assess(catalog, template_env, connectors, &event, None);
    dry_run_of(&event, assessment, also_matching, policies)
}

/// What intake would do with an assessed event, said as a dry run says it.
pub(crate) fn dry_run_of(
    event: &Event,
    assessment: Assessment<'_>,
    also_matching: Vec<String>,
    policies: Option<&policy::PolicySet>,
) -> DryRun {
    let empty = DryRun {
        matched: None,
        runbook_version: None,
        also_matching,
        plan: None,
        decision: None,
        message: String::new(),
    };
    match assessment {
        Assessment::Inactive => DryRun {
            message: inactive_message(event.status),
            ..empty
        },
        Assessment::NoMatch => DryRun {
            message: "no runbook matched".to_owned(),
            ..empty
        },
        Assessment::PlanFailed { runbook, error } => DryRun {
            matched: Some(runbook.id.clone()),
            runbook_version: Some(runbook.version.clone()),
            message: format!("planning failed: {error}"),
            ..empty
        },
        Assessment::Planned { runbook, plan } => {
            // Without the store, recent runs are unknown: the decision says
            // that cooldowns and rate limits were not checked.
            let facts = policy::Facts::from_event(event, event.time());
            let decision =
                match policy::decide_with_policies(runbook, &plan, event, &facts, policies) {
                    Ok(decision) => decision,
                    Err(error) => {
                        return DryRun {
                            matched: Some(runbook.id.clone()),
                            runbook_version: Some(runbook.version.clone()),
                            message: format!("would deny: the policies could not decide: {error}"),
                            plan: Some(*plan),
                            ..empty
                        };
                    }
                };
            let mut message = would(&decision);
            if let runbook::Mode::Shadow { .. } = runbook.mode {
                message = format!(
                    "runbook in shadow mode: the run would stop before any call, recording that it {message}"
                );
            }
            if let Some(recurrence) = &runbook.matcher.recurrence {
                let window = jiff::SignedDuration::from_millis(
                    i64::try_from(recurrence.window_ms).unwrap_or(i64::MAX),
                );
                message.push_str(&format!(
                    "; and only once the event has been seen {} times within {window:#}, \
                     which a dry run does not count",
                    recurrence.count
                ));
            }
            DryRun {
                matched: Some(runbook.id.clone()),
                runbook_version: Some(runbook.version.clone()),
                message,
                plan: Some(*plan),
                decision: Some(decision),
                ..empty
            }
        }
    }
}

impl Runtime {
    /// What the gate counts for `plan` at `now`: the runs of the runbook
    /// within its cooldown's and rate limit's windows, its runs under way
    /// when it caps them, and every runbook's runs within the global
    /// limit's window. Empty when the verdict depends on no other run.
    /// `admitted_before` is the run being judged again before it starts.
    pub(crate) fn counting(
        &self,
        runbook: &runbook::Runbook,
        plan: &Plan,
        now: Timestamp,
        admitted_before: Option<&str>,
    ) -> store::Counting {
        let guardrails = &runbook.guardrails;
        let ago = |ms: u64| {
            now.checked_sub(jiff::SignedDuration::from_millis(
                i64::try_from(ms).unwrap_or(i64::MAX),
            ))
            .unwrap_or(Timestamp::MIN)
        };
        store::Counting {
            runbook_id: runbook.id.clone(),
            targets: plan.targets.clone(),
            on_target_since: guardrails
                .cooldown
                .as_ref()
                .map(|cooldown| ago(cooldown.window_ms)),
            of_runbook_since: guardrails.rate_limit.map(|limit| ago(limit.window_ms)),
            all_since: self
                .inner
                .global_rate_limit
                .map(|limit| ago(limit.window_ms)),
            under_way: guardrails.max_concurrent.is_some(),
            admitted_before: admitted_before.map(str::to_owned),
            with_shadowed: false,
        }
    }

    /// What the gate judges a plan against: the clock, who asks, and the
    /// runs counted for it ([`Runtime::counting`]).
    pub(crate) fn facts_with(
        &self,
        requester: policy::Requester,
        now: Timestamp,
        counts: &store::Counts,
    ) -> policy::Facts {
        policy::Facts {
            now,
            environment: None,
            requester,
            recent_runs: Some(policy::RecentRuns {
                on_target: counts.on_target.clone(),
                of_runbook: counts.of_runbook,
                under_way: counts.under_way,
            }),
            global_rate_limit: self
                .inner
                .global_rate_limit
                .map(|limit| policy::GlobalRateLimit {
                    limit,
                    recent_runs: counts.all,
                }),
        }
    }

    /// The facts for a run already stored, judged again before it starts:
    /// the windows count the runs admitted before it, the cap every other
    /// run under way.
    pub(crate) async fn facts_before_start(
        &self,
        runbook: &runbook::Runbook,
        plan: &Plan,
        requester: policy::Requester,
        now: Timestamp,
        run_id: &str,
    ) -> Result<policy::Facts> {
        let counting = self.counting(runbook, plan, now, Some(run_id));
        let counts = if counting.is_empty() {
            store::Counts::default()
        } else {
            self.inner.store.count_for_admission(&counting).await?
        };
        Ok(self.facts_with(requester, now, &counts))
    }

    /// Resolves the approvers of a decision that requires approval. A chain
    /// that cannot be drawn (nobody to approve a stage, no directory) turns
    /// the decision into a denial saying why: it fails closed.
    fn draw_chain(
        &self,
        decision: Decision,
        plan: &Plan,
        requester: Option<&str>,
        now: Timestamp,
    ) -> (Decision, Vec<engine::Stage>) {
        if decision.kind != DecisionKind::RequireApproval {
            return (decision, Vec::new());
        }
        let context = crate::approvals::ChainContext {
            requester,
            ci: plan.targets.first().map(String::as_str),
            now,
        };
        match crate::approvals::resolve_chain(&decision, self.inner.directory.as_ref(), &context) {
            Ok(chain) => (decision, chain),
            Err(problem) => {
                let mut denied = decision;
                denied.kind = DecisionKind::Deny;
                denied.reasons.insert(0, problem);
                (denied, Vec::new())
            }
        }
    }

    /// The systems a new run writes back to: the ticket the event is
    /// about, when the runbook asks for ticket write-backs and the ticket
    /// system is configured; every chat channel, when the run will wait
    /// for a person (its decision requires approval, or a step is gated),
    /// or when a ticket's run is held back (what it was to fix keeps
    /// coming back, and on call should know).
    fn writebacks_for(
        &self,
        runbook: &runbook::Runbook,
        event: &Event,
        plan: &Plan,
        decision: &Decision,
        held_back: bool,
    ) -> Vec<store::NewWriteback> {
        let integrations = &self.inner.integrations;
        let mut writebacks = Vec::new();
        if runbook.writeback.ticket
            && let Some((system, ticket)) = integrations.ticket_for(event)
        {
            writebacks.push(store::NewWriteback {
                system: system.name().to_owned(),
                destination: ticket,
            });
        }
        let waits_for_a_person = decision.kind == DecisionKind::RequireApproval
            || plan.steps.iter().any(|step| step.requires_approval)
            || plan
                .rollout
                .as_ref()
                .is_some_and(|rollout| rollout.approve_after_canary);
        let ticket_held_back = held_back && !writebacks.is_empty();
        // A rollout is long work on many targets: the channel follows its
        // batches, and hears of a halt with the targets' lists.
        let rollout = plan.rollout.is_some();
        if waits_for_a_person || ticket_held_back || rollout {
            writebacks.extend(integrations.chats.iter().map(|chat| store::NewWriteback {
                system: chat.name().to_owned(),
                destination: chat.destination(),
            }));
        }
        writebacks
    }

    /// What holds back the run `event` would start with `runbook` (see
    /// `store::OneRunPerProblem`): its dedup key's earlier run, unless the
    /// runbook's `match.rerun.after` has passed since it was created; and,
    /// for an event about a ticket, another ticket's open run on the same
    /// subject, which the ticket is linked to — and told the story of,
    /// through a write-back of its own, when the runbook tells tickets.
    fn one_run_per_problem(
        &self,
        runbook: &runbook::Runbook,
        event: &Event,
        now: Timestamp,
    ) -> store::OneRunPerProblem {
        let rerun_once_happened_by = runbook.matcher.rerun.map(|rerun| {
            now.checked_sub(jiff::SignedDuration::from_millis(
                i64::try_from(rerun.after_ms).unwrap_or(i64::MAX),
            ))
            .unwrap_or(Timestamp::MIN)
        });
        let link = self
            .inner
            .integrations
            .ticket_for(event)
            .map(|(system, ticket)| store::Link {
                writeback: runbook.writeback.ticket.then(|| store::NewWriteback {
                    system: system.name().to_owned(),
                    destination: ticket.clone(),
                }),
                ticket,
            });
        store::OneRunPerProblem {
            runbook_id: runbook.id.clone(),
            rerun_once_happened_by,
            link,
        }
    }

    /// The run a planned event starts, decided on `facts`, with the audit
    /// records of its birth; in shadow mode (`shadow`, as
    /// [`Runtime::shadow_hold`] said), a run stopped before any call. Pure
    /// and quick: intake calls it inside the store's transaction when the
    /// facts are counts read there.
    #[allow(clippy::too_many_arguments)]
    fn planned_run(
        &self,
        event: &Event,
        runbook: &runbook::Runbook,
        plan: &Plan,
        facts: &policy::Facts,
        person: Option<&str>,
        shadow: bool,
        now: Timestamp,
    ) -> store::Admitted {
        let decision = self.gate(runbook, plan, event, facts);
        let (decision, chain) = self.draw_chain(decision, plan, person, now);
        let started = if shadow {
            engine::shadow(&decision, plan)
        } else {
            engine::start(&decision, plan, chain, now)
        };
        let machine = started.run;
        let run_id = new_id("run");
        let mut matched =
            json!({"runbook": runbook.id, "version": runbook.version, "event": event.id});
        if shadow {
            matched["shadow"] = json!(true);
        }
        let mut run_records = vec![
            AuditEntry::new(domain::RecordKind::RunMatched, SYSTEM_ACTOR, matched),
            AuditEntry::new(
                domain::RecordKind::RunPlanned,
                SYSTEM_ACTOR,
                serde_json::to_value(plan).expect("plans serialise"),
            ),
            AuditEntry::new(
                domain::RecordKind::RunDecided,
                SYSTEM_ACTOR,
                json!({
                    "decision": decision.kind.as_str(), "reasons": decision.reasons,
                    "plan_hash": plan.plan_hash, "policy_version": decision.policy_version,
                }),
            ),
            AuditEntry::new(
                domain::RecordKind::RunState,
                SYSTEM_ACTOR,
                json!({"to": machine.state.as_str(), "reason": machine.reason}),
            ),
        ];
        // What the agent said, kept whole on the run: a reviewer reads
        // why it proposed this beside why opsgate decided as it did.
        if event.source == domain::PROPOSAL_SOURCE && event.kind == domain::PROPOSAL_KIND {
            let proposal = &event.fields["proposal"];
            let actor = proposal["agent"].as_str().unwrap_or(SYSTEM_ACTOR);
            let mut said = proposal.clone();
            if let Some(said) = said.as_object_mut() {
                said.remove("fields");
            }
            run_records.insert(
                0,
                AuditEntry::new(domain::RecordKind::RunProposed, actor, said),
            );
        }
        run_records.extend(
            started
                .records
                .into_iter()
                .map(|record| AuditEntry::new(record.kind, SYSTEM_ACTOR, record.detail)),
        );
        let held_back: Vec<policy::Finding> = if decision.kind == DecisionKind::Deny && !shadow {
            policy::findings(runbook, plan, event, facts)
                .into_iter()
                .filter(policy::Finding::holds_back_a_recurrence)
                .collect()
        } else {
            Vec::new()
        };
        if !held_back.is_empty() {
            run_records.push(AuditEntry::new(
                domain::RecordKind::RunHeldBack,
                SYSTEM_ACTOR,
                json!({
                    "guardrails": held_back.iter().map(|finding| finding.guardrail).collect::<Vec<_>>(),
                    "reasons": held_back.iter().map(|finding| &finding.reason).collect::<Vec<_>>(),
                    "escalate_to": runbook.on_failure.escalate_to,
                }),
            ));
        }
        // A denied run is born finished: it never started, and says so.
        let (disposition, detail) = match decision.kind {
            _ if shadow => (
                Disposition::Shadowed,
                format!(
                    "runbook `{}` matched in shadow mode: opsgate would {}; nothing was executed",
                    runbook.id,
                    engine::shadow_would(decision.kind)
                ),
            ),
            DecisionKind::Deny => (
                Disposition::DeniedRun,
                format!(
                    "runbook `{}` matched; the run is denied and will not act: {}",
                    runbook.id,
                    decision.reasons.join("; ")
                ),
            ),
            _ => (
                Disposition::StartedRun,
                format!(
                    "started run with runbook `{}`: {}",
                    runbook.id,
                    decision_message(&decision)
                ),
            ),
        };
        let writebacks = if shadow {
            // What it would have done goes to the ticket, and only there.
            self.inner
                .integrations
                .ticket_for(event)
                .map(|(system, ticket)| store::NewWriteback {
                    system: system.name().to_owned(),
                    destination: ticket,
                })
                .into_iter()
                .collect()
        } else {
            self.writebacks_for(runbook, event, plan, &decision, !held_back.is_empty())
        };
        store::Admitted {
            disposition,
            detail,
            run: NewRun {
                id: run_id,
                plan: plan.clone(),
                decision,
                machine,
                records: run_records,
                timers: started.timers,
                writebacks,
            },
        }
    }
}

impl Runtime {
    /// How long a subject shadowed once is held off, when events of
    /// `actor` matched to `runbook` run in shadow mode: the runbook's
    /// `mode: shadow`, or a proposer the config names (`shadow.principals`).
    pub(crate) fn shadow_hold(&self, runbook: &runbook::Runbook, actor: &str) -> Option<u64> {
        match runbook.mode {
            runbook::Mode::Shadow { hold_ms } => Some(hold_ms),
            runbook::Mode::Live => self
                .inner
                .shadow_principals
                .iter()
                .any(|pattern| policy::glob_matches(pattern, actor))
                .then_some(runbook::Mode::DEFAULT_SHADOW_HOLD_MS),
        }
    }

    /// The record of what a person did with a shadowed run's problem, when
    /// `event` (inactive: the ticket resolved or closed, the alert
    /// resolved) ends it: who, the close code and notes, the group, and
    /// whether that is what opsgate would have done — the runbook's
    /// `resolve_on_success` close code, when it declares one, and a run
    /// that would have acted.
    async fn shadow_resolution(&self, event: &Event) -> Result<Option<(String, AuditEntry)>> {
        let store = &self.inner.store;
        let Some((run_id, runbook_id)) = store.unresolved_shadowed_run(&event.dedup_key).await?
        else {
            return Ok(None);
        };
        let Some(run) = store.run(&run_id).await? else {
            return Ok(None);
        };
        let field = |name: &str| {
            event
                .fields
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        let close_code = field("close_code");
        let would_act = run.decision.kind != DecisionKind::Deny;
        let would_close_code = self
            .inner
            .catalog
            .get(&runbook_id)
            .and_then(|runbook| runbook.writeback.close_code.clone());
        let agrees = match (&would_close_code, &close_code) {
            (Some(would), Some(did)) => Some(would_act && would.eq_ignore_ascii_case(did)),
            (Some(_), None) => Some(false),
            (None, _) => None,
        };
        let record = AuditEntry::new(
            domain::RecordKind::ShadowResolved,
            SYSTEM_ACTOR,
            json!({
                "event": event.id, "status": event.status.as_str(),
                "by": field("resolved_by").or_else(|| field("closed_by")).unwrap_or_else(|| event.source.clone()),
                "close_code": close_code, "close_notes": field("close_notes"),
                "group": field("assignment_group"), "at": event.received_at,
                "would": engine::shadow_would(run.decision.kind), "would_close_code": would_close_code,
                "agrees": agrees,
            }),
        );
        Ok(Some((run_id, record)))
    }
}

/// What the report and the runtime need of a run once it is stored.
struct Born {
    run_id: String,
    state: RunState,
    decision: Decision,
    asks_for_timers: bool,
}

impl Born {
    fn of(run: &NewRun) -> Born {
        Born {
            run_id: run.id.clone(),
            state: run.machine.state,
            decision: run.decision.clone(),
            asks_for_timers: !run.timers.is_empty(),
        }
    }
}

/// A run to be decided on counts read in the intake's transaction.
struct Counted<'a> {
    counting: store::Counting,
    runbook: &'a runbook::Runbook,
    plan: Box<Plan>,
    requester: policy::Requester,
    person: Option<String>,
}

/// The directory person who asked for the run, for `manager_of(requester)`:
/// the person the event names in `fields.requested_by` (a ticket's caller,
/// relayed by a source or an operator), or else the user who posted it.
pub(crate) fn requesting_person<'e>(requester: &'e Principal, event: &'e Event) -> Option<&'e str> {
    let named = event
        .fields
        .get("requested_by")
        .and_then(serde_json::Value::as_str);
    named.or((requester.kind() == domain::PrincipalKind::User).then_some(requester.name.as_str()))
}

/// `fields.requested_by` names the person separation of duties keeps from
/// approving the run: when it is there it must name someone (a string with
/// a name in it). A list, a number or a blank would name nobody, and the
/// requester could then approve their own run.
fn check_requested_by(event: &NewEvent) -> Result<()> {
    match event.fields.get("requested_by") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(name)) if !domain::person_key(name).is_empty() => Ok(()),
        Some(other) => Err(crate::Error::InvalidEvent {
            message: format!(
                "`fields.requested_by` must name the person who asked (a directory id), found {other}"
            ),
        }),
    }
}

/// Who asks, as the gate sees them: an agent's confidence is the
/// `fields.confidence` of its proposal.
pub(crate) fn requester_facts(
    kind: domain::PrincipalKind,
    name: &str,
    event: &Event,
) -> policy::Requester {
    policy::Requester {
        kind,
        name: name.to_owned(),
        confidence: event
            .fields
            .get("confidence")
            .and_then(serde_json::Value::as_f64),
    }
}

/// Whether `event` reports a change opsgate made itself, as its source
/// says (`connectors::seam::CHANGED_BY_OPSGATE`).
fn changed_by_opsgate(event: &Event) -> bool {
    event
        .fields
        .get(connectors::seam::CHANGED_BY_OPSGATE)
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}

fn inactive_message(status: EventStatus) -> String {
    format!(
        "event is {}: a {} event never starts a run",
        status.as_str(),
        status.as_str()
    )
}

/// What intake would do with a plan so decided, said as a dry run says it.
fn would(decision: &Decision) -> String {
    let verdict = match decision.kind {
        DecisionKind::Allow => "would run it, auto-approved",
        DecisionKind::RequireApproval => "would wait for approval",
        DecisionKind::Deny => "would refuse it",
    };
    format!("{verdict} ({})", decision.reasons.join("; "))
}

fn decision_message(decision: &Decision) -> String {
    let verdict = match decision.kind {
        DecisionKind::Allow => "auto-approved",
        DecisionKind::RequireApproval => "awaiting approval",
        DecisionKind::Deny => "denied",
    };
    format!("{verdict} ({})", decision.reasons.join("; "))
}

/// A place among the events being taken in at once ([`Intake::slot`]),
/// given back when dropped.
pub(crate) struct IntakeSlot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Intake<'_> {
    /// Plans `new` as intake would, and stores nothing.
    pub fn dry_run(&self, new: NewEvent) -> DryRun {
        let policies = self.0.inner.policies.as_ref();
        dry_run(
            &self.0.inner.catalog,
            &self.0.inner.template_env,
            Some(&self.0.inner.connectors),
            policies,
            new,
        )
    }

    /// Takes one event in: stores it, and starts a run when a runbook matches
    /// and no run is already open for its dedup key. `actor` is who posted
    /// it (`source:alertmanager`, `user:alice`): the event's requester, who
    /// may not approve the run it starts.
    pub async fn ingest(&self, new: NewEvent, requester: &Principal) -> Result<IntakeReport> {
        if new.source == domain::PROPOSAL_SOURCE {
            return Err(crate::Error::InvalidEvent {
                message: format!(
                    "source `{}` is reserved for agents' proposals: an agent proposes \
                     through POST /v1/proposals",
                    domain::PROPOSAL_SOURCE
                ),
            });
        }
        check_requested_by(&new)?;
        let slot = self.slot()?;
        let event = Event::from_new(new_id("evt"), new, self.0.now());
        let assessment = (!changed_by_opsgate(&event)).then(|| {
            assess(
                &self.0.inner.catalog,
                &self.0.inner.template_env,
                Some(&self.0.inner.connectors),
                &event,
                None,
            )
        });
        // An event no rule took goes to the classifier, when one is
        // configured: after it is stored and answered.
        let triaged = (matches!(assessment, Some(Assessment::NoMatch))
            && self.0.triage().classifier().is_some())
        .then(|| event.clone());
        let report = self.take(slot, event, requester, assessment).await?;
        if let Some(event) = triaged
            && report.disposition == Disposition::NoMatch
        {
            self.0.spawn_triage(event);
        }
        Ok(report)
    }

    /// A place among the events taken in at once, before anything is
    /// done for the next one (matched, planned, decided, stored): beyond
    /// [`crate::Config::max_intake_in_flight`] an event is refused at once,
    /// to be sent again, rather than cost the work of taking it in or wait
    /// in a queue that grows with the load.
    pub(crate) fn slot(&self) -> Result<IntakeSlot<'_>> {
        match self.0.inner.intake_slots.try_acquire() {
            Ok(permit) => Ok(IntakeSlot { _permit: permit }),
            Err(_) => Err(crate::Error::Overloaded {
                limit: self.0.inner.max_intake_in_flight,
            }),
        }
    }

    /// Stores `event`, assessed (`None`: opsgate's own change coming back),
    /// and starts its run, in `slot`; what [`Intake::ingest`] and a
    /// proposal share.
    pub(crate) async fn take(
        &self,
        _slot: IntakeSlot<'_>,
        event: Event,
        requester: &Principal,
        assessment: Option<Assessment<'_>>,
    ) -> Result<IntakeReport> {
        let now = event.received_at;
        let actor = requester.actor();
        let actor = actor.as_str();
        // Windows, recurrences and schedules are judged at the event's time
        // (when it happened, never later than now); what happens now —
        // freezes, approvals and their expiry, the run's own times — at now.
        let at = event.time();
        let mut received_detail = json!({
            "source": event.source, "kind": event.kind, "dedup_key": event.dedup_key,
            "subject": event.subject, "status": event.status.as_str(), "fields": event.fields,
        });
        if let Some(occurred_at) = event.occurred_at {
            received_detail["occurred_at"] = json!(occurred_at);
        }
        let received = AuditEntry::new(domain::RecordKind::EventReceived, actor, received_detail);
        let mut report = IntakeReport {
            event_id: event.id.clone(),
            disposition: Disposition::NoMatch,
            runbook: None,
            runbook_version: None,
            run_id: None,
            state: None,
            decision: None,
            message: String::new(),
        };
        let store = &self.0.inner.store;
        let mut recurrence_key = None;
        let mut counted = None;
        let mut one_run_per_problem = None;
        let (disposition, message, run, mut records) = match assessment {
            // Before anything else: opsgate's own note or state change
            // coming back is neither the problem recurring nor a
            // resolution that withdraws a run.
            None => {
                let suppressed = AuditEntry::new(
                    domain::RecordKind::EventSuppressed,
                    SYSTEM_ACTOR,
                    json!({"dedup_key": event.dedup_key, "reason": "made_by_opsgate"}),
                );
                (
                    Disposition::Suppressed,
                    "the change was made by opsgate itself: it starts nothing".to_owned(),
                    None,
                    vec![received, suppressed],
                )
            }
            Some(Assessment::Inactive) => {
                let message = inactive_message(event.status);
                (Disposition::Inactive, message, None, vec![received])
            }
            Some(Assessment::NoMatch) => {
                let no_match =
                    AuditEntry::new(domain::RecordKind::EventNoMatch, SYSTEM_ACTOR, json!({}));
                (
                    Disposition::NoMatch,
                    "no runbook matched".to_owned(),
                    None,
                    vec![received, no_match],
                )
            }
            Some(Assessment::PlanFailed { runbook, error }) => {
                report.runbook = Some(runbook.id.clone());
                report.runbook_version = Some(runbook.version.clone());
                let message = format!(
                    "runbook `{}` matched but planning failed: {error}",
                    runbook.id
                );
                let failed = AuditEntry::new(
                    domain::RecordKind::PlanFailed,
                    SYSTEM_ACTOR,
                    json!({"runbook": runbook.id, "version": runbook.version, "error": error.to_string()}),
                );
                (
                    Disposition::PlanFailed,
                    message,
                    None,
                    vec![received, failed],
                )
            }
            Some(Assessment::Planned { runbook, plan }) => {
                report.runbook = Some(runbook.id.clone());
                report.runbook_version = Some(runbook.version.clone());
                let covered = crate::freezes::Covered {
                    runbook_id: &runbook.id,
                    targets: &plan.targets,
                    requester: Some(actor),
                };
                // Asked once: whether the run is shadowed, and how long a
                // shadowed subject is held off.
                let shadow_hold = self.0.shadow_hold(runbook, actor);
                let shadow_held = match shadow_hold {
                    Some(hold_ms) => {
                        let since = at
                            .checked_sub(jiff::SignedDuration::from_millis(
                                i64::try_from(hold_ms).unwrap_or(i64::MAX),
                            ))
                            .unwrap_or(Timestamp::MIN);
                        store
                            .shadowed_recently(&runbook.id, &event.subject, since)
                            .await?
                    }
                    None => None,
                };
                if let Some(freeze) = self.0.freeze_covering(&covered, now) {
                    let message = format!(
                        "runbook `{}` matched, but automation is frozen (freeze {} by {}: {}): \
                         the event is stored and nothing runs",
                        runbook.id, freeze.id, freeze.issued_by, freeze.reason
                    );
                    let frozen = AuditEntry::new(
                        domain::RecordKind::EventFrozen,
                        SYSTEM_ACTOR,
                        json!({
                            "runbook": runbook.id, "freeze": freeze.id,
                            "by": freeze.issued_by, "reason": freeze.reason,
                        }),
                    );
                    (Disposition::Frozen, message, None, vec![received, frozen])
                } else if let Some(earlier) = shadow_held {
                    let message = format!(
                        "runbook `{}` is in shadow mode and shadowed {} lately (run {earlier}): \
                         not shadowed again within its shadow_hold",
                        runbook.id, event.subject
                    );
                    let held = AuditEntry::new(
                        domain::RecordKind::EventSuppressed,
                        SYSTEM_ACTOR,
                        json!({"runbook": runbook.id, "earlier_run": earlier, "reason": "shadow_hold"}),
                    );
                    (Disposition::ShadowHeld, message, None, vec![received, held])
                } else {
                    // A repeat of a problem that has (or had) its run is
                    // held back whatever the recurrence count says: the
                    // store records it as a duplicate, suppressed or linked
                    // (and settles races inside its transaction).
                    let rule = self.0.one_run_per_problem(runbook, &event, at);
                    let held = store.held(&event, Some(&rule)).await?.is_some();
                    one_run_per_problem = Some(rule);
                    let below = match &runbook.matcher.recurrence {
                        Some(recurrence) if !held => {
                            let key = format!("{}:{}", runbook.id, recurrence.key_for(&event));
                            let window =
                                jiff::SignedDuration::from_millis(recurrence.window_ms as i64);
                            let seen = store
                                .count_recurrences(&key, at - window, &event.dedup_key)
                                .await?
                                + 1;
                            recurrence_key = Some(key);
                            (seen < i64::from(recurrence.count)).then(|| {
                            let message = format!(
                                "runbook `{}` acts from {} occurrences within {window:#}; seen {seen}, no run yet",
                                runbook.id, recurrence.count,
                            );
                            let below = AuditEntry::new(
                                domain::RecordKind::EventBelowRecurrence,
                                SYSTEM_ACTOR,
                                json!({"runbook": runbook.id, "seen": seen, "needed": recurrence.count}),
                            );
                            (Disposition::BelowRecurrence, message, None, vec![received.clone(), below])
                        })
                        }
                        _ => None,
                    };
                    match below {
                        Some(below) => below,
                        None => {
                            let person = requesting_person(requester, &event);
                            let requester =
                                requester_facts(requester.kind(), &requester.name, &event);
                            let mut counting = self.0.counting(runbook, &plan, at, None);
                            // A shadowed run is judged as if the shadowed
                            // runs before it had run.
                            counting.with_shadowed = shadow_hold.is_some();
                            if counting.is_empty() {
                                // Nothing to count: decided here, and the
                                // transaction only stores it.
                                let facts =
                                    self.0.facts_with(requester, at, &store::Counts::default());
                                let admitted = self.0.planned_run(
                                    &event,
                                    runbook,
                                    &plan,
                                    &facts,
                                    person,
                                    shadow_hold.is_some(),
                                    now,
                                );
                                (
                                    admitted.disposition,
                                    admitted.detail,
                                    Some(admitted.run),
                                    vec![received],
                                )
                            } else {
                                counted = Some(Counted {
                                    counting,
                                    runbook,
                                    plan,
                                    requester,
                                    person: person.map(str::to_owned),
                                });
                                // Placeholders: the store's transaction decides.
                                (Disposition::StartedRun, String::new(), None, vec![received])
                            }
                        }
                    }
                }
            }
        };
        let shadow_resolution = if disposition == Disposition::Inactive {
            self.0.shadow_resolution(&event).await?
        } else {
            None
        };
        let mut withdraws = None;
        if disposition == Disposition::Inactive {
            // A resolved alert never starts a run, and withdraws a run that
            // is still waiting for someone to approve it.
            if let Some(waiting) = store.open_run_for_dedup_key(&event.dedup_key).await?
                && let Some(row) = store.run(&waiting).await?
                && row.state == RunState::AwaitingApproval
            {
                records.push(AuditEntry::new(
                    domain::RecordKind::EventWithdrawsRun,
                    SYSTEM_ACTOR,
                    json!({"run": waiting}),
                ));
                report.run_id = Some(waiting.clone());
                withdraws = Some(waiting);
            }
        }
        let subject = event.subject.clone();
        // A person resolved a shadowed run's problem: what they did is
        // recorded beside what opsgate would have done, with the event.
        let resolved_shadow = shadow_resolution.as_ref().map(|(run_id, _)| run_id.clone());
        let intake = store::Intake {
            event,
            disposition,
            detail: Some(message.clone()),
            recurrence_key,
            requester: Some(actor.to_owned()),
            run,
            records,
            one_run_per_problem,
            earlier_run_records: shadow_resolution.map(|(run_id, record)| (run_id, vec![record])),
        };
        let (outcome, born, disposition, message, started) = match &counted {
            None => {
                let born = intake.run.as_ref().map(Born::of);
                // A run this instance will drive at once is claimed, and
                // its first step's warrant committed, with the intake.
                let start = match &intake.run {
                    Some(run) => self
                        .0
                        .start_here(run, &intake.event.id, actor, now)
                        .await?
                        .map(|start| (start, run.plan.clone(), intake.event.id.clone())),
                    None => None,
                };
                let (outcome, started) = match start {
                    None => (store.intake(intake, now).await?, None),
                    Some((start, plan, event_id)) => {
                        let (outcome, claimed) =
                            store.intake_and_start(intake, &start, now).await?;
                        let started = claimed.map(|(lease, revision)| crate::driver::Started {
                            plan,
                            event_id,
                            requester: actor.to_owned(),
                            transition: start.transition,
                            revision,
                            lease,
                        });
                        (outcome, started)
                    }
                };
                (outcome, born, disposition, message, started)
            }
            Some(counted) => {
                let event = intake.event.clone();
                let admit = |counts: &store::Counts| {
                    let facts = self.0.facts_with(counted.requester.clone(), at, counts);
                    let person = counted.person.as_deref();
                    // Counted as a shadowed run exactly when it is one.
                    let shadow = counted.counting.with_shadowed;
                    self.0.planned_run(
                        &event,
                        counted.runbook,
                        &counted.plan,
                        &facts,
                        person,
                        shadow,
                        now,
                    )
                };
                match store
                    .intake_counted(intake, &counted.counting, &admit, now)
                    .await?
                {
                    (outcome, Some(admitted)) => (
                        outcome,
                        Some(Born::of(&admitted.run)),
                        admitted.disposition,
                        admitted.detail,
                        None,
                    ),
                    (outcome, None) => (outcome, None, disposition, message, None),
                }
            }
        };
        let run_id = born.as_ref().map(|born| born.run_id.clone());
        let asks_for_timers = born.as_ref().is_some_and(|born| born.asks_for_timers);
        let starts = born
            .as_ref()
            .is_some_and(|born| born.state == RunState::Approved);
        let held = match outcome {
            IntakeOutcome::Stored => {
                if asks_for_timers {
                    self.0.timers_changed();
                }
                report.disposition = disposition;
                report.message = message;
                if let Some(run_id) = resolved_shadow {
                    report.message.push_str(&format!(
                        "; what was done is recorded beside shadowed run {run_id}"
                    ));
                    report.run_id = Some(run_id);
                }
                self.0.records_written();
                if let Some(born) = born {
                    report.run_id = Some(born.run_id);
                    report.state = Some(born.state);
                    report.decision = Some(born.decision);
                }
                None
            }
            IntakeOutcome::Duplicate { existing_run_id } => Some((
                Disposition::Duplicate,
                format!("run {existing_run_id} is already open for this dedup key"),
                existing_run_id,
            )),
            IntakeOutcome::Suppressed { earlier_run_id } => Some((
                Disposition::Suppressed,
                format!(
                    "run {earlier_run_id} already handled this dedup key and it was not \
                     resolved since: no new run until it is resolved and comes back"
                ),
                earlier_run_id,
            )),
            IntakeOutcome::Linked { run_id } => {
                // The run has a record to tell, and maybe a new ticket to
                // tell it to.
                self.0.records_written();
                Some((
                    Disposition::Linked,
                    format!("run {run_id} already works on {subject}: this ticket is linked to it"),
                    run_id,
                ))
            }
        };
        if let Some((disposition, message, run_id)) = held {
            report.disposition = disposition;
            report.message = message;
            report.run_id = Some(run_id);
            report.state = None;
            report.decision = None;
            tracing::info!(
                event_id = %report.event_id,
                disposition = report.disposition.as_str(),
                run_id = report.run_id.as_deref().unwrap_or("-"),
                runbook = report.runbook.as_deref().unwrap_or("-"),
                "event taken in; its run is held back"
            );
            return Ok(report);
        }
        if let Some(waiting) = &withdraws {
            let reason = "the alert resolved before the run was approved".to_owned();
            match self
                .0
                .decisions()
                .cancel(waiting, SYSTEM_ACTOR, reason)
                .await
            {
                Ok(_) => report.message.push_str(&format!(
                    "; cancelled run {waiting} that was awaiting approval"
                )),
                Err(error) => {
                    tracing::warn!(run_id = %waiting, error = %error, "could not withdraw run")
                }
            }
        }
        tracing::info!(
            event_id = %report.event_id,
            disposition = report.disposition.as_str(),
            run_id = report.run_id.as_deref().unwrap_or("-"),
            runbook = report.runbook.as_deref().unwrap_or("-"),
            "event taken in"
        );
        // Born finished (denied, shadowed): its end is now.
        if let (Some(run_id), Some(state)) = (&report.run_id, report.state)
            && state.is_terminal()
        {
            crate::log_end(run_id, state, Some(&report.message));
        }
        if starts && let Some(run_id) = run_id {
            match started {
                Some(started) => self.0.spawn_started(run_id, started),
                None => {
                    self.0
                        .spawn_driver(run_id, Input::Begin, crate::driver::Decided::AtIntakeHere)
                }
            }
        }
        Ok(report)
    }
}
