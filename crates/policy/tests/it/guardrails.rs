//! Each guardrail passing and failing, judged at chosen instants: windows
//! on daylight-saving nights in several zones, windows across midnight,
//! freeze boundaries, limits exactly at their edge.

use std::collections::BTreeMap;

use domain::PrincipalKind;
use policy::{Facts, GlobalRateLimit, RecentRuns, Requester, Verdict, check_guardrails};
use runbook::RateLimit;

use crate::{facts, plan, runbook_with};

/// The findings of `guardrail` for a runbook with `guardrails`, a plan on
/// `targets`, and `facts`, as `verdict: reason`.
fn judge(guardrails: &str, targets: &[&str], facts: &Facts, guardrail: &str) -> Vec<String> {
    let runbook = runbook_with(guardrails, 3, "auto");
    check_guardrails(&runbook, &plan(&runbook, targets), facts)
        .into_iter()
        .filter(|finding| finding.guardrail == guardrail)
        .map(|finding| {
            let verdict = match finding.verdict {
                Verdict::Pass => "pass",
                Verdict::RequireApproval => "require_approval",
                Verdict::Deny => "deny",
            };
            format!("{verdict}: {}", finding.reason)
        })
        .collect()
}

#[track_caller]
fn check(guardrails: &str, targets: &[&str], facts: &Facts, guardrail: &str, expected: &[&str]) {
    assert_eq!(judge(guardrails, targets, facts, guardrail), expected);
}

/// The verdict of `guardrail` (one finding) at each instant, for a table of
/// `(instant, expected verdict, why)`.
#[track_caller]
fn check_at(guardrails: &str, guardrail: &str, cases: &[(&str, &str, &str)]) {
    for (instant, expected, why) in cases {
        let findings = judge(guardrails, &["web-01"], &facts(instant), guardrail);
        assert_eq!(findings.len(), 1, "{instant}: {findings:?}");
        let verdict = findings[0].split(':').next().unwrap_or_default();
        assert_eq!(verdict, *expected, "at {instant} ({why}): {}", findings[0]);
    }
}

// -- change windows --------------------------------------------------------

const NIGHTS_IN_BERLIN: &str = "  change_windows:\n    - { days: [mon-fri], from: \"22:00\", to: \"02:00\", time_zone: Europe/Berlin }\n";

#[test]
fn a_change_window_may_cross_midnight() {
    check_at(
        NIGHTS_IN_BERLIN,
        "change_windows",
        &[
            (
                "2026-11-23T20:59:59Z",
                "deny",
                "Mon 21:59:59 CET, before the window",
            ),
            (
                "2026-11-23T21:00:00Z",
                "pass",
                "Mon 22:00 CET: from is inclusive",
            ),
            (
                "2026-11-24T00:59:59Z",
                "pass",
                "Tue 01:59:59 CET, Monday's window",
            ),
            (
                "2026-11-24T01:00:00Z",
                "deny",
                "Tue 02:00 CET: to is exclusive",
            ),
            (
                "2026-11-23T00:30:00Z",
                "deny",
                "Mon 01:30 CET belongs to Sunday's window, and Sunday has none",
            ),
            (
                "2026-11-28T00:30:00Z",
                "pass",
                "Sat 01:30 CET belongs to Friday's window",
            ),
            (
                "2026-11-28T21:30:00Z",
                "deny",
                "Sat 22:30 CET, no window on Saturday",
            ),
        ],
    );
}

#[test]
fn outside_a_change_window_is_denied_with_the_next_opening() {
    check(
        NIGHTS_IN_BERLIN,
        &["web-01"],
        &facts("2026-11-28T12:00:00Z"),
        "change_windows",
        &[
            "deny: outside the change windows (mon-fri 22:00-02:00 Europe/Berlin); the next opens at 2026-11-30 22:00 CET",
        ],
    );
    check(
        NIGHTS_IN_BERLIN,
        &["web-01"],
        &facts("2026-11-27T23:00:00Z"),
        "change_windows",
        &["pass: inside change window mon-fri 22:00-02:00 Europe/Berlin"],
    );
    // Any window will do; a whole-day window has no hours.
    check(
        &format!("{NIGHTS_IN_BERLIN}    - {{ days: [sat, sun], time_zone: Europe/Berlin }}\n"),
        &["web-01"],
        &facts("2026-11-28T12:00:00Z"),
        "change_windows",
        &["pass: inside change window sat, sun all day Europe/Berlin"],
    );
}

