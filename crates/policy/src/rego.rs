//! Organisation policies: Rego files from a directory, evaluated in process
//! (regorus), combined with the runbook's own guardrails.
//!
//! A policy is a Rego package under `opsgate.` that answers in a fixed
//! shape — partial sets `deny`, `require_approval` and `allow` of reasons,
//! and `stages` of approval stages — so that any number of policies combine
//! the same way the built-in guardrails do: deny beats require_approval
//! beats allow, and every reason is kept. A policy can only tighten a
//! decision; no package can loosen what another one, or the runbook, asks.
//!
//! The files are parsed and analysed once, in [`PolicySet::load`], with
//! one more module that gathers every package's decision rules into a
//! single rule (`answers_module`): a decision is one evaluation, in which
//! what the packages share is evaluated once. It runs on a copy of the
//! prepared engine that earlier decisions used and gave back, so it never
//! reads, parses or copies the policies. Only when that evaluation fails
//! are the rules evaluated one by one, so that the error names its package
//! and rule.
//!
//! regorus can also compile policies for its virtual machine, several
//! times faster, but that machine treats an error inside a rule (a
//! built-in given a value of the wrong type, two values for one rule) as
//! the rule being undefined. Then a `deny` that fails on an input an
//! outsider shaped would simply not deny; the interpreter reports the
//! error, and the gate fails closed. So the interpreter decides.
//!
//! The set's version is a hash of the files, stored with every decision, so
//! a decision can always be traced to the exact policy text that took part
//! in it. An error while deciding is an `Err`, never a silent allow.
//!
//! `docs/policies.md` documents the input document, the output contract and
//! the example policies in `examples/policies`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use domain::{ApprovalStage, Decision, DecisionKind, Event, Plan, StageRule};
use regorus::unstable::{ExprRef, Parser, Rule, RuleHead};
use runbook::{Diagnostic, Runbook};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::guardrails::{Facts, Finding, Verdict, event_environment, facts_document};
use crate::{Error, Result};

/// Where decision packages live: `package opsgate.production`.
const NAMESPACE: &str = "data.opsgate.";

/// The rules a decision package may define, in the order they are reported.
const DECISION_RULES: [&str; 4] = ["deny", "require_approval", "allow", "stages"];

/// Policy files ending so are tests: run by [`run_tests`], never decide.
const TEST_SUFFIX: &str = "_test.rego";

/// The rule of the generated module that gathers every decision rule's
/// answer; its package is outside `opsgate.`, where no policy file may be.
const ANSWERS: &str = "data.opsgate_answers.answers";

/// How many engines that decided are kept for the next decisions: as many
/// as decisions made at once.
const IDLE_ENGINES: usize = 16;

/// The policies of one directory, parsed and prepared to decide.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Prepared once at load; decisions work on copies of it.
    engine: regorus::Engine,
    /// Copies of `engine` that decided before, each ready for a new input.
    idle: Arc<Mutex<Vec<regorus::Engine>>>,
    packages: Vec<DecisionPackage>,
    files: Vec<String>,
    version: String,
}

#[derive(Debug, Clone)]
struct DecisionPackage {
    /// `data.opsgate.production`
    path: String,
    /// `production`
    name: String,
    /// Which of [`DECISION_RULES`] it defines, in that order.
    rules: Vec<&'static str>,
}

