//! `opsgate report shadow`: what shadow-mode runbooks saw and would have
//! done, beside what people did — read from the server's API.

use std::process::ExitCode;

use server::api::{RunbookShadowAnswer, ShadowReportAnswer};

use crate::client::{Client, ServerArgs};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Per runbook: events seen, would have run, agreement with how people
    /// resolved the tickets, and the cases that differ — the evidence for
    /// switching a runbook from `mode: shadow` to live.
    Shadow(ShadowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShadowArgs {
    /// From when: a time (2026-12-01T00:00:00Z) or how long ago (`7d`,
    /// `24h`); thirty days when not given.
    #[arg(long)]
    pub since: Option<String>,
    /// Print the report as JSON, as the API answers it.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Shadow(args) => shadow(args).await,
    }
}

async fn shadow(args: ShadowArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.since {
        Some(since) => format!("/v1/reports/shadow?since={}", encode(since)),
        None => "/v1/reports/shadow".to_owned(),
    };
    let answer = Client::new(&args.server)?.get(&path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report: ShadowReportAnswer = serde_json::from_value(answer)?;
    println!("shadow report since {}", report.since);
    if report.runbooks.is_empty() {
        println!(
            "  nothing was shadowed: no runbook (or principal) is in shadow mode, or nothing matched"
        );
    }
    for runbook in &report.runbooks {
        print_runbook(runbook);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_runbook(shadow: &RunbookShadowAnswer) {
    println!();
    for line in runbook_lines(shadow) {
        println!("{line}");
    }
}

/// One runbook's part of the report, line by line (the demo prints it too).
pub(crate) fn runbook_lines(shadow: &RunbookShadowAnswer) -> Vec<String> {
    let agreement = match shadow.agreement {
        Some(share) => format!("{:.0}% agreement", share * 100.0),
        None => "agreement: nothing to compare yet".to_owned(),
    };
    let mut lines = vec![
        format!(
            "{} (now {}): {} events seen — {} shadowed, {} held off",
            shadow.runbook, shadow.mode, shadow.events_seen, shadow.shadowed, shadow.held_off
        ),
        format!(
            "  would have: run {}, asked for approval {}, refused {}",
            shadow.would_run, shadow.would_ask, shadow.would_refuse
        ),
        format!(
            "  resolved by people: {} — agreed {}, differed {}, not comparable {} — {agreement}",
            shadow.resolved, shadow.agreed, shadow.differed, shadow.not_comparable
        ),
    ];
    if shadow.not_comparable > 0 {
        lines.push(
            "  (declare `writeback.resolve_on_success.close_code` to compare those with the close code people use)"
                .to_owned(),
        );
    }
    for case in &shadow.differing {
        let ticket = case.ticket.as_deref().unwrap_or(&case.subject);
        let would = match &case.would_close_code {
            Some(code) => format!("would {} and close as \"{code}\"", case.would),
            None => format!("would {}", case.would),
        };
        let did = format!(
            "{} closed it as \"{}\"{}",
            case.resolved_by.as_deref().unwrap_or("someone"),
            case.close_code.as_deref().unwrap_or("(no close code)"),
            case.close_notes
                .as_deref()
                .map(|notes| format!(": {notes}"))
                .unwrap_or_default()
        );
        lines.push(format!(
            "  differs: {ticket} ({}, run {}): {would}; {did}",
            case.subject, case.run_id
        ));
    }
    lines
}

/// `text` as a query value: unreserved characters as they are, the rest
/// percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
