//! The driver: one task per executing run, under the run's lease. It
//! claims the lease (and the run's targets) in the same commit as the
//! run's next transition, renews it from a heartbeat, feeds the engine,
//! commits each transition fenced by the lease's token and only then
//! performs the effect it authorises, and gives the lease back in the
//! commit of its last transition. A run intake approves on a decision
//! that stands is claimed, with its first transition, in the intake's own
//! transaction (`start_here`, `spawn_started`): such a one-step run costs
//! two write transactions in all, intake's included; one claimed later
//! costs three. `recover` and the takeover loop
//! claim the runs nobody holds. Just before an approved run starts, the
//! decision is made again with fresh facts unless it can only agree
//! (`decision_stands`); that look reads the ticket system, so such a run
//! is claimed first, on its own.

use domain::RunState;
use engine::{Effect, Input};

use crate::{Error, Result, RunUpdate, Runtime, SYSTEM_ACTOR, intake};

/// Where the decision a driver starts from was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decided {
    /// By this process's intake, which spawned the driver right after.
    AtIntakeHere,
    /// By a person's approval, before a timer, or by another process (a
    /// run recovered or taken over): made again before the run acts.
    Earlier,
}

/// Whether the gate's verdict on a runbook's plan rests on the plan, its
/// event and the runbook alone, so that deciding again cannot change it.
/// Not when it reads the clock (change windows, freezes, business hours),
/// nor when it counts other runs (cooldown, rate limit, concurrency cap):
/// those are decided again, the windows counting only the runs admitted
/// before this one (so it keeps the place it was admitted to), the cap
/// every run under way (which a run approved elsewhere meanwhile may fill).
pub(crate) fn verdict_rests_on_the_plan(guardrails: &runbook::Guardrails) -> bool {
    // Every field named, so that a new guardrail is sorted here too.
    let runbook::Guardrails {
        environments: _,
        change_windows,
        freezes,
        business_hours,
        cooldown,
        rate_limit,
        max_concurrent,
        sensitive_targets: _,
        min_confidence: _,
    } = guardrails;
    change_windows.is_empty()
        && freezes.is_empty()
        && business_hours.is_none()
        && cooldown.is_none()
        && rate_limit.is_none()
        && max_concurrent.is_none()
}

/// Why a run decided as `before` may not go on under `now`, the decision
/// made again just before it starts: now denied; now requiring an approval
/// it was not given (it was allowed on its own); or requiring other
/// approval stages than the ones it passed (a policy changed).
pub(crate) fn changed_decision(
    before: &domain::Decision,
    now: &domain::Decision,
) -> Option<Vec<String>> {
    use domain::DecisionKind::{Allow, Deny, RequireApproval};
    let mut reasons = match (before.kind, now.kind) {
        (_, Deny) => now.reasons.clone(),
        (Allow, RequireApproval) => {
            let mut reasons = vec!["it now requires approval".to_owned()];
            reasons.extend(now.reasons.iter().cloned());
            reasons
        }
        (RequireApproval, RequireApproval) if before.stages != now.stages => {
            vec!["it now requires other approval stages than the ones it passed".to_owned()]
        }
        _ => return None,
    };
    if before.policy_version != now.policy_version {
        reasons.push(format!(
            "the policy set changed since the decision ({} → {})",
            short_version(before.policy_version.as_deref()),
            short_version(now.policy_version.as_deref()),
        ));
    }
    Some(reasons)
}

pub(crate) fn short_version(version: Option<&str>) -> &str {
    version.map_or("none", domain::short_hash)
}