impl PolicySet {
    /// Loads every `*.rego` file directly in `dir` (not in subdirectories),
    /// in file-name order, except the tests (`*_test.rego`). Every file that
    /// does not parse, and every package outside `opsgate.`, is reported at
    /// its line in one [`Error::Policies`].
    pub fn load(dir: &Path) -> Result<PolicySet> {
        let mut loaded = load_files(dir, Files::DecisionOnly)?;
        // Package → the names of its rules, over all of its files.
        let mut declared: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for module in loaded.engine.get_modules() {
            let names = declared
                .entry(package_path(&module.package.refr))
                .or_default();
            names.extend(
                module
                    .policy
                    .iter()
                    .filter_map(|rule| rule_name(rule))
                    .map(|head| head.name),
            );
        }
        let packages: Vec<DecisionPackage> = declared
            .into_iter()
            .filter_map(|(path, names)| {
                let name = path.strip_prefix(NAMESPACE)?.to_owned();
                let rules = DECISION_RULES
                    .into_iter()
                    .filter(|rule| names.contains(*rule))
                    .collect();
                Some(DecisionPackage { path, name, rules })
            })
            .collect();
        let mut engine = loaded.engine;
        add_answers_module(&mut engine, &packages).map_err(|message| Error::Policies {
            dir: dir.to_owned(),
            diagnostics: vec![diagnostic(dir, 1, 1, &message, None)],
        })?;
        Ok(PolicySet {
            engine,
            idle: Arc::new(Mutex::new(Vec::new())),
            packages,
            version: version_of(&loaded.sources),
            files: loaded.sources.into_iter().map(|(name, _)| name).collect(),
        })
    }

    /// SHA-256 (hex) over the decision files' names and contents: what a
    /// stored decision names as its `policy_version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The decision files, by name, in the order they were loaded.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Judges `input` (see [`policy_input`]) by every package and combines
    /// their answers: any deny denies; else any require_approval or any
    /// stage requires approval; else allow.
    pub fn evaluate(&self, input: Value) -> Result<PolicyOutcome> {
        let idle = self.idle.lock().expect("idle engines lock").pop();
        let mut engine = idle.unwrap_or_else(|| self.engine.clone());
        engine.set_input(regorus::Value::from(input));
        let answers = match engine.eval_rule(ANSWERS.to_owned()) {
            Ok(regorus::Value::Array(answers)) => answers,
            // Evaluated again rule by rule, an error names its package and
            // rule, and an undefined rule is told apart. The engine is not
            // used again.
            _ => return self.rule_by_rule(&mut engine),
        };
        // The input is the caller's: the engine keeps nothing of it.
        engine.set_input(regorus::Value::Undefined);
        let mut idle = self.idle.lock().expect("idle engines lock");
        if idle.len() < IDLE_ENGINES {
            idle.push(engine);
        }
        drop(idle);
        let mut answers = answers.iter().cloned();
        self.combine(|_, _| Ok(answers.next().unwrap_or(regorus::Value::Undefined)))
    }

    /// [`PolicySet::evaluate`] rule by rule, each rule of each package in an
    /// evaluation of its own, on a fresh copy of the prepared engine: the
    /// reference the one evaluation is checked against and benchmarks
    /// compare with.
    pub fn evaluate_rule_by_rule(&self, input: Value) -> Result<PolicyOutcome> {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input));
        self.rule_by_rule(&mut engine)
    }

    fn rule_by_rule(&self, engine: &mut regorus::Engine) -> Result<PolicyOutcome> {
        self.combine(|package, rule| {
            engine
                .eval_rule(format!("{}.{rule}", package.path))
                .map_err(|error| compact_message(&error.to_string()))
        })
    }

    /// Combines what `answer` says each package's decision rules are, in
    /// package order and [`DECISION_RULES`] order.
    fn combine(
        &self,
        mut answer: impl FnMut(&DecisionPackage, &str) -> Result<regorus::Value, String>,
    ) -> Result<PolicyOutcome> {
        let mut packages = Vec::with_capacity(self.packages.len());
        let mut reasons = Vec::new();
        // Each stage with the package that asked for it first.
        let mut stages: Vec<(OrderedStage, &str)> = Vec::new();
        for package in &self.packages {
            let (outcome, asked) = package.evaluate(&mut answer)?;
            reasons.extend(outcome.reasons());
            for stage in asked {
                match stages
                    .iter()
                    .find(|(s, _)| s.stage.name == stage.stage.name)
                {
                    None => stages.push((stage, &package.name)),
                    Some((same, _)) if *same == stage => {}
                    Some((_, first)) => {
                        return Err(Error::StageConflict {
                            stage: stage.stage.name,
                            first: format!("policy `{first}`"),
                            second: format!("policy `{}`", package.name),
                        });
                    }
                }
            }
            packages.push(outcome);
        }
        // Stable: reasons of one verdict keep package order.
        reasons.sort_by_key(|reason| Reverse(reason.verdict));
        stages.sort_by(|(a, _), (b, _)| a.chain_order(b));
        let kind = match reasons.first().map(|reason| reason.verdict) {
            Some(Verdict::Deny) => DecisionKind::Deny,
            Some(Verdict::RequireApproval) => DecisionKind::RequireApproval,
            Some(Verdict::Pass) | None => DecisionKind::Allow,
        };
        Ok(PolicyOutcome {
            kind,
            reasons,
            stages: stages.into_iter().map(|(s, _)| s.stage).collect(),
            packages,
        })
    }
}

