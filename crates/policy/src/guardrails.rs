//! A runbook's guardrails judged against the facts of the moment.
//!
//! The runbook says where, when, how often and on what it may act; whether
//! that holds *now* depends on things only the runtime knows: the clock,
//! how many runs already happened, who is asking. Those arrive here as
//! [`Facts`], plain data, so that every judgement is a pure function of its
//! inputs — a freeze boundary or a daylight-saving night is tested by
//! passing an instant, not by waiting for one.
//!
//! Each configured guardrail yields one [`Finding`] (two for a cooldown
//! that several targets exceed), passing or not, with a reason a person can
//! read. [`facts_document`] gives the same facts as JSON, the `facts` of
//! the input organisation policies (Rego) judge, so that they and the
//! built-in guardrails can never see different worlds.

use std::collections::BTreeMap;

use domain::{Plan, PrincipalKind};
use jiff::Timestamp;
use runbook::{Freeze, Outside, RateLimit, Runbook, WeeklyWindow};
use serde::Serialize;
use serde_json::{Value, json};

use crate::glob::glob_matches;
use crate::time_window;

/// What the runtime knows when it asks for a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The moment the decision is for (windows and freezes are judged at it).
    pub now: Timestamp,
    /// The environment the plan acts in; `decide_with_facts` falls back to
    /// the event's `fields.environment` when this is `None`.
    pub environment: Option<String>,
    pub requester: Requester,
    /// Runs already started, each counted within the window of the limit it
    /// is compared with. `None` when the caller cannot know them: cooldown
    /// and rate limit then pass, and their reasons say they were not checked.
    pub recent_runs: Option<RecentRuns>,
    /// The limit over all runbooks together, from the gate's configuration,
    /// with the runs it counts. `None`: no such limit.
    pub global_rate_limit: Option<GlobalRateLimit>,
}

impl Facts {
    /// What the event alone tells: its environment, its source as the
    /// requester, and no knowledge of recent runs.
    pub fn from_event(event: &domain::Event, now: Timestamp) -> Facts {
        Facts {
            now,
            environment: event_environment(event),
            requester: Requester {
                kind: PrincipalKind::Source,
                name: event.source.clone(),
                confidence: None,
            },
            recent_runs: None,
            global_rate_limit: None,
        }
    }
}

pub(crate) fn event_environment(event: &domain::Event) -> Option<String> {
    event
        .fields
        .get("environment")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Who asks for the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requester {
    pub kind: PrincipalKind,
    pub name: String,
    /// An agent's confidence in its proposal, 0 to 1.
    pub confidence: Option<f64>,
}

/// Runs of this runbook already started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentRuns {
    /// Per target, within the cooldown's window. A target not listed had none.
    pub on_target: BTreeMap<String, u32>,
    /// Of the runbook, any target, within the rate limit's window.
    pub of_runbook: u32,
    /// Of the runbook, under way now (let go and not finished), for
    /// `max_concurrent`.
    pub under_way: u32,
}

/// A limit over all runbooks, and the runs started within its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalRateLimit {
    pub limit: RateLimit,
    pub recent_runs: u32,
}

/// One guardrail's judgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The guardrail's key in the runbook (`change_windows`, `cooldown`, …).
    pub guardrail: &'static str,
    pub verdict: Verdict,
    pub reason: String,
}

impl Finding {
    /// Whether this is a limit on how often the runbook may run (a
    /// cooldown, a rate limit, a concurrency cap, the global limit) that
    /// denies: the trouble the runbook fixes keeps coming back.
    pub fn holds_back_a_recurrence(&self) -> bool {
        self.verdict == Verdict::Deny
            && matches!(
                self.guardrail,
                "cooldown" | "rate_limit" | "max_concurrent" | "global_rate_limit"
            )
    }
}

/// Ordered by strictness: `Pass < RequireApproval < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    RequireApproval,
    Deny,
}

