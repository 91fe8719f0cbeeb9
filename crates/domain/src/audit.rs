//! The audit log's vocabulary: every kind of record opsgate writes, in one
//! enum, so that the engine that records, the store that chains, the
//! write-back that tells a ticket and the CLI that narrates all name the
//! same kinds, and a new kind is added in one place. What a record is
//! stored as is its dotted name ([`RecordKind::as_str`]); records are
//! never rewritten, so a name, once written, never changes.

use serde::{Deserialize, Serialize};

macro_rules! record_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// What an audit record says happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RecordKind {
            $( $(#[$doc])* $variant, )*
        }

        impl RecordKind {
            /// Every kind, in the order they are declared.
            pub const ALL: &'static [RecordKind] = &[$(RecordKind::$variant),*];

            /// The dotted name the record is stored under.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( RecordKind::$variant => $name, )*
                }
            }

            /// The kind stored as `name`; `None` for a name this build does
            /// not know (a record written by a newer version).
            pub fn parse(name: &str) -> Option<RecordKind> {
                match name {
                    $( $name => Some(RecordKind::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

record_kinds! {
    /// An event was taken in.
    EventReceived => "event.received",
    /// No runbook matched the event.
    EventNoMatch => "event.no_match",
    /// The event's dedup key already has an open run.
    EventDuplicate => "event.duplicate",
    /// A resolved event withdrew a run still waiting.
    EventWithdrawsRun => "event.withdraws_run",
    /// A runbook's recurrence threshold was not reached yet.
    EventBelowRecurrence => "event.below_recurrence",
    /// An operator's freeze covers what the event would run: it is stored,
    /// and nothing runs.
    EventFrozen => "event.frozen",
    /// The event starts no run: its dedup key already had one and the
    /// problem was not resolved since, or the change it reports was
    /// opsgate's own.
    EventSuppressed => "event.suppressed",
    /// A runbook matched, but its plan could not be made.
    PlanFailed => "plan.failed",
    /// A run was born for a runbook.
    RunMatched => "run.matched",
    /// An agent proposed the run: everything it said (rationale,
    /// evidence, confidence, model, prompt), kept whole.
    RunProposed => "run.proposed",
    /// An agent's proposal was refused before anything was stored: outside
    /// its token's scope, or naming targets its plan does not act on.
    ProposalRefused => "proposal.refused",
    /// The run's plan: steps, targets, plan hash.
    RunPlanned => "run.planned",
    /// The gate's decision and its reasons.
    RunDecided => "run.decided",
    /// The run moved from one state to another.
    RunState => "run.state",
    /// A run in shadow mode stopped before any call: what it would have
    /// done (run, ask for approval, or refuse) and every request it would
    /// have sent.
    RunShadowed => "run.shadowed",
    /// A person resolved the ticket of a shadowed run: what they did,
    /// beside what opsgate would have done.
    ShadowResolved => "shadow.resolved",
    /// A run was taken up again after its driver stopped.
    RunRecovered => "run.recovered",
    /// The instance driving the run was shutting down: it stopped at a
    /// step boundary, before the next call, so another one goes on.
    RunHandedOver => "run.handed_over",
    /// A person cancelled the run (or ended a time-bound change early).
    RunCancelled => "run.cancelled",
    /// A freeze stopped the run before its next step.
    RunPaused => "run.paused",
    /// The freeze that paused the run was lifted (or expired): it goes on.
    RunResumed => "run.resumed",
    /// An input the run's state does not take (a late approval, …).
    RunInputRefused => "run.input_refused",
    /// A limit on how often the runbook may run (a cooldown, a rate
    /// limit, a concurrency cap, the global limit) kept the run from
    /// acting: what it would fix keeps coming back.
    RunHeldBack => "run.held_back",
    /// A new ticket about the problem the run works on was linked to it
    /// instead of starting a run of its own.
    RunLinked => "run.linked",
    /// The decision changed just before the run started.
    DecisionChanged => "decision.changed",
    /// Approval was asked for (the stages and who may give it).
    ApprovalRequested => "approval.requested",
    /// Someone approved.
    ApprovalGranted => "approval.granted",
    /// Someone denied.
    ApprovalDenied => "approval.denied",
    /// A stage that timed out widened to its next level.
    ApprovalEscalated => "approval.escalated",
    /// A stage got all the approvals it needs.
    ApprovalStagePassed => "approval.stage_passed",
    /// A stage timed out with no level left to widen to.
    ApprovalStageTimedOut => "approval.stage_timed_out",
    /// Nobody approved in time.
    ApprovalExpired => "approval.expired",
    /// An approval or denial that separation of duties forbade.
    ApprovalRefused => "approval.refused",
    /// A signed approval link was made (never the link itself).
    ApprovalLinkIssued => "approval.link_issued",
    /// A signed approval link was used to decide.
    ApprovalLinkUsed => "approval.link_used",
    /// A signed approval link was refused, or refused to be made.
    ApprovalLinkRefused => "approval.link_refused",
    /// A step's (or a rollback's, or a probe's) attempt began.
    AttemptStarted => "attempt.started",
    /// An attempt ended, with its outcome.
    AttemptFinished => "attempt.finished",
    /// A failed attempt will be tried again.
    AttemptRetryScheduled => "attempt.retry_scheduled",
    /// The precheck found the problem still there: the first step starts.
    PrecheckConfirmed => "precheck.confirmed",
    /// The precheck found the problem gone: the run does not act.
    PrecheckCleared => "precheck.cleared",
    /// The verification's expectation held.
    VerifySatisfied => "verify.satisfied",
    /// The verification's expectation did not hold in time.
    VerifyFailed => "verify.failed",
    /// The first remedy did not verify: the run (or the rollout's target)
    /// goes on to its second remedy, `then_if_unverified`.
    RemedyEscalated => "remedy.escalated",
    /// The second remedy failed or did not verify: the run stops and the
    /// runbook's on-call group is alerted, through the ticket and the chat.
    OnCallAlerted => "oncall.alerted",
    /// A rollout's batch started: its number and its targets.
    RolloutBatchStarted => "rollout.batch_started",
    /// A rollout's target is finished: done, failed, or its verification
    /// failed.
    RolloutTargetFinished => "rollout.target_finished",
    /// A rollout's batch ended: which of its targets are done, which failed.
    RolloutBatchFinished => "rollout.batch_finished",
    /// A rollout stopped short: why, the targets done, failed and
    /// untouched, and which of them are rolled back.
    RolloutHalted => "rollout.halted",
    /// A rollout acted on every target: the targets done (and failed).
    RolloutFinished => "rollout.finished",
    /// A time-bound change is in effect until its end.
    TimeBoundScheduled => "time_bound.scheduled",
    /// A time-bound change reached its end (or was ended early).
    TimeBoundEnded => "time_bound.ended",
    /// An operator froze automation (all of it, a runbook, targets, or
    /// what a principal proposes).
    FreezeIssued => "freeze.issued",
    /// A freeze was lifted before its end.
    FreezeLifted => "freeze.lifted",
    /// A classifier read a ticket no runbook's rules took and suggested a
    /// runbook (or none): the model, the prompt's version, the request sent
    /// and the answer received, and whether the suggestion is to be
    /// proposed or only written to the ticket.
    TriageSuggested => "triage.suggested",
    /// A classifier gave no suggestion (a timeout, a rate limit, a refusal,
    /// an answer that makes no sense, the endpoint unavailable): why, with
    /// what was sent and received, if anything.
    TriageFailed => "triage.failed",
    /// A request was refused (401, 403): the first of its kind in a window.
    ApiRefused => "api.refused",
    /// How many more refusals of one kind a window saw.
    ApiRefusedRepeated => "api.refused.repeated",
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RecordKind> for String {
    fn from(kind: RecordKind) -> String {
        kind.as_str().to_owned()
    }
}

impl PartialEq<&str> for RecordKind {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl PartialEq<str> for RecordKind {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

/// A stored record's kind (text, as read back) against a kind.
impl PartialEq<RecordKind> for String {
    fn eq(&self, kind: &RecordKind) -> bool {
        self == kind.as_str()
    }
}

impl PartialEq<RecordKind> for &str {
    fn eq(&self, kind: &RecordKind) -> bool {
        *self == kind.as_str()
    }
}

impl Serialize for RecordKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        RecordKind::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown audit record kind `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_and_reads_back() {
        let mut names = std::collections::HashSet::new();
        for kind in RecordKind::ALL {
            assert!(names.insert(kind.as_str()), "{kind} named twice");
            assert_eq!(RecordKind::parse(kind.as_str()), Some(*kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(serde_json::from_value::<RecordKind>(json).unwrap(), *kind);
        }
        assert_eq!(RecordKind::parse("event.unheard_of"), None);
    }

    /// The kinds are named here and nowhere else: no crate's code writes a
    /// kind's dotted name as a string (tests may, to pin the stored form).
    #[test]
    fn no_crate_writes_a_record_kind_as_text() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        let mut pending = vec![crates];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if !matches!(name.as_str(), "tests" | "benches" | "target") {
                        pending.push(path);
                    }
                    continue;
                }
                if !name.ends_with(".rs") || path.ends_with("domain/src/audit.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for kind in RecordKind::ALL {
                    if code.contains(&format!("\"{}\"", kind.as_str())) {
                        found.push(format!("{}: {kind}", path.display()));
                    }
                }
            }
        }
        assert!(found.is_empty(), "record kinds written as text: {found:#?}");
    }
}