#[test]
fn change_windows_follow_daylight_saving_in_berlin() {
    let window =
        "  change_windows:\n    - { from: \"01:30\", to: \"03:30\", time_zone: Europe/Berlin }\n";
    // 29 March 2026: at 01:00Z clocks jump from 02:00 CET to 03:00 CEST.
    check_at(
        window,
        "change_windows",
        &[
            ("2026-03-29T00:29:59Z", "deny", "01:29:59 CET"),
            ("2026-03-29T00:30:00Z", "pass", "01:30 CET"),
            (
                "2026-03-29T00:59:59Z",
                "pass",
                "01:59:59 CET, the last second before the jump",
            ),
            (
                "2026-03-29T01:00:00Z",
                "pass",
                "03:00 CEST, the first second after it",
            ),
            ("2026-03-29T01:29:59Z", "pass", "03:29:59 CEST"),
            (
                "2026-03-29T01:30:00Z",
                "deny",
                "03:30 CEST: the window lasted one hour",
            ),
        ],
    );
    // 25 October 2026: at 01:00Z clocks go back from 03:00 CEST to 02:00 CET.
    check_at(
        window,
        "change_windows",
        &[
            ("2026-10-24T23:29:59Z", "deny", "01:29:59 CEST"),
            ("2026-10-24T23:30:00Z", "pass", "01:30 CEST"),
            ("2026-10-25T00:59:59Z", "pass", "02:59:59 CEST"),
            (
                "2026-10-25T01:00:00Z",
                "pass",
                "02:00 CET, the repeated hour",
            ),
            ("2026-10-25T02:29:59Z", "pass", "03:29:59 CET"),
            (
                "2026-10-25T02:30:00Z",
                "deny",
                "03:30 CET: the window lasted three hours",
            ),
        ],
    );
}

#[test]
fn change_windows_follow_daylight_saving_in_new_york() {
    let window = "  change_windows:\n    - { from: \"01:30\", to: \"03:30\", time_zone: America/New_York }\n";
    // 8 March 2026: at 07:00Z clocks jump from 02:00 EST to 03:00 EDT.
    check_at(
        window,
        "change_windows",
        &[
            ("2026-03-08T06:29:59Z", "deny", "01:29:59 EST"),
            ("2026-03-08T06:30:00Z", "pass", "01:30 EST"),
            (
                "2026-03-08T07:00:00Z",
                "pass",
                "03:00 EDT, right after the jump",
            ),
            ("2026-03-08T07:30:00Z", "deny", "03:30 EDT"),
        ],
    );
    // 1 November 2026: at 06:00Z clocks go back from 02:00 EDT to 01:00 EST,
    // so 01:00-01:30 is shown twice, and outside the window both times.
    check_at(
        window,
        "change_windows",
        &[
            ("2026-11-01T05:29:59Z", "deny", "01:29:59 EDT"),
            ("2026-11-01T05:30:00Z", "pass", "01:30 EDT"),
            ("2026-11-01T05:59:59Z", "pass", "01:59:59 EDT"),
            (
                "2026-11-01T06:00:00Z",
                "deny",
                "01:00 EST, before 01:30 again",
            ),
            (
                "2026-11-01T06:30:00Z",
                "pass",
                "01:30 EST, the window reopens",
            ),
            ("2026-11-01T08:29:59Z", "pass", "03:29:59 EST"),
            ("2026-11-01T08:30:00Z", "deny", "03:30 EST"),
        ],
    );
}