/// Judges every guardrail `runbook` declares, and its blast radius, for
/// `plan` under `facts`. Guardrails the runbook leaves out yield nothing.
pub fn check_guardrails(runbook: &Runbook, plan: &Plan, facts: &Facts) -> Vec<Finding> {
    let guardrails = &runbook.guardrails;
    let mut findings = Vec::new();
    findings.push(blast_radius(runbook, plan));
    if !guardrails.environments.is_empty() {
        findings.push(environment(&guardrails.environments, facts));
    }
    if !guardrails.change_windows.is_empty() {
        findings.push(change_windows(&guardrails.change_windows, facts.now));
    }
    if !guardrails.freezes.is_empty() {
        findings.push(freeze(runbook, facts.now));
    }
    if let Some(business_hours) = &guardrails.business_hours {
        let inside = time_window::contains(&business_hours.hours, facts.now);
        let hours = time_window::describe(&business_hours.hours);
        findings.push(if inside {
            finding(
                "business_hours",
                Verdict::Pass,
                format!("inside business hours ({hours})"),
            )
        } else {
            let verdict = match business_hours.outside {
                Outside::Deny => Verdict::Deny,
                Outside::RequireApproval => Verdict::RequireApproval,
            };
            finding(
                "business_hours",
                verdict,
                format!("outside business hours ({hours})"),
            )
        });
    }
    if let Some(cooldown) = &guardrails.cooldown {
        findings.extend(self::cooldown(cooldown, plan, facts));
    }
    if let Some(limit) = &guardrails.rate_limit {
        findings.push(match &facts.recent_runs {
            None => not_checked("rate_limit"),
            Some(recent) => rate_limit("rate_limit", "the runbook", *limit, recent.of_runbook),
        });
    }
    if let Some(maximum) = guardrails.max_concurrent {
        findings.push(match &facts.recent_runs {
            None => not_checked("max_concurrent"),
            Some(recent) => max_concurrent(maximum, recent.under_way),
        });
    }
    if let Some(global) = &facts.global_rate_limit {
        findings.push(rate_limit(
            "global_rate_limit",
            "all runbooks together",
            global.limit,
            global.recent_runs,
        ));
    }
    if !guardrails.sensitive_targets.is_empty() {
        let matched = sensitive_matches(runbook, plan);
        findings.push(if matched.is_empty() {
            finding(
                "sensitive_targets",
                Verdict::Pass,
                "no target is sensitive".to_owned(),
            )
        } else {
            let list: Vec<String> = matched
                .iter()
                .map(|(target, pattern)| format!("`{target}` (matches `{pattern}`)"))
                .collect();
            finding(
                "sensitive_targets",
                Verdict::RequireApproval,
                format!(
                    "sensitive target{}: {}",
                    plural(list.len()),
                    list.join(", ")
                ),
            )
        });
    }
    if let Some(minimum) = guardrails.min_confidence {
        findings.push(min_confidence(minimum, &facts.requester));
    }
    findings
}

fn finding(guardrail: &'static str, verdict: Verdict, reason: String) -> Finding {
    Finding {
        guardrail,
        verdict,
        reason,
    }
}

fn blast_radius(runbook: &Runbook, plan: &Plan) -> Finding {
    let count = plan.targets.len();
    let max_targets = runbook.targets.max_targets as usize;
    if count == 0 {
        return finding(
            "max_targets",
            Verdict::Deny,
            "the plan has no targets".to_owned(),
        );
    }
    if count > max_targets {
        return finding(
            "max_targets",
            Verdict::Deny,
            format!(
                "blast radius: {count} targets exceed the runbook's max_targets of {max_targets}"
            ),
        );
    }
    finding(
        "max_targets",
        Verdict::Pass,
        format!(
            "blast radius: {count} target{} within max_targets {max_targets}",
            plural(count)
        ),
    )
}

fn environment(allowed: &[String], facts: &Facts) -> Finding {
    match facts.environment.as_deref() {
        Some(environment) if allowed.iter().any(|name| name == environment) => finding(
            "environments",
            Verdict::Pass,
            format!("environment `{environment}` is one of the runbook's environments"),
        ),
        Some(environment) => finding(
            "environments",
            Verdict::Deny,
            format!(
                "environment `{environment}` is not one of the runbook's environments ({})",
                allowed.join(", ")
            ),
        ),
        None => finding(
            "environments",
            Verdict::Deny,
            format!(
                "the event names no environment (fields.environment) and the runbook only runs in: {}",
                allowed.join(", ")
            ),
        ),
    }
}

fn change_windows(windows: &[WeeklyWindow], now: Timestamp) -> Finding {
    if let Some(window) = windows
        .iter()
        .find(|window| time_window::contains(window, now))
    {
        return finding(
            "change_windows",
            Verdict::Pass,
            format!("inside change window {}", time_window::describe(window)),
        );
    }
    let described: Vec<String> = windows.iter().map(time_window::describe).collect();
    let next = match next_opening(windows, now) {
        Some(opens) => format!("; the next opens at {}", local_time(opens, windows)),
        None => String::new(),
    };
    finding(
        "change_windows",
        Verdict::Deny,
        format!(
            "outside the change windows ({}){next}",
            described.join("; ")
        ),
    )
}