impl DecisionPackage {
    /// What each of the package's decision rules answers, and the stages
    /// it asks for with their order.
    fn evaluate(
        &self,
        answer: &mut impl FnMut(&DecisionPackage, &str) -> Result<regorus::Value, String>,
    ) -> Result<(PackageOutcome, Vec<OrderedStage>)> {
        let mut outcome = PackageOutcome {
            package: self.name.clone(),
            deny: None,
            require_approval: None,
            allow: None,
            stages: None,
        };
        let mut stages = Vec::new();
        for &rule in &self.rules {
            let failure = |message: String| Error::PolicyEvaluation {
                package: self.name.clone(),
                rule: rule.to_owned(),
                message,
            };
            let value = answer(self, rule).map_err(failure)?;
            match rule {
                "deny" => outcome.deny = Some(reason_set(rule, &value).map_err(failure)?),
                "require_approval" => {
                    outcome.require_approval = Some(reason_set(rule, &value).map_err(failure)?);
                }
                "allow" => outcome.allow = Some(reason_set(rule, &value).map_err(failure)?),
                _ => {
                    stages = policy_stages(&value).map_err(failure)?;
                    stages.sort_by(OrderedStage::chain_order);
                    outcome.stages = Some(stages.iter().map(|s| s.stage.clone()).collect());
                }
            }
        }
        Ok((outcome, stages))
    }
}

/// Adds the module whose rule [`ANSWERS`] is the list of every package's
/// decision rules' answers, in package and [`DECISION_RULES`] order. The
/// list is undefined when one of them is (a partial set never is; a rule
/// written `deny := …` may be): then the rules are evaluated one by one.
fn add_answers_module(
    engine: &mut regorus::Engine,
    packages: &[DecisionPackage],
) -> Result<(), String> {
    let rules: Vec<String> = packages
        .iter()
        .flat_map(|package| {
            package
                .rules
                .iter()
                .map(move |rule| format!("{}.{rule}", package.path))
        })
        .collect();
    let module = format!(
        "package opsgate_answers\n\nanswers := [{}]\n",
        rules.join(", ")
    );
    engine
        .add_policy("opsgate_answers.rego".to_owned(), module)
        .map_err(|error| compact_message(&error.to_string()))?;
    // Analysed now, as the policies were, so that deciding never does.
    engine
        .eval_bool_query("true".to_owned(), false)
        .map_err(|error| compact_message(&error.to_string()))?;
    Ok(())
}

/// The combined answer of a policy set, and what each package said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyOutcome {
    pub kind: DecisionKind,
    /// Every reason, strictest first, each prefixed with its package's
    /// short name (`production: …`).
    pub reasons: Vec<PolicyReason>,
    /// The approval stages asked for, by `order`, then name; each once.
    pub stages: Vec<ApprovalStage>,
    /// Per package (in name order), per rule: what it answered. `None`: the
    /// package does not define the rule.
    pub packages: Vec<PackageOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReason {
    /// `Pass` for a reason from `allow`.
    pub verdict: Verdict,
    pub reason: String,
}

