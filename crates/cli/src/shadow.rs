//! `opsgate shadow replay FILE`: what the runbooks would have done with
//! past events — last month's alerts, a ticket export — judged in shadow,
//! each at the time it happened, on a scratch database that is thrown
//! away. Nothing is called and nothing outside is written to; the report
//! is the one live shadow mode gives (`opsgate report shadow`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use domain::{NewEvent, Principal, PrincipalKind, Role};
use serde_json::{Map, Value};

use crate::config::DEFAULT_RUNBOOKS;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Replays past events (JSON Lines, or CSV with a header) in shadow:
    /// matched, planned and decided at the time each happened, nothing
    /// executed; prints the shadow report.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The events: `.jsonl` (one `POST /v1/events` body per line, with
    /// `occurred_at`, and optionally `requester`: `source:…`, `agent:…`,
    /// `user:…`) or `.csv` (columns `source`, `kind`, `dedup_key`,
    /// `subject`, `status`, `occurred_at`, optionally `requester`; every
    /// other column becomes a field).
    pub file: PathBuf,
    #[arg(long, env = "OPSGATE_RUNBOOKS", default_value = DEFAULT_RUNBOOKS)]
    pub runbooks: PathBuf,
    /// The organisation's directory (people, groups, CI owners), YAML.
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// A directory of Rego policies that take part in every decision.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Template variable for `env`, as NAME=VALUE (repeatable).
    #[arg(long = "var", value_parser = crate::plan::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Replay at most one event per this long (`50ms`, `1s`); by default
    /// as fast as it goes. The answer is the same at any pace: every event
    /// is judged at the time it happened.
    #[arg(long, value_parser = parse_pace)]
    pub pace: Option<u64>,
    /// Print the tally and the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_pace(text: &str) -> Result<u64, String> {
    runbook::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration such as `50ms` or `1s`"))
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Replay(args) => replay(args).await,
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let is_csv = args
        .file
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"));
    let rows = if is_csv {
        csv_rows(&text)
    } else {
        jsonl_rows(&text)
    };
    // Every bad row is reported, at its line, and nothing is replayed.
    let (rows, problems): (Vec<_>, Vec<_>) = rows.into_iter().partition(Result::is_ok);
    if !problems.is_empty() {
        for problem in problems.into_iter().filter_map(Result::err) {
            eprintln!("{}:{problem}", args.file.display());
        }
        return Ok(crate::invalid_input());
    }
    let rows: Vec<runtime::ReplayRow> = rows.into_iter().filter_map(Result::ok).collect();

    let scratch = tempdir()?;
    let runtime = scratch_runtime(&args, &scratch.0).await?;
    let pace = args.pace.map(std::time::Duration::from_millis);
    let tally = runtime.shadow().replay(rows, pace).await?;
    let report = runtime.shadow().report(jiff::Timestamp::UNIX_EPOCH).await?;
    if args.json {
        let answer = serde_json::json!({
            "tally": tally,
            "report": server::api::ShadowReportAnswer::from(report),
        });
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let span = match (tally.from, tally.to) {
        (Some(from), Some(to)) => format!(", which happened from {from} to {to}"),
        _ => String::new(),
    };
    println!(
        "replayed {} event(s) from {}{span}, in shadow: nothing was executed",
        tally.rows,
        args.file.display()
    );
    let dispositions: Vec<String> = tally
        .dispositions
        .iter()
        .map(|(disposition, count)| format!("{disposition} {count}"))
        .collect();
    println!("  {}", dispositions.join(", "));
    let report = server::api::ShadowReportAnswer::from(report);
    if report.runbooks.is_empty() {
        println!("\nno runbook matched any of them");
    }
    for runbook in &report.runbooks {
        println!();
        for line in crate::report::runbook_lines(runbook) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A runtime on a fresh SQLite database in `scratch`, with the runbooks,
/// directory and policies of `args`, that shadows everyone and reaches no
/// outside system: no ticket, no chat, no target is ever called.
async fn scratch_runtime(args: &ReplayArgs, scratch: &Path) -> anyhow::Result<runtime::Runtime> {
    let catalog = crate::config::load_catalog(&args.runbooks)?;
    let directory = args
        .directory
        .as_deref()
        .map(policy::Directory::load)
        .transpose()?;
    let policies = args
        .policies
        .as_deref()
        .map(policy::PolicySet::load)
        .transpose()?;
    let mut template_env = runbook::TemplateEnv::from_process();
    template_env.vars.extend(args.vars.iter().cloned());
    let database = format!("sqlite://{}", scratch.join("replay.db").display());
    let store = store::Store::open(&database)
        .await
        .with_context(|| format!("opening {database}"))?;
    Ok(runtime::Runtime::new(
        store,
        runtime::Config {
            catalog,
            template_env,
            connectors: connectors::Connectors::new(connectors::Config::default())?,
            lease_ttl_ms: runtime::Config::DEFAULT_LEASE_TTL_MS,
            global_rate_limit: None,
            shadow_principals: vec![runtime::EVERYONE.to_owned()],
            directory,
            policies,
            integrations: connectors::registry::build(&Default::default())?,
            approval_pages: None,
            max_intake_in_flight: runtime::Config::DEFAULT_MAX_INTAKE_IN_FLIGHT,
            clock: runtime::Clock::system(),
        },
    ))
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<Scratch> {
    let path = std::env::temp_dir().join(format!(
        "opsgate-replay-{}-{}",
        std::process::id(),
        runtime::new_id("r")
    ));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(Scratch(path))
}

/// One row per non-empty line: an event body, and its `requester`.
fn jsonl_rows(text: &str) -> Vec<Result<runtime::ReplayRow, String>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let number = index + 1;
            let mut value: Value = serde_json::from_str(line)
                .map_err(|error| format!("{number}:{}: not JSON: {error}", error.column()))?;
            let requester = match value
                .as_object_mut()
                .map(|object| object.remove("requester"))
            {
                Some(Some(Value::String(actor))) => Some(actor),
                Some(Some(other)) => {
                    return Err(format!(
                        "{number}: `requester` is {other}: expected `kind:name`"
                    ));
                }
                _ => None,
            };
            let event: NewEvent = serde_json::from_value(value)
                .map_err(|error| format!("{number}: not an event: {error}"))?;
            row(number, event, requester.as_deref())
        })
        .collect()
}

