//! `opsgate freeze`, `opsgate unfreeze` and `opsgate status`: the kill
//! switch from a terminal, through the server's API (so the freeze is
//! audited, announced to every instance and checked by the same service
//! as everywhere else).

use std::process::ExitCode;

use serde_json::{Value, json};
use server::api::{FreezeList, StatusAnswer};

use crate::client::{Client, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct FreezeArgs {
    /// Why automation is stopped (recorded, and told to every run it
    /// pauses). Required.
    #[arg(long)]
    pub reason: String,
    /// Only the runbooks whose id matches this glob.
    #[arg(long, conflicts_with_all = ["targets", "principal"])]
    pub runbook: Option<String>,
    /// Only runs acting on a target that matches this glob (`db-prod-*`).
    #[arg(long, conflicts_with = "principal")]
    pub targets: Option<String>,
    /// Only what this principal posts, as an actor glob (`agent:*`).
    #[arg(long)]
    pub principal: Option<String>,
    /// Lift it by itself after this long (`30m`, `2h`); without it, it
    /// holds until `opsgate unfreeze`.
    #[arg(long)]
    pub expires_in: Option<String>,
    /// Cancel the runs under way (rolling back their completed steps)
    /// instead of pausing them until the freeze lifts.
    #[arg(long)]
    pub cancel_runs: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct UnfreezeArgs {
    /// The freeze's id (`opsgate status` lists them).
    pub freeze: String,
    /// Why it is lifted now.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn freeze(args: FreezeArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "reason": args.reason,
        "on_runs": if args.cancel_runs { "cancel" } else { "pause" },
    });
    for (key, value) in [
        ("runbook", args.runbook),
        ("targets", args.targets),
        ("principal", args.principal),
        ("expires_in", args.expires_in),
    ] {
        if let Some(value) = value {
            body[key] = Value::String(value);
        }
    }
    let answer = Client::new(&args.server)?
        .post("/v1/freezes", &body)
        .await?;
    let freeze: domain::Freeze = serde_json::from_value(answer)?;
    println!("frozen: {}", line(&freeze));
    println!("lift it with: opsgate unfreeze {}", freeze.id);
    Ok(ExitCode::SUCCESS)
}

pub async fn unfreeze(args: UnfreezeArgs) -> anyhow::Result<ExitCode> {
    let body = match args.reason {
        Some(reason) => json!({"reason": reason}),
        None => json!({}),
    };
    let answer = Client::new(&args.server)?
        .post(&format!("/v1/freezes/{}/lift", args.freeze), &body)
        .await?;
    let freeze: domain::Freeze = serde_json::from_value(answer)?;
    println!(
        "lifted freeze {} ({}); the runs it paused go on unless another freeze holds them",
        freeze.id, freeze.scope
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether automation is live, the freezes in force and the runs they
/// paused. Exits 0 when live, 1 when anything is frozen, so a script (or
/// a monthly kill-switch drill) can check it.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let answer = Client::new(&args.server)?.get("/v1/status").await?;
    let status: StatusAnswer = serde_json::from_value(answer)?;
    let headline = match status.automation {
        runtime::Automation::Live => "automation is LIVE: no freeze in force",
        runtime::Automation::PartlyFrozen => "automation is PARTLY FROZEN",
        runtime::Automation::Frozen => "automation is FROZEN: nothing runs",
    };
    println!("{headline}");
    print_freezes(&FreezeList {
        freezes: status.freezes,
    });
    if !status.paused_runs.is_empty() {
        println!(
            "paused runs ({}): {}",
            status.paused_runs.len(),
            status.paused_runs.join(" ")
        );
    }
    Ok(match status.automation {
        runtime::Automation::Live => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn print_freezes(list: &FreezeList) {
    for freeze in &list.freezes {
        println!("  {}", line(freeze));
    }
}

/// One freeze on one line.
fn line(freeze: &domain::Freeze) -> String {
    let until = match freeze.expires_at {
        Some(at) => format!("until {at}"),
        None => "until lifted".to_owned(),
    };
    format!(
        "{} — {} — {} runs under way — by {} at {}, {until}: {}",
        freeze.id,
        freeze.scope,
        freeze.on_runs.as_str(),
        freeze.issued_by,
        freeze.issued_at,
        freeze.reason
    )
}
