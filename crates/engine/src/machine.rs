//! The transitions of one run.

use domain::{
    AttemptOutcome, Decision, DecisionKind, Freeze, OnRuns, Plan, PlannedCall, PlannedStep,
    RecordKind, RunState, StepPhase, Verification,
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::approval::{self, Stage};
use crate::{Error, Result};

mod rollout;

pub use rollout::{RolloutProgress, TargetOutcome, TargetState};

/// The part of a run the engine reasons about. The store keeps it as JSON
/// next to the state, so recovery after a restart starts from exactly here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub state: RunState,
    pub progress: Progress,
    /// Why the run did not succeed, once that is known.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Indices (into `plan.steps`) of the steps that succeeded, in order;
    /// in a rollout, on the current target.
    pub completed: Vec<usize>,
    /// The call being made or waited for, if any.
    pub current: Option<Current>,
    /// When verification gives up.
    pub verify_deadline: Option<Timestamp>,
    /// Steps still to compensate, the next one last.
    pub rollback_pending: Vec<usize>,
    /// True once verification has failed: the run ends `needs_human` after
    /// its rollback instead of `rolled_back`.
    pub verification_failed: bool,
    /// The approval chain the run waits on (or last waited on): before it
    /// starts, or at a gated step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
    /// Index of the open stage in `stages`.
    #[serde(default)]
    pub stage: usize,
    /// How long an approval may be waited for before the wait ends; a
    /// gated step's approval gets the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_ms: Option<u64>,
    /// The gated step (index into `plan.steps`) the run waits before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<usize>,
    /// True once a time-bound run's term is over: its rollback undoes a
    /// change that did its job, and ends `succeeded`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub term_over: bool,
    /// True once the run was cancelled part-way (by a person, or by a
    /// freeze that cancels): its rollback ends it `cancelled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// True once the first remedy did not verify and the run (in a
    /// rollout, the current target) went on to its second remedy, the
    /// plan's `if_unverified` steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub second_remedy: bool,
    /// Where a rollout is: its current target and each target's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutProgress>,
}

/// One call of the run: which one, which attempt, and whether it is in
/// flight or waiting for its next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Current {
    pub phase: StepPhase,
    /// Index into `plan.steps` (for `verify`, the number of steps).
    pub step_index: usize,
    pub attempt: u32,
    pub status: WaitOrFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "until")]
pub enum WaitOrFlight {
    /// The call has been (or is about to be) sent.
    InFlight,
    /// The next attempt is due at this time.
    WaitingUntil(Timestamp),
}

/// What can happen to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Approve {
        by: String,
        comment: Option<String>,
    },
    Deny {
        by: String,
        comment: Option<String>,
    },
    Cancel {
        by: String,
        reason: String,
    },
    /// An approved run starts executing.
    Begin,
    /// The call that was in flight finished.
    CallFinished(AttemptOutcome),
    /// A wait (retry backoff, verification interval) is over.
    Wake,
    /// The process restarted and found this run unfinished.
    Recover,
    /// A durable timer the run scheduled fell due.
    TimerFired(TimerKind),
    /// Just before an approved run starts, the gate decided again and no
    /// longer lets it run (a change window closed, the runbook changed).
    DecisionChanged {
        reasons: Vec<String>,
    },
    /// No freeze holds a paused run any more: it goes on with the step it
    /// paused before. `by` lifted the freeze (or `opsgate`, when it expired).
    Resume {
        by: String,
    },
}

impl Input {
    fn name(&self) -> &'static str {
        match self {
            Input::Approve { .. } => "an approval",
            Input::Deny { .. } => "a denial",
            Input::Cancel { .. } => "a cancellation",
            Input::Begin => "a start",
            Input::CallFinished(_) => "a call result",
            Input::Wake => "a timer",
            Input::Recover => "a recovery",
            Input::TimerFired(TimerKind::ApprovalExpiry) => "an approval expiry",
            Input::TimerFired(TimerKind::StageTimeout) => "a stage timeout",
            Input::TimerFired(TimerKind::TermEnds) => "the end of a time-bound change",
            Input::DecisionChanged { .. } => "a changed decision",
            Input::Resume { .. } => "a resumption",
        }
    }
}

/// What the runtime must do once the transition is committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Make this call, then feed back [`Input::CallFinished`].
    Call {
        phase: StepPhase,
        step_id: String,
        attempt: u32,
        call: PlannedCall,
    },
    /// Feed [`Input::Wake`] at this time.
    WakeAt(Timestamp),
    /// Feed [`Input::Begin`]: the run was approved (or its gated step was),
    /// so driving it starts.
    Begin,
}

/// An audit record the transition produces: a kind (`step.succeeded`) and
/// its details. The store chains it into the audit log in the same
/// transaction as the state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    pub detail: Value,
}

/// An operator's freeze that covers the run, as the engine needs it: the
/// runtime judges which freezes cover a run, and hands the one that holds
/// it to [`step_held`]. It is checked where a step's call would start —
/// every step boundary, and every retry — never mid-step. A rollback and a
/// verification probe are not held: one undoes, the other only reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub freeze: String,
    pub reason: String,
    /// Who issued the freeze.
    pub by: String,
    pub on_runs: OnRuns,
}

impl Hold {
    pub fn of(freeze: &Freeze) -> Hold {
        Hold {
            freeze: freeze.id.clone(),
            reason: freeze.reason.clone(),
            by: freeze.issued_by.clone(),
            on_runs: freeze.on_runs,
        }
    }
}

/// What a durable timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Nobody approved the run in time: it ends `expired` (or, waiting at
    /// a gated step, `needs_human`).
    ApprovalExpiry,
    /// The open approval stage waited its timeout: it escalates.
    StageTimeout,
    /// A time-bound run's change reached its end (`plan.ends_at`): it is
    /// undone.
    TermEnds,
}

impl TimerKind {
    pub const ALL: [TimerKind; 3] = [
        TimerKind::ApprovalExpiry,
        TimerKind::StageTimeout,
        TimerKind::TermEnds,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::ApprovalExpiry => "approval_expiry",
            TimerKind::StageTimeout => "stage_timeout",
            TimerKind::TermEnds => "term_ends",
        }
    }

    pub fn parse(value: &str) -> Option<TimerKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}