#[test]
fn change_windows_follow_daylight_saving_in_sydney() {
    // Southern hemisphere: 5 April 2026 at 16:00Z (the 4th) clocks go back
    // from 03:00 AEDT to 02:00 AEST; 4 October at 16:00Z (the 3rd) they jump
    // from 02:00 AEST to 03:00 AEDT.
    let window = "  change_windows:\n    - { days: [sun], from: \"02:30\", to: \"04:00\", time_zone: Australia/Sydney }\n";
    check_at(
        window,
        "change_windows",
        &[
            ("2026-04-04T15:29:59Z", "deny", "02:29:59 AEDT"),
            ("2026-04-04T15:30:00Z", "pass", "02:30 AEDT"),
            (
                "2026-04-04T16:00:00Z",
                "deny",
                "02:00 AEST: the clocks went back out of the window",
            ),
            ("2026-04-04T16:30:00Z", "pass", "02:30 AEST, again"),
            ("2026-04-04T17:59:59Z", "pass", "03:59:59 AEST"),
            ("2026-04-04T18:00:00Z", "deny", "04:00 AEST"),
            ("2026-10-03T15:59:59Z", "deny", "01:59:59 AEST"),
            (
                "2026-10-03T16:00:00Z",
                "pass",
                "03:00 AEDT: 02:30 never came, the window opens at the jump",
            ),
            ("2026-10-03T16:59:59Z", "pass", "03:59:59 AEDT"),
            ("2026-10-03T17:00:00Z", "deny", "04:00 AEDT"),
        ],
    );
}

#[test]
fn the_next_opening_accounts_for_skipped_and_repeated_hours() {
    let next_opening = |window: &str, now: &str| {
        let runbook = runbook_with(&format!("  change_windows:\n    - {window}\n"), 3, "auto");
        let document = policy::facts_document(&runbook, &plan(&runbook, &["web-01"]), &facts(now));
        document["change_windows"]["next_opens_at"].clone()
    };
    // Opening inside the skipped hour: the window opens at the jump.
    assert_eq!(
        next_opening(
            "{ days: [sun], from: \"02:30\", to: \"04:00\", time_zone: Europe/Berlin }",
            "2026-03-29T00:00:00Z"
        ),
        "2026-03-29T01:00:00Z"
    );
    // Wholly inside the skipped hour: not that night, but a week later.
    assert_eq!(
        next_opening(
            "{ days: [sun], from: \"02:15\", to: \"02:45\", time_zone: Europe/Berlin }",
            "2026-03-29T00:00:00Z"
        ),
        "2026-04-05T00:15:00Z"
    );
    // Inside the repeated hour: it opens a second time.
    assert_eq!(
        next_opening(
            "{ days: [sun], from: \"02:15\", to: \"02:45\", time_zone: Europe/Berlin }",
            "2026-10-25T00:50:00Z"
        ),
        "2026-10-25T01:15:00Z"
    );
    // The repeated hour brings the clock back into the window.
    assert_eq!(
        next_opening(
            "{ days: [sun], from: \"01:00\", to: \"02:30\", time_zone: Europe/Berlin }",
            "2026-10-25T00:40:00Z"
        ),
        "2026-10-25T01:00:00Z"
    );
    // Across a weekend.
    assert_eq!(
        next_opening(
            "{ days: [mon-fri], from: \"22:00\", to: \"02:00\", time_zone: Europe/Berlin }",
            "2026-11-28T12:00:00Z"
        ),
        "2026-11-30T21:00:00Z"
    );
    // Inside a window there is no next opening to wait for.
    assert_eq!(
        next_opening(
            "{ from: \"00:00\", to: \"23:00\", time_zone: UTC }",
            "2026-11-28T12:00:00Z"
        ),
        serde_json::Value::Null
    );
}

// -- freezes and business hours --------------------------------------------