/// The earliest opening of any of `windows` after `now`.
fn next_opening(windows: &[WeeklyWindow], now: Timestamp) -> Option<Timestamp> {
    windows
        .iter()
        .filter_map(|window| time_window::next_opening(window, now))
        .min()
}

/// An instant on the clock of the window that opens then (the first one's
/// zone when several do), as a person in that zone would read it.
fn local_time(instant: Timestamp, windows: &[WeeklyWindow]) -> String {
    let time_zone = windows
        .iter()
        .find(|window| time_window::contains(window, instant))
        .unwrap_or(&windows[0])
        .time_zone
        .clone();
    instant
        .to_zoned(time_zone)
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// The freeze `now` lies in: from inclusive, to exclusive.
fn active_freeze(freezes: &[Freeze], now: Timestamp) -> Option<&Freeze> {
    freezes
        .iter()
        .find(|freeze| freeze.starts_at() <= now && now < freeze.ends_at())
}

fn freeze(runbook: &Runbook, now: Timestamp) -> Finding {
    match active_freeze(&runbook.guardrails.freezes, now) {
        None => finding("freeze", Verdict::Pass, "no freeze is in force".to_owned()),
        Some(freeze) => {
            let zone = freeze.time_zone.iana_name().unwrap_or("UTC");
            let why = freeze
                .reason
                .as_deref()
                .map_or(String::new(), |reason| format!(": {reason}"));
            finding(
                "freeze",
                Verdict::Deny,
                format!(
                    "frozen from {} until {} {zone}{why}",
                    freeze.from.strftime("%Y-%m-%d %H:%M"),
                    freeze.to.strftime("%Y-%m-%d %H:%M"),
                ),
            )
        }
    }
}

fn cooldown(cooldown: &runbook::Cooldown, plan: &Plan, facts: &Facts) -> Vec<Finding> {
    let Some(recent) = &facts.recent_runs else {
        return vec![not_checked("cooldown")];
    };
    let window = human_duration(cooldown.window_ms);
    let exceeded: Vec<Finding> = plan
        .targets
        .iter()
        .filter_map(|target| {
            let runs = recent.on_target.get(target).copied().unwrap_or(0);
            (runs >= cooldown.runs).then(|| {
                finding(
                    "cooldown",
                    Verdict::Deny,
                    format!(
                        "cooldown: the runbook ran {runs} time{} in the last {window} on `{target}`; it allows {} per target",
                        plural(runs as usize),
                        cooldown.runs
                    ),
                )
            })
        })
        .collect();
    if exceeded.is_empty() {
        vec![finding(
            "cooldown",
            Verdict::Pass,
            format!(
                "cooldown: every target ran fewer than {} time{} in the last {window}",
                cooldown.runs,
                plural(cooldown.runs as usize)
            ),
        )]
    } else {
        exceeded
    }
}

fn rate_limit(guardrail: &'static str, scope: &str, limit: RateLimit, runs: u32) -> Finding {
    let window = human_duration(limit.window_ms);
    let verdict = if runs >= limit.runs {
        Verdict::Deny
    } else {
        Verdict::Pass
    };
    finding(
        guardrail,
        verdict,
        format!(
            "rate limit: {scope} ran {runs} time{} in the last {window}; the limit is {}",
            plural(runs as usize),
            limit.runs
        ),
    )
}

fn max_concurrent(maximum: u32, under_way: u32) -> Finding {
    let verdict = if under_way >= maximum {
        Verdict::Deny
    } else {
        Verdict::Pass
    };
    finding(
        "max_concurrent",
        verdict,
        format!(
            "concurrency cap: {under_way} run{} of the runbook under way; it allows {maximum} at once",
            plural(under_way as usize),
        ),
    )
}

fn not_checked(guardrail: &'static str) -> Finding {
    finding(
        guardrail,
        Verdict::Pass,
        format!("{guardrail} not checked: recent runs are not known here"),
    )
}

fn sensitive_matches<'r>(runbook: &'r Runbook, plan: &Plan) -> Vec<(String, &'r str)> {
    plan.targets
        .iter()
        .filter_map(|target| {
            runbook
                .guardrails
                .sensitive_targets
                .iter()
                .find(|pattern| glob_matches(pattern, target))
                .map(|pattern| (target.clone(), pattern.as_str()))
        })
        .collect()
}

