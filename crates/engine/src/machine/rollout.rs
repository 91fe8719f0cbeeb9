//! Batched rollouts: a plan with a `rollout` acts on one target after
//! another, each with its own rendered steps and probe, in batches.
//!
//! The run's ordinary machinery does the work on each target — steps,
//! retries, verification, freezes, gates, recovery — reading the current
//! target's calls (`Machine::steps`, `Machine::verification`). This module
//! decides what happens between targets: which target is next, where a
//! batch opens and ends (the blast-radius cap checked, a `pause` waited
//! through the same `WaitingUntil` as a retry's backoff, an approval asked
//! for after the canary), whether a stop condition holds, and what a
//! halted rollout undoes. Each of those is a record, so a long rollout
//! shows its progress and a halt tells who takes over exactly which
//! targets are done, failed and untouched.
//!
//! A target that fails does not stop the rollout unless a stop condition
//! says so; its completed steps are undone when the rollout stops (halted
//! or finished), whatever the runbook's `rollback` choice, which says only
//! which *done* targets are undone too.

use domain::{HaltRollback, RecordKind, Rollout, RunState, StepPhase};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Current, Machine, WaitOrFlight};
use crate::approval::Stage;

/// Where a rollout is, kept in the run's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The target (index into `plan.rollout.targets`) being acted on — or,
    /// while rolling back, being undone.
    pub target: usize,
    /// True once the current target's batch has started (its cap checked
    /// and `rollout.batch_started` recorded).
    pub batch_open: bool,
    /// What became of each target, in the plan's order.
    pub outcomes: Vec<TargetOutcome>,
    /// Targets still to undo after the current one, the next one last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_targets: Vec<usize>,
    /// Set when the rollout stopped before its end, or ended with failed
    /// targets: the run ends `needs_human` after its rollbacks, because
    /// changes remain (done targets not undone, or a fix that did not fix).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaves_changes: bool,
    /// Set when the rollout stopped (halted, finished with failures,
    /// cancelled): its rollback ends the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The run waits for the approval to go on past the canary batch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_gate: bool,
}

impl RolloutProgress {
    pub(crate) fn new(rollout: &Rollout) -> RolloutProgress {
        RolloutProgress {
            outcomes: vec![TargetOutcome::default(); rollout.targets.len()],
            ..RolloutProgress::default()
        }
    }
}

/// One target's fate, and the steps that succeeded on it (what its
/// rollback undoes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetOutcome {
    pub state: TargetState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Nothing was sent to it.
    #[default]
    Untouched,
    /// Every step succeeded and its verification held.
    Done,
    /// A step failed (or was stopped part-way).
    Failed,
    /// Its steps ran and its verification did not hold.
    VerifyFailed,
}

impl TargetState {
    fn as_str(self) -> &'static str {
        match self {
            TargetState::Untouched => "untouched",
            TargetState::Done => "done",
            TargetState::Failed => "failed",
            TargetState::VerifyFailed => "verify_failed",
        }
    }

    fn is_failed(self) -> bool {
        matches!(self, TargetState::Failed | TargetState::VerifyFailed)
    }
}