/// A driver's claim on its run: the lease as its heartbeat keeps it
/// (`None` once lost), and the heartbeat. Gone once the lease was given
/// back with the run's last transition.
pub(crate) struct Claimed {
    renewed: tokio::sync::watch::Receiver<Option<store::Lease>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// A run claimed and started by the intake that stored it: its plan, its
/// first transition (committed with it) and the run's revision and lease
/// after that commit.
pub(crate) struct Started {
    pub(crate) plan: domain::Plan,
    pub(crate) event_id: String,
    pub(crate) requester: String,
    pub(crate) transition: engine::Transition,
    pub(crate) revision: i64,
    pub(crate) lease: store::Lease,
}

/// A run as its driver holds it between transitions.
struct Driven {
    plan: domain::Plan,
    event_id: String,
    machine: engine::Run,
    revision: i64,
    /// Who posted the run's event, once read (when a freeze names
    /// principals): `Some(None)` when nobody is on record.
    requester: Option<Option<String>>,
}

/// Where a driver starts from.
enum Beginning {
    /// The run as stored, fed `Input`.
    Input(Input, Decided),
    /// The effect of a transition already committed.
    Started(Box<Started>),
}

impl Runtime {
    /// Starts the runtime's own work, once per process: a driver for every
    /// run nobody holds ([`Runtime::recover`]), then the loops that take
    /// over abandoned runs, fire due timers and write runs' stories back.
    /// Returns how many runs were resumed.
    pub async fn start(&self) -> Result<usize> {
        // Before any run is driven: a freeze in force holds it at once.
        self.reload_freezes().await?;
        let resumed = self.recover().await?;
        self.spawn_freeze_loop();
        self.spawn_takeover_loop();
        self.spawn_timer_loop();
        self.spawn_writeback_loop();
        Ok(resumed)
    }

    /// Starts a driver for every run that should be executing but that no
    /// live instance holds: after a restart, or after another instance
    /// stopped renewing its leases. Returns how many runs were found; each
    /// driver still has to win its run's claim.
    pub async fn recover(&self) -> Result<usize> {
        if self.is_draining() {
            return Ok(0);
        }
        let claimable = self.inner.store.claimable_runs(self.now()).await?;
        let count = claimable.len();
        for run_id in claimable {
            self.spawn_driver(run_id, Input::Recover, Decided::Earlier);
        }
        Ok(count)
    }