#[test]
fn a_freeze_starts_inclusive_and_ends_exclusive_in_its_zone() {
    let freeze = "  freeze:\n    - { from: \"2026-12-20T00:00\", to: \"2027-01-04T00:00\", time_zone: America/New_York, reason: year-end freeze }\n";
    check_at(
        freeze,
        "freeze",
        &[
            ("2026-12-20T04:59:59Z", "pass", "19 Dec 23:59:59 EST"),
            (
                "2026-12-20T05:00:00Z",
                "deny",
                "20 Dec 00:00 EST: from is inclusive",
            ),
            ("2027-01-04T04:59:59Z", "deny", "3 Jan 23:59:59 EST"),
            (
                "2027-01-04T05:00:00Z",
                "pass",
                "4 Jan 00:00 EST: to is exclusive",
            ),
        ],
    );
    check(
        freeze,
        &["web-01"],
        &facts("2026-12-24T12:00:00Z"),
        "freeze",
        &[
            "deny: frozen from 2026-12-20 00:00 until 2027-01-04 00:00 America/New_York: year-end freeze",
        ],
    );
    check(
        freeze,
        &["web-01"],
        &facts("2026-11-24T12:00:00Z"),
        "freeze",
        &["pass: no freeze is in force"],
    );
    // A boundary the clocks skip is moved forward by the jump: 02:30 on
    // 8 March 2026 in New York is 03:30 EDT.
    check_at(
        "  freeze:\n    - { from: \"2026-03-08T02:30\", to: \"2026-03-09T00:00\", time_zone: America/New_York }\n",
        "freeze",
        &[
            ("2026-03-08T07:29:59Z", "pass", "03:29:59 EDT"),
            ("2026-03-08T07:30:00Z", "deny", "03:30 EDT"),
        ],
    );
}

#[test]
fn business_hours_ask_for_approval_or_deny_outside() {
    let hours = |outside: &str| {
        format!(
            "  business_hours: {{ days: [mon-fri], from: \"08:00\", to: \"18:00\", time_zone: Europe/London, outside: {outside} }}\n"
        )
    };
    check_at(
        &hours("require_approval"),
        "business_hours",
        &[
            (
                "2026-07-01T06:59:59Z",
                "require_approval",
                "Wed 07:59:59 BST",
            ),
            ("2026-07-01T07:00:00Z", "pass", "Wed 08:00 BST"),
            ("2026-07-01T16:59:59Z", "pass", "Wed 17:59:59 BST"),
            ("2026-07-01T17:00:00Z", "require_approval", "Wed 18:00 BST"),
            (
                "2026-12-02T07:59:59Z",
                "require_approval",
                "Wed 07:59:59 GMT",
            ),
            ("2026-12-02T08:00:00Z", "pass", "Wed 08:00 GMT"),
            ("2026-07-04T12:00:00Z", "require_approval", "a Saturday"),
        ],
    );
    check_at(
        &hours("deny"),
        "business_hours",
        &[("2026-07-04T12:00:00Z", "deny", "a Saturday")],
    );
    check(
        &hours("require_approval"),
        &["web-01"],
        &facts("2026-07-04T12:00:00Z"),
        "business_hours",
        &["require_approval: outside business hours (mon-fri 08:00-18:00 Europe/London)"],
    );
}

// -- counts ----------------------------------------------------------------

fn with_runs(on_target: &[(&str, u32)], of_runbook: u32) -> Facts {
    Facts {
        recent_runs: Some(RecentRuns {
            on_target: on_target
                .iter()
                .map(|(target, runs)| (target.to_string(), *runs))
                .collect::<BTreeMap<_, _>>(),
            of_runbook,
            under_way: 0,
        }),
        ..facts("2026-11-24T12:00:00Z")
    }
}

fn under_way(runs: u32) -> Facts {
    Facts {
        recent_runs: Some(RecentRuns {
            under_way: runs,
            ..RecentRuns::default()
        }),
        ..facts("2026-11-24T12:00:00Z")
    }
}

