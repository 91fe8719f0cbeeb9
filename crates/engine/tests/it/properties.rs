//! Property tests of the run state machine: generated plans, gate
//! decisions and approval chains, and generated sequences of what can
//! happen to a run — approvals and denials by various people (the
//! requester and an agent among them), cancellations, call results,
//! timers, crashes and restarts, freezes and their lifting, a runbook that
//! changes under an approved run — played the way the runtime plays them.
//! After every transition a list of named invariants is checked, so a
//! failure says which promise broke, with the plan and the story that
//! broke it (shrunk by proptest to a short one).
//!
//! The design choice: the engine is pure, so the test carries a small
//! model of what surrounds it, written from the runtime's driver, timer
//! loop and freeze loop and from the store's commit: the committed run and
//! its revision, durable timers armed for the state they were asked in
//! and disarmed when the run leaves it, the run's audit log, and at most
//! one driver carrying out one effect at a time. A driver whose run was
//! changed under it by someone else is stopped by the store (a revision
//! conflict). A crash drops what the driver held in memory — an effect
//! committed but not carried out, or a call made whose result was never
//! committed — and the restart feeds `Recover` to the run as stored, as
//! `Runtime::recover` does. The invariants are judged on that audit log
//! and on what the world saw, not on the engine's internals, so each says
//! something a reader of the log could verify.
//!
//! Not covered here: rollouts (several targets in batches have their own
//! tests in `rollout.rs`), shadow runs, and the runtime's own rules about
//! who may decide (the requester's and an agent's approvals are refused
//! by the runtime before the engine sees them, and are refused so here).
//! `invariants.rs` walks the machine with arbitrary inputs in any order;
//! this module walks it only as the runtime would, which lets it check
//! promises that hold of that use (a warrant, no step repeated blind).

use std::collections::HashSet;

use domain::{
    AttemptOutcome, Decision, DecisionKind, FailureCause, OnRuns, Plan, RecordKind, RunState,
    StepPhase,
};
use engine::{Effect, Escalation, Hold, Input, Record, Run, Stage, TimerKind, Transition};
use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::json;

use crate::script::{at, check_invariants, epoch, plan};

/// The requester: their event asked for the run, so they may not approve it.
const REQUESTER: &str = "user:rita";
/// An agent may propose, never approve.
const AGENT: &str = "agent:copilot";
/// Who acts on runs; a chain's approvers are drawn from the first five.
const PEOPLE: [&str; 7] = [
    "user:alice",
    "user:bob",
    "user:carol",
    "user:dave",
    "user:erin",
    REQUESTER,
    AGENT,
];
const APPROVERS: usize = 5;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn runs_keep_their_invariants_whatever_happens(
        shape in plan_shape(),
        gate in gate_shape(),
        ops in prop::collection::vec(op(), 1..=40),
    ) {
        play(&shape, &gate, &ops);
    }
}

fn play(shape: &PlanShape, gate: &GateShape, ops: &[Op]) {
    let spec = shape.spec();
    let plan = plan(&spec);
    let (decision, chain) = gate.decision();
    let born = engine::start(&decision, &plan, chain, at(0));
    let mut world = World::born(&plan, spec, &decision, born);
    for op in ops {
        world.story.push(format!("{op:?}"));
        world.play(op);
        let way_forward = a_live_run_has_a_way_forward(&world);
        world.holds("a_live_run_has_a_way_forward", way_forward);
    }
}

// ---------------------------------------------------------------- shapes

/// A step as the plan text of `script::plan` draws it.
#[derive(Debug, Clone)]
struct StepShape {
    rollback: bool,
    idempotent: bool,
    gated: bool,
    /// Attempts, with the runbook format's default retryable failures.
    retries: Option<u32>,
}

impl StepShape {
    fn spec(&self, id: &str) -> String {
        let mut line = id.to_owned();
        for (on, word) in [
            (self.rollback, " rollback"),
            (self.idempotent, " idempotent"),
            (self.gated, " gated"),
        ] {
            if on {
                line.push_str(word);
            }
        }
        if let Some(attempts) = self.retries {
            line.push_str(&format!(" retry={attempts}"));
        }
        line
    }
}

#[derive(Debug, Clone)]
struct PlanShape {
    precheck: bool,
    steps: Vec<StepShape>,
    /// Verification: within and every, in seconds.
    verify: Option<(u64, u64)>,
    /// A second remedy's step, tried when verification fails.
    second_remedy: Option<StepShape>,
    /// A time-bound change's end, in seconds.
    until_s: Option<u64>,
}

impl PlanShape {
    fn spec(&self) -> String {
        let mut lines = Vec::new();
        if self.precheck {
            lines.push("precheck: response.json.ok".to_owned());
        }
        for (n, step) in self.steps.iter().enumerate() {
            lines.push(format!("step {}", step.spec(&format!("s{}", n + 1))));
        }
        if let Some((within, every)) = self.verify {
            lines.push(format!(
                "verify within={within}s every={every}s: response.json.ok"
            ));
            if let Some(step) = &self.second_remedy {
                lines.push(format!("then {}", step.spec("r1")));
                lines.push("on_call group:l2".to_owned());
            }
        }
        if let Some(until) = self.until_s {
            lines.push(format!("until {until}s"));
        }
        lines.join("\n")
    }
}