    /// Runs [`Runtime::recover`] every half lease: the safety net that
    /// picks up runs whose instance died. New work does not wait for it:
    /// intake and approvals start their runs directly, and an instance that
    /// releases a run announces it to the others (on PostgreSQL), which look
    /// at once. Runs settled by other instances are re-published to this
    /// instance's subscribers (with their state only; the records are in the
    /// store).
    pub fn spawn_takeover_loop(&self) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        let period = std::time::Duration::from_millis((self.inner.lease_ttl_ms / 2).max(100));
        tokio::spawn(async move {
            let signals = match runtime.inner.store.work_signals().await {
                Ok(signals) => signals,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for work announcements; relying on the periodic check");
                    None
                }
            };
            if let Some(mut signals) = signals {
                // What was announced before this instance listened was
                // missed: the freezes are read again now that it does (the
                // takeover tick below covers work, the timer loop timers).
                runtime.inner.freezes_changed.notify_one();
                let listener = runtime.clone();
                tokio::spawn(async move {
                    loop {
                        match signals.next().await {
                            Ok(store::Signal::WorkReleased) => listener.nudge(),
                            Ok(store::Signal::TimerScheduled) => listener.timers_changed(),
                            Ok(store::Signal::FreezesChanged) => {
                                listener.inner.freezes_changed.notify_one()
                            }
                            // Announcements may have been missed: look again.
                            Ok(store::Signal::Reconnected) => {
                                tracing::warn!(
                                    "the announcement connection was lost and made again; looking at work, timers and freezes again"
                                );
                                listener.nudge();
                                listener.timers_changed();
                                listener.inner.freezes_changed.notify_one();
                            }
                            // Settled elsewhere: tell this instance's waiters.
                            Ok(store::Signal::RunSettled { run_id, state }) => {
                                let update = RunUpdate {
                                    run_id,
                                    state,
                                    reason: None,
                                    records: Vec::new(),
                                };
                                let _ = listener.inner.updates.send(update);
                            }
                            Err(error) => {
                                tracing::warn!(error = %error, "work announcements interrupted");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
            }
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = runtime.recover().await {
                    tracing::warn!(error = %error, "looking for runs to take over failed");
                }
                // The safety net for a freeze announcement that never
                // arrived: the freezes are read again at every tick.
                runtime.inner.freezes_changed.notify_one();
            }
        })
    }

    /// Drives the run in a task of its own, if this instance can claim its
    /// lease (with the run's next transition, in one commit); the lease is
    /// renewed while the task runs and given back after.
    pub(crate) fn spawn_driver(&self, run_id: String, first: Input, decided: Decided) {
        self.spawn(run_id, Beginning::Input(first, decided));
    }

    /// Drives a run its intake claimed and started ([`Runtime::start_here`]):
    /// from the effect of the transition already committed.
    pub(crate) fn spawn_started(&self, run_id: String, started: Started) {
        self.spawn(run_id, Beginning::Started(Box::new(started)));
    }

    fn spawn(&self, run_id: String, from: Beginning) {
        // Shutting down: the run waits for another instance, or the
        // restart. A run started at intake holds a lease, which the
        // driver gives back.
        if self.is_draining() && matches!(from, Beginning::Input(..)) {
            return;
        }
        if !self
            .inner
            .driving
            .lock()
            .expect("driver set lock")
            .insert(run_id.clone())
        {
            // A run started at intake is new and leased to this instance:
            // nobody else can be driving it. Were it ever so, its call
            // would wait for its lease to expire and end needs_human.
            if matches!(from, Beginning::Started(_)) {
                tracing::error!(run_id = %run_id, "a run started at intake was already being driven; its first call is left to whoever takes it over");
            }
            return;
        }
        // Every line the driver writes names the run and its event.
        let span = tracing::info_span!("run", run_id = %run_id, event_id = tracing::field::Empty);
        if let Beginning::Started(started) = &from {
            span.record("event_id", started.event_id.as_str());
        }
        let runtime = self.clone();
        let driver = async move {
            let mut claimed = None;
            let driven = match from {
                Beginning::Input(first, decided) => {
                    runtime.drive(&run_id, first, decided, &mut claimed).await
                }
                Beginning::Started(started) => {
                    runtime.drive_started(&run_id, *started, &mut claimed).await
                }
            };
            match driven {
                Ok(()) => {}
                // Expected after a stall: another instance has the run now.
                Err(Error::Store(store::Error::Fenced { .. })) => {
                    tracing::warn!(run_id = %run_id, "fenced out: another instance took the run over");
                }
                Err(error) => {
                    tracing::error!(run_id = %run_id, error = %error, "run driver stopped");
                }
            }
            // Still held: the driver stopped before the run's last
            // transition (a wait, a start while draining, an error).
            if let Some(Claimed { renewed, heartbeat }) = claimed {
                heartbeat.abort();
                let lease = renewed.borrow().clone();
                if let Some(lease) = lease {
                    match runtime.inner.store.release_lease(&run_id, &lease).await {
                        // Runs that waited for this one's targets can go now.
                        Ok(()) => runtime.nudge(),
                        Err(error) => {
                            tracing::warn!(run_id = %run_id, error = %error, "could not release the lease")
                        }
                    }
                }
            }
            runtime
                .inner
                .driving
                .lock()
                .expect("driver set lock")
                .remove(&run_id);
            runtime.inner.driver_stopped.notify_waiters();
        };
        tokio::spawn(tracing::Instrument::instrument(driver, span));
    }

    /// Looks for claimable work now rather than at the next takeover tick.
    pub(crate) fn nudge(&self) {
        let runtime = self.clone();
        tokio::spawn(async move {
            if let Err(error) = runtime.recover().await {
                tracing::warn!(error = %error, "looking for runs to start failed");
            }
        });
    }

    /// The claim on a run whose `lease` this instance just took: its
    /// heartbeat renews the lease every third of its lifetime, and the
    /// watch holds the current lease, or `None` once it is lost.
    fn claimed(&self, run_id: &str, lease: store::Lease) -> Claimed {
        let run_id = run_id.to_owned();
        let (sender, renewed) = tokio::sync::watch::channel(Some(lease));
        let runtime = self.clone();
        let ttl = self.inner.lease_ttl_ms;
        let heartbeat = tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval(std::time::Duration::from_millis((ttl / 3).max(50)));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(current) = sender.borrow().clone() else {
                    return;
                };
                match runtime
                    .inner
                    .store
                    .renew_lease(&run_id, &current, runtime.now(), ttl as i64)
                    .await
                {
                    Ok(Some(renewed)) => {
                        let _ = sender.send(Some(renewed));
                    }
                    Ok(None) => {
                        tracing::warn!(run_id = %run_id, "lease lost to another instance");
                        let _ = sender.send(None);
                        return;
                    }
                    // A failed renewal is retried at the next tick; the
                    // lease may still expire, and then fencing protects the run.
                    Err(error) => {
                        tracing::warn!(run_id = %run_id, error = %error, "lease renewal failed")
                    }
                }
            }
        });
        Claimed { renewed, heartbeat }
    }

