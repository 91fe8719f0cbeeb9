//! `opsgate audit verify|show|export`: read the database directly, so an
//! auditor needs no running server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::DEFAULT_DATABASE;

#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    #[arg(long, env = "OPSGATE_DATABASE", default_value = DEFAULT_DATABASE)]
    pub database: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A file of anchors the server wrote (`audit_anchor.sink`): the chain
    /// must still hold every anchored record, with its anchored hash, so a
    /// removed or replaced tail is found.
    #[arg(long, requires = "anchor_key")]
    pub anchor: Option<PathBuf>,
    /// The anchors' key, by reference: `env:NAME` or `file:PATH`.
    #[arg(long)]
    pub anchor_key: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the whole hash chain; name the first broken record. With
    /// `--anchor`, also check it against the anchors written outside the
    /// database.
    Verify(VerifyArgs),
    /// Print one run's audit records.
    Show {
        run: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Load an export (JSON Lines) into another database's empty audit log,
    /// e.g. to move from SQLite to PostgreSQL. The chain is checked first;
    /// nothing is stored unless all of it holds.
    Import {
        /// The file `audit export` wrote.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Write every record as JSON Lines.
    Export {
        /// File to write (standard output when absent).
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Opens the database, refusing to create one: auditing an empty database
/// that a typo just created would report "intact" about nothing.
async fn open_existing(url: &str) -> anyhow::Result<store::Store> {
    if let Some(path) = url.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        anyhow::bail!("no database at {path} (use --database or OPSGATE_DATABASE)");
    }
    Ok(store::Store::open(url).await?)
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify(args) => verify(args).await,
        Command::Show { run, database } => {
            let store = open_existing(&database.database).await?;
            let records = store.audit(Some(&run)).await?;
            if records.is_empty() {
                eprintln!("error: no audit records for run `{run}`");
                return Ok(crate::invalid_input());
            }
            for record in records {
                println!(
                    "#{:<6} {}  {:<22} {:<22} {}",
                    record.seq,
                    record.recorded_at,
                    record.kind,
                    record.actor,
                    crate::render::describe(&record.kind, &record.detail, &record.actor)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { input, database } => {
            let text = std::fs::read_to_string(&input)?;
            let mut rows = Vec::new();
            for (index, line) in text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
            {
                match serde_json::from_str::<store::AuditRow>(line) {
                    Ok(row) => rows.push(row),
                    Err(error) => {
                        eprintln!(
                            "{}:{}: not an audit record: {error}",
                            input.display(),
                            index + 1
                        );
                        return Ok(crate::invalid_input());
                    }
                }
            }
            let store = store::Store::open(&database.database).await?;
            match store.import_audit(&rows).await {
                Ok(count) => {
                    let report = store.verify_audit().await?;
                    println!(
                        "imported {count} record(s); chain head {}",
                        report.head_hash
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(store::Error::ImportRefused(why)) => {
                    eprintln!("error: {}: import refused: {why}", input.display());
                    Ok(crate::invalid_input())
                }
                Err(other) => Err(other.into()),
            }
        }
        Command::Export { output, database } => {
            let store = open_existing(&database.database).await?;
            let records = store.audit(None).await?;
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            for record in &records {
                serde_json::to_writer(&mut sink, record)?;
                sink.write_all(b"\n")?;
            }
            sink.flush()?;
            if let Some(path) = output {
                eprintln!("wrote {} record(s) to {}", records.len(), path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `audit verify`: the chain, then (with `--anchor`) every anchor in the
/// file, oldest first: each must be signed with the key and name a record
/// the chain still holds with the anchored hash.
async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let anchors = match (&args.anchor, &args.anchor_key) {
        (Some(path), Some(key)) => {
            let key = crate::config::resolve_secret(key).context("--anchor-key")?;
            match read_anchors(path)? {
                Ok(anchors) => Some((path, key, anchors)),
                Err(problem) => {
                    println!("{problem}");
                    return Ok(crate::invalid_input());
                }
            }
        }
        _ => None,
    };
    let store = open_existing(&args.database.database).await?;
    let report = store.verify_audit().await?;
    if let Some(broken) = report.first_break {
        println!(
            "audit chain BROKEN at record {}: {}",
            broken.seq, broken.reason
        );
        return Ok(crate::invalid_input());
    }
    if let Some(first) = report.first_time_regression {
        println!(
            "warning: {} record(s) carry a time earlier than the record before them (first: record {first})",
            report.time_regressions
        );
    }
    let mut anchored = String::new();
    if let Some((path, key, anchors)) = anchors {
        for (line, anchor) in &anchors {
            let hash = store.audit_hash(anchor.seq).await?;
            if let Err(broken) = anchor.check(key.expose_bytes(), hash.as_deref(), report.head_seq)
            {
                println!(
                    "audit chain BROKEN against anchor {}:{line} (record {}, anchored at {}): {broken}",
                    path.display(),
                    anchor.seq,
                    anchor.anchored_at
                );
                return Ok(crate::invalid_input());
            }
        }
        let (_, newest) = anchors.last().expect("read_anchors refuses an empty file");
        anchored = format!(
            "; {} anchor(s) hold, the newest at record {} ({})",
            anchors.len(),
            newest.seq,
            newest.anchored_at
        );
    }
    println!(
        "audit chain intact: {} record(s), head {}{anchored}",
        report.records, report.head_hash
    );
    Ok(ExitCode::SUCCESS)
}

/// The anchors in `path` with their line numbers, or what is wrong with
/// the file (a line that is not an anchor, no anchor at all).
fn read_anchors(path: &Path) -> anyhow::Result<Result<Vec<(usize, store::Anchor)>, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let store::AnchorLines { anchors, torn } = match store::Anchor::read_lines(&text) {
        Ok(read) => read,
        Err(problem) => return Ok(Err(format!("{}: {problem}", path.display()))),
    };
    for line in torn {
        eprintln!(
            "warning: {}:{line}: an anchor cut short (a write a crash interrupted); the others are checked",
            path.display()
        );
    }
    if anchors.is_empty() {
        return Ok(Err(format!("{}: holds no anchor", path.display())));
    }
    Ok(Ok(anchors))
}
