//! `opsgate`: the one binary. Subcommands map one-to-one to what a user
//! does; each lives in its own module and returns an exit code.
//!
//! Exit codes: 0 success, 1 failure (a run that did not succeed in the demo,
//! a server that could not start), 2 invalid input (a runbook with problems,
//! a malformed event file, a broken audit chain).

mod audit;
mod client;
mod config;
mod demo;
mod eval;
mod freeze;
mod mcp;
mod migrate;
mod plan;
mod policy;
mod render;
mod report;
mod runbooks;
mod runs;
mod serve;
mod shadow;
mod tokens;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "opsgate",
    version,
    about = "The governed execution layer between a decided fix and production"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: webhook intake, API, execution.
    Serve(serve::Args),
    /// Run the whole loop on sample incidents against a simulated environment.
    Demo(demo::Args),
    /// Check, list and show runbooks.
    #[command(subcommand)]
    Runbook(runbooks::Command),
    /// Dry-run: what an event would match, plan and decide. Touches nothing.
    Plan(plan::Args),
    /// List runs, or show one run's timeline.
    Runs(runs::ListArgs),
    /// Approve a run awaiting approval.
    Approve(runs::DecideArgs),
    /// Deny a run awaiting approval.
    Deny(runs::DecideArgs),
    /// Cancel a run that has not acted yet, or end a time-bound change early.
    Cancel(runs::CancelArgs),
    /// Freeze automation now (the kill switch): all of it, a runbook,
    /// targets or a principal's events.
    Freeze(freeze::FreezeArgs),
    /// Lift a freeze.
    Unfreeze(freeze::UnfreezeArgs),
    /// Whether automation is live: the freezes in force and the runs they
    /// paused (exit 0 when live, 1 when frozen).
    Status(freeze::StatusArgs),
    /// Reports: `report shadow` compares what shadow-mode runbooks would
    /// have done with what people did.
    #[command(subcommand)]
    Report(report::Command),
    /// Shadow mode over history: `shadow replay FILE` judges past events
    /// as the runbooks would have, at the time each happened, executing
    /// nothing.
    #[command(subcommand)]
    Shadow(shadow::Command),
    /// MCP over stdio for an AI agent: relays to a server's `/mcp` with
    /// the agent's token (OPSGATE_TOKEN).
    Mcp(client::ServerArgs),
    /// Apply the database migrations this build knows.
    Migrate(audit::DatabaseArgs),
    /// Verify, show and export the audit log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(tokens::Command),
    /// Test organisation policies (Rego) and explain their decisions.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Measure before trusting: `eval triage FILE` scores triage against
    /// labelled tickets.
    #[command(subcommand)]
    Eval(eval::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    connectors::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Runbook(command) => runbooks::run(command),
            Command::Plan(args) => plan::run(args),
            Command::Runs(args) => runs::list(args).await,
            Command::Approve(args) => runs::decide(args, runs::Verdict::Approve).await,
            Command::Deny(args) => runs::decide(args, runs::Verdict::Deny).await,
            Command::Cancel(args) => runs::cancel(args).await,
            Command::Freeze(args) => freeze::freeze(args).await,
            Command::Unfreeze(args) => freeze::unfreeze(args).await,
            Command::Status(args) => freeze::status(args).await,
            Command::Report(command) => report::run(command).await,
            Command::Shadow(command) => shadow::run(command).await,
            Command::Mcp(args) => mcp::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Audit(command) => audit::run(command).await,
            Command::Token(command) => tokens::run(command).await,
            Command::Policy(command) => policy::run(command),
            Command::Eval(command) => eval::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code 2: the input was invalid.
pub(crate) fn invalid_input() -> ExitCode {
    ExitCode::from(2)
}