/// One row per CSV record after the header.
fn csv_rows(text: &str) -> Vec<Result<runtime::ReplayRow, String>> {
    let records = match csv_records(text) {
        Ok(records) => records,
        Err(problem) => return vec![Err(problem)],
    };
    let mut records = records.into_iter();
    let Some((_, header)) = records.next() else {
        return vec![Err(
            "1: no header: the first line names the columns".to_owned()
        )];
    };
    let missing: Vec<&str> = [
        "source",
        "kind",
        "dedup_key",
        "subject",
        "status",
        "occurred_at",
    ]
    .into_iter()
    .filter(|column| !header.iter().any(|name| name == column))
    .collect();
    if !missing.is_empty() {
        return vec![Err(format!(
            "1: the header lacks the column(s) {}",
            missing.join(", ")
        ))];
    }
    records
        .map(|(number, values)| {
            if values.len() != header.len() {
                return Err(format!(
                    "{number}: {} value(s) where the header names {} column(s)",
                    values.len(),
                    header.len()
                ));
            }
            let mut event = Map::new();
            let mut fields = Map::new();
            let mut requester = None;
            for (name, value) in header.iter().zip(values) {
                match name.as_str() {
                    "source" | "kind" | "dedup_key" | "subject" | "status" | "occurred_at" => {
                        event.insert(name.clone(), Value::String(value));
                    }
                    "requester" => requester = Some(value).filter(|actor| !actor.is_empty()),
                    _ if value.is_empty() => {}
                    _ => {
                        fields.insert(name.clone(), Value::String(value));
                    }
                }
            }
            event.insert("fields".to_owned(), Value::Object(fields));
            let event: NewEvent = serde_json::from_value(Value::Object(event))
                .map_err(|error| format!("{number}: not an event: {error}"))?;
            row(number, event, requester.as_deref())
        })
        .collect()
}

/// A checked row: it has a time, and its requester names a kind.
fn row(
    line: usize,
    event: NewEvent,
    requester: Option<&str>,
) -> Result<runtime::ReplayRow, String> {
    runtime::check_event(&event).map_err(|error| format!("{line}: {error}"))?;
    if event.occurred_at.is_none() {
        return Err(format!(
            "{line}: no `occurred_at`: a replay judges each event at the time it happened"
        ));
    }
    let requester = match requester {
        None => Principal::new(event.source.clone(), Role::Source),
        Some(actor) => {
            let (kind, name) = PrincipalKind::of_actor(actor)
                .filter(|(_, name)| !name.is_empty())
                .ok_or_else(|| {
                    format!("{line}: requester `{actor}` is not `source:…`, `agent:…` or `user:…`")
                })?;
            let role = match kind {
                PrincipalKind::Agent => Role::Agent,
                PrincipalKind::Source => Role::Source,
                PrincipalKind::User => Role::Operator,
            };
            Principal::new(name.to_owned(), role)
        }
    };
    Ok(runtime::ReplayRow {
        line,
        event,
        requester,
    })
}

/// CSV records (RFC 4180: quoted values may hold commas, line breaks and
/// doubled quotes), each with the line it starts on.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut value = String::new();
    let mut line = 1;
    let mut starts = 1;
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(char) = chars.next() {
        match (quoted, char) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                value.push('"');
            }
            (true, '"') => quoted = false,
            (true, other) => {
                if other == '\n' {
                    line += 1;
                }
                value.push(other);
            }
            (false, '"') if value.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut value)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut value));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push((starts, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                starts = line;
            }
            (false, other) => value.push(other),
        }
    }
    if quoted {
        return Err(format!("{starts}: a quoted value is never closed"));
    }
    if !value.is_empty() || !record.is_empty() {
        record.push(value);
        records.push((starts, record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_values_may_hold_commas_quotes_and_line_breaks() {
        let records = csv_records("a,b,c\n1,\"x, \"\"y\"\"\",\"two\nlines\"\r\n\n3,,z").unwrap();
        assert_eq!(
            records,
            [
                (1, vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]),
                (
                    2,
                    vec![
                        "1".to_owned(),
                        "x, \"y\"".to_owned(),
                        "two\nlines".to_owned()
                    ]
                ),
                (5, vec!["3".to_owned(), String::new(), "z".to_owned()]),
            ]
        );
        assert_eq!(
            csv_records("a\n\"open").unwrap_err(),
            "2: a quoted value is never closed"
        );
    }
}
