//! The harness: a plan and a script of timed inputs, both written as a few
//! lines of text, played through `engine::step` into a one-line-per-input
//! trace that a case compares with what it expects.
//!
//! Plans and scripts are text rather than builders so that a case reads as
//! data, top to bottom, the way a person would tell the story of a run. The
//! clock is part of the script (`@1.5s wake`): nothing here sleeps.
//!
//! Every transition is also checked against the invariants that hold
//! whatever the case (see [`check_invariants`]), so each case tests more than
//! its trace shows.
//!
//! Plan lines:
//!
//! ```text
//! step <id> [rollback] [idempotent] [gated] [retry=<attempts>] [on=503,connect,timeout,exit:75]
//!           [initial=<dur>] [max=<dur>] [multiplier=<x>] [nojitter]
//! verify [within=<dur>] [every=<dur>]: <expectation over `response`>
//! then <id> [step options]      a step of the second remedy (`if_unverified`),
//!                               run when verification fails; the first is gated
//! on_call <group>               who is alerted when the second remedy fails too
//! until <time>                  a time-bound plan: its change ends then
//! rollout <n> [canary=<k>] batch=<m> [pause=<dur>] [failures=<f>] [rate=<percent>]
//!         [verify_failed] [all_done] [approve_after_canary] [cap=<max_targets>]
//!                               the steps run on targets t1..tn, in batches
//! ```
//!
//! In a rollout, each target's calls carry its name, and a call is shown as
//! `call step s1@t2 #1`.
//!
//! `retry=N` gives the defaults of the runbook format (1s initial, 30s max,
//! ×2, jitter, on connect, timeout, 429, 502, 503, 504); without it a step has
//! one attempt. `within` defaults to 60s and `every` to 5s.
//!
//! Script lines (the first may choose the gate's decision; it is `allow`
//! otherwise):
//!
//! ```text
//! gate allow | gate require_approval | gate deny: <reasons, `; `-separated>
//! rand=<x>                      the `unit_random` for the inputs that follow (default 0.5)
//! @<time> begin | wake | recover
//! @<time> approve <by> | deny <by> | cancel <by>: <reason>
//! @<time> ok                    a call succeeded
//! @<time> probe <json>          a call succeeded with `{"status": 200, "json": <json>}`
//! @<time> fail <cause> [retry-after=<dur>]   cause: connect, timeout, other, exit:N or a status
//! @<time> unknown: <reason>
//! ```
//!
//! Durations are `250ms`, `1.5s` or bare milliseconds; every time is relative
//! to the same instant and is printed back in seconds.

use domain::{
    AttemptOutcome, Decision, DecisionKind, FailureCause, Plan, PlannedCall, PlannedStep, RetryOn,
    RetryPolicy, RiskClass, StepPhase, Verification,
};
use engine::{Current, Effect, Input, Record, Run, Transition, WaitOrFlight};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// Plays `script` against `plan` and compares the trace with `expect`.
/// Lines are compared with their surrounding whitespace trimmed and blank
/// lines dropped, so expectations can be indented like the code around them.
#[track_caller]
pub fn check(plan_spec: &str, script: &str, expect: &str) {
    let actual = trace(&plan(plan_spec), script);
    let normalise = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    };
    if normalise(&actual) != normalise(expect) {
        panic!(
            "trace differs\n--- expected\n{}\n--- actual\n{}\n",
            normalise(expect).join("\n"),
            actual
        );
    }
}

/// The instant every script's times are relative to.
pub fn epoch() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("a valid timestamp")
}

pub fn at(ms: i64) -> Timestamp {
    epoch() + SignedDuration::from_millis(ms)
}

fn since_epoch(time: Timestamp) -> String {
    let ms = time.duration_since(epoch()).as_millis();
    format!("{}s", ms as f64 / 1000.0)
}

