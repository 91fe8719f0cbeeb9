//! `opsgate runs`, `runs show`, `approve`, `deny`, `cancel`: through the server's API.

use std::process::ExitCode;

use serde_json::json;

use crate::client::{Client, ServerArgs};
use crate::render;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ListArgs {
    #[command(subcommand)]
    pub show: Option<Show>,
    /// Only runs in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Show {
    /// One run: state, plan, decision, attempts and timeline.
    Show {
        run: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    if let Some(Show::Show { run, json, server }) = args.show {
        let run = Client::new(&server)?
            .get(&format!("/v1/runs/{run}"))
            .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&run)?);
        } else {
            let run: server::api::RunDetail = serde_json::from_value(run)?;
            print!("{}", render::run_detail(&run));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let path = match &args.state {
        Some(state) => format!("/v1/runs?state={state}"),
        None => "/v1/runs".to_owned(),
    };
    let answer = Client::new(&args.server)?.get(&path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let list: server::api::RunList = serde_json::from_value(answer)?;
        print!("{}", render::runs_table(&list.runs));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    pub run: String,
    /// Why (recorded with the decision). Who decides is the token's principal.
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub enum Verdict {
    Approve,
    Deny,
}

pub async fn decide(args: DecideArgs, verdict: Verdict) -> anyhow::Result<ExitCode> {
    let verb = match verdict {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    };
    let answer = Client::new(&args.server)?
        .post(
            &format!("/v1/runs/{}/{verb}", args.run),
            &json!({"comment": args.comment}),
        )
        .await?;
    let decided: server::api::Decided = serde_json::from_value(answer)?;
    println!(
        "run {} is now {} ({verb}d by {})",
        decided.run_id,
        decided.state.as_str(),
        decided.by
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    pub run: String,
    /// Why (recorded, and written to the ticket).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Cancels a run before it acts; a time-bound change in effect is ended
/// early, which undoes it now.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let answer = Client::new(&args.server)?
        .post(
            &format!("/v1/runs/{}/cancel", args.run),
            &json!({"reason": args.reason}),
        )
        .await?;
    let decided: server::api::Decided = serde_json::from_value(answer)?;
    println!(
        "run {} is now {} (cancelled by {})",
        decided.run_id,
        decided.state.as_str(),
        decided.by
    );
    Ok(ExitCode::SUCCESS)
}