fn step_shape() -> impl Strategy<Value = StepShape> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.4, 2..=3u32),
    )
        .prop_map(|(rollback, idempotent, gated, retries)| StepShape {
            rollback,
            idempotent,
            gated,
            retries,
        })
}

fn plan_shape() -> impl Strategy<Value = PlanShape> {
    (
        prop::bool::weighted(0.25),
        prop::collection::vec(step_shape(), 1..=4),
        prop::option::weighted(0.5, (5..=30u64, 2..=10u64)),
        prop::option::weighted(0.3, step_shape()),
        prop::option::weighted(0.2, 60..=600u64),
    )
        .prop_map(
            |(precheck, steps, verify, second_remedy, until_s)| PlanShape {
                precheck,
                steps,
                verify,
                second_remedy,
                until_s,
            },
        )
}

/// The gate's decision, and for an approval the chain the runtime resolved.
#[derive(Debug, Clone)]
enum GateShape {
    Allow,
    Deny,
    RequireApproval {
        approvals_required: u32,
        expires_s: Option<u64>,
        chain: Vec<StageShape>,
    },
}

#[derive(Debug, Clone)]
struct StageShape {
    /// Indices into `PEOPLE`; none: anyone with the approver role.
    eligible: Vec<usize>,
    required: u32,
    timeout_s: Option<u64>,
    escalate_to: Option<usize>,
}

impl GateShape {
    fn decision(&self) -> (Decision, Vec<Stage>) {
        let mut decision = Decision {
            kind: DecisionKind::Allow,
            reasons: vec!["policy".to_owned()],
            expires_after_ms: None,
            approvals_required: 1,
            stages: Vec::new(),
            policy_version: None,
        };
        let chain = match self {
            GateShape::Allow => Vec::new(),
            GateShape::Deny => {
                decision.kind = DecisionKind::Deny;
                Vec::new()
            }
            GateShape::RequireApproval {
                approvals_required,
                expires_s,
                chain,
            } => {
                decision.kind = DecisionKind::RequireApproval;
                decision.approvals_required = *approvals_required;
                decision.expires_after_ms = expires_s.map(|s| s * 1000);
                chain.iter().enumerate().map(stage).collect()
            }
        };
        (decision, chain)
    }
}

fn stage((n, shape): (usize, &StageShape)) -> Stage {
    let mut eligible: Vec<String> = Vec::new();
    for &person in &shape.eligible {
        if !eligible.iter().any(|known| known == PEOPLE[person]) {
            eligible.push(PEOPLE[person].to_owned());
        }
    }
    Stage {
        name: format!("stage {}", n + 1),
        eligible,
        required: shape.required,
        approved_by: Vec::new(),
        timeout_ms: shape.timeout_s.map(|s| s * 1000),
        escalations: shape
            .escalate_to
            .map(|person| Escalation {
                to: format!("backup {}", PEOPLE[person]),
                people: vec![PEOPLE[person].to_owned()],
            })
            .into_iter()
            .collect(),
        escalated: 0,
        deadline: None,
        stand_ins: Vec::new(),
    }
}

fn gate_shape() -> impl Strategy<Value = GateShape> {
    let stage = (
        prop::collection::vec(0..APPROVERS, 0..=3),
        1..=2u32,
        prop::option::weighted(0.5, 10..=120u64),
        prop::option::weighted(0.5, 0..APPROVERS),
    )
        .prop_map(|(eligible, required, timeout_s, escalate_to)| StageShape {
            eligible,
            required,
            timeout_s,
            escalate_to,
        });
    prop_oneof![
        3 => Just(GateShape::Allow),
        1 => Just(GateShape::Deny),
        4 => (
            1..=2u32,
            prop::option::weighted(0.5, 60..=900u64),
            prop::collection::vec(stage, 0..=2),
        )
            .prop_map(|(approvals_required, expires_s, chain)| GateShape::RequireApproval {
                approvals_required,
                expires_s,
                chain,
            }),
    ]
}

/// What can happen next, from outside the engine.
#[derive(Debug, Clone)]
enum Op {
    /// Someone (an index into `PEOPLE`) approves, denies or cancels,
    /// through the runtime's decisions.
    Approve(usize),
    /// The first person the open stage still takes approves.
    ApproveAsEligible,
    Deny(usize),
    Cancel(usize),
    /// The driver carries out the effect it holds (a call answers with
    /// this reply), or starts, if it was just spawned.
    Carry(Reply),
    /// The process stops and starts again.
    Crash,
    /// Time passes (ms): due timers fire, the freeze and takeover loops look.
    Wait(u64),
    Freeze(OnRuns),
    Lift,
    /// The runbook changes: planning the run's event again now gives
    /// another plan hash.
    RunbookChanged,
    /// The run's ticket is closed by a person.
    TicketClosed,
    /// Something the runtime's loops do not send at this moment.
    Stray(Stray),
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Succeeded, and a probe finds the service ok.
    Ok,
    /// Succeeded, and a probe finds the service not ok.
    NotOk,
    /// HTTP 503: retryable under the default policy.
    Retryable,
    /// HTTP 404: never retried.
    Fatal,
    Unknown,
}

