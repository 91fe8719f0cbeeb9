//! `opsgate policy test DIR` runs the Rego unit tests of a policy
//! directory; `opsgate policy eval --event FILE` explains one decision:
//! the input document the policies see, each built-in guardrail's finding,
//! each policy rule's answer, then the combined decision.
//!
//! Both work offline, on files only, like `opsgate plan`: what a policy
//! change does is seen before it is deployed. `eval` knows no recent runs,
//! so cooldowns and rate limits say they were not checked.

use std::path::PathBuf;
use std::process::ExitCode;

use ::policy::{Facts, PolicySet, Requester, TestResult, Verdict};
use anyhow::Context;
use domain::{ApprovalStage, Event, PrincipalKind, StageRule};
use jiff::Timestamp;

use crate::config::DEFAULT_RUNBOOKS;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the Rego unit tests (rules named `test_*`) of a policy directory.
    Test(TestArgs),
    /// Explain the decision for an event, guardrail by guardrail and rule by rule.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The policy directory (`*.rego`, tests in `*_test.rego`).
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// An event as JSON (the body of POST /v1/events).
    #[arg(long)]
    pub event: PathBuf,
    #[arg(long, env = "OPSGATE_RUNBOOKS", default_value = DEFAULT_RUNBOOKS)]
    pub runbooks: PathBuf,
    /// The policy directory; without it, only the built-in guardrails decide.
    #[arg(long, env = "OPSGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// The directory file (YAML): shows who each approval stage reaches.
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// The moment to decide at (RFC 3339); default: now.
    #[arg(long)]
    pub at: Option<Timestamp>,
    /// Who asks, as KIND:NAME (`user:alice`, `agent:triage-bot`); default:
    /// the event's source. An agent's confidence is the event's
    /// `fields.confidence`.
    #[arg(long, value_parser = parse_requester)]
    pub requester: Option<(PrincipalKind, String)>,
    /// Template variable for `env`, as NAME=VALUE (repeatable).
    #[arg(long = "var", value_parser = crate::plan::parse_var)]
    pub vars: Vec<(String, String)>,
}

