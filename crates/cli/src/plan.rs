//! `opsgate plan --event FILE`: the dry run, offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::DEFAULT_RUNBOOKS;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An event as JSON (the body of POST /v1/events).
    #[arg(long)]
    pub event: PathBuf,
    #[arg(long, env = "OPSGATE_RUNBOOKS", default_value = DEFAULT_RUNBOOKS)]
    pub runbooks: PathBuf,
    /// Template variable for `env`, as NAME=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn parse_var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// Reads an event file (the body of POST /v1/events). A malformed one is
/// reported at its line and column, and gives `None`: invalid input.
pub(crate) fn read_event(path: &Path) -> anyhow::Result<Option<domain::NewEvent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(event) => Ok(Some(event)),
        Err(error) => {
            eprintln!(
                "{}:{}:{}: invalid event: {error}",
                path.display(),
                error.line(),
                error.column()
            );
            Ok(None)
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(event) = read_event(&args.event)? else {
        return Ok(crate::invalid_input());
    };
    let catalog = crate::config::load_catalog(&args.runbooks)?;
    let mut template_env = runbook::TemplateEnv::from_process();
    template_env.vars.extend(args.vars);
    let dry_run = runtime::dry_run(&catalog, &template_env, None, None, event);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&dry_run)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &dry_run.matched {
        Some(id) => println!(
            "runbook   {id} @ {}",
            dry_run
                .runbook_version
                .as_deref()
                .map(domain::short_hash)
                .unwrap_or_default()
        ),
        None => println!("runbook   (none)"),
    }
    if !dry_run.also_matching.is_empty() {
        println!("also      {}", dry_run.also_matching.join(", "));
    }
    if let Some(plan) = &dry_run.plan {
        println!("inputs    {}", plan.inputs);
        println!("targets   {}", plan.targets.join(", "));
        println!("plan hash {}", plan.plan_hash);
        match &plan.rollout {
            // Every target's steps differ only in what they name; the
            // first target's stand for them all.
            Some(rollout) => {
                let batches: Vec<String> = rollout.batches.iter().map(usize::to_string).collect();
                println!(
                    "rollout   target by target, batches of {} (pause {} ms){}",
                    batches.join(", "),
                    rollout.pause_ms,
                    if rollout.approve_after_canary {
                        ", an approval after the first"
                    } else {
                        ""
                    }
                );
                println!(
                    "steps     (for {}; each target gets its own)",
                    rollout.targets[0].target
                );
            }
            None => println!("steps"),
        }
        for step in &plan.steps {
            println!(
                "  {} ({}, {}){}",
                step.id,
                step.call.action,
                if step.idempotent {
                    "idempotent"
                } else {
                    "not idempotent"
                },
                if step.if_unverified {
                    " — second remedy: only where the steps before it did not verify"
                } else {
                    ""
                }
            );
            println!("    request  {}", step.call.request);
            if let Some(rollback) = &step.rollback {
                println!("    rollback {} {}", rollback.action, rollback.request);
            }
        }
        if let Some(verify) = &plan.verify {
            println!(
                "verify    {} {} — expect {}",
                verify.probe.action, verify.probe.request, verify.expect
            );
        }
        if let Some(ends_at) = plan.ends_at {
            println!("ends at   {ends_at} (then the rollbacks undo the steps)");
        }
    }
    if let Some(decision) = &dry_run.decision {
        println!(
            "decision  {} — {}",
            decision.kind.as_str(),
            decision.reasons.join("; ")
        );
    }
    println!("{}", dry_run.message);
    Ok(ExitCode::SUCCESS)
}
