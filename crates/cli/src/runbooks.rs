//! `opsgate runbook validate|list|show`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::DEFAULT_RUNBOOKS;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check every runbook in DIR; print each problem with file:line and a hint.
    Validate { dir: PathBuf },
    /// List the runbooks in a directory with their versions.
    List {
        #[arg(long, env = "OPSGATE_RUNBOOKS", default_value = DEFAULT_RUNBOOKS)]
        runbooks: PathBuf,
    },
    /// Show one runbook as loaded.
    Show {
        id: String,
        #[arg(long, env = "OPSGATE_RUNBOOKS", default_value = DEFAULT_RUNBOOKS)]
        runbooks: PathBuf,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { dir } => {
            let report = runbook::load_dir(&dir, connectors::STEP_ACTIONS)?;
            for diagnostic in &report.diagnostics {
                println!("{diagnostic}");
            }
            if report.diagnostics.is_empty() {
                println!(
                    "{} runbook(s) valid in {}",
                    report.catalog.len(),
                    dir.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{} problem(s); {} runbook(s) valid in {}",
                    report.diagnostics.len(),
                    report.catalog.len(),
                    dir.display()
                );
                Ok(crate::invalid_input())
            }
        }
        Command::List { runbooks } => {
            let catalog = crate::config::load_catalog(&runbooks)?;
            println!(
                "{:<32} {:<13} {:<13} {:<6} TITLE",
                "ID", "VERSION", "RISK", "STEPS"
            );
            for runbook in catalog.iter() {
                println!(
                    "{:<32} {:<13} {:<13} {:<6} {}",
                    runbook.id,
                    domain::short_hash(&runbook.version),
                    runbook.risk.as_str(),
                    runbook.steps.len(),
                    runbook.title
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, runbooks } => {
            let catalog = crate::config::load_catalog(&runbooks)?;
            let Some(runbook) = catalog.get(&id) else {
                eprintln!("error: no runbook `{id}` in {}", runbooks.display());
                return Ok(crate::invalid_input());
            };
            println!("id        {}", runbook.id);
            println!("title     {}", runbook.title);
            println!("owner     {}", runbook.owner);
            println!("risk      {}", runbook.risk.as_str());
            match runbook.mode {
                runbook::Mode::Live => println!("mode      live"),
                runbook::Mode::Shadow { hold_ms } => println!(
                    "mode      shadow: runs stop before any call (a subject is held off for {:#} after)",
                    jiff::SignedDuration::from_millis(i64::try_from(hold_ms).unwrap_or(i64::MAX))
                ),
            }
            println!("version   {}", runbook.version);
            println!("file      {}", runbook.path.display());
            println!(
                "approval  {:?} (expires after {})",
                runbook.approval.mode,
                jiff::SignedDuration::from_millis(runbook.approval.expires_ms as i64)
            );
            println!(
                "targets   {} (max {})",
                runbook.targets.from, runbook.targets.max_targets
            );
            println!("steps");
            for step in &runbook.steps {
                let rollback = step
                    .rollback
                    .as_ref()
                    .map(|call| format!(", rollback: {}", call.action.name))
                    .unwrap_or_default();
                println!(
                    "  {:<24} {:<13} timeout {} ms, {} attempt(s), {}{rollback}",
                    step.id,
                    step.call.action.name,
                    step.call.timeout_ms,
                    step.retry.attempts,
                    if step.idempotent {
                        "idempotent"
                    } else {
                        "not idempotent"
                    },
                );
            }
            if let Some(verify) = &runbook.verify {
                println!(
                    "verify    {} within {} ms, every {} ms",
                    verify.expect, verify.within_ms, verify.every_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
