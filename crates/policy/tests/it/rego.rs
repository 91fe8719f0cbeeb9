//! Organisation policies (Rego): the example policies decide a table of
//! cases, each rule for and against; several combine with deny beating
//! require_approval beating allow; the set's version follows its files;
//! a broken file is named at its line, and a policy that fails while
//! deciding is an error, never an allow.

use std::path::Path;

use domain::{Decision, DecisionKind, PrincipalKind};
use policy::{
    Error, Facts, PolicySet, Requester, TestResult, decide_with_facts, decide_with_policies,
};
use runbook::Runbook;
use serde_json::{Value, json};

use crate::{event, plan};

fn examples() -> PolicySet {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    PolicySet::load(Path::new(dir)).unwrap_or_else(|error| panic!("{error}"))
}

fn runbook(risk: &str, approval: &str, guardrails: &str) -> Runbook {
    let text = format!(
        r#"id: act
title: Act on something
owner: ops
risk: {risk}
approval: {approval}
match: {{ source: servicenow }}
targets: {{ from: "event.fields.hosts", max_targets: 3 }}
{guardrails}steps:
  - id: act
    action: http.request
    with: {{ method: POST, url: "{{{{ env.API }}}}/act" }}
"#
    );
    runbook::parse_runbook(Path::new("act.yaml"), &text, connectors::STEP_ACTIONS).unwrap_or_else(
        |diagnostics| {
            let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("expected a valid runbook, got:\n{}", rendered.join("\n"))
        },
    )
}

/// One situation to decide; `Case::default()` is a reversible, auto-approved
/// runbook acting on one laptop, asked by a person on an ordinary Monday.
struct Case {
    risk: &'static str,
    approval: &'static str,
    guardrails: &'static str,
    environment: &'static str,
    targets: &'static [&'static str],
    inputs: Value,
    fields: Value,
    requester: (PrincipalKind, &'static str, Option<f64>),
    now: &'static str,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            risk: "reversible",
            approval: "auto",
            guardrails: "",
            environment: "workstation",
            targets: &["LAPTOP-0042"],
            inputs: json!({}),
            fields: json!({}),
            requester: (PrincipalKind::User, "alice", None),
            now: "2026-11-23T10:00:00Z",
        }
    }
}

impl Case {
    fn decide(&self, policies: Option<&PolicySet>) -> policy::Result<Decision> {
        let (runbook, plan, event, facts) = self.situation();
        decide_with_policies(&runbook, &plan, &event, &facts, policies)
    }

    /// The document the policies judge in this case.
    fn input(&self) -> Value {
        let (runbook, plan, event, facts) = self.situation();
        policy::policy_input(&runbook, &plan, &event, &facts)
    }

    fn situation(&self) -> (Runbook, domain::Plan, domain::Event, Facts) {
        let runbook = runbook(self.risk, self.approval, self.guardrails);
        let mut plan = plan(&runbook, self.targets);
        plan.inputs = self.inputs.clone();
        let mut event = event(Some(self.environment), self.now);
        if let (Some(fields), Some(extra)) = (event.fields.as_object_mut(), self.fields.as_object())
        {
            fields.extend(extra.clone());
        }
        let (kind, name, confidence) = self.requester;
        let facts = Facts {
            requester: Requester {
                kind,
                name: name.to_owned(),
                confidence,
            },
            environment: None,
            ..crate::facts(self.now)
        };
        (runbook, plan, event, facts)
    }
}

/// The decision for `case` under the example policies: its kind, its
/// reasons, and its stages as `name: approvers (rule)`.
///
/// Every case is also judged rule by rule, the reference, which must
/// answer exactly as the one evaluation of every rule does.
#[track_caller]
fn check(case: Case, kind: DecisionKind, reasons: &[&str], stages: &[&str]) {
    let policies = examples();
    assert_eq!(
        policies.evaluate(case.input()).unwrap(),
        policies.evaluate_rule_by_rule(case.input()).unwrap(),
        "one evaluation answers as the rules one by one"
    );
    let decision = case
        .decide(Some(&policies))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(decision.kind, kind, "{:#?}", decision.reasons);
    assert_eq!(decision.reasons, reasons);
    let described: Vec<String> = decision
        .stages
        .iter()
        .map(|stage| {
            format!(
                "{}: {} ({})",
                stage.name,
                stage.approvers.join(", "),
                serde_json::to_value(stage.rule).unwrap()
            )
        })
        .collect();
    assert_eq!(described, stages);
    assert_eq!(decision.policy_version.as_deref(), Some(policies.version()));
}