#[test]
fn a_concurrency_cap_denies_once_its_runs_are_all_under_way() {
    let cap = "  max_concurrent: 2\n";
    check(
        cap,
        &["web-01"],
        &under_way(0),
        "max_concurrent",
        &["pass: concurrency cap: 0 runs of the runbook under way; it allows 2 at once"],
    );
    check(
        cap,
        &["web-01"],
        &under_way(1),
        "max_concurrent",
        &["pass: concurrency cap: 1 run of the runbook under way; it allows 2 at once"],
    );
    check(
        cap,
        &["web-01"],
        &under_way(2),
        "max_concurrent",
        &["deny: concurrency cap: 2 runs of the runbook under way; it allows 2 at once"],
    );
    check(
        cap,
        &["web-01"],
        &Facts {
            recent_runs: None,
            ..facts("2026-11-24T12:00:00Z")
        },
        "max_concurrent",
        &["pass: max_concurrent not checked: recent runs are not known here"],
    );
}

#[test]
fn cooldown_denies_a_target_at_its_limit() {
    let cooldown = "  cooldown: { per: target, runs: 3, window: 1h }\n";
    check(
        cooldown,
        &["db01"],
        &with_runs(&[("db01", 2)], 2),
        "cooldown",
        &["pass: cooldown: every target ran fewer than 3 times in the last 1h"],
    );
    check(
        cooldown,
        &["db01"],
        &with_runs(&[("db01", 3)], 3),
        "cooldown",
        &[
            "deny: cooldown: the runbook ran 3 times in the last 1h on `db01`; it allows 3 per target",
        ],
    );
    check(
        cooldown,
        &["db01", "db02", "db03"],
        &with_runs(&[("db01", 4), ("db02", 1), ("db03", 3), ("db04", 9)], 9),
        "cooldown",
        &[
            "deny: cooldown: the runbook ran 4 times in the last 1h on `db01`; it allows 3 per target",
            "deny: cooldown: the runbook ran 3 times in the last 1h on `db03`; it allows 3 per target",
        ],
    );
    check(
        "  cooldown: { window: 30m }\n",
        &["db01"],
        &with_runs(&[("db01", 1)], 1),
        "cooldown",
        &[
            "deny: cooldown: the runbook ran 1 time in the last 30m on `db01`; it allows 1 per target",
        ],
    );
    check(
        cooldown,
        &["db01"],
        &Facts {
            recent_runs: None,
            ..facts("2026-11-24T12:00:00Z")
        },
        "cooldown",
        &["pass: cooldown not checked: recent runs are not known here"],
    );
}

#[test]
fn rate_limits_count_runs_of_the_runbook_and_of_all_runbooks() {
    let limit = "  rate_limit: { runs: 10, window: 1h }\n";
    check(
        limit,
        &["web-01"],
        &with_runs(&[], 9),
        "rate_limit",
        &["pass: rate limit: the runbook ran 9 times in the last 1h; the limit is 10"],
    );
    check(
        limit,
        &["web-01"],
        &with_runs(&[], 10),
        "rate_limit",
        &["deny: rate limit: the runbook ran 10 times in the last 1h; the limit is 10"],
    );
    let global = |recent_runs: u32| Facts {
        global_rate_limit: Some(GlobalRateLimit {
            limit: RateLimit {
                runs: 100,
                window_ms: 86_400_000,
            },
            recent_runs,
        }),
        ..facts("2026-11-24T12:00:00Z")
    };
    check(
        "",
        &["web-01"],
        &global(99),
        "global_rate_limit",
        &["pass: rate limit: all runbooks together ran 99 times in the last 1d; the limit is 100"],
    );
    check(
        "",
        &["web-01"],
        &global(100),
        "global_rate_limit",
        &["deny: rate limit: all runbooks together ran 100 times in the last 1d; the limit is 100"],
    );
    check(
        "",
        &["web-01"],
        &facts("2026-11-24T12:00:00Z"),
        "global_rate_limit",
        &[],
    );
}

// -- targets and requesters ------------------------------------------------