/// A durable timer: feed [`Input::TimerFired`] at `due`, even after a
/// restart, exactly once. It is armed for the state the run enters with the
/// transition that asks for it, and disarmed when the run leaves that state
/// (an approval disarms the approval's expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub kind: TimerKind,
    pub due: Timestamp,
}

/// A transition asks for at most one effect: a run does one thing at a
/// time, and the runtime feeds the effect's outcome back as the next input.
/// Timers are not effects: the store keeps them, and they fire later.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub run: Run,
    pub effect: Option<Effect>,
    pub records: Vec<Record>,
    pub timers: Vec<Timer>,
}

/// The state a new run of `plan` starts in, given the gate's decision at
/// `now` and,
/// when it requires approval, its chain with the approvers resolved (empty:
/// one stage of `decision.approvals_required` people with the approver
/// role). Also the timers it starts with and the records of the approval it
/// asks for; the caller records the run's birth.
pub fn start(decision: &Decision, plan: &Plan, chain: Vec<Stage>, now: Timestamp) -> Transition {
    let (state, reason) = match decision.kind {
        DecisionKind::Allow => (RunState::Approved, None),
        DecisionKind::RequireApproval => (RunState::AwaitingApproval, None),
        DecisionKind::Deny => (RunState::Denied, Some(decision.reasons.join("; "))),
    };
    let mut machine = Machine {
        run: Run {
            state,
            progress: Progress {
                approval_expires_ms: decision.expires_after_ms,
                rollout: plan.rollout.as_ref().map(RolloutProgress::new),
                ..Progress::default()
            },
            reason,
        },
        plan,
        now,
        unit_random: 0.0,
        hold: None,
        effect: None,
        records: Vec::new(),
        timers: Vec::new(),
    };
    if state == RunState::AwaitingApproval {
        let mut chain = chain;
        if chain.is_empty() {
            chain.push(Stage::any_approver(decision.approvals_required));
        }
        // However the chain is drawn, it needs as many distinct people as
        // the decision asks for (two for an irreversible action).
        let drawn: u32 = chain.iter().map(|stage| stage.required).sum();
        if drawn < decision.approvals_required {
            let mut more = Stage::any_approver(decision.approvals_required - drawn);
            more.name = "additional approvers".to_owned();
            chain.push(more);
        }
        machine.request_approval(chain, None);
    }
    Transition {
        run: machine.run,
        effect: None,
        records: machine.records,
        timers: machine.timers,
    }
}

/// A run of `plan` in shadow mode, decided as `decision`: it is born
/// finished, `shadowed`, and nothing is ever called. Its one record says
/// what it would have done — run, ask for approval, or refuse — and every
/// request it would have sent, rendered exactly as a live run would send
/// them. The caller records the run's birth, as for [`start`].
pub fn shadow(decision: &Decision, plan: &Plan) -> Transition {
    let would = shadow_would(decision.kind);
    let call = |step: &str, call: &PlannedCall| json!({"step": step, "action": call.action, "request": call.request});
    let mut requests: Vec<Value> = Vec::new();
    if let Some(precheck) = &plan.precheck {
        requests.push(call("precheck", &precheck.probe));
    }
    match &plan.rollout {
        None => {
            requests.extend(plan.steps.iter().map(|step| call(&step.id, &step.call)));
            if let Some(verify) = &plan.verify {
                requests.push(call("verify", &verify.probe));
            }
        }
        // Every target's own requests, in the order the rollout would
        // send them.
        Some(rollout) => {
            for target in &rollout.targets {
                let on = |step: &str| format!("{step} on {}", target.target);
                requests.extend(
                    target
                        .steps
                        .iter()
                        .map(|step| call(&on(&step.id), &step.call)),
                );
                if let Some(verify) = &target.verify {
                    requests.push(call(&on("verify"), &verify.probe));
                }
            }
        }
    }
    let record = Record {
        kind: RecordKind::RunShadowed,
        detail: json!({
            "would": would, "reasons": decision.reasons,
            "requests": requests, "plan_hash": plan.plan_hash,
        }),
    };
    Transition {
        run: Run {
            state: RunState::Shadowed,
            progress: Progress::default(),
            reason: Some(format!(
                "shadow mode: opsgate would {would}; nothing was executed"
            )),
        },
        effect: None,
        records: vec![record],
        timers: Vec::new(),
    }
}

/// What a run decided `kind` would have done, in a shadowed run's words:
/// `run`, `ask for approval` or `refuse`.
pub fn shadow_would(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Allow => "run",
        DecisionKind::RequireApproval => "ask for approval",
        DecisionKind::Deny => "refuse",
    }
}

/// `now` plus `ms`, saturating: durations come from runbooks and peers, and
/// no value of theirs may overflow the clock.
fn saturating_after(now: Timestamp, ms: u64) -> Timestamp {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    now.saturating_add(SignedDuration::from_millis(ms))
        .unwrap_or(Timestamp::MAX)
}

/// Applies `input` to `run`. `unit_random` is a number in `[0, 1)` for the
/// retry jitter.
pub fn step(
    run: &Run,
    plan: &Plan,
    input: Input,
    now: Timestamp,
    unit_random: f64,
) -> Result<Transition> {
    step_held(run, plan, input, now, unit_random, None)
}

/// [`step`] while `hold`, a freeze, covers the run: a step that would
/// start instead pauses the run before it (`paused`), or cancels it and
/// rolls back what it did, as the freeze asks.
pub fn step_held(
    run: &Run,
    plan: &Plan,
    input: Input,
    now: Timestamp,
    unit_random: f64,
    hold: Option<&Hold>,
) -> Result<Transition> {
    let mut machine = Machine {
        run: run.clone(),
        plan,
        now,
        unit_random,
        hold,
        effect: None,
        records: Vec::new(),
        timers: Vec::new(),
    };
    machine.apply(input)?;
    Ok(Transition {
        run: machine.run,
        effect: machine.effect,
        records: machine.records,
        timers: machine.timers,
    })
}