const BLAST_RADIUS_ONE: &str = "blast radius: 1 target within max_targets 3";
const AUTO: &str = "runbook `act` is set to approval: auto";
const ON_CALL: &str = "on-call: group:on-call (\"any\")";

#[test]
fn low_risk_reversible_actions_off_production_or_on_one_target_run_on_their_own() {
    check(
        Case::default(),
        DecisionKind::Allow,
        &[
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[],
    );
    check(
        Case {
            environment: "staging",
            targets: &["app-01", "app-02"],
            ..Case::default()
        },
        DecisionKind::Allow,
        &[
            "blast radius: 2 targets within max_targets 3",
            AUTO,
            "low_risk: reversible action in `staging`: no approval needed",
        ],
        &[],
    );
}

#[test]
fn production_and_customer_impact_need_on_call() {
    check(
        Case {
            environment: "production",
            targets: &["WEB-01"],
            ..Case::default()
        },
        DecisionKind::RequireApproval,
        &[
            "production: production actions need on-call approval",
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action on a single target: no approval needed",
        ],
        &[ON_CALL],
    );
    check(
        Case {
            environment: "production",
            targets: &["WEB-01", "WEB-02"],
            ..Case::default()
        },
        DecisionKind::RequireApproval,
        &[
            "production: production actions need on-call approval",
            "blast radius: 2 targets within max_targets 3",
            AUTO,
        ],
        &[ON_CALL],
    );
    check(
        Case {
            fields: json!({"customer_impact": true}),
            ..Case::default()
        },
        DecisionKind::RequireApproval,
        &[
            "production: customer-impacting actions need on-call approval",
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[ON_CALL],
    );
    check(
        Case {
            risk: "read_only",
            environment: "production",
            ..Case::default()
        },
        DecisionKind::Allow,
        &[
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: read_only action on a single target: no approval needed",
        ],
        &[],
    );
}

#[test]
fn privileged_group_membership_needs_the_manager_then_security() {
    check(
        Case {
            inputs: json!({"user": "kim", "group": "vpn-contractors"}),
            ..Case::default()
        },
        DecisionKind::RequireApproval,
        &[
            "privileged_access: membership of privileged group `vpn-contractors` changes security posture: the requester's manager and security approve",
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[
            "manager: manager_of(requester) (\"any\")",
            "security: group:security (\"any\")",
        ],
    );
    check(
        Case {
            inputs: json!({"user": "kim", "groups": ["staff", "printers"]}),
            ..Case::default()
        },
        DecisionKind::Allow,
        &[
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[],
    );
}

#[test]
fn irreversible_actions_need_two_distinct_people() {
    let case = Case {
        risk: "irreversible",
        ..Case::default()
    };
    let decision = case.decide(Some(&examples())).unwrap();
    assert_eq!(decision.approvals_required, 2);
    check(
        case,
        DecisionKind::RequireApproval,
        &[
            "irreversible: the action is irreversible: two distinct people approve",
            BLAST_RADIUS_ONE,
            AUTO,
            "the action is irreversible: two distinct people must approve",
        ],
        &["two-people: group:on-call, group:cab ({\"at_least\":2})"],
    );
}

#[test]
fn nothing_runs_in_a_freeze() {
    let frozen = "freeze: year-end change freeze from 2026-12-21T00:00:00Z until 2027-01-04T00:00:00Z: nothing runs";
    check(
        Case {
            now: "2026-12-24T10:00:00Z",
            ..Case::default()
        },
        DecisionKind::Deny,
        &[frozen],
        &[],
    );
    check(
        Case {
            now: "2026-12-20T23:59:59.900Z",
            ..Case::default()
        },
        DecisionKind::Allow,
        &[
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[],
    );
}

#[test]
fn an_unsure_agent_is_denied_or_only_suggests() {
    let agent = |confidence| (PrincipalKind::Agent, "triage-bot", confidence);
    check(
        Case {
            requester: agent(Some(0.3)),
            ..Case::default()
        },
        DecisionKind::Deny,
        &["agent_confidence: agent `triage-bot` proposed with confidence 0.3, below 0.5"],
        &[],
    );
    check(
        Case {
            requester: agent(None),
            ..Case::default()
        },
        DecisionKind::Deny,
        &["agent_confidence: agent `triage-bot` gave no confidence; a proposal needs at least 0.5"],
        &[],
    );
    check(
        Case {
            requester: agent(Some(0.6)),
            ..Case::default()
        },
        DecisionKind::RequireApproval,
        &[
            "agent_confidence: suggest only: agent `triage-bot` proposed with confidence 0.6, below 0.8; a person decides",
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[ON_CALL],
    );
    check(
        Case {
            requester: agent(Some(0.9)),
            ..Case::default()
        },
        DecisionKind::Allow,
        &[
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action in `workstation`: no approval needed",
        ],
        &[],
    );
}

#[test]
fn deny_beats_require_approval_beats_allow_across_policies_and_guardrails() {
    // A freeze denies what production would only put to on-call; what
    // needed approval is still said, what passed is not.
    check(
        Case {
            environment: "production",
            now: "2026-12-24T10:00:00Z",
            ..Case::default()
        },
        DecisionKind::Deny,
        &[
            "freeze: year-end change freeze from 2026-12-21T00:00:00Z until 2027-01-04T00:00:00Z: nothing runs",
            "production: production actions need on-call approval",
        ],
        &[],
    );
    // A runbook guardrail denies what every policy allows.
    check(
        Case {
            guardrails: "guardrails:\n  environments: [production]\n",
            ..Case::default()
        },
        DecisionKind::Deny,
        &["environment `workstation` is not one of the runbook's environments (production)"],
        &[],
    );
    // Two policies asking for the same on-call stage get it once; stages
    // follow their `order`.
    check(
        Case {
            environment: "production",
            requester: (PrincipalKind::Agent, "triage-bot", Some(0.6)),
            inputs: json!({"group": "domain-admins"}),
            ..Case::default()
        },
        DecisionKind::RequireApproval,
        &[
            "agent_confidence: suggest only: agent `triage-bot` proposed with confidence 0.6, below 0.8; a person decides",
            "privileged_access: membership of privileged group `domain-admins` changes security posture: the requester's manager and security approve",
            "production: production actions need on-call approval",
            BLAST_RADIUS_ONE,
            AUTO,
            "low_risk: reversible action on a single target: no approval needed",
        ],
        &[
            ON_CALL,
            "manager: manager_of(requester) (\"any\")",
            "security: group:security (\"any\")",
        ],
    );
}

#[test]
fn without_policies_the_built_in_decision_stands() {
    let case = Case {
        approval: "{ mode: required, expires: 2h }",
        ..Case::default()
    };
    let runbook = runbook(case.risk, case.approval, "");
    let event = event(Some("workstation"), case.now);
    let facts = Facts {
        environment: None,
        ..crate::facts(case.now)
    };
    let plan = plan(&runbook, case.targets);
    let built_in = decide_with_facts(&runbook, &plan, &event, &facts);
    assert_eq!(case.decide(None).unwrap(), built_in);
    assert_eq!(built_in.policy_version, None);

    let with_policies = case.decide(Some(&examples())).unwrap();
    assert_eq!(with_policies.kind, DecisionKind::RequireApproval);
    assert_eq!(with_policies.expires_after_ms, Some(2 * 3_600_000));
}

#[test]
fn the_example_policies_pass_their_own_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let outcomes = policy::run_tests(Path::new(dir)).unwrap();
    assert!(outcomes.len() >= 12, "{outcomes:#?}");
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.result != TestResult::Pass)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A policy directory holding `files`.
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const ALLOW_ALL: &str = "package opsgate.open\n\nallow contains \"fine\" if true\n";

#[test]
fn the_version_is_a_hash_of_the_policy_files_and_not_of_the_tests() {
    let version = |files: &[(&str, &str)]| {
        let dir = policy_dir(files);
        PolicySet::load(dir.path()).unwrap().version().to_owned()
    };
    let first = version(&[("open.rego", ALLOW_ALL)]);
    assert_eq!(first.len(), 64);
    assert_eq!(first, version(&[("open.rego", ALLOW_ALL)]), "stable");
    let test = "package opsgate.open_test\n\ntest_x if true\n";
    assert_eq!(
        first,
        version(&[("open.rego", ALLOW_ALL), ("open_test.rego", test)])
    );
    let changed = ALLOW_ALL.replace("fine", "very fine");
    assert_ne!(first, version(&[("open.rego", &changed)]), "contents");
    assert_ne!(first, version(&[("other.rego", ALLOW_ALL)]), "file name");
}

#[track_caller]
fn load_error(files: &[(&str, &str)]) -> Vec<String> {
    let dir = policy_dir(files);
    match PolicySet::load(dir.path()) {
        Err(Error::Policies { diagnostics, .. }) => diagnostics
            .iter()
            .map(|diagnostic| {
                let name = diagnostic.file.file_name().unwrap().to_string_lossy();
                format!("{name}:{}: {}", diagnostic.line, diagnostic.message)
            })
            .collect(),
        other => panic!("expected invalid policies, got {other:?}"),
    }
}

#[test]
fn a_broken_file_is_named_at_its_line_and_every_one_is_reported() {
    assert_eq!(
        load_error(&[
            (
                "a.rego",
                "package opsgate.a\n\ndeny contains \"x\" if {\n\tinput.a ==\n}\n"
            ),
            ("b.rego", ALLOW_ALL),
            (
                "c.rego",
                "# the company's rules\npackage company.rules\n\ndeny contains \"x\" if true\n"
            ),
        ]),
        [
            "a.rego:5: expecting expression",
            "c.rego:2: package `company.rules` is not under `opsgate.`",
        ]
    );
}

/// What deciding the default case under a policy directory holding
/// `files` gives: the error's text.
#[track_caller]
fn evaluation_error(files: &[(&str, &str)]) -> String {
    let dir = policy_dir(files);
    let policies = PolicySet::load(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    match Case::default().decide(Some(&policies)) {
        Err(error) => error.to_string(),
        Ok(decision) => panic!("expected an error (fail closed), got {decision:?}"),
    }
}

#[test]
fn a_policy_that_cannot_decide_is_an_error_never_an_allow() {
    let conflicting = "package opsgate.conflict\n\nlevel := 1 if true\nlevel := 2 if true\n\ndeny contains \"never\" if level == 3\n";
    let error = evaluation_error(&[("conflict.rego", conflicting)]);
    assert!(
        error.starts_with("policy `conflict`, rule `deny`: conflict.rego:"),
        "{error}"
    );
    assert_eq!(
        evaluation_error(&[("boolean.rego", "package opsgate.boolean\n\ndeny := false\n")]),
        "policy `boolean`, rule `deny`: must be a set of reasons (`deny contains \"why\" if { … }`), not false"
    );
    // A deny that fails on the input's shape denies.
    let typed = "package opsgate.typed\n\ndeny contains reason if reason := concat(\"/\", input.plan.targets[0])\n";
    let error = evaluation_error(&[("typed.rego", typed)]);
    assert!(
        error.starts_with("policy `typed`, rule `deny`: typed.rego:3:"),
        "{error}"
    );
    let nobody = "package opsgate.nobody\n\nstages contains {\"name\": \"x\", \"approvers\": [\"everyone\"]} if true\n";
    assert!(evaluation_error(&[("nobody.rego", nobody)]).starts_with(
        "policy `nobody`, rule `stages`: stage `x`: `everyone` is not an approver reference"
    ),);
    let stage = |package: &str, rule: &str| {
        format!(
            "package opsgate.{package}\n\nstages contains {{\"name\": \"on-call\", \"approvers\": [\"group:on-call\"], \"rule\": {rule}}} if true\n"
        )
    };
    assert_eq!(
        evaluation_error(&[
            ("a.rego", &stage("a", "\"any\"")),
            ("b.rego", &stage("b", "\"all\"")),
        ]),
        "approval stage `on-call` is defined differently by policy `a` and policy `b`"
    );
}

#[test]
fn stages_alone_require_approval_with_a_reason() {
    let dir = policy_dir(&[(
        "cab.rego",
        "package opsgate.cab\n\nstages contains {\"name\": \"cab\", \"approvers\": [\"group:cab\"], \"timeout\": \"2h\", \"rule\": {\"at_least\": 2}} if true\n",
    )]);
    let policies = PolicySet::load(dir.path()).unwrap();
    let decision = Case::default().decide(Some(&policies)).unwrap();
    assert_eq!(decision.kind, DecisionKind::RequireApproval);
    assert_eq!(decision.reasons[0], "cab: asks for approval stage(s) cab");
    assert_eq!(
        serde_json::to_value(&decision.stages).unwrap(),
        json!([{"name": "cab", "approvers": ["group:cab"], "rule": {"at_least": 2}, "timeout_ms": 7_200_000}])
    );
}

#[test]
fn the_input_document_has_the_event_runbook_plan_requester_and_facts() {
    let runbook = runbook("reversible", "auto", "");
    let plan = plan(&runbook, &["LAPTOP-0042"]);
    let event = event(Some("workstation"), "2026-11-23T10:00:00.250Z");
    let facts = Facts {
        environment: None,
        ..crate::facts("2026-11-23T10:00:00.250Z")
    };
    let input = policy::policy_input(&runbook, &plan, &event, &facts);
    let keys: Vec<&String> = input.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["event", "facts", "plan", "proposal", "requester", "runbook"]
    );
    assert_eq!(input["proposal"], Value::Null, "not an agent's proposal");
    assert_eq!(input["event"]["source"], "servicenow");
    assert_eq!(input["runbook"]["risk"], "reversible");
    assert_eq!(input["runbook"]["approval"]["mode"], "auto");
    assert_eq!(input["plan"]["targets"], json!(["LAPTOP-0042"]));
    assert_eq!(
        input["requester"],
        json!({"kind": "user", "name": "alice", "confidence": null})
    );
    assert_eq!(
        input["facts"]["environment"], "workstation",
        "from the event"
    );
    assert_eq!(
        input["facts"]["now"], "2026-11-23T10:00:00Z",
        "whole seconds"
    );
    assert_eq!(input["facts"]["blast_radius"], 1);
}

#[test]
fn a_policy_set_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<PolicySet>();
}

#[test]
fn an_agents_proposal_is_in_the_input_document_as_it_sent_it() {
    let runbook = runbook("reversible", "auto", "");
    let plan = plan(&runbook, &["LAPTOP-0042"]);
    let mut event = event(Some("workstation"), "2026-11-23T10:00:00.250Z");
    let proposal =
        json!({"agent": "agent:bot", "inputs": {"service": "vpnagent"}, "confidence": 0.7});
    event.fields["proposal"] = proposal.clone();
    let facts = crate::facts("2026-11-23T10:00:00.250Z");
    // Only an event of the proposals' own source and kind carries one.
    let input = policy::policy_input(&runbook, &plan, &event, &facts);
    assert_eq!(
        input["proposal"],
        Value::Null,
        "a ticket's field is not a proposal"
    );
    event.source = domain::PROPOSAL_SOURCE.to_owned();
    event.kind = domain::PROPOSAL_KIND.to_owned();
    let input = policy::policy_input(&runbook, &plan, &event, &facts);
    assert_eq!(input["proposal"], proposal);
}

#[test]
fn an_engine_reused_for_the_next_decision_keeps_nothing_of_the_last() {
    let policies = examples();
    let production = Case {
        environment: "production",
        ..Case::default()
    };
    let frozen = Case {
        now: "2026-12-24T10:00:00Z",
        ..Case::default()
    };
    let alone: Vec<_> = [&production, &frozen, &Case::default()]
        .iter()
        .map(|case| examples().evaluate(case.input()).unwrap())
        .collect();
    let kinds: Vec<DecisionKind> = alone.iter().map(|outcome| outcome.kind).collect();
    assert_eq!(
        kinds,
        [
            DecisionKind::RequireApproval,
            DecisionKind::Deny,
            DecisionKind::Allow
        ]
    );
    for _ in 0..2 {
        for (case, expected) in [&production, &frozen, &Case::default()].iter().zip(&alone) {
            assert_eq!(&policies.evaluate(case.input()).unwrap(), expected);
        }
    }
}