impl<'a> Machine<'a> {
    fn rollout_plan(&self) -> &'a Rollout {
        let plan: &'a domain::Plan = self.plan;
        plan.rollout
            .as_ref()
            .expect("only a plan with a rollout has rollout progress")
    }

    fn rollout_progress(&mut self) -> &mut RolloutProgress {
        self.run
            .progress
            .rollout
            .as_mut()
            .expect("a rollout's run has rollout progress")
    }

    /// True when the current target's batch has not started yet: its
    /// first step's call is not due before the batch opens.
    pub(super) fn batch_waits_to_open(&self) -> bool {
        self.run
            .progress
            .rollout
            .as_ref()
            .is_some_and(|progress| !progress.batch_open)
    }

    /// Opens the current target's batch: the blast-radius cap is checked
    /// again (the targets acted on so far and this batch), the batch is
    /// recorded, and its first target's first step starts. A freeze holds
    /// the run before the batch opens.
    pub(super) fn open_batch(&mut self) {
        if let Some(hold) = self.hold {
            self.held(hold, 0, 1);
            return;
        }
        let rollout = self.rollout_plan();
        let target = self.run.progress.rollout.as_ref().map_or(0, |p| p.target);
        let batch = rollout.batch_of(target);
        let members = rollout.batch_targets(batch);
        let acted = self
            .targets_in(|state| state != TargetState::Untouched)
            .len();
        let cap = rollout.max_targets as usize;
        if acted + members.len() > cap {
            let why = format!(
                "batch {} would bring the targets acted on to {}, over the blast-radius cap of {cap} (`max_targets`)",
                batch + 1,
                acted + members.len()
            );
            self.stop(why, StopKind::Halted);
            return;
        }
        let names: Vec<&str> = members
            .clone()
            .map(|index| rollout.targets[index].target.as_str())
            .collect();
        self.record(
            RecordKind::RolloutBatchStarted,
            json!({"batch": batch + 1, "of": rollout.batches.len(), "targets": names}),
        );
        self.rollout_progress().batch_open = true;
        self.start_step(0);
    }

    /// The current target is finished: done, or failed (`why` says how).
    /// Then the next target starts, the batch ends, or a stop condition
    /// halts the rollout.
    pub(super) fn target_finished(&mut self, state: TargetState, why: Option<String>) {
        let second_remedy = std::mem::take(&mut self.run.progress.second_remedy);
        let completed = std::mem::take(&mut self.run.progress.completed);
        self.run.progress.current = None;
        self.run.progress.verify_deadline = None;
        let target = {
            let progress = self.rollout_progress();
            progress.outcomes[progress.target] = TargetOutcome { state, completed };
            progress.target
        };
        let rollout = self.rollout_plan();
        let name = rollout.targets[target].target.clone();
        self.record(
            RecordKind::RolloutTargetFinished,
            json!({"target": name, "outcome": state.as_str(), "reason": why}),
        );
        if second_remedy && state.is_failed() {
            // Both remedies were tried and the target is still not fixed:
            // whatever the stop conditions say, the rollout goes no
            // further, and on-call is told.
            let why = format!(
                "the second remedy did not fix {name}: {}",
                why.unwrap_or_default()
            );
            self.alert_on_call(&why);
            self.stop(why, StopKind::Halted);
            return;
        }
        if let Some(why) = self.stop_after_target(state) {
            self.stop(why, StopKind::Halted);
            return;
        }
        let rollout = self.rollout_plan();
        let batch = rollout.batch_of(target);
        let next = target + 1;
        if next < rollout.targets.len() && rollout.batch_of(next) == batch {
            self.rollout_progress().target = next;
            self.start_step(0);
            return;
        }
        self.batch_finished(batch, next);
    }

    /// The last target of batch `batch` is finished; `next` opens the next
    /// batch, if there is one.
    fn batch_finished(&mut self, batch: usize, next: usize) {
        let rollout = self.rollout_plan();
        let members = rollout.batch_targets(batch);
        let in_batch = |wanted: fn(TargetState) -> bool| {
            let indices: Vec<usize> = self
                .targets_in(wanted)
                .into_iter()
                .filter(|index| members.contains(index))
                .collect();
            self.target_names(&indices)
        };
        let detail = json!({
            "batch": batch + 1, "of": rollout.batches.len(),
            "done": in_batch(|state| state == TargetState::Done),
            "failed": in_batch(TargetState::is_failed),
        });
        self.record(RecordKind::RolloutBatchFinished, detail);
        if let Some(why) = self.stop_after_batch() {
            self.stop(why, StopKind::Halted);
            return;
        }
        let rollout = self.rollout_plan();
        if next >= rollout.targets.len() {
            self.rollout_finished();
            return;
        }
        let (approve_after_canary, pause_ms) = (rollout.approve_after_canary, rollout.pause_ms);
        let progress = self.rollout_progress();
        progress.target = next;
        progress.batch_open = false;
        if batch == 0 && approve_after_canary {
            // The canary did what it should: a person says whether the
            // rest goes ahead. Their approval takes the place of the pause.
            self.rollout_progress().canary_gate = true;
            let mut stage = Stage::any_approver(1);
            stage.name = "past the canary".to_owned();
            self.enter(RunState::AwaitingApproval);
            self.request_approval(vec![stage], None);
            return;
        }
        if pause_ms == 0 {
            self.open_batch();
            return;
        }
        // The pause is a wait like a retry's backoff: committed with the
        // run, so a restart waits out what is left of it.
        let until = self.after(pause_ms);
        self.run.progress.current = Some(Current {
            phase: StepPhase::Step,
            step_index: 0,
            attempt: 0,
            status: WaitOrFlight::WaitingUntil(until),
        });
        self.ask(super::Effect::WakeAt(until));
    }

    /// Every target was acted on and no stop condition held.
    fn rollout_finished(&mut self) {
        let failed = self.targets_in(TargetState::is_failed);
        if failed.is_empty() {
            let done = self.target_names(&self.targets_in(|state| state == TargetState::Done));
            self.record(RecordKind::RolloutFinished, json!({"done": done}));
            self.succeed();
            return;
        }
        let why = format!(
            "the rollout reached its end with {} failed target(s)",
            failed.len()
        );
        self.stop(why, StopKind::FinishedWithFailures);
    }

    /// A stop condition that holds once a target is finished: as many
    /// failures as `stop_when.failures`, or a failed verification when
    /// `stop_when.verify_failed`.
    fn stop_after_target(&self, state: TargetState) -> Option<String> {
        let stop_when = &self.rollout_plan().stop_when;
        if state == TargetState::VerifyFailed && stop_when.verify_failed {
            return Some("a target's verification failed (`stop_when.verify_failed`)".to_owned());
        }
        let failed = self.targets_in(TargetState::is_failed).len();
        match stop_when.failures {
            Some(limit) if state.is_failed() && failed >= limit as usize => Some(format!(
                "{failed} target(s) failed (`stop_when.failures: {limit}`)"
            )),
            _ => None,
        }
    }

    /// `stop_when.failure_rate`, judged when a batch ends, over every
    /// target acted on so far.
    fn stop_after_batch(&self) -> Option<String> {
        let percent = self.rollout_plan().stop_when.failure_rate_percent?;
        let acted = self
            .targets_in(|state| state != TargetState::Untouched)
            .len();
        let failed = self.targets_in(TargetState::is_failed).len();
        (failed > 0 && failed * 100 >= acted * percent as usize).then(|| {
            format!(
                "{failed} of {acted} targets failed, at least {percent}% (`stop_when.failure_rate`)"
            )
        })
    }

    /// The rollout stops short or ends with failures: what is done,
    /// failed and untouched is recorded, the rollbacks its runbook declares
    /// start (a failed target's always, done targets' as `rollback` says),
    /// and the run ends once they ran.
    pub(super) fn stop(&mut self, why: String, kind: StopKind) {
        self.run.progress.current = None;
        let rollout = self.rollout_plan();
        let current = self.run.progress.rollout.as_ref().map_or(0, |p| p.target);
        let batch = rollout.batch_of(current);
        let halting_batch = rollout.batch_targets(batch);
        let scope = rollout.rollback;
        let outcomes = self.rollout_progress().outcomes.clone();
        let undone: Vec<usize> = (0..outcomes.len())
            .filter(|&index| {
                let state = outcomes[index].state;
                match kind {
                    // Stopped by a person or a freeze: everything acted on
                    // is undone, as a cancelled run undoes its steps.
                    StopKind::Cancelled => state != TargetState::Untouched,
                    StopKind::FinishedWithFailures => state.is_failed(),
                    StopKind::Halted => {
                        state.is_failed()
                            || (state == TargetState::Done
                                && (scope == HaltRollback::AllDone
                                    || halting_batch.contains(&index)))
                    }
                }
            })
            .collect();
        let leaves_changes = outcomes.iter().enumerate().any(|(index, outcome)| {
            outcome.state == TargetState::VerifyFailed
                || (outcome.state == TargetState::Done && !undone.contains(&index))
        }) || kind == StopKind::FinishedWithFailures;
        let record_kind = match kind {
            StopKind::FinishedWithFailures => RecordKind::RolloutFinished,
            StopKind::Halted | StopKind::Cancelled => RecordKind::RolloutHalted,
        };
        let mut detail = self.target_lists();
        detail["reason"] = json!(why);
        detail["rollback"] = json!(scope.as_str());
        // Named as rolled back: the targets with a completed step to undo.
        let rolled_back: Vec<usize> = undone
            .iter()
            .copied()
            .filter(|&index| {
                let steps = &rollout.targets[index].steps;
                outcomes[index]
                    .completed
                    .iter()
                    .any(|&step| steps[step].rollback.is_some())
            })
            .collect();
        detail["rolled_back"] = json!(self.target_names(&rolled_back));
        self.record(record_kind, detail);
        let progress = self.rollout_progress();
        progress.stopped = true;
        progress.leaves_changes = leaves_changes;
        // Undone newest first: the last target acted on is popped first.
        progress.rollback_targets = undone;
        self.run.progress.rollback_pending.clear();
        if kind == StopKind::Cancelled {
            // Cancelled from outside the driver (a person, while paused)
            // or by a freeze: the first rollback is made due now and
            // `Begin` sends it, which every caller carries out.
            self.run.progress.cancelled = true;
            self.enter(RunState::RollingBack);
            self.first_rollback_due_or_end(RunState::Cancelled);
            return;
        }
        self.run.reason = Some(match kind {
            StopKind::FinishedWithFailures => why,
            _ => format!("rollout halted: {why}"),
        });
        self.enter(RunState::Failed);
        self.enter(RunState::RollingBack);
        self.next_rollback();
    }

    /// The next rollback to make: the current target's next one, or the
    /// first of the next target to undo. `None` when none is left.
    pub(super) fn pop_rollback(&mut self) -> Option<usize> {
        loop {
            if let Some(index) = self.run.progress.rollback_pending.pop() {
                return Some(index);
            }
            if !self.next_target_to_undo() {
                return None;
            }
        }
    }

    /// The next target to undo, once the current one's rollbacks ran:
    /// its completed steps with a rollback are queued. False when none is
    /// left.
    fn next_target_to_undo(&mut self) -> bool {
        let Some(progress) = self.run.progress.rollout.as_mut() else {
            return false;
        };
        let Some(target) = progress.rollback_targets.pop() else {
            return false;
        };
        progress.target = target;
        let completed = progress.outcomes[target].completed.clone();
        let steps = &self.rollout_plan().targets[target].steps;
        self.run.progress.rollback_pending = completed
            .into_iter()
            .filter(|&index| steps[index].rollback.is_some())
            .collect();
        true
    }

    /// How a stopped rollout's run ends once its rollbacks ran: `None`
    /// when the run is no rollout that stopped.
    pub(super) fn stopped_rollout_ends(&self) -> Option<RunState> {
        let progress = self.run.progress.rollout.as_ref()?;
        if !progress.stopped {
            return None;
        }
        Some(if self.run.progress.cancelled {
            RunState::Cancelled
        } else if progress.leaves_changes {
            RunState::NeedsHuman
        } else {
            RunState::RolledBack
        })
    }

    /// A person or a freeze cancels a rollout part-way: the current
    /// target's completed steps count as a failed target's, and
    /// everything acted on is undone.
    pub(super) fn cancel_rollout(&mut self, by: String, reason: String) {
        self.record(
            RecordKind::RunCancelled,
            json!({"by": by, "reason": reason}),
        );
        self.run.reason = Some(reason.clone());
        let completed = std::mem::take(&mut self.run.progress.completed);
        let progress = self.rollout_progress();
        progress.canary_gate = false;
        let target = progress.target;
        if !completed.is_empty() {
            progress.outcomes[target] = TargetOutcome {
                state: TargetState::Failed,
                completed,
            };
        }
        self.stop(format!("cancelled by {by}"), StopKind::Cancelled);
    }

    /// The approval to go on past the canary was denied, or expired: the
    /// rollout stops where it is. The canary's targets stay done — they
    /// were verified — and a person takes over.
    pub(super) fn canary_gate_closed(&mut self, why: String) {
        self.rollout_progress().canary_gate = false;
        self.halt_undoing_nothing(why);
    }

    /// A call's outcome is unknown on a rollout's target: nothing is
    /// guessed and nothing undone — the rollout halts, and a person takes
    /// over with the lists.
    pub(super) fn rollout_outcome_unknown(&mut self, reason: String) {
        let completed = std::mem::take(&mut self.run.progress.completed);
        let progress = self.rollout_progress();
        let target = progress.target;
        progress.outcomes[target] = TargetOutcome {
            state: TargetState::Failed,
            completed,
        };
        self.halt_undoing_nothing(reason);
    }

    /// The second remedy on the current target was denied, or nobody
    /// approved it in time: the target stays as the first remedy left it
    /// (its verification failed), and the rollout halts where it is,
    /// undoing nothing — a person decides, with the lists.
    pub(super) fn second_remedy_refused(&mut self, why: String) {
        self.run.progress.second_remedy = false;
        self.run.progress.gate = None;
        let completed = std::mem::take(&mut self.run.progress.completed);
        let progress = self.rollout_progress();
        let target = progress.target;
        progress.outcomes[target] = TargetOutcome {
            state: TargetState::VerifyFailed,
            completed,
        };
        self.halt_undoing_nothing(why);
    }

    /// The rollout stops where it is and a person takes over with the
    /// lists: `rollout.halted`, nothing rolled back, `needs_human`.
    fn halt_undoing_nothing(&mut self, why: String) {
        let mut detail = self.target_lists();
        detail["reason"] = json!(why);
        detail["rollback"] = Value::Null;
        detail["rolled_back"] = json!([]);
        self.record(RecordKind::RolloutHalted, detail);
        self.run.reason = Some(format!("rollout halted: {why}"));
        self.enter(RunState::NeedsHuman);
    }

    /// `{"done": [...], "failed": [...], "untouched": [...]}`, by name.
    fn target_lists(&self) -> Value {
        json!({
            "done": self.target_names(&self.targets_in(|state| state == TargetState::Done)),
            "failed": self.target_names(&self.targets_in(TargetState::is_failed)),
            "untouched": self.target_names(&self.targets_in(|state| state == TargetState::Untouched)),
        })
    }

    fn targets_in(&self, wanted: impl Fn(TargetState) -> bool) -> Vec<usize> {
        let Some(progress) = self.run.progress.rollout.as_ref() else {
            return Vec::new();
        };
        (0..progress.outcomes.len())
            .filter(|&index| wanted(progress.outcomes[index].state))
            .collect()
    }

    fn target_names(&self, indices: &[usize]) -> Vec<String> {
        let rollout = self.rollout_plan();
        indices
            .iter()
            .map(|&index| rollout.targets[index].target.clone())
            .collect()
    }

    /// The current target's name, for the records of its calls.
    pub(super) fn current_target(&self) -> Option<&str> {
        let progress = self.run.progress.rollout.as_ref()?;
        let rollout = self.plan.rollout.as_ref()?;
        Some(rollout.targets[progress.target].target.as_str())
    }

    /// Whether the run has acted on anything yet (a paused rollout that
    /// resumes before its first target reads its precheck again).
    pub(super) fn acted_on_nothing(&self) -> bool {
        self.run.progress.completed.is_empty()
            && self.run.progress.rollout.as_ref().is_none_or(|progress| {
                progress
                    .outcomes
                    .iter()
                    .all(|outcome| outcome.state == TargetState::Untouched)
            })
    }
}

/// Why a rollout stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopKind {
    /// A stop condition held (or the blast-radius cap).
    Halted,
    /// Every target was acted on, and some failed.
    FinishedWithFailures,
    /// A person or a freeze cancelled the run.
    Cancelled,
}