/// Parses `250ms`, `1.5s` or `250`.
pub fn millis(text: &str) -> u64 {
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<f64>().ok()
    } else if let Some(seconds) = text.strip_suffix('s') {
        seconds.parse::<f64>().ok().map(|seconds| seconds * 1000.0)
    } else {
        text.parse::<f64>().ok()
    };
    let ms = parsed.unwrap_or_else(|| panic!("not a duration: `{text}`"));
    ms.round() as u64
}

// ---------------------------------------------------------------- plans

pub fn plan(spec: &str) -> Plan {
    let mut steps = Vec::new();
    let mut verify = None;
    let mut precheck = None;
    let mut ends_at = None;
    let mut rollout_spec = None;
    let mut on_call = None;
    for line in spec.lines().map(str::trim).filter(|line| !line.is_empty()) {
        // `precheck: <expect>`: the read before the first step.
        if let Some(expect) = line.strip_prefix("precheck:") {
            precheck = Some(domain::Precheck {
                probe: planned_call("probe", "precheck"),
                expect: expect.trim().to_owned(),
            });
        } else if let Some(rest) = line.strip_prefix("step ") {
            steps.push(planned_step(rest));
        } else if let Some(rest) = line.strip_prefix("then ") {
            // As a runbook draws it: the second remedy's first step asks
            // for its own approval.
            let first = !steps.iter().any(|step: &PlannedStep| step.if_unverified);
            let mut step = planned_step(rest);
            step.if_unverified = true;
            step.requires_approval |= first;
            steps.push(step);
        } else if let Some(group) = line.strip_prefix("on_call ") {
            on_call = Some(group.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("rollout ") {
            rollout_spec = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("until ") {
            ends_at = Some(at(millis(rest.trim()) as i64));
        } else if let Some(rest) = line.strip_prefix("verify") {
            verify = Some(verification(rest));
        } else {
            panic!("not a plan line: `{line}`");
        }
    }
    let rollout = rollout_spec.map(|spec| rollout(&spec, &steps, verify.as_ref()));
    if let Some(rollout) = &rollout {
        steps = rollout.targets[0].steps.clone();
        verify = rollout.targets[0].verify.clone();
    }
    let mut plan = Plan {
        precheck,
        runbook_id: "restart-service".to_owned(),
        runbook_version: "v1".to_owned(),
        title: "Restart the service".to_owned(),
        risk: RiskClass::Reversible,
        inputs: json!({}),
        targets: vec!["web-01".to_owned()],
        steps,
        verify,
        ends_at,
        rollout,
        on_call,
        plan_hash: String::new(),
    };
    plan.plan_hash = plan.compute_hash();
    plan
}

/// A rollout over targets `t1`..`tn`: each target's steps and probe are
/// `steps` and `verify` with the target's name in every request.
fn rollout(spec: &str, steps: &[PlannedStep], verify: Option<&Verification>) -> domain::Rollout {
    let mut words = spec.split_whitespace();
    let count: usize = words
        .next()
        .and_then(|n| n.parse().ok())
        .expect("rollout <n>");
    let mut canary = 0;
    let mut batch = 1;
    let mut rollout = domain::Rollout {
        targets: Vec::new(),
        batches: Vec::new(),
        pause_ms: 0,
        stop_when: domain::StopWhen {
            failures: None,
            failure_rate_percent: None,
            verify_failed: false,
        },
        rollback: domain::HaltRollback::FailedBatch,
        approve_after_canary: false,
        max_targets: count as u32,
    };
    for word in words {
        match word.split_once('=') {
            Some(("canary", k)) => canary = k.parse().expect("canary=<k>"),
            Some(("batch", m)) => batch = m.parse().expect("batch=<m>"),
            Some(("pause", duration)) => rollout.pause_ms = millis(duration),
            Some(("failures", f)) => {
                rollout.stop_when.failures = Some(f.parse().expect("failures=<f>"))
            }
            Some(("rate", percent)) => {
                rollout.stop_when.failure_rate_percent =
                    Some(percent.parse().expect("rate=<percent>"))
            }
            Some(("cap", cap)) => rollout.max_targets = cap.parse().expect("cap=<n>"),
            None if word == "verify_failed" => rollout.stop_when.verify_failed = true,
            None if word == "all_done" => rollout.rollback = domain::HaltRollback::AllDone,
            None if word == "approve_after_canary" => rollout.approve_after_canary = true,
            _ => panic!("unknown rollout option `{word}`"),
        }
    }
    let on = |call: &PlannedCall, target: &str| {
        let mut call = call.clone();
        call.request["target"] = json!(target);
        call
    };
    rollout.targets = (1..=count)
        .map(|n| {
            let target = format!("t{n}");
            domain::TargetPlan {
                steps: steps
                    .iter()
                    .map(|step| PlannedStep {
                        call: on(&step.call, &target),
                        rollback: step.rollback.as_ref().map(|call| on(call, &target)),
                        ..step.clone()
                    })
                    .collect(),
                verify: verify.map(|verify| Verification {
                    probe: on(&verify.probe, &target),
                    ..verify.clone()
                }),
                target,
            }
        })
        .collect();
    let mut left = count;
    if canary > 0 {
        rollout.batches.push(canary.min(left));
        left -= canary.min(left);
    }
    while left > 0 {
        rollout.batches.push(batch.min(left));
        left -= batch.min(left);
    }
    rollout
}

/// The call a step, its rollback or the probe makes: distinct per role so
/// that the harness can check each `Effect::Call` carries the right one.
pub fn planned_call(role: &str, step_id: &str) -> PlannedCall {
    PlannedCall {
        action: "http.request".to_owned(),
        request: json!({"role": role, "step": step_id}),
        timeout_ms: 10_000,
    }
}

fn planned_step(spec: &str) -> PlannedStep {
    let mut words = spec.split_whitespace();
    let id = words.next().expect("step <id>");
    let mut step = PlannedStep {
        id: id.to_owned(),
        call: planned_call("do", id),
        retry: RetryPolicy::none(),
        idempotent: false,
        rollback: None,
        requires_approval: false,
        if_unverified: false,
    };
    for word in words {
        match word.split_once('=') {
            None if word == "rollback" => step.rollback = Some(planned_call("undo", id)),
            None if word == "idempotent" => step.idempotent = true,
            None if word == "gated" => step.requires_approval = true,
            None if word == "nojitter" => step.retry.jitter = false,
            Some(("retry", attempts)) => {
                step.retry = RetryPolicy {
                    attempts: attempts.parse().expect("retry=<attempts>"),
                    initial_ms: 1_000,
                    max_delay_ms: 30_000,
                    multiplier: 2.0,
                    jitter: step.retry.jitter,
                    retry_on: vec![
                        RetryOn::Connect,
                        RetryOn::Timeout,
                        RetryOn::Status(429),
                        RetryOn::Status(502),
                        RetryOn::Status(503),
                        RetryOn::Status(504),
                    ],
                }
            }
            Some(("on", list)) => step.retry.retry_on = list.split(',').map(retry_on).collect(),
            Some(("initial", duration)) => step.retry.initial_ms = millis(duration),
            Some(("max", duration)) => step.retry.max_delay_ms = millis(duration),
            Some(("multiplier", factor)) => {
                step.retry.multiplier = factor.parse().expect("multiplier=<x>")
            }
            _ => panic!("unknown step option `{word}`"),
        }
    }
    step
}

fn retry_on(text: &str) -> RetryOn {
    match text {
        "connect" => RetryOn::Connect,
        "timeout" => RetryOn::Timeout,
        _ => match text.strip_prefix("exit:") {
            Some(code) => RetryOn::ExitCode(code.parse().expect("exit:<code>")),
            None => RetryOn::Status(text.parse().expect("a retry_on entry")),
        },
    }
}

fn verification(spec: &str) -> Verification {
    let (options, expect) = spec.split_once(':').expect("verify [options]: <expect>");
    let mut verification = Verification {
        probe: planned_call("probe", "verify"),
        expect: expect.trim().to_owned(),
        within_ms: 60_000,
        every_ms: 5_000,
    };
    for option in options.split_whitespace() {
        match option.split_once('=') {
            Some(("within", duration)) => verification.within_ms = millis(duration),
            Some(("every", duration)) => verification.every_ms = millis(duration),
            _ => panic!("unknown verify option `{option}`"),
        }
    }
    verification
}

// ---------------------------------------------------------------- scripts

/// Plays `script` and renders what happened.
pub fn trace(plan: &Plan, script: &str) -> String {
    let mut lines = script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .peekable();
    let decision = match lines.peek().and_then(|line| line.strip_prefix("gate ")) {
        Some(gate) => {
            lines.next();
            decision(gate)
        }
        None => Decision {
            kind: DecisionKind::Allow,
            reasons: Vec::new(),
            expires_after_ms: None,
            approvals_required: 1,
            stages: Vec::new(),
            policy_version: None,
        },
    };
    let started = engine::start(&decision, plan, Vec::new(), at(0));
    let mut run = started.run;
    let mut out = vec![format!(
        "start {}{}",
        run.state,
        render_timers(&started.timers)
    )];
    let mut unit_random = 0.5;
    let mut hold = None;
    for line in lines {
        if let Some(value) = line.strip_prefix("rand=") {
            unit_random = value.parse().expect("rand=<x>");
            continue;
        }
        // `freeze=pause`, `freeze=cancel`: a freeze covers the run from
        // here on; `freeze=off`: no more.
        if let Some(value) = line.strip_prefix("freeze=") {
            hold = freeze(value);
            continue;
        }
        let (time, input_text) = line
            .strip_prefix('@')
            .and_then(|rest| rest.split_once(' '))
            .unwrap_or_else(|| panic!("not a script line: `{line}`"));
        let now = at(millis(time) as i64);
        let input = input(input_text);
        let head = format!("@{} {} --{input_text}-->", since_epoch(now), run.state);
        match engine::step_held(&run, plan, input, now, unit_random, hold.as_ref()) {
            Ok(transition) => {
                check_invariants(plan, &transition);
                out.push(format!(
                    "{head} {} [{}] ({}){}",
                    transition.run.state,
                    render_effects(transition.effect.as_slice()),
                    render_records(&transition.records),
                    render_timers(&transition.timers),
                ));
                run = transition.run;
            }
            Err(error) => out.push(format!("{head} error: {error}")),
        }
    }
    out.extend(summary(plan, &run));
    out.join("\n")
}

/// The hold of a freeze that pauses runs (`pause`) or cancels them
/// (`cancel`); `off`: none.
pub fn freeze(value: &str) -> Option<engine::Hold> {
    let on_runs = match value {
        "off" => return None,
        other => domain::OnRuns::parse(other).expect("freeze=pause|cancel|off"),
    };
    Some(engine::Hold {
        freeze: "frz-1".to_owned(),
        reason: "incident in progress".to_owned(),
        by: "user:olga".to_owned(),
        on_runs,
    })
}

/// `allow`, `require_approval expires=3600s approvals=2`, `deny: reason; reason`.
pub fn decision(gate: &str) -> Decision {
    let (head, reasons) = gate.split_once(':').unwrap_or((gate, ""));
    let mut words = head.split_whitespace();
    let kind = words.next().unwrap_or_default();
    let mut expires_after_ms = None;
    let mut approvals_required = 1;
    for word in words {
        match word.split_once('=') {
            Some(("expires", value)) => expires_after_ms = Some(millis(value)),
            Some(("approvals", value)) => {
                approvals_required = value.parse().expect("approvals=<n>")
            }
            _ => panic!("gate <kind> [expires=<duration>] [approvals=<n>], not `{word}`"),
        }
    }
    let kind = match kind {
        "allow" => DecisionKind::Allow,
        "require_approval" => DecisionKind::RequireApproval,
        "deny" => DecisionKind::Deny,
        other => panic!("unknown gate decision `{other}`"),
    };
    let reasons = reasons
        .split(';')
        .map(str::trim)
        .filter(|reason| !reason.is_empty())
        .map(str::to_owned)
        .collect();
    Decision {
        kind,
        reasons,
        expires_after_ms,
        approvals_required,
        stages: Vec::new(),
        policy_version: None,
    }
}

/// ` timers: approval_expiry@3600s`, or nothing when no timer is asked for.
fn render_timers(timers: &[engine::Timer]) -> String {
    if timers.is_empty() {
        return String::new();
    }
    let timers: Vec<String> = timers
        .iter()
        .map(|timer| format!("{}@{}", timer.kind.as_str(), since_epoch(timer.due)))
        .collect();
    format!(" timers: {}", timers.join(" "))
}

pub fn input(text: &str) -> Input {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    match word {
        "begin" => Input::Begin,
        "wake" => Input::Wake,
        "recover" => Input::Recover,
        "resume" => Input::Resume {
            by: rest.to_owned(),
        },
        "timer" => Input::TimerFired(
            engine::TimerKind::parse(rest).unwrap_or_else(|| panic!("unknown timer `{rest}`")),
        ),
        "approve" => Input::Approve {
            by: rest.to_owned(),
            comment: None,
        },
        "deny" => Input::Deny {
            by: rest.to_owned(),
            comment: None,
        },
        "cancel" => {
            let (by, reason) = rest.split_once(':').expect("cancel <by>: <reason>");
            Input::Cancel {
                by: by.trim().to_owned(),
                reason: reason.trim().to_owned(),
            }
        }
        "ok" => Input::CallFinished(AttemptOutcome::Succeeded {
            response: json!({"status": 200}),
        }),
        "probe" => {
            let body: Value = serde_json::from_str(rest).expect("probe <json>");
            Input::CallFinished(AttemptOutcome::Succeeded {
                response: json!({"status": 200, "json": body}),
            })
        }
        "fail" => Input::CallFinished(failure(rest)),
        "unknown:" => Input::CallFinished(AttemptOutcome::Unknown {
            reason: rest.to_owned(),
        }),
        _ => panic!("unknown input `{text}`"),
    }
}

fn failure(spec: &str) -> AttemptOutcome {
    let mut words = spec.split_whitespace();
    let cause_text = words.next().expect("fail <cause>");
    let (cause, error, response) = match cause_text {
        "connect" => (FailureCause::Connect, "connection refused".to_owned(), None),
        "timeout" => (
            FailureCause::Timeout,
            "timed out after 10s".to_owned(),
            None,
        ),
        "no-answer" => (
            FailureCause::NoAnswer,
            "connection closed before message completed".to_owned(),
            None,
        ),
        "other" => (FailureCause::Other, "invalid request".to_owned(), None),
        _ => match cause_text.strip_prefix("exit:") {
            Some(code) => {
                let code = code.parse().expect("exit:<code>");
                (
                    FailureCause::ExitCode(code),
                    format!("exit code {code}"),
                    None,
                )
            }
            None => {
                let status = cause_text.parse().expect("a failure cause");
                (
                    FailureCause::Status(status),
                    format!("HTTP {status}"),
                    Some(json!({"status": status})),
                )
            }
        },
    };
    let retry_after_ms = words.next().map(|word| {
        millis(
            word.strip_prefix("retry-after=")
                .expect("retry-after=<dur>"),
        )
    });
    AttemptOutcome::Failed {
        cause,
        error,
        response,
        retry_after_ms,
    }
}

// ---------------------------------------------------------------- rendering

fn render_effects(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Call {
                phase,
                step_id,
                attempt,
                call,
            } => match call.request["target"].as_str() {
                Some(target) => format!("call {} {step_id}@{target} #{attempt}", phase.as_str()),
                None => format!("call {} {step_id} #{attempt}", phase.as_str()),
            },
            Effect::WakeAt(time) => format!("wake @{}", since_epoch(*time)),
            Effect::Begin => "begin".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Record kinds, with the one detail that tells records of a kind apart.
fn render_records(records: &[Record]) -> String {
    records
        .iter()
        .map(|record| {
            let detail = &record.detail;
            match record.kind.as_str() {
                "run.state" => format!("run.state={}", text(&detail["to"])),
                "run.paused" => format!("run.paused(before {})", text(&detail["step"])),
                "approval.granted" | "approval.denied" | "run.cancelled" | "run.resumed" => {
                    format!("{}({})", record.kind, text(&detail["by"]))
                }
                "attempt.retry_scheduled" => format!(
                    "{}(#{} in {}s)",
                    record.kind,
                    detail["next_attempt"],
                    detail["delay_ms"].as_u64().expect("delay_ms") as f64 / 1000.0
                ),
                "run.recovered" => format!("{}({})", record.kind, text(&detail["action"])),
                "rollout.batch_started" => format!(
                    "{}({}: {})",
                    record.kind,
                    detail["batch"],
                    names(&detail["targets"])
                ),
                "rollout.target_finished" => format!(
                    "{}({} {})",
                    record.kind,
                    text(&detail["target"]),
                    text(&detail["outcome"])
                ),
                "rollout.batch_finished" => format!(
                    "{}({}: done {}; failed {})",
                    record.kind,
                    detail["batch"],
                    names(&detail["done"]),
                    names(&detail["failed"])
                ),
                "rollout.halted" | "rollout.finished" => format!(
                    "{}(done {}; failed {}; untouched {}; undo {})",
                    record.kind,
                    names(&detail["done"]),
                    names(&detail["failed"]),
                    names(&detail["untouched"]),
                    names(&detail["rolled_back"])
                ),
                "remedy.escalated" => match detail["target"].as_str() {
                    Some(target) => format!("{}({target})", record.kind),
                    None => record.kind.to_string(),
                },
                "oncall.alerted" => match detail["target"].as_str() {
                    Some(target) => format!("{}({} {target})", record.kind, text(&detail["group"])),
                    None => format!("{}({})", record.kind, text(&detail["group"])),
                },
                kind => kind.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// A list of target names as `t1 t2`, or `-` when empty or absent.
fn names(value: &Value) -> String {
    let names: Vec<&str> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(" ")
    }
}

/// The final run, one fact a line; empty facts are left out.
fn summary(plan: &Plan, run: &Run) -> Vec<String> {
    let progress = &run.progress;
    let ids = |indices: &[usize]| -> String {
        indices
            .iter()
            .map(|&index| plan.steps[index].id.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut lines = vec![format!("= {}", run.state)];
    if let Some(reason) = &run.reason {
        lines.push(format!("reason: {reason}"));
    }
    if !progress.completed.is_empty() {
        lines.push(format!("completed: {}", ids(&progress.completed)));
    }
    if !progress.rollback_pending.is_empty() {
        lines.push(format!(
            "rollback pending: {}",
            ids(&progress.rollback_pending)
        ));
    }
    if let Some(current) = &progress.current {
        let status = match current.status {
            WaitOrFlight::InFlight => "in flight".to_owned(),
            WaitOrFlight::WaitingUntil(until) => format!("waiting until {}", since_epoch(until)),
        };
        lines.push(format!(
            "current: {} {} #{} {status}",
            current.phase.as_str(),
            step_id(plan, current),
            current.attempt
        ));
    }
    if let Some(deadline) = progress.verify_deadline {
        lines.push(format!("verify deadline: {}", since_epoch(deadline)));
    }
    if progress.verification_failed {
        lines.push("verification failed".to_owned());
    }
    if let (Some(rollout), Some(rollout_progress)) = (&plan.rollout, &progress.rollout) {
        for state in [
            engine::TargetState::Done,
            engine::TargetState::Failed,
            engine::TargetState::VerifyFailed,
            engine::TargetState::Untouched,
        ] {
            let targets: Vec<&str> = rollout_progress
                .outcomes
                .iter()
                .zip(&rollout.targets)
                .filter(|(outcome, _)| outcome.state == state)
                .map(|(_, target)| target.target.as_str())
                .collect();
            if !targets.is_empty() {
                let state = serde_json::to_value(state).expect("a state serialises");
                lines.push(format!("{}: {}", text(&state), targets.join(" ")));
            }
        }
    }
    lines
}

fn step_id<'a>(plan: &'a Plan, current: &Current) -> &'a str {
    match current.phase {
        StepPhase::Verify => "verify",
        StepPhase::Precheck => "precheck",
        StepPhase::Step | StepPhase::Rollback => &plan.steps[current.step_index].id,
    }
}

// ---------------------------------------------------------------- invariants

/// What holds after every transition, whatever the case.
pub fn check_invariants(plan: &Plan, transition: &Transition) {
    let run = &transition.run;
    let current = run.progress.current.as_ref();
    if run.state.is_terminal() {
        assert_eq!(
            current, None,
            "a terminal run has nothing in flight: {run:?}"
        );
    }

    // The store keeps the run as JSON; recovery starts from exactly that.
    let json = serde_json::to_string(run).expect("a run serialises");
    let back: Run = serde_json::from_str(&json).expect("a run deserialises");
    assert_eq!(&back, run, "the run survives a JSON round trip: {json}");

    // One effect at most is the type's promise; each call must be recorded.
    let calls = usize::from(matches!(transition.effect, Some(Effect::Call { .. })));
    let started = transition
        .records
        .iter()
        .filter(|record| record.kind == "attempt.started")
        .count();
    assert_eq!(started, calls, "each call is recorded as started");

    if let Some(effect) = &transition.effect {
        match effect {
            Effect::Call {
                phase,
                step_id: id,
                attempt,
                call,
            } => {
                let current = current.expect("a call is the current one");
                assert_eq!(current.status, WaitOrFlight::InFlight);
                assert_eq!((current.phase, current.attempt), (*phase, *attempt));
                assert_eq!(step_id(plan, current), id);
                let (steps, verify) = match (&plan.rollout, &run.progress.rollout) {
                    (Some(rollout), Some(progress)) => {
                        let target = &rollout.targets[progress.target];
                        (&target.steps, target.verify.as_ref())
                    }
                    _ => (&plan.steps, plan.verify.as_ref()),
                };
                let expected = match phase {
                    StepPhase::Step => &steps[current.step_index].call,
                    StepPhase::Rollback => steps[current.step_index]
                        .rollback
                        .as_ref()
                        .expect("only steps with a rollback are rolled back"),
                    StepPhase::Verify => &verify.expect("a verification").probe,
                    StepPhase::Precheck => &plan.precheck.as_ref().expect("a precheck").probe,
                };
                assert_eq!(call, expected, "the call is the planned one");
            }
            Effect::WakeAt(time) => {
                let current = current.expect("a wake is for the current call");
                assert_eq!(current.status, WaitOrFlight::WaitingUntil(*time));
            }
            // An approved run starts, a run resumes past its gated step,
            // a time-bound change starts being undone, or a paused run that
            // was cancelled starts rolling back.
            // (Or, past a rollout's canary, its next batch opens.)
            Effect::Begin => assert!(
                run.state == domain::RunState::Approved
                    || (run.state == domain::RunState::Running && run.progress.gate.is_some())
                    || (run.state == domain::RunState::Running
                        && run.progress.rollout.as_ref().is_some_and(|r| !r.batch_open))
                    || (run.state == domain::RunState::RollingBack
                        && (run.progress.term_over || run.progress.cancelled)),
                "{run:?}"
            ),
        }
    }
    // A paused run waits, with nothing in flight, for its step to be due.
    if run.state == domain::RunState::Paused {
        let current = current.expect("a paused run knows the step it waits before");
        assert_eq!(current.phase, StepPhase::Step, "{run:?}");
        assert!(matches!(current.status, WaitOrFlight::WaitingUntil(_)));
        assert!(transition.effect.is_none(), "{transition:?}");
    }
    // A change in effect waits for nothing but its end.
    if run.state == domain::RunState::InEffect {
        assert_eq!(current, None, "nothing is in flight while in effect");
        assert!(transition.effect.is_none(), "{transition:?}");
    }
}
