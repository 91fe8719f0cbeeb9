//! Plans and decisions: what a run will do, and whether it may.

use serde::{Deserialize, Serialize};

/// How dangerous a runbook is, as its author declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RiskClass {
    ReadOnly,
    Reversible,
    Irreversible,
}

impl RiskClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskClass::ReadOnly => "read_only",
            RiskClass::Reversible => "reversible",
            RiskClass::Irreversible => "irreversible",
        }
    }
}

/// Which failures of an attempt are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "on", content = "value")]
pub enum RetryOn {
    /// The connection could not be made.
    Connect,
    /// The attempt ran past its timeout.
    Timeout,
    /// The peer answered with this HTTP status.
    Status(u16),
    /// The command exited with this code.
    ExitCode(i32),
}

/// Attempts with exponential backoff and equal jitter; a `Retry-After` from
/// the peer overrides the computed delay when it is longer, up to
/// [`RetryPolicy::RETRY_AFTER_CEILING_MS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial_ms: u64,
    pub max_delay_ms: u64,
    pub multiplier: f64,
    pub jitter: bool,
    pub retry_on: Vec<RetryOn>,
}

impl RetryPolicy {
    /// The longest wait a peer's `Retry-After` can impose (one hour): a
    /// peer must not be able to park a run for days, or overflow the clock.
    pub const RETRY_AFTER_CEILING_MS: u64 = 3_600_000;

    /// One attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            initial_ms: 1000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
            jitter: true,
            retry_on: Vec::new(),
        }
    }

    /// The delay before attempt `next_attempt` (2 for the first retry), given a
    /// uniform random number in `[0, 1)` for the jitter and the peer's
    /// `Retry-After`, if it sent one.
    pub fn delay_ms(
        &self,
        next_attempt: u32,
        unit_random: f64,
        retry_after_ms: Option<u64>,
    ) -> u64 {
        let exponent = next_attempt.saturating_sub(2).min(30) as i32;
        let ceiling =
            (self.initial_ms as f64 * self.multiplier.powi(exponent)).min(self.max_delay_ms as f64);
        let computed = if self.jitter {
            // "Equal jitter": half fixed, half random, so a retry never fires
            // immediately yet concurrent retries spread out.
            ceiling / 2.0 + ceiling / 2.0 * unit_random.clamp(0.0, 1.0)
        } else {
            ceiling
        } as u64;
        match retry_after_ms {
            Some(peer) => computed.max(peer.min(Self::RETRY_AFTER_CEILING_MS)),
            None => computed,
        }
    }
}

/// One call to a connector, fully rendered: `action` names the connector
/// operation (`http.request`, `command.run`), `request` holds its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedCall {
    pub action: String,
    pub request: serde_json::Value,
    pub timeout_ms: u64,
}

impl PlannedCall {
    /// What a person reads to know what the call does: `POST https://…/restart`
    /// for an HTTP request, the command line for a command.
    pub fn describe(&self) -> String {
        let request = &self.request;
        if let (Some(method), Some(url)) = (request["method"].as_str(), request["url"].as_str()) {
            return format!("{method} {url}");
        }
        if let Some(argv) = request["argv"].as_array() {
            return argv
                .iter()
                .map(|arg| arg.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" ");
        }
        request.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedStep {
    pub id: String,
    pub call: PlannedCall,
    pub retry: RetryPolicy,
    pub idempotent: bool,
    pub rollback: Option<PlannedCall>,
    /// The run pauses before this step until it is approved on its own
    /// (a mid-run gate). Left out of the plan's JSON when false, so plans
    /// without gates keep their hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
    /// The step belongs to the second remedy (`then_if_unverified`): it
    /// runs only once the steps before it did not verify. Left out of the
    /// plan's JSON when false, so other plans keep their hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_unverified: bool,
}

/// How the outcome is proven: `probe` is called every `every_ms` until
/// `expect` (an expression over `response`) holds or `within_ms` has passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verification {
    pub probe: PlannedCall,
    pub expect: String,
    pub within_ms: u64,
    pub every_ms: u64,
}

/// What is read just before the first step, to see that the problem is
/// still there: `probe` is called once, and `expect` (an expression over
/// `response`) must hold, or the run does not act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Precheck {
    pub probe: PlannedCall,
    pub expect: String,
}

/// A fully resolved invocation of one runbook version for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    pub runbook_id: String,
    pub runbook_version: String,
    pub title: String,
    pub risk: RiskClass,
    pub inputs: serde_json::Value,
    pub targets: Vec<String>,
    /// Read before the first step: is the problem still there? Left out
    /// of the plan's JSON when there is none, so other plans keep their
    /// hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<Precheck>,
    /// The steps, rendered once for all targets; for a rollout, as
    /// rendered for its first target (`rollout.targets[0]`), so that
    /// everything reading a plan's steps by index (their ids, retries,
    /// gates) reads what every target's steps share.
    pub steps: Vec<PlannedStep>,
    /// As `steps`: for a rollout, the first target's probe.
    pub verify: Option<Verification>,
    /// A batched rollout: the steps and verification run target by target,
    /// in batches, each target's own rendered here. Left out of the plan's
    /// JSON when there is none, so other plans keep their hash; part of the
    /// hash when there is one, so an approval binds to the batches and the
    /// stop conditions too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// When a time-bound plan's change ends: once the run has succeeded it
    /// stays `in_effect` until then, and its steps are undone at this time.
    /// Left out of the plan's JSON when there is none, so other plans keep
    /// their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ends_at: Option<jiff::Timestamp>,
    /// Who is alerted when the second remedy fails too: the runbook's
    /// `on_failure.escalate_to` group. Set only for a plan with a second
    /// remedy (left out of the JSON otherwise, so other plans keep their
    /// hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call: Option<String>,
    /// SHA-256 over the canonical JSON of everything above.
    pub plan_hash: String,
}