/// One package's answer, rule by rule (reasons without the package prefix).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageOutcome {
    pub package: String,
    pub deny: Option<Vec<String>>,
    pub require_approval: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub stages: Option<Vec<ApprovalStage>>,
}

impl PackageOutcome {
    /// The package's reasons, prefixed with its name, strictest first. A
    /// package that asks for stages without saying why in
    /// `require_approval` gets a reason naming them: every approval asked
    /// for has a reason.
    pub fn reasons(&self) -> Vec<PolicyReason> {
        let mut require_approval = self.require_approval.clone().unwrap_or_default();
        let stages = self.stages.as_deref().unwrap_or_default();
        if require_approval.is_empty() && !stages.is_empty() {
            let names: Vec<&str> = stages.iter().map(|stage| stage.name.as_str()).collect();
            require_approval.push(format!("asks for approval stage(s) {}", names.join(", ")));
        }
        let by_verdict = [
            (Verdict::Deny, self.deny.clone().unwrap_or_default()),
            (Verdict::RequireApproval, require_approval),
            (Verdict::Pass, self.allow.clone().unwrap_or_default()),
        ];
        by_verdict
            .into_iter()
            .flat_map(|(verdict, texts)| {
                texts.into_iter().map(move |text| PolicyReason {
                    verdict,
                    reason: format!("{}: {text}", self.package),
                })
            })
            .collect()
    }
}