fn parse_requester(text: &str) -> Result<(PrincipalKind, String), String> {
    match PrincipalKind::of_actor(text) {
        Some((kind, name)) if !name.is_empty() => Ok((kind, name.to_owned())),
        _ => Err(format!(
            "`{text}` is not KIND:NAME with KIND user, agent or source"
        )),
    }
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Test(args) => test(args),
        Command::Eval(args) => eval(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let outcomes = match ::policy::run_tests(&args.dir) {
        Ok(outcomes) => outcomes,
        Err(error @ ::policy::Error::Policies { .. }) => {
            eprintln!("{error}");
            return Ok(crate::invalid_input());
        }
        Err(error) => return Err(error.into()),
    };
    if outcomes.is_empty() {
        eprintln!(
            "no tests in {}: a test is a rule named `test_*`, usually in a `*_test.rego` file",
            args.dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut failed = 0;
    for outcome in &outcomes {
        let place = format!("{}:{}", outcome.file, outcome.line);
        match &outcome.result {
            TestResult::Pass => println!("PASS   {place}  {}", outcome.test),
            TestResult::Fail(value) => {
                failed += 1;
                println!("FAIL   {place}  {} (was {value})", outcome.test);
            }
            TestResult::Error(message) => {
                failed += 1;
                println!("ERROR  {place}  {}: {message}", outcome.test);
            }
        }
    }
    println!("{} passed, {failed} failed", outcomes.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let Some(new_event) = crate::plan::read_event(&args.event)? else {
        return Ok(crate::invalid_input());
    };
    let policies = match &args.policies {
        None => None,
        Some(dir) => match PolicySet::load(dir) {
            Ok(policies) => Some(policies),
            Err(error @ ::policy::Error::Policies { .. }) => {
                eprintln!("{error}");
                return Ok(crate::invalid_input());
            }
            Err(error) => return Err(error.into()),
        },
    };
    let directory = args
        .directory
        .as_deref()
        .map(::policy::Directory::load)
        .transpose()?;
    let catalog = crate::config::load_catalog(&args.runbooks)?;
    let mut template_env = runbook::TemplateEnv::from_process();
    template_env.vars.extend(args.vars);

    let now = args.at.unwrap_or_else(Timestamp::now);
    let event = Event::from_new("eval".to_owned(), new_event, now);
    if !event.status.is_active() {
        println!(
            "the event is {}: a {} event never starts a run, so nothing is decided",
            event.status.as_str(),
            event.status.as_str()
        );
        return Ok(ExitCode::FAILURE);
    }
    let Some(runbook) = catalog.matching(&event).next() else {
        println!("no runbook matched the event, so nothing is decided");
        return Ok(ExitCode::FAILURE);
    };
    let plan = runbook
        .plan(&event, &template_env)
        .with_context(|| format!("planning with runbook `{}`", runbook.id))?;
    let (kind, name) = args
        .requester
        .unwrap_or((PrincipalKind::Source, event.source.clone()));
    let mut facts = Facts::from_event(&event, now);
    facts.requester = Requester {
        kind,
        name,
        confidence: event
            .fields
            .get("confidence")
            .and_then(serde_json::Value::as_f64),
    };

    let input = ::policy::policy_input(runbook, &plan, &event, &facts);
    println!("input");
    println!("{}", indent(&serde_json::to_string_pretty(&input)?, 2));

    println!(
        "\nguardrails of runbook `{}` @ {}",
        runbook.id,
        domain::short_hash(&runbook.version)
    );
    for finding in ::policy::findings(runbook, &plan, &event, &facts) {
        println!(
            "  {:<17} {:<18} {}",
            verdict_name(finding.verdict),
            finding.guardrail,
            finding.reason
        );
    }

    match (&args.policies, &policies) {
        (Some(dir), Some(policies)) => {
            println!(
                "\npolicies in {} (version {})",
                dir.display(),
                domain::short_hash(policies.version())
            );
            match policies.evaluate(input.clone()) {
                Ok(outcome) => print_outcome(&outcome),
                Err(error) => println!("  error: {error}"),
            }
        }
        _ => println!(
            "\nno policies (--policies DIR or OPSGATE_POLICIES): the built-in guardrails decide alone"
        ),
    }

    let decision = match ::policy::decide_with_policies(
        runbook,
        &plan,
        &event,
        &facts,
        policies.as_ref(),
    ) {
        Ok(decision) => decision,
        Err(error) => {
            println!(
                "\ndecision  deny: the policies could not decide ({error}); the gate fails closed"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("\ndecision  {}", decision.kind.as_str());
    for reason in &decision.reasons {
        println!("  - {reason}");
    }
    if decision.kind == domain::DecisionKind::RequireApproval {
        // As the runtime draws a chain: `requester` is the person the event
        // names in `fields.requested_by`, else the requester if a person.
        let requested_by = event
            .fields
            .get("requested_by")
            .and_then(serde_json::Value::as_str);
        let is_person = facts.requester.kind == PrincipalKind::User;
        let context = ::policy::RelationContext {
            requester: requested_by.or(is_person.then_some(facts.requester.name.as_str())),
            ci: plan.targets.first().map(String::as_str),
        };
        print_approval(&decision, directory.as_ref(), &context, now);
    }
    match &decision.policy_version {
        Some(version) => println!("policy version {version}"),
        None => println!("policy version (none)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Each package's answer, rule by rule, then the combined verdict.
fn print_outcome(outcome: &::policy::PolicyOutcome) {
    for package in &outcome.packages {
        println!("  {}", package.package);
        print_rule("deny", package.deny.as_deref());
        print_rule("require_approval", package.require_approval.as_deref());
        print_rule("allow", package.allow.as_deref());
        if let Some(stages) = &package.stages {
            let described: Vec<String> = stages.iter().map(describe_stage).collect();
            print_rule("stages", Some(&described));
        }
        let defines_nothing = package.deny.is_none()
            && package.require_approval.is_none()
            && package.allow.is_none()
            && package.stages.is_none();
        if defines_nothing {
            println!("    (defines no decision rule)");
        }
    }
    println!("  combined: {}", outcome.kind.as_str());
}

/// Who must approve: the stages, and with a directory who each reference
/// reaches at `now` (someone away, with their stand-in).
fn print_approval(
    decision: &domain::Decision,
    directory: Option<&::policy::Directory>,
    context: &::policy::RelationContext,
    now: Timestamp,
) {
    if decision.stages.is_empty() {
        println!(
            "approval  {} distinct approver(s) with the approver role",
            decision.approvals_required
        );
    }
    for (number, stage) in decision.stages.iter().enumerate() {
        println!("stage {}   {}", number + 1, describe_stage(stage));
        let Some(directory) = directory else {
            continue;
        };
        for reference in &stage.approvers {
            match directory.resolve(reference, context) {
                Ok(people) => {
                    let named: Vec<String> = people
                        .iter()
                        .map(|person| {
                            if !person.is_out_of_office(now) {
                                return person.id.clone();
                            }
                            match directory.available_stand_in(person, now) {
                                Some(stand_in) => {
                                    format!("{} (away; {} stands in)", person.id, stand_in.id)
                                }
                                None => format!("{} (away, no stand-in)", person.id),
                            }
                        })
                        .collect();
                    println!("          {reference} → {}", named.join(", "));
                }
                Err(error) => println!("          {error}"),
            }
        }
    }
    if let Some(expires_after_ms) = decision.expires_after_ms {
        println!(
            "expires   after {} without a decision",
            ::policy::human_duration(expires_after_ms)
        );
    }
}

fn print_rule(rule: &str, answers: Option<&[String]>) {
    let Some(answers) = answers else {
        return;
    };
    match answers {
        [] => println!("    {rule:<17} (nothing)"),
        [first, rest @ ..] => {
            println!("    {rule:<17} {first}");
            for answer in rest {
                println!("    {:<17} {answer}", "");
            }
        }
    }
}

fn describe_stage(stage: &ApprovalStage) -> String {
    let rule = match stage.rule {
        StageRule::Any => "any of".to_owned(),
        StageRule::All => "all of".to_owned(),
        StageRule::AtLeast(count) => format!("at least {count} of"),
    };
    let mut text = format!("{}: {rule} {}", stage.name, stage.approvers.join(", "));
    if let Some(timeout_ms) = stage.timeout_ms {
        text.push_str(&format!(
            ", timeout {}",
            ::policy::human_duration(timeout_ms)
        ));
    }
    if !stage.escalate_to.is_empty() {
        text.push_str(&format!(", then {}", stage.escalate_to.join(", ")));
    }
    text
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::RequireApproval => "require_approval",
        Verdict::Deny => "deny",
    }
}

fn indent(text: &str, width: usize) -> String {
    let padding = " ".repeat(width);
    text.lines()
        .map(|line| format!("{padding}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