fn min_confidence(minimum: f64, requester: &Requester) -> Finding {
    if requester.kind != PrincipalKind::Agent {
        return finding(
            "min_confidence",
            Verdict::Pass,
            format!(
                "min_confidence applies to agents; `{}` is a {}",
                requester.name,
                requester.kind.as_str()
            ),
        );
    }
    match requester.confidence {
        Some(confidence) if confidence >= minimum => finding(
            "min_confidence",
            Verdict::Pass,
            format!(
                "agent `{}` proposed with confidence {confidence}, at least {minimum}",
                requester.name
            ),
        ),
        Some(confidence) => finding(
            "min_confidence",
            Verdict::Deny,
            format!(
                "agent `{}` proposed with confidence {confidence}, below the runbook's min_confidence {minimum}",
                requester.name
            ),
        ),
        None => finding(
            "min_confidence",
            Verdict::Deny,
            format!(
                "agent `{}` gave no confidence; the runbook's min_confidence is {minimum}",
                requester.name
            ),
        ),
    }
}

/// The facts behind a decision as JSON, for organisation policies (Rego)
/// and for explaining a decision: the facts themselves, what the
/// guardrails make of them (inside a window? which targets are sensitive?),
/// and the findings. A guardrail the runbook does not declare is `null`.
pub fn facts_document(runbook: &Runbook, plan: &Plan, facts: &Facts) -> Value {
    let guardrails = &runbook.guardrails;
    let window_facts = |windows: &[WeeklyWindow]| {
        let inside = windows
            .iter()
            .any(|window| time_window::contains(window, facts.now));
        json!({
            "inside": inside,
            "next_opens_at": if inside { None } else { next_opening(windows, facts.now) },
            "windows": windows.iter().map(time_window::describe).collect::<Vec<_>>(),
        })
    };
    let change_windows =
        (!guardrails.change_windows.is_empty()).then(|| window_facts(&guardrails.change_windows));
    let business_hours = guardrails.business_hours.as_ref().map(|business_hours| {
        let mut facts = window_facts(std::slice::from_ref(&business_hours.hours));
        facts["outside"] = json!(match business_hours.outside {
            Outside::Deny => "deny",
            Outside::RequireApproval => "require_approval",
        });
        facts
    });
    let freeze = (!guardrails.freezes.is_empty()).then(|| {
        let active = active_freeze(&guardrails.freezes, facts.now);
        json!({
            "inside": active.is_some(),
            "reason": active.and_then(|freeze| freeze.reason.clone()),
            "ends_at": active.map(|freeze| freeze.ends_at()),
        })
    });
    let recent = facts.recent_runs.as_ref();
    let cooldown = guardrails.cooldown.as_ref().map(|cooldown| {
        let on_target: Option<BTreeMap<&String, u32>> = recent.map(|recent| {
            plan.targets
                .iter()
                .map(|target| (target, recent.on_target.get(target).copied().unwrap_or(0)))
                .collect()
        });
        json!({
            "runs": cooldown.runs,
            "window_ms": cooldown.window_ms,
            "recent_runs_on_target": on_target,
        })
    });
    let rate_limit = guardrails.rate_limit.map(|limit| {
        json!({
            "runs": limit.runs,
            "window_ms": limit.window_ms,
            "recent_runs": recent.map(|recent| recent.of_runbook),
        })
    });
    let max_concurrent = guardrails.max_concurrent.map(|maximum| {
        json!({
            "runs": maximum,
            "under_way": recent.map(|recent| recent.under_way),
        })
    });
    let global_rate_limit = facts.global_rate_limit.map(|global| {
        json!({
            "runs": global.limit.runs,
            "window_ms": global.limit.window_ms,
            "recent_runs": global.recent_runs,
        })
    });
    let sensitive: Vec<Value> = sensitive_matches(runbook, plan)
        .into_iter()
        .map(|(target, pattern)| json!({"target": target, "pattern": pattern}))
        .collect();
    json!({
        "now": facts.now,
        "runbook": {"id": runbook.id, "version": runbook.version, "risk": runbook.risk},
        "requester": facts.requester,
        "environment": facts.environment,
        "environments": guardrails.environments,
        "targets": plan.targets,
        "blast_radius": plan.targets.len(),
        "max_targets": runbook.targets.max_targets,
        "sensitive_targets": sensitive,
        "change_windows": change_windows,
        "business_hours": business_hours,
        "freeze": freeze,
        "cooldown": cooldown,
        "rate_limit": rate_limit,
        "max_concurrent": max_concurrent,
        "global_rate_limit": global_rate_limit,
        "min_confidence": guardrails.min_confidence,
        "findings": check_guardrails(runbook, plan, facts),
    })
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// `3600000` → `1h`, `90000` → `90s`: the largest unit that divides evenly,
/// as runbooks write durations.
pub fn human_duration(milliseconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| milliseconds.is_multiple_of(*size))
        .map_or(format!("{milliseconds}ms"), |(size, unit)| {
            format!("{}{unit}", milliseconds / size)
        })
}