/// The document policies judge, as `input` (documented in
/// `docs/policies.md`): the event, the runbook's metadata, the plan, the
/// requester and the facts of the moment ([`facts_document`], with `now`
/// in whole UTC seconds so that timestamps in that form compare as
/// strings). When `facts.environment` is `None` the event's
/// `fields.environment` is used, as [`crate::decide_with_facts`] does.
pub fn policy_input(runbook: &Runbook, plan: &Plan, event: &Event, facts: &Facts) -> Value {
    let mut facts = facts.clone();
    if facts.environment.is_none() {
        facts.environment = event_environment(event);
    }
    let mut facts_json = facts_document(runbook, plan, &facts);
    facts_json["now"] = json!(facts.now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|step| {
            json!({
                "id": step.id,
                "action": step.call.action,
                "request": step.call.request,
                "idempotent": step.idempotent,
                "has_rollback": step.rollback.is_some(),
                "requires_approval": step.requires_approval,
                "if_unverified": step.if_unverified,
            })
        })
        .collect();
    // An agent's proposal, as it sent it: its inputs, targets, confidence
    // and rationale, so a policy judges the arguments, not only the names.
    let proposal = if event.source == domain::PROPOSAL_SOURCE && event.kind == domain::PROPOSAL_KIND
    {
        event.fields.get("proposal").cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    json!({
        "event": event,
        "proposal": proposal,
        "runbook": {
            "id": runbook.id,
            "version": runbook.version,
            "title": runbook.title,
            "owner": runbook.owner,
            "risk": runbook.risk,
            "max_targets": runbook.targets.max_targets,
            "approval": {
                "mode": match runbook.approval.mode {
                    runbook::ApprovalMode::Auto => "auto",
                    runbook::ApprovalMode::Required => "required",
                },
                "approvals": runbook.approval.approvals,
                "expires_ms": runbook.approval.expires_ms,
                "stages": runbook.approval.stages,
            },
        },
        "plan": {
            "targets": plan.targets,
            "inputs": plan.inputs,
            "steps": steps,
            "verified": plan.verify.is_some(),
            "plan_hash": plan.plan_hash,
        },
        "requester": facts.requester,
        "facts": facts_json,
    })
}

/// The built-in decision ([`crate::decide_with_facts`]) tightened by
/// `policies`, when a set is given: the policies' reasons join the
/// guardrails' findings (the strictest verdict wins, every reason is kept,
/// strictest first), their stages follow the runbook's, and
/// `policy_version` names the set.
///
/// An `Err` means a policy could not decide; the caller must fail closed.
pub fn decide_with_policies(
    runbook: &Runbook,
    plan: &Plan,
    event: &Event,
    facts: &Facts,
    policies: Option<&PolicySet>,
) -> Result<Decision> {
    let mut findings = crate::findings(runbook, plan, event, facts);
    let Some(policies) = policies else {
        return Ok(crate::decision_from(runbook, findings));
    };
    let outcome = policies.evaluate(policy_input(runbook, plan, event, facts))?;
    findings.extend(outcome.reasons.into_iter().map(|reason| Finding {
        guardrail: "policy",
        verdict: reason.verdict,
        reason: reason.reason,
    }));
    let mut decision = crate::decision_from(runbook, findings);
    decision.policy_version = Some(policies.version().to_owned());
    if decision.kind == DecisionKind::RequireApproval {
        for stage in outcome.stages {
            match decision.stages.iter().find(|same| same.name == stage.name) {
                None => decision.stages.push(stage),
                Some(same) if *same == stage => {}
                Some(_) => {
                    return Err(Error::StageConflict {
                        stage: stage.name,
                        first: format!("runbook `{}`", runbook.id),
                        second: "a policy".to_owned(),
                    });
                }
            }
        }
    }
    Ok(decision)
}

/// One Rego unit test's result (`opsgate policy test`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestOutcome {
    /// The file's name, as in the directory.
    pub file: String,
    pub line: u32,
    /// `data.opsgate.production_test.test_on_call_approves`
    pub test: String,
    pub result: TestResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum TestResult {
    Pass,
    /// The rule was undefined or not `true`; says which.
    Fail(String),
    /// Evaluating the rule failed.
    Error(String),
}

/// Runs the Rego unit tests of `dir`: every rule named `test_*` (not a
/// function) in any of its files, tests and policies loaded together, as
/// `opa test` does. A test passes when its rule is `true`; `with input as
/// …` sets the input it judges. Each test runs on a fresh clone of the
/// prepared engine, in file and line order.
pub fn run_tests(dir: &Path) -> Result<Vec<TestOutcome>> {
    let mut loaded = load_files(dir, Files::WithTests)?;
    // (file, line, rule path) of each test, once even when it has several bodies.
    let mut found: Vec<(String, u32, String)> = Vec::new();
    for module in loaded.engine.get_modules() {
        let package = package_path(&module.package.refr);
        let file = file_name(module.package.span.source.get_path());
        for rule in &module.policy {
            let Some(head) = rule_name(rule) else {
                continue;
            };
            let test = format!("{package}.{}", head.name);
            let already = found.iter().any(|(_, _, seen)| *seen == test);
            if head.name.starts_with("test_") && !head.is_function && !already {
                found.push((file.clone(), rule.span().line, test));
            }
        }
    }
    let tests = found
        .into_iter()
        .map(|(file, line, test)| {
            let mut engine = loaded.engine.clone();
            let result = match engine.eval_rule(test.clone()) {
                Ok(regorus::Value::Bool(true)) => TestResult::Pass,
                Ok(regorus::Value::Undefined) => TestResult::Fail("undefined".to_owned()),
                Ok(other) => TestResult::Fail(other.to_string()),
                Err(error) => TestResult::Error(compact_message(&error.to_string())),
            };
            TestOutcome {
                file,
                line,
                test,
                result,
            }
        })
        .collect();
    Ok(tests)
}

/// Which files [`load_files`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    DecisionOnly,
    WithTests,
}

struct Loaded {
    engine: regorus::Engine,
    /// The decision files (not the tests): name and contents.
    sources: Vec<(String, String)>,
}