struct Machine<'a> {
    run: Run,
    plan: &'a Plan,
    now: Timestamp,
    unit_random: f64,
    hold: Option<&'a Hold>,
    effect: Option<Effect>,
    records: Vec<Record>,
    timers: Vec<Timer>,
}

impl<'a> Machine<'a> {
    fn apply(&mut self, input: Input) -> Result<()> {
        let state = self.run.state;
        match (state, input) {
            (RunState::AwaitingApproval, Input::Approve { by, comment }) => {
                self.approve(by, comment)?
            }
            (RunState::AwaitingApproval, Input::Deny { by, comment }) => {
                let progress = &self.run.progress;
                let stage = progress
                    .stages
                    .get(progress.stage)
                    .map(|stage| stage.name.clone());
                let gate = progress.gate;
                self.record(
                    RecordKind::ApprovalDenied,
                    json!({"by": by, "comment": comment, "stage": stage, "plan_hash": self.plan.plan_hash}),
                );
                if self.at_canary_gate() {
                    self.canary_gate_closed(format!("going on past the canary was denied by {by}"));
                    return Ok(());
                }
                match gate {
                    Some(index) if self.plan.steps[index].if_unverified => {
                        let step = &self.plan.steps[index].id;
                        match self.current_target() {
                            Some(target) => {
                                let why = format!(
                                    "the second remedy (step `{step}`) on {target} was denied by {by}; the first did not verify there"
                                );
                                self.second_remedy_refused(why);
                            }
                            None => {
                                self.run.reason = Some(format!(
                                    "the second remedy (step `{step}`) was denied by {by}; the first remedy ran and did not verify"
                                ));
                                self.enter(RunState::NeedsHuman);
                            }
                        }
                    }
                    Some(index) => {
                        self.run.reason = Some(format!(
                            "step `{}` was denied by {by}; the steps before it ran",
                            self.plan.steps[index].id
                        ));
                        self.enter(RunState::NeedsHuman);
                    }
                    None => {
                        self.run.reason = Some(format!("denied by {by}"));
                        self.enter(RunState::Denied);
                    }
                }
            }
            (RunState::AwaitingApproval, Input::TimerFired(TimerKind::ApprovalExpiry)) => {
                self.record(
                    RecordKind::ApprovalExpired,
                    json!({"plan_hash": self.plan.plan_hash}),
                );
                if self.at_canary_gate() {
                    self.canary_gate_closed(
                        "nobody approved going on past the canary in time".to_owned(),
                    );
                    return Ok(());
                }
                match self.run.progress.gate {
                    Some(index)
                        if self.plan.steps[index].if_unverified && self.plan.rollout.is_some() =>
                    {
                        self.second_remedy_refused(format!(
                            "nobody approved the second remedy (step `{}`) in time",
                            self.plan.steps[index].id
                        ));
                    }
                    Some(index) => {
                        self.run.reason = Some(format!(
                            "approval expired: nobody approved step `{}` in time; the steps before it ran",
                            self.plan.steps[index].id
                        ));
                        self.enter(RunState::NeedsHuman);
                    }
                    None => {
                        self.run.reason =
                            Some("approval expired: nobody approved the run in time".to_owned());
                        self.enter(RunState::Expired);
                    }
                }
            }
            (RunState::AwaitingApproval, Input::TimerFired(TimerKind::StageTimeout)) => {
                self.stage_timed_out()?
            }
            (RunState::InEffect, Input::TimerFired(TimerKind::TermEnds)) => {
                self.end_term(None, "its end date was reached".to_owned())
            }
            // Ending a time-bound change early: it is undone now.
            (RunState::InEffect, Input::Cancel { by, reason }) => self.end_term(Some(by), reason),
            // Waiting to go on past the canary, the rollout has acted:
            // cancelled, it is undone as a paused one is.
            // (Or at a target's gated step: the rollout has acted there.)
            (RunState::AwaitingApproval, Input::Cancel { by, reason })
                if self.at_canary_gate()
                    || (self.plan.rollout.is_some() && self.run.progress.gate.is_some()) =>
            {
                self.cancel_rollout(by, reason)
            }
            // Waiting at a gated step, the run has acted: cancelled, it is
            // undone as a paused one is.
            (RunState::AwaitingApproval, Input::Cancel { by, reason })
                if self.run.progress.gate.is_some() && self.plan.rollout.is_none() =>
            {
                self.cancel_and_undo(by, reason)
            }
            (
                RunState::Planned | RunState::AwaitingApproval | RunState::Approved,
                Input::Cancel { by, reason },
            ) => {
                self.record(
                    RecordKind::RunCancelled,
                    json!({"by": by, "reason": reason}),
                );
                self.run.reason = Some(reason);
                self.enter(RunState::Cancelled);
            }
            (RunState::Approved, Input::Begin | Input::Recover) => self.begin(),
            // Past an approved gate, the gated step's first attempt is due
            // (or, past the canary, the next batch).
            (RunState::Running, Input::Begin)
                if self.run.progress.gate.is_some() || self.batch_waits_to_open() =>
            {
                self.wake()?
            }
            // At the end of a term, or once a paused run is cancelled, the
            // first rollback's attempt is due.
            (RunState::RollingBack, Input::Begin)
                if self.run.progress.term_over || self.run.progress.cancelled =>
            {
                self.wake()?
            }
            (RunState::Paused, Input::Resume { by }) => self.resume(by)?,
            (RunState::Paused, Input::Cancel { by, reason }) if self.plan.rollout.is_some() => {
                self.cancel_rollout(by, reason)
            }
            (RunState::Paused, Input::Cancel { by, reason }) => self.cancel_and_undo(by, reason),
            (RunState::Approved, Input::DecisionChanged { reasons }) => {
                self.record(
                    RecordKind::DecisionChanged,
                    json!({"reasons": reasons, "plan_hash": self.plan.plan_hash}),
                );
                self.run.reason = Some(format!(
                    "not executed: the decision changed before the run started ({})",
                    reasons.join("; ")
                ));
                self.enter(RunState::Denied);
            }
            (
                RunState::Running | RunState::Verifying | RunState::RollingBack,
                Input::CallFinished(outcome),
            ) => self.call_finished(outcome)?,
            (RunState::Running | RunState::Verifying | RunState::RollingBack, Input::Wake) => {
                self.wake()?
            }
            (RunState::Running | RunState::Verifying | RunState::RollingBack, Input::Recover) => {
                self.recover()?
            }
            (state, input) => {
                return Err(Error::InvalidInput {
                    state,
                    input: input.name(),
                });
            }
        }
        Ok(())
    }