impl Reply {
    fn outcome(self) -> AttemptOutcome {
        let failed = |status: u16| AttemptOutcome::Failed {
            cause: FailureCause::Status(status),
            error: format!("HTTP {status}"),
            response: Some(json!({"status": status})),
            retry_after_ms: None,
        };
        match self {
            Reply::Ok => AttemptOutcome::Succeeded {
                response: json!({"status": 200, "json": {"ok": true}}),
            },
            Reply::NotOk => AttemptOutcome::Succeeded {
                response: json!({"status": 200, "json": {"ok": false}}),
            },
            Reply::Retryable => failed(503),
            Reply::Fatal => failed(404),
            Reply::Unknown => AttemptOutcome::Unknown {
                reason: "the connection dropped after the request was sent".to_owned(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stray {
    /// A driver spawned again (a repeated announcement): it starts with
    /// `Begin`, or with `Resume` as the freeze loop would.
    Begin,
    Resume,
    /// A call result when no call is in flight: it must be refused.
    CallResult(Reply),
    /// A timer the store never armed for this state.
    Timer(TimerKind),
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        5 => Just(Reply::Ok),
        2 => Just(Reply::NotOk),
        2 => Just(Reply::Retryable),
        2 => Just(Reply::Fatal),
        1 => Just(Reply::Unknown),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let person = 0..PEOPLE.len();
    let stray = prop_oneof![
        Just(Stray::Begin),
        Just(Stray::Resume),
        reply().prop_map(Stray::CallResult),
        prop::sample::select(TimerKind::ALL.to_vec()).prop_map(Stray::Timer),
    ];
    // Weighted so that most runs get far: a denial, a cancellation or a
    // changed runbook ends a run early, so they are rare.
    prop_oneof![
        20 => person.clone().prop_map(Op::Approve),
        30 => Just(Op::ApproveAsEligible),
        3 => person.clone().prop_map(Op::Deny),
        3 => person.prop_map(Op::Cancel),
        150 => reply().prop_map(Op::Carry),
        10 => Just(Op::Crash),
        20 => (0..120_000u64).prop_map(Op::Wait),
        8 => prop_oneof![Just(OnRuns::Pause), Just(OnRuns::Cancel)].prop_map(Op::Freeze),
        15 => Just(Op::Lift),
        2 => Just(Op::RunbookChanged),
        2 => Just(Op::TicketClosed),
        8 => stray.prop_map(Op::Stray),
    ]
}

// ---------------------------------------------------------------- the world

/// Who fed an input: the runtime carries out every effect a driver's
/// transition asks for, but of a person's decision or a timer's firing
/// only `Begin` (it spawns a driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Driver,
    Person,
    Timer,
}

/// Where the decision a driver starts from was made (`runtime::driver`):
/// a run allowed at intake starts at once, without its ticket read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    AtIntakeHere,
    Earlier,
}

#[derive(Debug)]
enum Driver {
    /// Spawned: it will read the run from the store and feed this first.
    Spawned(Input, Decided),
    /// It committed the transition of `revision` and holds its effect.
    Holding { effect: Effect, revision: u64 },
}

/// A durable timer, armed for the state it was asked in.
struct Armed {
    kind: TimerKind,
    due: Timestamp,
    armed_in: RunState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Succeeded,
    Failed,
    Unknown,
}

/// A call the runtime was asked to make (and, for all anyone can tell
/// after a crash, made), and what its result was, if one was committed.
#[derive(Debug)]
struct Call {
    phase: StepPhase,
    /// Into `plan.steps`, for a step or a rollback.
    index: Option<usize>,
    attempt: u64,
    reported: Option<Reported>,
}

struct World<'p> {
    plan: &'p Plan,
    spec: String,
    decision: DecisionKind,
    /// The run as the store holds it.
    run: Run,
    revision: u64,
    now_ms: i64,
    driver: Option<Driver>,
    timers: Vec<Armed>,
    freeze: Option<Hold>,
    /// Whether planning the run's event now gives the run's plan.
    plan_is_current: bool,
    ticket_closed: bool,
    /// The run's audit log.
    log: Vec<Record>,
    /// Whether the plan was still its event's plan when the run began.
    began_on_current_plan: Option<bool>,
    calls: Vec<Call>,
    /// Steps whose success was committed, in order.
    completed: Vec<usize>,
    /// Steps whose rollback's success was committed.
    undone: Vec<usize>,
    story: Vec<String>,
}

impl<'p> World<'p> {
    fn born(plan: &'p Plan, spec: String, decision: &Decision, born: Transition) -> World<'p> {
        check_invariants(plan, &born);
        let state = born.run.state;
        let mut world = World {
            plan,
            spec,
            decision: decision.kind,
            run: born.run,
            revision: 0,
            now_ms: 0,
            driver: None,
            timers: born
                .timers
                .iter()
                .map(|timer| Armed {
                    kind: timer.kind,
                    due: timer.due,
                    armed_in: state,
                })
                .collect(),
            freeze: None,
            plan_is_current: true,
            ticket_closed: false,
            log: born.records,
            began_on_current_plan: None,
            calls: Vec::new(),
            completed: Vec::new(),
            undone: Vec::new(),
            story: vec![format!("born {state}")],
        };
        if state == RunState::Approved {
            world.driver = Some(Driver::Spawned(Input::Begin, Decided::AtIntakeHere));
        }
        let told = the_log_tells_the_state(&world);
        world.holds("the_log_tells_the_state", told);
        world
    }

    fn play(&mut self, op: &Op) {
        match op {
            Op::Approve(person) => {
                let by = PEOPLE[*person];
                // Separation of duties is the runtime's (`Decisions::refusal`):
                // neither reaches the engine.
                if by != REQUESTER && by != AGENT {
                    self.decide(Input::Approve {
                        by: by.to_owned(),
                        comment: None,
                    });
                }
            }
            Op::ApproveAsEligible => {
                let progress = &self.run.progress;
                let eligible = PEOPLE[..APPROVERS].iter().find(|by| {
                    engine::approval_refusal(&progress.stages, progress.stage, by).is_none()
                });
                if let Some(by) = eligible {
                    self.decide(Input::Approve {
                        by: (*by).to_owned(),
                        comment: None,
                    });
                }
            }
            Op::Deny(person) => {
                let by = PEOPLE[*person];
                if by != AGENT {
                    self.decide(Input::Deny {
                        by: by.to_owned(),
                        comment: None,
                    });
                }
            }
            Op::Cancel(person) => self.decide(Input::Cancel {
                by: PEOPLE[*person].to_owned(),
                reason: "no longer needed".to_owned(),
            }),
            Op::Carry(reply) => self.carry(*reply),
            Op::Crash => {
                self.driver = None;
                self.now_ms += 1_000;
                self.loops();
            }
            Op::Wait(ms) => {
                self.now_ms += *ms as i64;
                self.loops();
            }
            Op::Freeze(on_runs) => {
                self.freeze = Some(Hold {
                    freeze: "frz-1".to_owned(),
                    reason: "incident in progress".to_owned(),
                    by: "user:olga".to_owned(),
                    on_runs: *on_runs,
                });
                self.freeze_loop();
            }
            Op::Lift => {
                self.freeze = None;
                self.freeze_loop();
            }
            Op::RunbookChanged => self.plan_is_current = false,
            Op::TicketClosed => self.ticket_closed = true,
            Op::Stray(Stray::Begin) => self.spawn(Input::Begin),
            Op::Stray(Stray::Resume) => self.spawn(Input::Resume {
                by: "user:olga".to_owned(),
            }),
            Op::Stray(Stray::CallResult(reply)) => {
                let in_flight = self
                    .run
                    .progress
                    .current
                    .as_ref()
                    .is_some_and(|current| current.status == engine::WaitOrFlight::InFlight);
                if !in_flight {
                    let refused =
                        self.step(Input::CallFinished(reply.outcome()), None, Source::Driver);
                    self.holds(
                        "a_result_without_a_call_in_flight_is_refused",
                        match refused {
                            None => Ok(()),
                            Some(_) => {
                                Err("the engine took a result no call was waiting for".to_owned())
                            }
                        },
                    );
                }
            }
            Op::Stray(Stray::Timer(kind)) => self.fire(*kind),
        }
    }

    /// `Runtime::apply_to`: a person's input, committed; `Begin` spawns a driver.
    fn decide(&mut self, input: Input) {
        if let Some(transition) = self.step(input, None, Source::Person)
            && transition.effect == Some(Effect::Begin)
        {
            self.spawn(Input::Begin);
        }
    }

    /// `Runtime::spawn_driver`: one driver per run at a time.
    fn spawn(&mut self, first: Input) {
        if self.driver.is_none() {
            self.driver = Some(Driver::Spawned(first, Decided::Earlier));
        }
    }

    /// One turn of the driver's loop (`Runtime::drive`).
    fn carry(&mut self, reply: Reply) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        let input = match driver {
            Driver::Spawned(first, decided) => {
                let state = self.run.state;
                if state.is_terminal() {
                    return;
                }
                if matches!(first, Input::Resume { .. } | Input::Cancel { .. })
                    && state != RunState::Paused
                {
                    return;
                }
                // `before_start`: the plan and the decision must still hold.
                match first {
                    _ if state == RunState::Approved && !self.plan_is_current => {
                        Input::DecisionChanged {
                            reasons: vec!["the plan changed since it was approved".to_owned()],
                        }
                    }
                    _ if state == RunState::Approved
                        && decided == Decided::Earlier
                        && self.ticket_closed =>
                    {
                        Input::Cancel {
                            by: "opsgate".to_owned(),
                            reason: "not executed: the ticket was closed".to_owned(),
                        }
                    }
                    first => first,
                }
            }
            // Its commit would be refused: someone changed the run since.
            Driver::Holding { revision, .. } if revision != self.revision => return,
            Driver::Holding { effect, .. } => match effect {
                Effect::Call { .. } => Input::CallFinished(reply.outcome()),
                Effect::WakeAt(until) => {
                    let until_ms = until.duration_since(epoch()).as_millis() as i64;
                    self.now_ms = self.now_ms.max(until_ms);
                    Input::Wake
                }
                Effect::Begin => Input::Begin,
            },
        };
        let hold = self.freeze.clone();
        if let Some(transition) = self.step(input, hold.as_ref(), Source::Driver) {
            let revision = self.revision;
            self.driver = transition
                .effect
                .map(|effect| Driver::Holding { effect, revision });
        }
    }

    /// What runs in the background as time passes, and after a restart.
    fn loops(&mut self) {
        self.fire_due_timers();
        self.freeze_loop();
        // `Runtime::recover`: a run that should be executing and that no
        // driver holds is claimed again.
        if self.driver.is_none()
            && matches!(
                self.run.state,
                RunState::Approved
                    | RunState::Running
                    | RunState::Verifying
                    | RunState::RollingBack
            )
        {
            self.spawn(Input::Recover);
        }
    }

    fn fire_due_timers(&mut self) {
        while let Some(next) = self
            .timers
            .iter()
            .enumerate()
            .filter(|(_, timer)| timer.due <= at(self.now_ms))
            .min_by_key(|(_, timer)| timer.due)
            .map(|(index, _)| index)
        {
            let timer = self.timers.remove(next);
            self.fire(timer.kind);
        }
    }

    /// `Runtime::fire_timer`: refused, the timer is disarmed.
    fn fire(&mut self, kind: TimerKind) {
        if let Some(transition) = self.step(Input::TimerFired(kind), None, Source::Timer)
            && transition.effect == Some(Effect::Begin)
        {
            self.spawn(Input::Begin);
        }
    }

    /// `release_paused_runs`: a paused run no freeze holds resumes; one a
    /// cancelling freeze holds is cancelled.
    fn freeze_loop(&mut self) {
        if self.run.state != RunState::Paused || self.driver.is_some() {
            return;
        }
        match &self.freeze {
            None => self.spawn(Input::Resume {
                by: "opsgate".to_owned(),
            }),
            Some(hold) if hold.on_runs == OnRuns::Cancel => {
                let input = Input::Cancel {
                    by: hold.by.clone(),
                    reason: format!("freeze {}: {}", hold.freeze, hold.reason),
                };
                self.spawn(input)
            }
            Some(_) => {}
        }
    }

    /// Feeds `input` to the engine; an accepted transition is committed.
    fn step(&mut self, input: Input, hold: Option<&Hold>, source: Source) -> Option<Transition> {
        let before = self.run.clone();
        let result = engine::step_held(
            &before,
            self.plan,
            input.clone(),
            at(self.now_ms),
            0.5,
            hold,
        );
        let outcome = match &result {
            Ok(transition) => transition.run.state.to_string(),
            Err(error) => format!("refused: {error}"),
        };
        let frozen = if hold.is_some() { " (frozen)" } else { "" };
        self.story.push(format!(
            "  @{}ms {source:?}{frozen} {input:?} => {outcome}",
            self.now_ms
        ));
        let terminal = nothing_moves_after_a_terminal_state(&before, &result);
        self.holds("nothing_moves_after_a_terminal_state", terminal);
        match result {
            Err(error) => {
                let refusal = a_refusal_names_what_it_refused(&before, &input, &error);
                self.holds("a_refusal_names_what_it_refused", refusal);
                None
            }
            Ok(transition) => {
                self.commit(&before, &transition, source, hold);
                Some(transition)
            }
        }
    }

    /// What `store::commit` does with a transition, and the checks on it.
    fn commit(
        &mut self,
        before: &Run,
        transition: &Transition,
        source: Source,
        hold: Option<&Hold>,
    ) {
        check_invariants(self.plan, transition);
        self.holds(
            "every_change_is_audited",
            every_change_is_audited(before, transition),
        );
        self.holds(
            "outside_a_driver_only_begin_is_asked",
            outside_a_driver_only_begin_is_asked(source, transition),
        );
        for record in &transition.records {
            if record.kind == RecordKind::AttemptStarted {
                let call = self.call_of(record);
                for (name, verdict) in [
                    (
                        "every_step_call_has_a_warrant",
                        every_step_call_has_a_warrant(self, &call),
                    ),
                    (
                        "a_frozen_run_starts_no_step",
                        a_frozen_run_starts_no_step(hold, &call),
                    ),
                    (
                        "finished_steps_are_never_repeated",
                        finished_steps_are_never_repeated(self, &call),
                    ),
                    (
                        "a_non_idempotent_step_is_never_sent_again_blind",
                        a_non_idempotent_step_is_never_sent_again_blind(self, &call),
                    ),
                    (
                        "rollbacks_undo_completed_reversible_steps_newest_first",
                        rollbacks_undo_completed_reversible_steps_newest_first(self, &call),
                    ),
                ] {
                    self.holds(name, verdict);
                }
                self.calls.push(call);
            } else if record.kind == RecordKind::AttemptFinished {
                self.finished(record);
            } else if record.kind == RecordKind::RunState
                && record.detail["from"] == "approved"
                && record.detail["to"] == "running"
            {
                self.began_on_current_plan = Some(self.plan_is_current);
            }
            self.log.push(record.clone());
        }
        let state = transition.run.state;
        if transition
            .records
            .iter()
            .any(|record| record.kind == RecordKind::RunState)
        {
            self.timers.retain(|timer| timer.armed_in == state);
        }
        self.timers
            .extend(transition.timers.iter().map(|timer| Armed {
                kind: timer.kind,
                due: timer.due,
                armed_in: state,
            }));
        self.run = transition.run.clone();
        self.revision += 1;
        let told = the_log_tells_the_state(self);
        self.holds("the_log_tells_the_state", told);
        let undone = a_finished_run_undid_what_it_promised(self);
        self.holds("a_finished_run_undid_what_it_promised", undone);
        // The runtime feeds a finished run only people's decisions and
        // timers; every other input is tried here once, uncommitted.
        if self.run.state.is_terminal() {
            for input in every_input() {
                let result = engine::step_held(
                    &self.run,
                    self.plan,
                    input,
                    at(self.now_ms),
                    0.5,
                    self.freeze.as_ref(),
                );
                let terminal = nothing_moves_after_a_terminal_state(&self.run, &result);
                self.holds("nothing_moves_after_a_terminal_state", terminal);
            }
        }
    }

    fn step_index(&self, record: &Record) -> Option<usize> {
        let id = record.detail["step"].as_str()?;
        self.plan.steps.iter().position(|step| step.id == id)
    }

    fn call_of(&self, record: &Record) -> Call {
        let phase = match record.detail["phase"].as_str() {
            Some("step") => StepPhase::Step,
            Some("rollback") => StepPhase::Rollback,
            Some("verify") => StepPhase::Verify,
            Some("precheck") => StepPhase::Precheck,
            other => panic!("an attempt of an unknown phase {other:?}"),
        };
        Call {
            phase,
            index: match phase {
                StepPhase::Step | StepPhase::Rollback => self.step_index(record),
                _ => None,
            },
            attempt: record.detail["attempt"].as_u64().unwrap_or_default(),
            reported: None,
        }
    }

    /// An `attempt.finished` record: what the world now knows of a call.
    fn finished(&mut self, record: &Record) {
        let finished = self.call_of(record);
        let reported = match record.detail["outcome"]["outcome"].as_str() {
            Some("succeeded") => Reported::Succeeded,
            Some("failed") => Reported::Failed,
            _ => Reported::Unknown,
        };
        if let Some(call) = self.calls.iter_mut().rev().find(|call| {
            (call.phase, call.index, call.attempt)
                == (finished.phase, finished.index, finished.attempt)
        }) {
            call.reported = Some(reported);
        }
        if reported == Reported::Succeeded
            && let Some(index) = finished.index
        {
            match finished.phase {
                StepPhase::Step => self.completed.push(index),
                StepPhase::Rollback => self.undone.push(index),
                _ => {}
            }
        }
    }

    /// Panics, naming the invariant, the plan and the story, unless `verdict` is Ok.
    fn holds(&self, invariant: &str, verdict: Result<(), String>) {
        if let Err(why) = verdict {
            panic!(
                "invariant `{invariant}` broken: {why}\n--- plan\n{}\n--- story\n{}\n--- run\n{:#?}",
                self.spec,
                self.story.join("\n"),
                self.run
            );
        }
    }
}

/// One input of every kind.
fn every_input() -> Vec<Input> {
    let by = || "user:alice".to_owned();
    let mut inputs = vec![
        Input::Approve {
            by: by(),
            comment: None,
        },
        Input::Deny {
            by: by(),
            comment: None,
        },
        Input::Cancel {
            by: by(),
            reason: "late".to_owned(),
        },
        Input::Begin,
        Input::Wake,
        Input::Recover,
        Input::DecisionChanged {
            reasons: vec!["late".to_owned()],
        },
        Input::Resume { by: by() },
    ];
    inputs.extend(
        [Reply::Ok, Reply::Fatal, Reply::Unknown].map(|reply| Input::CallFinished(reply.outcome())),
    );
    inputs.extend(TimerKind::ALL.map(Input::TimerFired));
    inputs
}

// ---------------------------------------------------------------- invariants

/// A finished run takes no input: nothing is dispatched after a terminal
/// state, and the state never changes again.
fn nothing_moves_after_a_terminal_state(
    before: &Run,
    result: &engine::Result<Transition>,
) -> Result<(), String> {
    match result {
        Ok(transition) if before.state.is_terminal() => Err(format!(
            "a {} run took an input and became {} asking for {:?}",
            before.state, transition.run.state, transition.effect
        )),
        _ => Ok(()),
    }
}

/// A refused input changes nothing (the engine borrows the run, so that is
/// the type's promise); the refusal names the state the run is really in,
/// and only an approval is refused as an approval.
fn a_refusal_names_what_it_refused(
    before: &Run,
    input: &Input,
    error: &engine::Error,
) -> Result<(), String> {
    match error {
        engine::Error::InvalidInput { state, .. } if *state != before.state => Err(format!(
            "refused as a `{state}` run, but the run is `{}`",
            before.state
        )),
        engine::Error::ApprovalRefused { reason } if !matches!(input, Input::Approve { .. }) => {
            Err(format!("{input:?} refused as an approval: {reason}"))
        }
        _ => Ok(()),
    }
}

/// Every change of state is in the log as `run.state` records that chain
/// from the old state to the new one, and any change of the run at all
/// comes with a record: nothing happens that the log cannot tell.
fn every_change_is_audited(before: &Run, transition: &Transition) -> Result<(), String> {
    let mut state = before.state.as_str();
    for record in transition
        .records
        .iter()
        .filter(|record| record.kind == RecordKind::RunState)
    {
        if record.detail["from"] != state {
            return Err(format!(
                "a run.state record from {} after {state}",
                record.detail["from"]
            ));
        }
        state = record.detail["to"].as_str().unwrap_or("?");
    }
    if state != transition.run.state.as_str() {
        return Err(format!(
            "the records end in {state}, the run in {}",
            transition.run.state
        ));
    }
    if transition.run != *before && transition.records.is_empty() {
        return Err("the run changed without a record".to_owned());
    }
    Ok(())
}

/// The runtime carries out a person's or a timer's transition only as far
/// as `Begin` (it spawns a driver): any other effect would never be made.
fn outside_a_driver_only_begin_is_asked(
    source: Source,
    transition: &Transition,
) -> Result<(), String> {
    match (&transition.effect, source) {
        (None | Some(Effect::Begin), _) | (_, Source::Driver) => Ok(()),
        (Some(effect), source) => Err(format!("{source:?} input asked for {effect:?}")),
    }
}

/// A step's call is justified by a warrant in the log, bound to the
/// plan's hash: the run was allowed, or every stage of the chain it asked
/// for was passed by enough distinct people (not the requester) approving
/// this plan hash; the run began while its plan was still what its event
/// plans to; a gated step was approved at its gate; and nothing since
/// withdrew it (a changed decision, a denial, an expiry, a cancellation).
fn every_step_call_has_a_warrant(world: &World<'_>, call: &Call) -> Result<(), String> {
    if call.phase != StepPhase::Step {
        return Ok(());
    }
    let (log, plan) = (&world.log, world.plan);
    match world.decision {
        DecisionKind::Deny => return Err("the gate denied the run".to_owned()),
        DecisionKind::Allow => {}
        DecisionKind::RequireApproval => chain_passed(log, plan)?,
    }
    if world.began_on_current_plan != Some(true) {
        return Err(format!(
            "the run began on a plan that was no longer current ({:?})",
            world.began_on_current_plan
        ));
    }
    if let Some(record) = log.iter().find(|record| {
        matches!(
            record.kind,
            RecordKind::DecisionChanged
                | RecordKind::ApprovalDenied
                | RecordKind::ApprovalExpired
                | RecordKind::RunCancelled
        )
    }) {
        return Err(format!("the warrant was withdrawn by {}", record.kind));
    }
    let index = call.index.ok_or("a step call names no step of the plan")?;
    let step = &plan.steps[index];
    if step.requires_approval {
        let asked = log
            .iter()
            .rposition(|record| {
                record.kind == RecordKind::ApprovalRequested && record.detail["step"] == step.id
            })
            .ok_or(format!(
                "gated step `{}` was never put to approval",
                step.id
            ))?;
        let stage = format!("step {}", step.id);
        let approved = log[asked..].iter().any(|record| {
            record.kind == RecordKind::ApprovalGranted
                && record.detail["stage"] == stage
                && record.detail["plan_hash"] == plan.plan_hash
                && record.detail["by"] != REQUESTER
        });
        if !approved {
            return Err(format!(
                "gated step `{}` was not approved at its gate",
                step.id
            ));
        }
    }
    Ok(())
}

/// The run's chain, asked for when it was born, was passed before it was
/// approved.
fn chain_passed(log: &[Record], plan: &Plan) -> Result<(), String> {
    let approved = log
        .iter()
        .position(|record| record.kind == RecordKind::RunState && record.detail["to"] == "approved")
        .ok_or("the run was never approved")?;
    let log = &log[..approved];
    let asked = log
        .iter()
        .find(|record| {
            record.kind == RecordKind::ApprovalRequested && record.detail["step"].is_null()
        })
        .ok_or("no approval was asked for")?;
    let mut people = HashSet::new();
    let grants: Vec<&Record> = log
        .iter()
        .filter(|record| record.kind == RecordKind::ApprovalGranted)
        .collect();
    for grant in &grants {
        let by = grant.detail["by"].as_str().unwrap_or_default();
        if grant.detail["plan_hash"] != plan.plan_hash {
            return Err(format!(
                "{by} approved another plan: {}",
                grant.detail["plan_hash"]
            ));
        }
        if by == REQUESTER || by == AGENT {
            return Err(format!("{by} may not approve"));
        }
        if !people.insert(by) {
            return Err(format!("{by} counted twice in one chain"));
        }
    }
    for stage in asked.detail["stages"].as_array().into_iter().flatten() {
        let approvals = grants
            .iter()
            .filter(|grant| grant.detail["stage"] == stage["name"])
            .count() as u64;
        let required = stage["required"].as_u64().unwrap_or(u64::MAX);
        if approvals < required {
            return Err(format!(
                "stage {} had {approvals} of {required} approvals",
                stage["name"]
            ));
        }
    }
    Ok(())
}

/// A freeze is checked where a step would start: a held run starts none.
fn a_frozen_run_starts_no_step(hold: Option<&Hold>, call: &Call) -> Result<(), String> {
    match hold {
        Some(hold) if call.phase == StepPhase::Step => Err(format!(
            "a step started while freeze {} ({}) held the run",
            hold.freeze,
            hold.on_runs.as_str()
        )),
        _ => Ok(()),
    }
}

/// A step whose success was committed is never called again.
fn finished_steps_are_never_repeated(world: &World<'_>, call: &Call) -> Result<(), String> {
    match call.index {
        Some(index) if call.phase == StepPhase::Step && world.completed.contains(&index) => Err(
            format!("step `{}` finished already", world.plan.steps[index].id),
        ),
        _ => Ok(()),
    }
}

/// A step that is not idempotent is called again only when every earlier
/// call of it is known to have failed (its retry policy's business);
/// never after a crash, or an unknown outcome, left it in doubt — that is
/// a person's to sort out (`needs_human`).
fn a_non_idempotent_step_is_never_sent_again_blind(
    world: &World<'_>,
    call: &Call,
) -> Result<(), String> {
    let Some(index) = call.index.filter(|_| call.phase == StepPhase::Step) else {
        return Ok(());
    };
    if world.plan.steps[index].idempotent {
        return Ok(());
    }
    match world.calls.iter().find(|earlier| {
        earlier.phase == StepPhase::Step
            && earlier.index == Some(index)
            && earlier.reported != Some(Reported::Failed)
    }) {
        Some(earlier) => Err(format!(
            "step `{}` sent again (attempt {}) while attempt {} is {:?}",
            world.plan.steps[index].id, call.attempt, earlier.attempt, earlier.reported
        )),
        None => Ok(()),
    }
}

/// A rollback undoes a step that completed and has a rollback, that is
/// not undone already, and that is the newest such step.
fn rollbacks_undo_completed_reversible_steps_newest_first(
    world: &World<'_>,
    call: &Call,
) -> Result<(), String> {
    if call.phase != StepPhase::Rollback {
        return Ok(());
    }
    let index = call.index.ok_or("a rollback names no step of the plan")?;
    let steps = &world.plan.steps;
    let id = &steps[index].id;
    if steps[index].rollback.is_none() {
        return Err(format!("step `{id}` has no rollback"));
    }
    if !world.completed.contains(&index) {
        return Err(format!("step `{id}` never completed"));
    }
    if world.undone.contains(&index) {
        return Err(format!("step `{id}` was undone already"));
    }
    let newest = world
        .completed
        .iter()
        .rev()
        .find(|&&done| steps[done].rollback.is_some() && !world.undone.contains(&done));
    if newest != Some(&index) {
        return Err(format!(
            "step `{id}` undone before `{}`",
            newest.map_or("?", |&done| steps[done].id.as_str())
        ));
    }
    Ok(())
}

/// The log's last `run.state` record names the state the store holds.
fn the_log_tells_the_state(world: &World<'_>) -> Result<(), String> {
    match world
        .log
        .iter()
        .rev()
        .find(|record| record.kind == RecordKind::RunState)
    {
        Some(record) if record.detail["to"] != world.run.state.as_str() => Err(format!(
            "the log says {}, the store {}",
            record.detail["to"], world.run.state
        )),
        _ => Ok(()),
    }
}

/// The end states that say the world is as it was — `rolled_back`, a run
/// `cancelled` after it acted, a time-bound change `succeeded` at its end —
/// are reached only once every completed step with a rollback was undone.
fn a_finished_run_undid_what_it_promised(world: &World<'_>) -> Result<(), String> {
    let promised = match world.run.state {
        RunState::RolledBack | RunState::Cancelled => true,
        RunState::Succeeded => world.plan.ends_at.is_some(),
        _ => false,
    };
    if !promised {
        return Ok(());
    }
    match world
        .completed
        .iter()
        .find(|&&done| world.plan.steps[done].rollback.is_some() && !world.undone.contains(&done))
    {
        Some(&left) => Err(format!(
            "the run ended {} with step `{}` done and not undone",
            world.run.state, world.plan.steps[left].id
        )),
        None => Ok(()),
    }
}

/// A run that has not finished always has a way forward: a driver holds
/// it, people can decide it, a freeze holds it (and its lifting resumes
/// it), its term's end is armed, or a restart would pick it up.
fn a_live_run_has_a_way_forward(world: &World<'_>) -> Result<(), String> {
    let run = &world.run;
    if run.state.is_terminal() || world.driver.is_some() {
        return Ok(());
    }
    match run.state {
        RunState::AwaitingApproval => Ok(()),
        // The freeze loop looks again at every tick: it resumes the run,
        // or cancels it, and the engine must take that.
        RunState::Paused => {
            let input = match &world.freeze {
                Some(hold) if hold.on_runs == OnRuns::Pause => return Ok(()),
                Some(hold) => Input::Cancel {
                    by: hold.by.clone(),
                    reason: hold.reason.clone(),
                },
                None => Input::Resume {
                    by: "opsgate".to_owned(),
                },
            };
            engine::step_held(
                run,
                world.plan,
                input,
                at(world.now_ms),
                0.5,
                world.freeze.as_ref(),
            )
            .map(|_| ())
            .map_err(|error| format!("paused, and the freeze loop cannot move it: {error}"))
        }
        RunState::InEffect => {
            if world.timers.iter().any(|timer| {
                timer.kind == TimerKind::TermEnds && timer.armed_in == RunState::InEffect
            }) {
                Ok(())
            } else {
                Err("in effect, with no end armed".to_owned())
            }
        }
        RunState::Approved | RunState::Running | RunState::Verifying | RunState::RollingBack => {
            engine::step_held(
                run,
                world.plan,
                Input::Recover,
                at(world.now_ms),
                0.5,
                world.freeze.as_ref(),
            )
            .map(|_| ())
            .map_err(|error| format!("no driver holds it and a restart cannot take it up: {error}"))
        }
        state => Err(format!("stored in the passing state {state}")),
    }
}