    /// Whether an auto-approved run's decision, made by this process's
    /// intake a moment ago, can only come out the same if made again: the
    /// runbook is the version it was decided on, the plan was made with
    /// this process's template variables, and the verdict depends on
    /// neither the clock nor other runs ([`verdict_rests_on_the_plan`];
    /// no global rate limit, no Rego policies, which see the clock). Then
    /// it is not planned and decided again; any other approved run is.
    pub(crate) fn decision_stands(&self, run: &store::RunRow) -> bool {
        let stands = self.stands(&run.decision, &run.plan);
        if stands {
            tracing::debug!(run_id = %run.id, "decided at intake here, on the plan alone: not decided again");
        }
        stands
    }

    fn stands(&self, decision: &domain::Decision, plan: &domain::Plan) -> bool {
        decision.kind == domain::DecisionKind::Allow
            && self.inner.global_rate_limit.is_none()
            && self.inner.policies.is_none()
            && self
                .inner
                .catalog
                .get(&plan.runbook_id)
                .is_some_and(|runbook| {
                    runbook.version == plan.runbook_version
                        && verdict_rests_on_the_plan(&runbook.guardrails)
                })
    }

    /// What the intake storing `run` (an event `requester` posted) commits
    /// with it so that this instance drives it at once: the claim and the
    /// run's first transition, when that transition starts a step. Only
    /// for a run approved whose decision stands ([`Runtime::decision_stands`]):
    /// any other is decided again once stored, or waits. `None` sends the
    /// run the long way: stored, then claimed by its driver.
    pub(crate) async fn start_here(
        &self,
        run: &store::NewRun,
        event_id: &str,
        requester: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<store::Start>> {
        if self.is_draining()
            || run.machine.state != RunState::Approved
            || !self.stands(&run.decision, &run.plan)
        {
            return Ok(None);
        }
        tracing::debug!(run_id = %run.id, event_id, "decided at intake here, on the plan alone: not decided again");
        let mut known = Some(Some(requester.to_owned()));
        let hold = self.hold_for(&run.plan, event_id, &mut known).await?;
        let transition = engine::step_held(
            &run.machine,
            &run.plan,
            Input::Begin,
            now,
            rand::random(),
            hold.as_ref(),
        )?;
        if !matches!(transition.effect, Some(Effect::Call { .. })) {
            return Ok(None);
        }
        Ok(Some(store::Start {
            owner: self.inner.instance.clone(),
            ttl_ms: self.inner.lease_ttl_ms as i64,
            transition,
        }))
    }

    /// Decides again, just before an approved run starts: the reasons it
    /// may no longer run (the runbook or the plan changed, a change window
    /// closed, a freeze began, a cooldown filled up), or `None`.
    pub(crate) async fn decision_changed(
        &self,
        run: &store::RunRow,
        event: Option<&store::EventRow>,
    ) -> Result<Option<Vec<String>>> {
        let plan = &run.plan;
        let Some(runbook) = self.inner.catalog.get(&plan.runbook_id) else {
            return Ok(Some(vec![format!(
                "runbook `{}` is no longer loaded",
                plan.runbook_id
            )]));
        };
        if runbook.version != plan.runbook_version {
            return Ok(Some(vec![format!(
                "runbook `{}` changed since the plan was approved",
                plan.runbook_id
            )]));
        }
        let Some(event) = event else {
            return Ok(Some(vec!["the run's event is gone".to_owned()]));
        };
        match crate::intake::plan(runbook, &event.event, &self.inner.template_env) {
            Ok(fresh) if fresh.plan_hash == plan.plan_hash => {}
            Ok(_) => {
                return Ok(Some(vec![
                    "the plan changed since it was approved".to_owned(),
                ]));
            }
            Err(error) => {
                return Ok(Some(vec![format!(
                    "the plan can no longer be made: {error}"
                )]));
            }
        }
        // An event stored before requesters were recorded came from a source.
        let (kind, name) = event
            .requester
            .as_deref()
            .and_then(domain::PrincipalKind::of_actor)
            .unwrap_or((domain::PrincipalKind::Source, event.event.source.as_str()));
        let requester = intake::requester_facts(kind, name, &event.event);
        let now = self.now();
        let facts = self
            .facts_before_start(runbook, plan, requester, now, &run.id)
            .await?;
        let decision = self.gate(runbook, plan, &event.event, &facts);
        Ok(changed_decision(&run.decision, &decision))
    }

    /// What an approved run is fed first instead of starting, if anything:
    /// the decision made again no longer lets it run; or — when it waited
    /// (for an approval, for its targets, for a restart) — its ticket was
    /// closed meanwhile, read back from the ticket system now, and it is
    /// cancelled with a note rather than acting on a problem a person
    /// already dealt with. A ticket system that cannot be read does not
    /// hold the run up: the precheck, when the runbook has one, still
    /// reads the problem itself.
    async fn before_start(&self, run: &store::RunRow, decided: Decided) -> Result<Option<Input>> {
        let event = self.inner.store.event(&run.event_id).await?;
        if let Some(reasons) = self.decision_changed(run, event.as_ref()).await? {
            tracing::warn!(run_id = %run.id, reasons = ?reasons, "the decision changed before the run started");
            return Ok(Some(Input::DecisionChanged { reasons }));
        }
        let Some(event) = event.filter(|_| decided == Decided::Earlier) else {
            return Ok(None);
        };
        let Some((system, ticket)) = self.inner.integrations.ticket_for(&event.event) else {
            return Ok(None);
        };
        match system.state_of(&ticket).await {
            Ok(connectors::TicketState::Open) => Ok(None),
            Ok(connectors::TicketState::Closed { state }) => {
                tracing::info!(run_id = %run.id, ticket = %ticket, state = %state, "the ticket was closed while the run waited");
                Ok(Some(Input::Cancel {
                    by: SYSTEM_ACTOR.to_owned(),
                    reason: format!(
                        "not executed: ticket {ticket} was closed ({state}) while the run waited"
                    ),
                }))
            }
            Err(error) => {
                tracing::warn!(run_id = %run.id, ticket = %ticket, error = %error, "could not read the ticket back before the run started; it goes on");
                Ok(None)
            }
        }
    }

    /// The gate's decision: the runbook's guardrails, tightened by the
    /// organisation's policies when there are any. A policy that cannot
    /// decide denies (fails closed), saying why.
    pub(crate) fn gate(
        &self,
        runbook: &runbook::Runbook,
        plan: &domain::Plan,
        event: &domain::Event,
        facts: &policy::Facts,
    ) -> domain::Decision {
        let policies = self.inner.policies.as_ref();
        policy::decide_with_policies(runbook, plan, event, facts, policies).unwrap_or_else(
            |error| domain::Decision {
                kind: domain::DecisionKind::Deny,
                reasons: vec![format!("the policies could not decide: {error}")],
                expires_after_ms: None,
                approvals_required: 1,
                stages: Vec::new(),
                policy_version: policies.map(|set| set.version().to_owned()),
            },
        )
    }

    /// Feeds the engine until the run waits for something outside itself
    /// (an approval) or finishes. The transition that leaves the run to
    /// someone else gives the lease back in its own commit.
    pub(crate) async fn drive(
        &self,
        run_id: &str,
        first: Input,
        decided: Decided,
        claimed: &mut Option<Claimed>,
    ) -> Result<()> {
        let store = &self.inner.store;
        let unknown = || Error::UnknownRun {
            run_id: run_id.to_owned(),
        };
        let mut run = store.run(run_id).await?.ok_or_else(unknown)?;
        tracing::Span::current().record("event_id", run.event_id.as_str());
        // The approval was for a plan and a decision; both must still
        // hold, and the problem must still be someone's. Looking reads the
        // ticket system: only once this instance holds the run, so a run
        // waiting for its target is not looked at again and again.
        let looks_before_start = run.state == RunState::Approved
            && !(decided == Decided::AtIntakeHere && self.decision_stands(&run));
        if looks_before_start {
            let ttl = self.inner.lease_ttl_ms as i64;
            let instance = &self.inner.instance;
            let Some(lease) = store.claim_run(run_id, instance, self.now(), ttl).await? else {
                tracing::debug!(run_id = %run_id, "the run, or one of its targets, is held elsewhere");
                return Ok(());
            };
            *claimed = Some(self.claimed(run_id, lease));
            // As it is now that it is this instance's.
            run = store.run(run_id).await?.ok_or_else(unknown)?;
        }
        if run.state.is_terminal() {
            return Ok(());
        }
        // Resumed or cancelled after a freeze: unless another instance
        // got there first.
        if matches!(first, Input::Resume { .. } | Input::Cancel { .. })
            && run.state != RunState::Paused
        {
            return Ok(());
        }
        let mut input = first;
        if looks_before_start
            && run.state == RunState::Approved
            && let Some(instead) = self.before_start(&run, decided).await?
        {
            input = instead;
        }
        let run = Driven {
            plan: run.plan,
            event_id: run.event_id,
            machine: run.machine,
            revision: run.revision,
            requester: None,
        };
        self.drive_on(run_id, run, input, claimed).await
    }

    /// Drives a run its intake started: the claim is taken, the first
    /// transition committed; what is left is its effect, and the rest.
    async fn drive_started(
        &self,
        run_id: &str,
        started: Started,
        claimed: &mut Option<Claimed>,
    ) -> Result<()> {
        *claimed = Some(self.claimed(run_id, started.lease));
        self.publish(run_id, &started.transition);
        tracing::debug!(run_id = %run_id, state = %started.transition.run.state, "transition committed with the intake");
        let Some(input) = self.perform(run_id, started.transition.effect).await else {
            return Ok(());
        };
        let run = Driven {
            plan: started.plan,
            event_id: started.event_id,
            machine: started.transition.run,
            revision: started.revision,
            requester: Some(Some(started.requester)),
        };
        self.drive_on(run_id, run, input, claimed).await
    }

    /// Feeds the engine `input`, and then what each effect brings, from
    /// where `run` is.
    async fn drive_on(
        &self,
        run_id: &str,
        mut run: Driven,
        mut input: Input,
        claimed: &mut Option<Claimed>,
    ) -> Result<()> {
        let store = &self.inner.store;
        loop {
            // `None` until the first transition claims the run.
            let current_lease = match claimed {
                None => None,
                Some(claimed) => match claimed.renewed.borrow().clone() {
                    Some(lease) => Some(lease),
                    None => {
                        tracing::warn!(run_id = %run_id, "stopping: the lease was lost");
                        return Ok(());
                    }
                },
            };
            // Checked before every transition that could start a step:
            // a freeze pauses the run before it, never mid-step.
            let hold = self
                .hold_for(&run.plan, &run.event_id, &mut run.requester)
                .await?;
            let now = self.now();
            let mut transition = engine::step_held(
                &run.machine,
                &run.plan,
                input,
                now,
                rand::random(),
                hold.as_ref(),
            )?;
            // Shutting down: the call this would start is left to whoever
            // drives the run next.
            if self.is_draining() {
                transition = engine::hand_over(transition, &self.inner.instance, now);
            }
            let instance = &self.inner.instance;
            // Nothing more to do here after this: the lease goes back with it.
            let last = transition.effect.is_none();
            let revision = run.revision;
            run.revision = match &current_lease {
                // The run's first transition here claims it in the same
                // commit; unless it, or a target, is held elsewhere.
                None => {
                    let ttl = self.inner.lease_ttl_ms as i64;
                    let committed = store
                        .claim_and_commit(run_id, instance, ttl, revision, &transition, now)
                        .await?;
                    let Some((lease, revision)) = committed else {
                        tracing::debug!(run_id = %run_id, "the run, or one of its targets, is held elsewhere");
                        return Ok(());
                    };
                    *claimed = Some(self.claimed(run_id, lease));
                    revision
                }
                Some(lease) if last => {
                    let revision = store
                        .commit_fenced_and_release(
                            run_id,
                            revision,
                            lease,
                            &transition,
                            instance,
                            now,
                        )
                        .await?;
                    if let Some(Claimed { heartbeat, .. }) = claimed.take() {
                        heartbeat.abort();
                    }
                    // Runs that waited for this one's targets can go now.
                    self.nudge();
                    revision
                }
                Some(lease) => {
                    store
                        .commit_fenced(run_id, revision, lease, &transition, instance, now)
                        .await?
                }
            };
            self.publish(run_id, &transition);
            tracing::debug!(run_id = %run_id, state = %transition.run.state, "transition committed");
            run.machine = transition.run;
            input = match self.perform(run_id, transition.effect).await {
                Some(input) => input,
                None => return Ok(()),
            };
        }
    }

    /// Performs a committed transition's `effect`: what the engine is fed
    /// next, or `None` when the driver stops here.
    async fn perform(&self, run_id: &str, effect: Option<Effect>) -> Option<Input> {
        match effect {
            None => None,
            Some(Effect::Call {
                phase,
                step_id,
                attempt,
                call,
            }) => {
                tracing::info!(run_id = %run_id, step = %step_id, phase = phase.as_str(), attempt, action = %call.action, "calling");
                Some(Input::CallFinished(self.inner.connectors.call(&call).await))
            }
            // A wait, or a start, is as good a place to stop as any:
            // whoever claims the run next takes it up from there.
            Some(Effect::WakeAt(until)) => {
                let delay = until.duration_since(self.now());
                if let Ok(delay) = std::time::Duration::try_from(delay) {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.draining_begins() => return None,
                    }
                }
                Some(Input::Wake)
            }
            Some(Effect::Begin) if self.is_draining() => None,
            Some(Effect::Begin) => Some(Input::Begin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::verdict_rests_on_the_plan;

    /// Whether a runbook with these `guardrails:` lines is decided on its
    /// plan alone.
    fn check(guardrails: &str, expect: bool) {
        let text = format!(
            "id: guarded\ntitle: Guarded\nowner: ops\nrisk: reversible\napproval: auto\n\
             match:\n  source: alertmanager\ntargets:\n  from: \"[event.subject]\"\n\
             steps:\n  - id: act\n    action: http.request\n    with: {{ method: POST, url: \"https://ops.example.com/act\" }}\n    idempotent: true\n\
             guardrails:\n{guardrails}"
        );
        let runbook = runbook::parse_runbook(
            std::path::Path::new("guarded.yaml"),
            &text,
            connectors::STEP_ACTIONS,
        )
        .unwrap_or_else(|problems| panic!("{problems:?}\n{text}"));
        assert_eq!(
            verdict_rests_on_the_plan(&runbook.guardrails),
            expect,
            "{guardrails}"
        );
    }

    #[test]
    fn only_guardrails_of_the_plan_alone_let_a_decision_stand() {
        check("  environments: [production]\n", true);
        check("  sensitive_targets: [\"db-prod-*\"]\n", true);
        check("  min_confidence: 0.8\n", true);
        // The clock.
        check(
            "  change_windows:\n    - { days: [sat, sun], time_zone: Europe/Berlin }\n",
            false,
        );
        check(
            "  freeze:\n    - { from: \"2026-12-20T00:00\", to: \"2027-01-04T00:00\", time_zone: UTC }\n",
            false,
        );
        check(
            "  business_hours: { days: [mon-fri], from: \"08:00\", to: \"18:00\", time_zone: UTC }\n",
            false,
        );
        // Other runs.
        check("  cooldown: { per: target, runs: 3, window: 1h }\n", false);
        check("  rate_limit: { runs: 10, window: 1h }\n", false);
        check("  max_concurrent: 2\n", false);
    }
}
