//! `opsgate audit verify|show|export`: read the database directly, so an
//! auditor needs no running server.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::DEFAULT_DATABASE;

#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    #[arg(long, env = "OPSGATE_DATABASE", default_value = DEFAULT_DATABASE)]
    pub database: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the whole hash chain; name the first broken record.
    Verify(DatabaseArgs),
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
        Command::Verify(args) => {
            let store = open_existing(&args.database).await?;
            let report = store.verify_audit().await?;
            match report.first_break {
                None => {
                    println!(
                        "audit chain intact: {} record(s), head {}",
                        report.records, report.head_hash
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(broken) => {
                    println!(
                        "audit chain BROKEN at record {}: {}",
                        broken.seq, broken.reason
                    );
                    Ok(crate::invalid_input())
                }
            }
        }
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