/// Parses the files of `dir` into one prepared engine, collecting every
/// problem: a file that does not parse, a decision file whose package is
/// not under `opsgate.`, a rule the analyser refuses.
fn load_files(dir: &Path, files: Files) -> Result<Loaded> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "rego")
            && path.is_file()
        {
            paths.push(path);
        }
    }
    paths.sort();

    let mut engine = regorus::Engine::new();
    let mut sources = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        let name = file_name(&path.to_string_lossy());
        let is_test = name.ends_with(TEST_SUFFIX);
        if is_test && files == Files::DecisionOnly {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let Ok(text) = String::from_utf8(bytes) else {
            diagnostics.push(diagnostic(&path, 1, 1, "the file is not valid UTF-8", None));
            continue;
        };
        match engine.add_policy(path.to_string_lossy().into_owned(), text.clone()) {
            Err(error) => diagnostics.push(regorus_diagnostic(&path, &error.to_string())),
            Ok(package) if !is_test && !package.starts_with(NAMESPACE) => {
                let (line, column) = engine.get_modules().last().map_or((1, 1), |module| {
                    (module.package.span.line, module.package.span.col)
                });
                diagnostics.push(diagnostic(
                    &path,
                    line,
                    column,
                    &format!(
                        "package `{}` is not under `opsgate.`",
                        package.trim_start_matches("data.")
                    ),
                    Some("a policy is a package such as `package opsgate.production`; only those decide"),
                ));
            }
            Ok(_) if !is_test => sources.push((name, text)),
            Ok(_) => {}
        }
    }
    if diagnostics.is_empty() {
        // Analyse and schedule now, so that deciding never does; a query
        // that reads nothing leaves the engine prepared.
        if let Err(error) = engine.eval_bool_query("true".to_owned(), false) {
            diagnostics.push(regorus_diagnostic(dir, &error.to_string()));
        }
    }
    if !diagnostics.is_empty() {
        return Err(Error::Policies {
            dir: dir.to_owned(),
            diagnostics,
        });
    }
    Ok(Loaded { engine, sources })
}

fn version_of(sources: &[(String, String)]) -> String {
    let files: Vec<Value> = sources
        .iter()
        .map(|(name, contents)| json!([name, contents]))
        .collect();
    domain::sha256_hex(domain::canonical_json(&Value::Array(files)).as_bytes())
}

fn file_name(path: &str) -> String {
    Path::new(path).file_name().map_or_else(
        || path.to_owned(),
        |name| name.to_string_lossy().into_owned(),
    )
}

fn diagnostic(
    path: &Path,
    line: u32,
    column: u32,
    message: &str,
    hint: Option<&str>,
) -> Diagnostic {
    Diagnostic {
        file: path.to_owned(),
        line,
        column,
        message: message.to_owned(),
        hint: hint.map(str::to_owned),
    }
}

/// regorus reports a problem as `--> FILE:LINE:COL`, the source line, a
/// caret and `error: MESSAGE`; this keeps the place and the message.
fn regorus_diagnostic(fallback: &Path, text: &str) -> Diagnostic {
    match located(text) {
        Some((file, line, column, message)) => {
            diagnostic(&PathBuf::from(file), line, column, &message, None)
        }
        None => diagnostic(fallback, 1, 1, text.trim(), None),
    }
}

/// A regorus message on one line: `FILE:LINE:COL: MESSAGE`.
fn compact_message(text: &str) -> String {
    match located(text) {
        Some((file, line, column, message)) => {
            format!("{}:{line}:{column}: {message}", file_name(&file))
        }
        None => text.trim().to_owned(),
    }
}

fn located(text: &str) -> Option<(String, u32, u32, String)> {
    let place = text
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("--> "))?;
    let mut parts = place.rsplitn(3, ':');
    let column = parts.next()?.trim().parse().ok()?;
    let line = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_owned();
    let message = text
        .lines()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned();
    Some((file, line, column, message))
}

/// `data.opsgate.production`, as regorus names a package.
fn package_path(refr: &ExprRef) -> String {
    let components = Parser::get_path_ref_components(refr).unwrap_or_default();
    let names: Vec<&str> = components.iter().map(|span| span.text()).collect();
    format!("data.{}", names.join("."))
}