    /// The steps being run: the plan's, or in a rollout the current
    /// target's own.
    fn steps(&self) -> &'a [PlannedStep] {
        let plan: &'a Plan = self.plan;
        match (&plan.rollout, &self.run.progress.rollout) {
            (Some(rollout), Some(progress)) => &rollout.targets[progress.target].steps,
            _ => &plan.steps,
        }
    }

    /// The verification of the steps being run, as [`Machine::steps`].
    fn verification(&self) -> Option<&'a Verification> {
        let plan: &'a Plan = self.plan;
        match (&plan.rollout, &self.run.progress.rollout) {
            (Some(rollout), Some(progress)) => rollout.targets[progress.target].verify.as_ref(),
            _ => plan.verify.as_ref(),
        }
    }

    /// True while a rollout waits for the approval to go on past its
    /// canary batch.
    fn at_canary_gate(&self) -> bool {
        self.run
            .progress
            .rollout
            .as_ref()
            .is_some_and(|rollout| rollout.canary_gate)
    }

    fn after(&self, ms: u64) -> Timestamp {
        saturating_after(self.now, ms)
    }

    fn ask(&mut self, effect: Effect) {
        debug_assert!(
            self.effect.is_none(),
            "a second effect in one transition: {effect:?} after {:?}",
            self.effect
        );
        self.effect = Some(effect);
    }

    fn record(&mut self, kind: RecordKind, detail: Value) {
        self.records.push(Record { kind, detail });
    }

    fn enter(&mut self, state: RunState) {
        let from = self.run.state;
        self.run.state = state;
        let mut detail = json!({"from": from.as_str(), "to": state.as_str()});
        if state.is_terminal() {
            self.run.progress.current = None;
            if let Some(reason) = &self.run.reason {
                detail["reason"] = json!(reason);
            }
        }
        self.record(RecordKind::RunState, detail);
    }

    fn begin(&mut self) {
        if let Some(until) = self.plan.ends_at
            && until <= self.now
        {
            self.run.reason = Some(format!(
                "not executed: its end date {until} passed before it could start"
            ));
            self.enter(RunState::Denied);
            return;
        }
        self.enter(RunState::Running);
        match self.plan.precheck {
            // Is the problem still there? Read before anything is changed.
            Some(_) => self.send(StepPhase::Precheck, 0, 1),
            None => self.start_step(0),
        }
    }

    /// The change is made (and verified). A time-bound plan's change now
    /// holds until its end, when a durable timer undoes it.
    fn succeed(&mut self) {
        let Some(until) = self.plan.ends_at else {
            self.enter(RunState::Succeeded);
            return;
        };
        self.run.progress.current = None;
        self.enter(RunState::InEffect);
        self.record(RecordKind::TimeBoundScheduled, json!({"until": until}));
        self.timers.push(Timer {
            kind: TimerKind::TermEnds,
            due: until,
        });
    }

    /// A time-bound change's term is over (at its end date, or ended early
    /// by a person): the completed steps are undone, newest first. The
    /// first rollback is due at once; `Begin` sends it.
    fn end_term(&mut self, by: Option<String>, reason: String) {
        self.record(
            RecordKind::TimeBoundEnded,
            json!({"until": self.plan.ends_at, "by": by, "reason": reason}),
        );
        self.run.progress.term_over = true;
        self.run.progress.rollback_pending = self.compensable();
        self.enter(RunState::RollingBack);
        self.first_rollback_due_or_end(RunState::Succeeded);
    }

    /// Starts step `index`, or verification when every step is done. A
    /// gated step waits for its own approval first.
    fn start_step(&mut self, index: usize) {
        if index == 0 && self.batch_waits_to_open() {
            self.open_batch();
            return;
        }
        let Some(step) = self
            .steps()
            .get(index)
            .filter(|_| index < self.remedy_end())
        else {
            self.start_verification();
            return;
        };
        if step.requires_approval && self.run.progress.gate != Some(index) {
            self.run.progress.gate = Some(index);
            self.run.progress.current = None;
            let mut stage = Stage::any_approver(1);
            stage.name = format!("step {}", step.id);
            self.enter(RunState::AwaitingApproval);
            self.request_approval(vec![stage], Some(index));
            return;
        }
        self.send(StepPhase::Step, index, 1);
    }

    /// Opens `chain` (its first stage) and arms the approval's expiry.
    /// `gate` is the step it is for, when the run waits mid-way.
    fn request_approval(&mut self, chain: Vec<Stage>, gate: Option<usize>) {
        let expires_at = self
            .run
            .progress
            .approval_expires_ms
            .map(|ms| self.after(ms));
        self.run.progress.stages = chain;
        self.run.progress.stage = 0;
        let stages: Vec<Value> = self
            .run
            .progress
            .stages
            .iter()
            .map(|stage| {
                json!({
                    "name": stage.name, "approvers": stage.eligible,
                    "required": stage.required, "timeout_ms": stage.timeout_ms,
                })
            })
            .collect();
        let mut detail = json!({
            "stages": stages, "expires_at": expires_at,
            "step": gate.map(|index| &self.plan.steps[index].id),
            "plan_hash": self.plan.plan_hash,
        });
        // A rollout's gate says which target it holds, or that it is the
        // one past the canary; other runs' records are as they were.
        if let Some(target) = gate.and(self.current_target()) {
            detail["target"] = json!(target);
        }
        if self.at_canary_gate() {
            detail["rollout"] = json!("past the canary");
        }
        self.record(RecordKind::ApprovalRequested, detail);
        for stage in &self.run.progress.stages {
            for stand_in in &stage.stand_ins {
                self.records.push(Record {
                    kind: RecordKind::ApprovalEscalated,
                    detail: json!({
                        "stage": stage.name, "from": stand_in.absent,
                        "to": [stand_in.stand_in], "reason": stand_in.why,
                    }),
                });
            }
        }
        if let Some(due) = expires_at {
            self.timers.push(Timer {
                kind: TimerKind::ApprovalExpiry,
                due,
            });
        }
        self.open_stage();
    }

    /// Arms the open stage's timeout, if it has one.
    fn open_stage(&mut self) {
        let now = self.now;
        let progress = &mut self.run.progress;
        let Some(stage) = progress.stages.get_mut(progress.stage) else {
            return;
        };
        if let Some(timeout_ms) = stage.timeout_ms {
            let due = saturating_after(now, timeout_ms);
            stage.deadline = Some(due);
            self.timers.push(Timer {
                kind: TimerKind::StageTimeout,
                due,
            });
        }
    }

    fn approve(&mut self, by: String, comment: Option<String>) -> Result<()> {
        let open = self.run.progress.stage;
        if let Some(refusal) = approval::approval_refusal(&self.run.progress.stages, open, &by) {
            return Err(Error::ApprovalRefused { reason: refusal });
        }
        let stage = &mut self.run.progress.stages[open];
        stage.approved_by.push(by.clone());
        let detail = json!({
            "by": by, "comment": comment, "plan_hash": self.plan.plan_hash,
            "stage": stage.name, "approvals": stage.approved_by.len(), "needed": stage.required,
        });
        let passed = stage.is_passed();
        let name = stage.name.clone();
        self.record(RecordKind::ApprovalGranted, detail);
        if !passed {
            return Ok(());
        }
        self.run.progress.stages[open].deadline = None;
        if open + 1 < self.run.progress.stages.len() {
            self.record(RecordKind::ApprovalStagePassed, json!({"stage": name}));
            self.run.progress.stage = open + 1;
            self.open_stage();
            return Ok(());
        }
        if self.at_canary_gate() {
            // The next batch is due now; `Begin` opens it.
            if let Some(rollout) = self.run.progress.rollout.as_mut() {
                rollout.canary_gate = false;
            }
            self.enter(RunState::Running);
            self.run.progress.current = Some(Current {
                phase: StepPhase::Step,
                step_index: 0,
                attempt: 0,
                status: WaitOrFlight::WaitingUntil(self.now),
            });
            self.ask(Effect::Begin);
            return Ok(());
        }
        match self.run.progress.gate {
            // The gated step's first attempt is due now (attempt 0 is the
            // wait before it); `Begin` sends it.
            Some(index) => {
                self.enter(RunState::Running);
                self.run.progress.current = Some(Current {
                    phase: StepPhase::Step,
                    step_index: index,
                    attempt: 0,
                    status: WaitOrFlight::WaitingUntil(self.now),
                });
            }
            None => self.enter(RunState::Approved),
        }
        self.ask(Effect::Begin);
        Ok(())
    }

    /// The open stage waited its timeout: it takes in its next escalation
    /// level and waits again. A timer left from a stage that has passed
    /// since (or escalated early) finds no deadline due and is refused, so
    /// the store disarms it.
    fn stage_timed_out(&mut self) -> Result<()> {
        let now = self.now;
        let progress = &mut self.run.progress;
        let stage = progress
            .stages
            .get_mut(progress.stage)
            .filter(|stage| stage.deadline.is_some_and(|deadline| deadline <= now))
            .ok_or(Error::InvalidInput {
                state: RunState::AwaitingApproval,
                input: "a stage timeout that is not due",
            })?;
        stage.deadline = None;
        let name = stage.name.clone();
        match approval::escalate(stage) {
            Some(level) => {
                self.record(
                    RecordKind::ApprovalEscalated,
                    json!({
                        "stage": name, "to": level.people, "as": level.to,
                        "reason": "the stage timed out",
                    }),
                );
                self.open_stage();
            }
            None => self.record(
                RecordKind::ApprovalStageTimedOut,
                json!({"stage": name, "reason": "no one is left to escalate to; the run waits until its approval expires"}),
            ),
        }
        Ok(())
    }

    /// Where the steps of the remedy being tried end: the first remedy's
    /// at the first `if_unverified` step, the second's at the last step.
    fn remedy_end(&self) -> usize {
        match self.second_remedy_start() {
            Some(first) if !self.run.progress.second_remedy => first,
            _ => self.steps().len(),
        }
    }

    /// The first step of the second remedy, when the plan has one.
    fn second_remedy_start(&self) -> Option<usize> {
        self.steps().iter().position(|step| step.if_unverified)
    }

    /// The first remedy did not verify (`why`): the second one starts with
    /// step `first` — behind its own approval when the step is gated, as
    /// the runbook draws it by default — and is verified by the same probe.
    fn escalate_remedy(&mut self, first: usize, why: String) {
        self.run.progress.second_remedy = true;
        self.run.progress.current = None;
        self.run.progress.verify_deadline = None;
        let steps: Vec<&str> = self.steps()[first..]
            .iter()
            .map(|step| step.id.as_str())
            .collect();
        let mut detail = json!({"reason": why, "steps": steps});
        if let Some(target) = self.current_target() {
            detail["target"] = json!(target);
        }
        self.record(RecordKind::RemedyEscalated, detail);
        self.enter(RunState::Running);
        self.start_step(first);
    }

    /// The second remedy failed or did not verify too (`why`): the
    /// runbook's on-call group is alerted. The record is what the ticket
    /// and the chat are told; the ticket goes to the group as a failed
    /// run's does.
    fn alert_on_call(&mut self, why: &str) {
        let mut detail = json!({"group": self.plan.on_call, "reason": why});
        if let Some(target) = self.current_target() {
            detail["target"] = json!(target);
        }
        self.record(RecordKind::OnCallAlerted, detail);
    }

    fn start_verification(&mut self) {
        let Some(verify) = self.verification() else {
            if self.plan.rollout.is_some() {
                self.target_finished(TargetState::Done, None);
            } else {
                self.succeed();
            }
            return;
        };
        let deadline = self.after(verify.within_ms);
        self.run.progress.verify_deadline = Some(deadline);
        self.enter(RunState::Verifying);
        self.send(StepPhase::Verify, self.steps().len(), 1);
    }

    /// Marks a call in flight and asks the runtime to make it — unless a
    /// freeze holds the run and the call is a step's.
    fn send(&mut self, phase: StepPhase, step_index: usize, attempt: u32) {
        if phase == StepPhase::Step
            && let Some(hold) = self.hold
        {
            self.held(hold, step_index, attempt);
            return;
        }
        if phase == StepPhase::Step && self.run.progress.gate == Some(step_index) {
            self.run.progress.gate = None;
        }
        let (step_id, call) = self.call_for(phase, step_index);
        self.run.progress.current = Some(Current {
            phase,
            step_index,
            attempt,
            status: WaitOrFlight::InFlight,
        });
        let mut detail = json!({"phase": phase.as_str(), "step": step_id, "attempt": attempt, "action": call.action});
        if let Some(target) = self.current_target() {
            detail["target"] = json!(target);
        }
        self.record(RecordKind::AttemptStarted, detail);
        self.ask(Effect::Call {
            phase,
            step_id,
            attempt,
            call,
        });
    }

    fn call_for(&self, phase: StepPhase, step_index: usize) -> (String, PlannedCall) {
        match phase {
            StepPhase::Step => {
                let step = &self.steps()[step_index];
                (step.id.clone(), step.call.clone())
            }
            StepPhase::Rollback => {
                let step = &self.steps()[step_index];
                let call = step
                    .rollback
                    .clone()
                    .expect("only steps with a rollback are queued for rollback");
                (step.id.clone(), call)
            }
            StepPhase::Verify => {
                let verify = self
                    .verification()
                    .expect("verification only starts when the plan has one");
                ("verify".to_owned(), verify.probe.clone())
            }
            StepPhase::Precheck => {
                let precheck = self
                    .plan
                    .precheck
                    .as_ref()
                    .expect("a precheck is only made when the plan has one");
                ("precheck".to_owned(), precheck.probe.clone())
            }
        }
    }

    fn in_flight(&self) -> Result<Current> {
        match &self.run.progress.current {
            Some(current) if current.status == WaitOrFlight::InFlight => Ok(current.clone()),
            _ => Err(Error::InvalidInput {
                state: self.run.state,
                input: "a call result",
            }),
        }
    }

    fn call_finished(&mut self, outcome: AttemptOutcome) -> Result<()> {
        let current = self.in_flight()?;
        let (step_id, _) = self.call_for(current.phase, current.step_index);
        let mut detail = json!({
            "phase": current.phase.as_str(),
            "step": step_id,
            "attempt": current.attempt,
            "outcome": serde_json::to_value(&outcome).expect("outcomes serialise"),
        });
        if let Some(target) = self.current_target() {
            detail["target"] = json!(target);
        }
        self.record(RecordKind::AttemptFinished, detail);
        match current.phase {
            StepPhase::Step => self.step_finished(current, step_id, outcome),
            StepPhase::Precheck => self.precheck_finished(outcome),
            StepPhase::Verify => self.probe_finished(current, outcome),
            StepPhase::Rollback => self.rollback_finished(current, step_id, outcome),
        }
        Ok(())
    }

    fn step_finished(&mut self, current: Current, step_id: String, outcome: AttemptOutcome) {
        match outcome {
            AttemptOutcome::Succeeded { .. } => {
                self.run.progress.completed.push(current.step_index);
                self.start_step(current.step_index + 1);
            }
            // Sent, and no answer said what the peer did: a step that is
            // not idempotent is not sent again, and a person finds out.
            AttemptOutcome::Failed { cause, error, .. }
                if cause.may_have_acted() && !self.steps()[current.step_index].idempotent =>
            {
                self.step_outcome_unknown(format!(
                    "step `{step_id}` outcome unknown: {error}; the request was sent, and the step \
                     is not idempotent, so it is not sent again"
                ));
            }
            AttemptOutcome::Failed {
                cause,
                error,
                retry_after_ms,
                ..
            } => {
                let retry = &self.steps()[current.step_index].retry;
                if current.attempt < retry.attempts && cause.is_covered_by(&retry.retry_on) {
                    let delay =
                        retry.delay_ms(current.attempt + 1, self.unit_random, retry_after_ms);
                    self.wait(current, delay);
                } else {
                    let tries = if current.attempt == 1 {
                        "1 attempt".to_owned()
                    } else {
                        format!("{} attempts", current.attempt)
                    };
                    let why = format!("step `{step_id}` failed after {tries}: {error}");
                    if self.plan.rollout.is_some() {
                        self.target_finished(TargetState::Failed, Some(why));
                    } else {
                        self.fail(why);
                    }
                }
            }
            AttemptOutcome::Unknown { reason } => {
                self.step_outcome_unknown(format!("step `{step_id}` outcome unknown: {reason}"));
            }
        }
    }

    /// A step whose outcome nobody can tell: nothing more is done and a
    /// person looks (in a rollout, the rollout halts at this target).
    fn step_outcome_unknown(&mut self, why: String) {
        if self.plan.rollout.is_some() {
            self.rollout_outcome_unknown(why);
        } else {
            self.run.reason = Some(why);
            self.enter(RunState::NeedsHuman);
        }
    }

    /// The precheck's answer: the problem is still there (the first step
    /// starts), gone (the run is cancelled without acting), or cannot be
    /// told (a person looks: nothing was changed, and nothing is guessed).
    fn precheck_finished(&mut self, outcome: AttemptOutcome) {
        let expect = self
            .plan
            .precheck
            .as_ref()
            .expect("a precheck is only made when the plan has one")
            .expect
            .clone();
        let unclear = match outcome {
            AttemptOutcome::Succeeded { response } => {
                match runbook::expectation_holds(&expect, &response) {
                    Ok(true) => {
                        self.record(RecordKind::PrecheckConfirmed, json!({"expect": expect}));
                        self.run.progress.current = None;
                        self.start_step(0);
                        return;
                    }
                    Ok(false) => {
                        self.record(RecordKind::PrecheckCleared, json!({"expect": expect}));
                        self.run.reason = Some(format!(
                            "not executed: the problem is gone (the precheck `{expect}` no longer holds)"
                        ));
                        self.enter(RunState::Cancelled);
                        return;
                    }
                    Err(error) => error.to_string(),
                }
            }
            AttemptOutcome::Failed { error, .. } => format!("the probe failed: {error}"),
            AttemptOutcome::Unknown { reason } => {
                format!("the probe's outcome is unknown: {reason}")
            }
        };
        self.run.reason = Some(format!(
            "not executed: the precheck could not tell whether the problem is still there ({unclear})"
        ));
        self.enter(RunState::NeedsHuman);
    }

    fn probe_finished(&mut self, current: Current, outcome: AttemptOutcome) {
        let verify = self
            .verification()
            .expect("verifying implies a verification");
        let why_not = match outcome {
            AttemptOutcome::Succeeded { response } => {
                match runbook::expectation_holds(&verify.expect, &response) {
                    Ok(true) => {
                        self.record(
                            RecordKind::VerifySatisfied,
                            json!({"expect": verify.expect, "attempt": current.attempt}),
                        );
                        if self.plan.rollout.is_some() {
                            // The target is done; the rollout goes on.
                            self.enter(RunState::Running);
                            self.target_finished(TargetState::Done, None);
                        } else {
                            self.succeed();
                        }
                        return;
                    }
                    Ok(false) => format!("`{}` was false", verify.expect),
                    Err(error) => error.to_string(),
                }
            }
            AttemptOutcome::Failed { error, .. } => format!("probe failed: {error}"),
            AttemptOutcome::Unknown { reason } => format!("probe outcome unknown: {reason}"),
        };
        let deadline = self.run.progress.verify_deadline.unwrap_or(self.now);
        let next = self.after(verify.every_ms);
        if next <= deadline {
            self.wait(current, verify.every_ms);
        } else {
            self.record(
                RecordKind::VerifyFailed,
                json!({"expect": verify.expect, "attempts": current.attempt, "last": why_not}),
            );
            let within = SignedDuration::from_millis(verify.within_ms as i64);
            let why = format!("verification failed within {within:#}: {why_not}");
            if !self.run.progress.second_remedy
                && let Some(first) = self.second_remedy_start()
            {
                self.escalate_remedy(first, why);
                return;
            }
            if self.plan.rollout.is_some() {
                self.enter(RunState::Running);
                self.target_finished(TargetState::VerifyFailed, Some(why));
                return;
            }
            self.run.progress.verification_failed = true;
            self.fail(why);
        }
    }

    fn rollback_finished(&mut self, current: Current, step_id: String, outcome: AttemptOutcome) {
        match outcome {
            AttemptOutcome::Succeeded { .. } => self.next_rollback(),
            AttemptOutcome::Failed {
                cause,
                error,
                retry_after_ms,
                ..
            } => {
                let retry = &self.steps()[current.step_index].retry;
                if current.attempt < retry.attempts && cause.is_covered_by(&retry.retry_on) {
                    let delay =
                        retry.delay_ms(current.attempt + 1, self.unit_random, retry_after_ms);
                    self.wait(current, delay);
                } else {
                    let context = self.undoing_term();
                    self.append_reason(format!("{context}rollback of `{step_id}` failed: {error}"));
                    self.enter(RunState::NeedsHuman);
                }
            }
            AttemptOutcome::Unknown { reason } => {
                let context = self.undoing_term();
                self.append_reason(format!(
                    "{context}rollback of `{step_id}` outcome unknown: {reason}"
                ));
                self.enter(RunState::NeedsHuman);
            }
        }
    }

    /// How a failed rollback's reason starts when it was undoing a
    /// time-bound change that had done its job.
    fn undoing_term(&self) -> &'static str {
        if self.run.progress.term_over {
            "the time-bound change could not be undone: "
        } else {
            ""
        }
    }

    fn append_reason(&mut self, more: String) {
        self.run.reason = Some(match self.run.reason.take() {
            Some(reason) => format!("{reason}; {more}"),
            None => more,
        });
    }

    fn wait(&mut self, mut current: Current, delay_ms: u64) {
        let until = self.after(delay_ms);
        self.record(
            RecordKind::AttemptRetryScheduled,
            json!({"phase": current.phase.as_str(), "next_attempt": current.attempt + 1, "delay_ms": delay_ms}),
        );
        current.status = WaitOrFlight::WaitingUntil(until);
        self.run.progress.current = Some(current);
        self.ask(Effect::WakeAt(until));
    }

    /// The run failed: compensate the completed steps that can be, newest first.
    fn fail(&mut self, reason: String) {
        let reason = if self.run.progress.second_remedy {
            let reason = format!("the second remedy did not fix it: {reason}");
            self.alert_on_call(&reason);
            reason
        } else {
            reason
        };
        self.run.reason = Some(reason);
        self.enter(RunState::Failed);
        self.run.progress.rollback_pending = self.compensable();
        self.enter(RunState::RollingBack);
        self.next_rollback();
    }

    /// The completed steps that have a rollback, in the order they ran.
    fn compensable(&self) -> Vec<usize> {
        self.run
            .progress
            .completed
            .iter()
            .copied()
            .filter(|&index| self.steps()[index].rollback.is_some())
            .collect()
    }

    fn next_rollback(&mut self) {
        match self.pop_rollback() {
            Some(index) => self.send(StepPhase::Rollback, index, 1),
            None => {
                if let Some(state) = self.stopped_rollout_ends() {
                    self.enter(state);
                } else {
                    self.after_rollbacks();
                }
            }
        }
    }

    /// How a run that is no rollout ends once its rollbacks ran.
    fn after_rollbacks(&mut self) {
        match () {
            () if self.run.progress.verification_failed => self.enter(RunState::NeedsHuman),
            () if self.run.progress.term_over => self.enter(RunState::Succeeded),
            () if self.run.progress.cancelled => self.enter(RunState::Cancelled),
            // The first remedy did not fix it, and the second failed: a
            // person takes over after its rollbacks.
            () if self.run.progress.second_remedy => self.enter(RunState::NeedsHuman),
            () => self.enter(RunState::RolledBack),
        }
    }

    fn wake(&mut self) -> Result<()> {
        match self.run.progress.current.clone() {
            Some(Current {
                phase,
                step_index,
                attempt,
                status: WaitOrFlight::WaitingUntil(until),
            }) => {
                if self.now < until {
                    // Woken early (a restart, a clock step): keep waiting.
                    self.ask(Effect::WakeAt(until));
                } else if phase == StepPhase::Step && self.batch_waits_to_open() {
                    // A pause between batches is over, or the canary's
                    // approval came: the next batch opens.
                    self.run.progress.current = None;
                    self.open_batch();
                } else {
                    self.send(phase, step_index, attempt + 1);
                }
                Ok(())
            }
            _ => Err(Error::InvalidInput {
                state: self.run.state,
                input: "a timer",
            }),
        }
    }

    /// A freeze holds the run where step `step_index`'s attempt `attempt`
    /// would start: it pauses there (the attempt is due when it resumes),
    /// or is cancelled and rolls back.
    fn held(&mut self, hold: &Hold, step_index: usize, attempt: u32) {
        let step = self.steps()[step_index].id.clone();
        match hold.on_runs {
            OnRuns::Pause => {
                let mut detail = json!({
                    "freeze": hold.freeze, "by": hold.by, "reason": hold.reason,
                    "step": step, "attempt": attempt,
                });
                if let Some(target) = self.current_target() {
                    detail["target"] = json!(target);
                }
                self.record(RecordKind::RunPaused, detail);
                self.run.progress.current = Some(Current {
                    phase: StepPhase::Step,
                    step_index,
                    attempt: attempt.saturating_sub(1),
                    status: WaitOrFlight::WaitingUntil(self.now),
                });
                self.enter(RunState::Paused);
            }
            OnRuns::Cancel if self.plan.rollout.is_some() => self.cancel_rollout(
                hold.by.clone(),
                format!(
                    "freeze {} stopped it before step `{step}`: {}",
                    hold.freeze, hold.reason
                ),
            ),
            OnRuns::Cancel => {
                self.cancel_part_way(
                    hold.by.clone(),
                    format!(
                        "freeze {} stopped it before step `{step}`: {}",
                        hold.freeze, hold.reason
                    ),
                );
                self.next_rollback();
            }
        }
    }

    /// Cancels a run that has started: the steps it completed are queued
    /// for rollback, newest last, and it enters `rolling_back`.
    fn cancel_part_way(&mut self, by: String, reason: String) {
        self.record(
            RecordKind::RunCancelled,
            json!({"by": by, "reason": reason}),
        );
        self.run.reason = Some(reason);
        self.run.progress.cancelled = true;
        self.run.progress.current = None;
        self.run.progress.rollback_pending = self.compensable();
        self.enter(RunState::RollingBack);
    }

    /// A person cancels a run that acted and waits (paused, or at a gated
    /// step): its first rollback, if it has one, is due now and `Begin`
    /// sends it; with nothing to undo it ends `cancelled` at once.
    fn cancel_and_undo(&mut self, by: String, reason: String) {
        self.cancel_part_way(by, reason);
        self.first_rollback_due_or_end(RunState::Cancelled);
    }

    /// The newest queued rollback (in a rollout, of the target being
    /// undone) is due now (`Begin` sends it); with nothing queued, the run
    /// ends `otherwise` at once.
    pub(super) fn first_rollback_due_or_end(&mut self, otherwise: RunState) {
        match self.pop_rollback() {
            Some(index) => {
                self.run.progress.current = Some(Current {
                    phase: StepPhase::Rollback,
                    step_index: index,
                    attempt: 0,
                    status: WaitOrFlight::WaitingUntil(self.now),
                });
                self.ask(Effect::Begin);
            }
            None => self.enter(otherwise),
        }
    }

    /// No freeze holds the paused run any more: the step it paused before
    /// is due now.
    fn resume(&mut self, by: String) -> Result<()> {
        let step = match &self.run.progress.current {
            Some(current) => self.steps()[current.step_index].id.clone(),
            None => {
                return Err(Error::InvalidInput {
                    state: RunState::Paused,
                    input: "a resumption with no step to resume",
                });
            }
        };
        let mut detail = json!({"by": by, "step": step});
        if let Some(target) = self.current_target() {
            detail["target"] = json!(target);
        }
        self.record(RecordKind::RunResumed, detail);
        self.enter(RunState::Running);
        // Paused before it acted at all: the problem may have gone while
        // the run waited, so it is read again first.
        if self.plan.precheck.is_some() && self.acted_on_nothing() {
            self.send(StepPhase::Precheck, 0, 1);
            return Ok(());
        }
        self.wake()
    }

    /// After a restart: re-issue what is safe to re-issue, hand the rest to a person.
    fn recover(&mut self) -> Result<()> {
        let Some(current) = self.run.progress.current.clone() else {
            return Err(Error::InvalidInput {
                state: self.run.state,
                input: "a recovery",
            });
        };
        match current.status {
            WaitOrFlight::WaitingUntil(until) => {
                self.ask(Effect::WakeAt(until));
                Ok(())
            }
            WaitOrFlight::InFlight => {
                let (step_id, _) = self.call_for(current.phase, current.step_index);
                let repeatable = match current.phase {
                    // A probe only reads.
                    StepPhase::Verify | StepPhase::Precheck => true,
                    StepPhase::Step | StepPhase::Rollback => {
                        self.steps()[current.step_index].idempotent
                    }
                };
                if repeatable {
                    self.record(
                        RecordKind::RunRecovered,
                        json!({"step": step_id, "phase": current.phase.as_str(), "action": "reissue", "attempt": current.attempt + 1}),
                    );
                    self.send(current.phase, current.step_index, current.attempt + 1);
                    Ok(())
                } else {
                    let reason = "opsgate stopped while the call was in flight and the step is not idempotent";
                    self.record(
                        RecordKind::RunRecovered,
                        json!({"step": step_id, "phase": current.phase.as_str(), "action": "needs_human", "reason": reason}),
                    );
                    self.call_finished(AttemptOutcome::Unknown {
                        reason: reason.to_owned(),
                    })
                }
            }
        }
    }
}