impl Plan {
    /// Computes the hash over every field but the hash itself.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.plan_hash = String::new();
        let value = serde_json::to_value(&unhashed).expect("a plan always serialises");
        crate::sha256_hex(crate::canonical_json(&value).as_bytes())
    }
}

/// A rollout: the plan's steps, rendered once per target, run on one
/// target after another in batches — the canary batch first — with a pause
/// between batches, halting when a stop condition holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rollout {
    /// Every target with its own calls, in the order they are acted on.
    pub targets: Vec<TargetPlan>,
    /// How many targets each batch takes, in order (the canary batch
    /// first); they add up to the number of targets.
    pub batches: Vec<usize>,
    /// The wait between the end of one batch and the start of the next.
    pub pause_ms: u64,
    pub stop_when: StopWhen,
    /// What a halted rollout undoes.
    pub rollback: HaltRollback,
    /// The run waits for an approval after the canary batch.
    pub approve_after_canary: bool,
    /// The blast-radius cap (the runbook's `max_targets`): checked again
    /// before each batch against the targets acted on so far.
    pub max_targets: u32,
}

impl Rollout {
    /// The batch (index into `batches`) target `index` belongs to.
    pub fn batch_of(&self, index: usize) -> usize {
        let mut end = 0;
        for (batch, &size) in self.batches.iter().enumerate() {
            end += size;
            if index < end {
                return batch;
            }
        }
        self.batches.len()
    }

    /// The indices (into `targets`) of batch `batch`'s targets.
    pub fn batch_targets(&self, batch: usize) -> std::ops::Range<usize> {
        let first: usize = self.batches.iter().take(batch).sum();
        first..first + self.batches.get(batch).copied().unwrap_or(0)
    }
}

/// One target of a rollout and the calls made for it: the runbook's steps
/// and probe rendered with `target` set to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetPlan {
    pub target: String,
    pub steps: Vec<PlannedStep>,
    pub verify: Option<Verification>,
}

/// When a rollout halts. Each condition that is set is checked as each
/// target finishes, but `failure_rate`, which is judged at the end of a
/// batch: a rate over the first one or two targets of a batch is noise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopWhen {
    /// Halt once this many targets failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Halt at a batch's end once at least this share (in percent) of the
    /// targets acted on failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_percent: Option<u32>,
    /// Halt as soon as a target's verification fails.
    #[serde(default)]
    pub verify_failed: bool,
}

/// What a halted rollout rolls back, through the rollbacks its steps
/// declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HaltRollback {
    /// The targets of the batch that halted (done or failed); earlier
    /// batches stay done.
    #[default]
    FailedBatch,
    /// Every target acted on.
    AllDone,
}

impl HaltRollback {
    pub fn as_str(self) -> &'static str {
        match self {
            HaltRollback::FailedBatch => "failed_batch",
            HaltRollback::AllDone => "all_done",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Allow,
    RequireApproval,
    Deny,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::RequireApproval => "require_approval",
            DecisionKind::Deny => "deny",
        }
    }
}

/// The gate's answer for a plan, with the reasons a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    pub kind: DecisionKind,
    pub reasons: Vec<String>,
    /// For `require_approval`: how long the run may wait for its approval
    /// before it ends `expired`. `None`: it waits until someone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after_ms: Option<u64>,
    /// For `require_approval` without `stages`: how many distinct people
    /// with the approver role must approve.
    #[serde(default = "one_approval")]
    pub approvals_required: u32,
    /// For `require_approval`: the approval chain, stages in order. Empty:
    /// one stage of `approvals_required` approvers, anyone with the role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<ApprovalStage>,
    /// The version (hash) of the organisation's policy set that took part
    /// in this decision; `None` when no policy set is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
}

/// One stage of an approval chain, as a runbook or a policy asks for it.
/// Approvers are references the directory resolves when the stage opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalStage {
    pub name: String,
    /// Who may approve: `user:NAME`, `group:NAME`, `manager_of(requester)`,
    /// `owner_of(ci)`, `backup_of(user:NAME)`.
    pub approvers: Vec<String>,
    #[serde(default)]
    pub rule: StageRule,
    /// How long the stage waits before it escalates. `None`: it waits until
    /// the run's own approval expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Who is added, one reference per timeout, when the stage times out.
    /// Empty: the backups of the stage's approvers, then `group:on-call`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<String>,
}

/// How many of a stage's approvers must approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StageRule {
    /// Any one of them.
    #[default]
    Any,
    /// Every one of them (an absent one through their stand-in).
    All,
    /// At least this many distinct ones.
    AtLeast(u32),
}

fn one_approval() -> u32 {
    1
}