struct RuleHeadName {
    name: String,
    is_function: bool,
}

fn rule_name(rule: &Rule) -> Option<RuleHeadName> {
    let (refr, is_function) = match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => (refr, false),
            RuleHead::Func { refr, .. } => (refr, true),
        },
        Rule::Default { refr, args, .. } => (refr, !args.is_empty()),
    };
    let components = Parser::get_path_ref_components(refr).ok()?;
    Some(RuleHeadName {
        name: components.first()?.text().to_owned(),
        is_function,
    })
}

/// `deny`, `require_approval` and `allow` are sets of strings; undefined
/// is an empty set.
fn reason_set(rule: &str, value: &regorus::Value) -> Result<Vec<String>, String> {
    match value {
        regorus::Value::Undefined => Ok(Vec::new()),
        regorus::Value::Set(items) => items
            .iter()
            .map(|item| match item {
                regorus::Value::String(text) => Ok(text.to_string()),
                other => Err(format!("a reason must be a string, not {other}")),
            })
            .collect(),
        other => Err(format!(
            "must be a set of reasons (`{rule} contains \"why\" if {{ … }}`), not {other}"
        )),
    }
}

/// A stage and its place in the chain.
#[derive(Debug, Clone, PartialEq)]
struct OrderedStage {
    order: i64,
    stage: ApprovalStage,
}

impl OrderedStage {
    /// By `order`, then by name.
    fn chain_order(&self, other: &OrderedStage) -> std::cmp::Ordering {
        (self.order, &self.stage.name).cmp(&(other.order, &other.stage.name))
    }
}

/// A stage as a policy writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyStage {
    name: String,
    approvers: Vec<String>,
    #[serde(default)]
    rule: StageRule,
    /// A duration as runbooks write it (`30m`, `4h`).
    timeout: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    escalate_to: Vec<String>,
    #[serde(default)]
    order: i64,
}

fn policy_stages(value: &regorus::Value) -> Result<Vec<OrderedStage>, String> {
    let items = match value {
        regorus::Value::Undefined => return Ok(Vec::new()),
        regorus::Value::Set(items) => items,
        other => {
            return Err(format!(
                "must be a set of stage objects (`stages contains {{\"name\": …}} if {{ … }}`), not {other}"
            ));
        }
    };
    items.iter().map(policy_stage).collect()
}

fn policy_stage(value: &regorus::Value) -> Result<OrderedStage, String> {
    let json = serde_json::to_value(value).map_err(|error| error.to_string())?;
    let stage: PolicyStage =
        serde_json::from_value(json).map_err(|error| format!("stage {value}: {error}"))?;
    let invalid = |problem: String| format!("stage `{}`: {problem}", stage.name);
    if stage.approvers.is_empty() {
        return Err(invalid("`approvers` is empty".to_owned()));
    }
    for reference in stage.approvers.iter().chain(&stage.escalate_to) {
        if !runbook::is_approver_reference(reference) {
            return Err(invalid(format!(
                "`{reference}` is not an approver reference; {}",
                runbook::APPROVER_REFERENCE_FORMS
            )));
        }
    }
    let timeout_ms = match (&stage.timeout, stage.timeout_ms) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give `timeout` or `timeout_ms`, not both".to_owned(),
            ));
        }
        (Some(text), None) => Some(runbook::parse_duration(text).ok_or_else(|| {
            invalid(format!(
                "`timeout: {text}` is not a duration such as `30m` or `4h`"
            ))
        })?),
        (None, timeout_ms) => timeout_ms,
    };
    Ok(OrderedStage {
        order: stage.order,
        stage: ApprovalStage {
            name: stage.name,
            approvers: stage.approvers,
            rule: stage.rule,
            timeout_ms,
            escalate_to: stage.escalate_to,
        },
    })
}
