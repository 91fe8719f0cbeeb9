//! Decisions: the strictest finding wins, every reason is kept, and
//! `decide` without facts judges what the event alone tells.

use domain::PrincipalKind;
use domain::{Decision, DecisionKind};
use policy::{Facts, RecentRuns, Requester, decide, decide_with_facts, facts_document};
use serde_json::json;

use crate::{event, facts, plan, runbook_with};

#[track_caller]
fn check(decision: Decision, kind: DecisionKind, reasons: &[&str], expires_after_ms: Option<u64>) {
    assert_eq!(decision.kind, kind, "{:?}", decision.reasons);
    assert_eq!(decision.reasons, reasons);
    assert_eq!(decision.expires_after_ms, expires_after_ms);
}

const GUARDED: &str = "  environments: [production]
  change_windows:
    - { days: [mon-fri], from: \"22:00\", to: \"02:00\", time_zone: Europe/Berlin }
  cooldown: { runs: 2, window: 1h }
  sensitive_targets: [\"db-prod-*\"]
";

#[test]
fn guardrails_that_hold_let_an_auto_runbook_run() {
    let runbook = runbook_with(GUARDED, 2, "auto");
    check(
        decide_with_facts(
            &runbook,
            &plan(&runbook, &["web-01"]),
            &event(None, "2026-11-23T21:30:00Z"),
            &facts("2026-11-23T21:30:00Z"),
        ),
        DecisionKind::Allow,
        &[
            "blast radius: 1 target within max_targets 2",
            "environment `production` is one of the runbook's environments",
            "inside change window mon-fri 22:00-02:00 Europe/Berlin",
            "cooldown: every target ran fewer than 2 times in the last 1h",
            "no target is sensitive",
            "runbook `recycle-app-pool` is set to approval: auto",
        ],
        None,
    );
}

#[test]
fn require_approval_comes_first_and_carries_the_runbooks_expiry() {
    let runbook = runbook_with(GUARDED, 2, "{ mode: auto, expires: 2h }");
    check(
        decide_with_facts(
            &runbook,
            &plan(&runbook, &["db-prod-01"]),
            &event(None, "2026-11-23T21:30:00Z"),
            &facts("2026-11-23T21:30:00Z"),
        ),
        DecisionKind::RequireApproval,
        &[
            "sensitive target: `db-prod-01` (matches `db-prod-*`)",
            "blast radius: 1 target within max_targets 2",
            "environment `production` is one of the runbook's environments",
            "inside change window mon-fri 22:00-02:00 Europe/Berlin",
            "cooldown: every target ran fewer than 2 times in the last 1h",
            "runbook `recycle-app-pool` is set to approval: auto",
        ],
        Some(7_200_000),
    );
    let required = runbook_with("", 2, "required");
    check(
        decide_with_facts(
            &required,
            &plan(&required, &["web-01"]),
            &event(None, "2026-11-23T21:30:00Z"),
            &facts("2026-11-23T21:30:00Z"),
        ),
        DecisionKind::RequireApproval,
        &[
            "runbook `recycle-app-pool` requires approval",
            "blast radius: 1 target within max_targets 2",
        ],
        Some(runbook::Approval::DEFAULT_EXPIRES_MS),
    );
}

#[test]
fn deny_beats_require_approval_and_keeps_its_reasons() {
    let runbook = runbook_with(GUARDED, 2, "required");
    let facts = Facts {
        recent_runs: Some(RecentRuns {
            on_target: [("db-prod-01".to_owned(), 2)].into(),
            of_runbook: 2,
            under_way: 0,
        }),
        ..facts("2026-11-28T12:00:00Z")
    };
    check(
        decide_with_facts(
            &runbook,
            &plan(&runbook, &["db-prod-01", "web-01", "web-02"]),
            &event(None, "2026-11-28T12:00:00Z"),
            &facts,
        ),
        DecisionKind::Deny,
        &[
            "blast radius: 3 targets exceed the runbook's max_targets of 2",
            "outside the change windows (mon-fri 22:00-02:00 Europe/Berlin); the next opens at 2026-11-30 22:00 CET",
            "cooldown: the runbook ran 2 times in the last 1h on `db-prod-01`; it allows 2 per target",
            "sensitive target: `db-prod-01` (matches `db-prod-*`)",
            "runbook `recycle-app-pool` requires approval",
        ],
        None,
    );
}

#[test]
fn the_environment_comes_from_the_facts_or_else_the_event() {
    let runbook = runbook_with("  environments: [production]\n", 1, "auto");
    let plan = plan(&runbook, &["web-01"]);
    let unknown = Facts {
        environment: None,
        ..facts("2026-11-24T12:00:00Z")
    };
    assert_eq!(
        decide_with_facts(
            &runbook,
            &plan,
            &event(Some("production"), "2026-11-24T12:00:00Z"),
            &unknown
        )
        .kind,
        DecisionKind::Allow
    );
    assert_eq!(
        decide_with_facts(
            &runbook,
            &plan,
            &event(Some("lab"), "2026-11-24T12:00:00Z"),
            &facts("2026-11-24T12:00:00Z")
        )
        .kind,
        DecisionKind::Allow,
        "facts win over the event"
    );
    assert_eq!(
        decide_with_facts(
            &runbook,
            &plan,
            &event(None, "2026-11-24T12:00:00Z"),
            &unknown
        )
        .kind,
        DecisionKind::Deny
    );
}

#[test]
fn decide_judges_the_event_at_its_arrival_without_recent_runs() {
    let runbook = runbook_with(
        "  environments: [production]\n  cooldown: { window: 1h }\n  freeze:\n    - { from: \"2026-12-20T00:00\", to: \"2027-01-04T00:00\", time_zone: UTC }\n",
        1,
        "auto",
    );
    let plan = plan(&runbook, &["web-01"]);
    check(
        decide(
            &runbook,
            &plan,
            &event(Some("production"), "2026-11-24T12:00:00Z"),
        ),
        DecisionKind::Allow,
        &[
            "blast radius: 1 target within max_targets 1",
            "environment `production` is one of the runbook's environments",
            "no freeze is in force",
            "cooldown not checked: recent runs are not known here",
            "runbook `recycle-app-pool` is set to approval: auto",
        ],
        None,
    );
    check(
        decide(
            &runbook,
            &plan,
            &event(Some("production"), "2026-12-24T12:00:00Z"),
        ),
        DecisionKind::Deny,
        &["frozen from 2026-12-20 00:00 until 2027-01-04 00:00 UTC"],
        None,
    );
    check(
        decide(&runbook, &plan, &event(Some("lab"), "2026-11-24T12:00:00Z")),
        DecisionKind::Deny,
        &["environment `lab` is not one of the runbook's environments (production)"],
        None,
    );
}

#[test]
fn an_agent_below_the_minimum_confidence_is_denied() {
    let runbook = runbook_with("  min_confidence: 0.8\n", 1, "required");
    let agent = Facts {
        requester: Requester {
            kind: PrincipalKind::Agent,
            name: "triage-bot".into(),
            confidence: Some(0.55),
        },
        ..facts("2026-11-24T12:00:00Z")
    };
    check(
        decide_with_facts(
            &runbook,
            &plan(&runbook, &["web-01"]),
            &event(None, "2026-11-24T12:00:00Z"),
            &agent,
        ),
        DecisionKind::Deny,
        &[
            "agent `triage-bot` proposed with confidence 0.55, below the runbook's min_confidence 0.8",
            "runbook `recycle-app-pool` requires approval",
        ],
        None,
    );
}

#[test]
fn the_facts_document_shows_what_the_guardrails_saw() {
    let runbook = runbook_with(
        "  environments: [production]
  change_windows:
    - { days: [mon-fri], from: \"22:00\", to: \"02:00\", time_zone: Europe/Berlin }
  freeze:
    - { from: \"2026-12-20T00:00\", to: \"2027-01-04T00:00\", time_zone: America/New_York, reason: year-end freeze }
  business_hours: { days: [mon-fri], from: \"08:00\", to: \"18:00\", time_zone: Europe/London }
  cooldown: { runs: 3, window: 1h }
  rate_limit: { runs: 10, window: 1h }
  max_concurrent: 2
  sensitive_targets: [\"db-prod-*\"]
  min_confidence: 0.8
",
        5,
        "auto",
    );
    let facts = Facts {
        requester: Requester {
            kind: PrincipalKind::Agent,
            name: "triage-bot".into(),
            confidence: Some(0.9),
        },
        recent_runs: Some(RecentRuns {
            on_target: [("db-prod-01".to_owned(), 3), ("elsewhere".to_owned(), 7)].into(),
            of_runbook: 4,
            under_way: 1,
        }),
        ..facts("2026-12-26T12:00:00Z")
    };
    let document = facts_document(&runbook, &plan(&runbook, &["db-prod-01", "web-01"]), &facts);
    let findings = document["findings"].as_array().expect("findings").len();
    assert_eq!(findings, 10, "{:#}", document["findings"]);
    let mut without_findings = document.clone();
    without_findings.as_object_mut().unwrap().remove("findings");
    assert_eq!(
        without_findings,
        json!({
            "now": "2026-12-26T12:00:00Z",
            "runbook": {"id": "recycle-app-pool", "version": runbook.version, "risk": "reversible"},
            "requester": {"kind": "agent", "name": "triage-bot", "confidence": 0.9},
            "environment": "production",
            "environments": ["production"],
            "targets": ["db-prod-01", "web-01"],
            "blast_radius": 2,
            "max_targets": 5,
            "sensitive_targets": [{"target": "db-prod-01", "pattern": "db-prod-*"}],
            "change_windows": {
                "inside": false,
                "next_opens_at": "2026-12-28T21:00:00Z",
                "windows": ["mon-fri 22:00-02:00 Europe/Berlin"],
            },
            "business_hours": {
                "inside": false,
                "next_opens_at": "2026-12-28T08:00:00Z",
                "windows": ["mon-fri 08:00-18:00 Europe/London"],
                "outside": "require_approval",
            },
            "freeze": {"inside": true, "reason": "year-end freeze", "ends_at": "2027-01-04T05:00:00Z"},
            "cooldown": {"runs": 3, "window_ms": 3_600_000, "recent_runs_on_target": {"db-prod-01": 3, "web-01": 0}},
            "rate_limit": {"runs": 10, "window_ms": 3_600_000, "recent_runs": 4},
            "max_concurrent": {"runs": 2, "under_way": 1},
            "global_rate_limit": null,
            "min_confidence": 0.8,
        })
    );
    assert_eq!(
        document["findings"][4],
        json!({"guardrail": "business_hours", "verdict": "require_approval", "reason": "outside business hours (mon-fri 08:00-18:00 Europe/London)"})
    );
}