#[test]
fn sensitive_targets_need_approval() {
    let sensitive = "  sensitive_targets: [\"db-prod-*\", ceo-laptop]\n";
    let now = facts("2026-11-24T12:00:00Z");
    check(
        sensitive,
        &["web-01", "db-staging-01"],
        &now,
        "sensitive_targets",
        &["pass: no target is sensitive"],
    );
    check(
        sensitive,
        &["web-01", "DB-PROD-01"],
        &now,
        "sensitive_targets",
        &["require_approval: sensitive target: `DB-PROD-01` (matches `db-prod-*`)"],
    );
    check(
        sensitive,
        &["ceo-laptop", "db-prod-02"],
        &now,
        "sensitive_targets",
        &[
            "require_approval: sensitive targets: `ceo-laptop` (matches `ceo-laptop`), `db-prod-02` (matches `db-prod-*`)",
        ],
    );
}

#[test]
fn min_confidence_applies_to_agents_only() {
    let minimum = "  min_confidence: 0.8\n";
    let requester = |kind: PrincipalKind, name: &str, confidence: Option<f64>| Facts {
        requester: Requester {
            kind,
            name: name.into(),
            confidence,
        },
        ..facts("2026-11-24T12:00:00Z")
    };
    let cases: &[(Facts, &str)] = &[
        (
            requester(PrincipalKind::Agent, "triage-bot", Some(0.79)),
            "deny: agent `triage-bot` proposed with confidence 0.79, below the runbook's min_confidence 0.8",
        ),
        (
            requester(PrincipalKind::Agent, "triage-bot", Some(0.8)),
            "pass: agent `triage-bot` proposed with confidence 0.8, at least 0.8",
        ),
        (
            requester(PrincipalKind::Agent, "triage-bot", None),
            "deny: agent `triage-bot` gave no confidence; the runbook's min_confidence is 0.8",
        ),
        (
            requester(PrincipalKind::User, "alice", Some(0.1)),
            "pass: min_confidence applies to agents; `alice` is a user",
        ),
        (
            requester(PrincipalKind::Source, "alertmanager", None),
            "pass: min_confidence applies to agents; `alertmanager` is a source",
        ),
    ];
    for (facts, expected) in cases {
        check(minimum, &["web-01"], facts, "min_confidence", &[expected]);
    }
}

#[test]
fn the_blast_radius_is_checked_against_max_targets() {
    let now = facts("2026-11-24T12:00:00Z");
    check(
        "",
        &["web-01"],
        &now,
        "max_targets",
        &["pass: blast radius: 1 target within max_targets 3"],
    );
    check(
        "",
        &["web-01", "web-02", "web-03"],
        &now,
        "max_targets",
        &["pass: blast radius: 3 targets within max_targets 3"],
    );
    check(
        "",
        &["web-01", "web-02", "web-03", "web-04"],
        &now,
        "max_targets",
        &["deny: blast radius: 4 targets exceed the runbook's max_targets of 3"],
    );
    check(
        "",
        &[],
        &now,
        "max_targets",
        &["deny: the plan has no targets"],
    );
}

#[test]
fn environments_must_be_named_and_allowed() {
    let environments = "  environments: [production, staging]\n";
    let in_environment = |environment: Option<&str>| Facts {
        environment: environment.map(str::to_owned),
        ..facts("2026-11-24T12:00:00Z")
    };
    check(
        environments,
        &["web-01"],
        &in_environment(Some("staging")),
        "environments",
        &["pass: environment `staging` is one of the runbook's environments"],
    );
    check(
        environments,
        &["web-01"],
        &in_environment(Some("lab")),
        "environments",
        &["deny: environment `lab` is not one of the runbook's environments (production, staging)"],
    );
    check(
        environments,
        &["web-01"],
        &in_environment(None),
        "environments",
        &[
            "deny: the event names no environment (fields.environment) and the runbook only runs in: production, staging",
        ],
    );
    check("", &["web-01"], &in_environment(None), "environments", &[]);
}
