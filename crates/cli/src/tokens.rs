//! `opsgate token create|list|revoke`: API tokens, straight on the database.
//!
//! A token is printed once, when it is created; the database keeps only the
//! SHA-256 of its secret part, so a lost token is revoked and replaced,
//! never recovered.

use std::process::ExitCode;

use anyhow::Context;

use crate::audit::DatabaseArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a token for a principal with one role; prints it once.
    Create {
        /// Who the token speaks for: a directory id for a person, an agent's
        /// or a webhook source's name.
        #[arg(long)]
        principal: String,
        /// admin, operator, approver, agent, viewer or source.
        #[arg(long)]
        role: String,
        /// An agent's token only: the runbooks it may propose, by pattern
        /// (`restart-*`); repeat for more. None: any runbook.
        #[arg(long = "runbook", value_name = "PATTERN")]
        runbooks: Vec<String>,
        /// An agent's token only: the targets it may propose acting on, by
        /// pattern (`LT-*`); repeat for more. None: any target.
        #[arg(long = "target", value_name = "PATTERN")]
        targets: Vec<String>,
        /// An agent's token only: the highest risk it may propose
        /// (read_only, reversible, irreversible).
        #[arg(long)]
        max_risk: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a token by its id (the part after `og_`, before the next `_`).
    Revoke {
        id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create {
            principal,
            role,
            runbooks,
            targets,
            max_risk,
            database,
        } => {
            if principal.trim().is_empty() || principal.contains(char::is_whitespace) {
                eprintln!("error: --principal must be a non-empty name without spaces");
                return Ok(crate::invalid_input());
            }
            let role = match domain::Role::parse(&role) {
                Ok(role) => role,
                Err(error) => {
                    eprintln!("error: --role: {error}");
                    return Ok(crate::invalid_input());
                }
            };
            let max_risk = match max_risk
                .as_deref()
                .map(domain::RiskClass::parse)
                .transpose()
            {
                Ok(max_risk) => max_risk,
                Err(error) => {
                    eprintln!("error: --max-risk: {error}");
                    return Ok(crate::invalid_input());
                }
            };
            let scope = domain::Scope {
                runbooks,
                targets,
                max_risk,
            };
            if let Some(blank) = scope
                .runbooks
                .iter()
                .chain(&scope.targets)
                .find(|pattern| pattern.trim().is_empty())
            {
                eprintln!("error: a --runbook or --target pattern is blank: `{blank}`");
                return Ok(crate::invalid_input());
            }
            if !scope.is_open() && role != domain::Role::Agent {
                eprintln!(
                    "error: --runbook, --target and --max-risk limit what an agent proposes; \
                     a {role} token cannot carry them"
                );
                return Ok(crate::invalid_input());
            }
            let store = store::Store::open(&database.database).await?;
            let mut issued = server::issue_token(&principal, role, jiff::Timestamp::now());
            issued.row.scope = (!scope.is_open()).then_some(scope);
            store
                .create_token(&issued.row)
                .await
                .context("storing the token")?;
            eprintln!(
                "token {} for {} ({role}); it is shown only this once:",
                issued.row.id, principal
            );
            println!("{}", issued.token);
        }
        Command::List { database } => {
            let store = store::Store::open(&database.database).await?;
            for token in store.tokens().await? {
                let status = match &token.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".to_owned(),
                };
                let scope = token.scope.as_ref().map_or(String::new(), |scope| {
                    format!(
                        "  scope {}",
                        serde_json::to_string(scope).unwrap_or_default()
                    )
                });
                println!(
                    "{}  {:<24} {:<9} created {}  {status}{scope}",
                    token.id, token.principal, token.role, token.created_at
                );
            }
        }
        Command::Revoke { id, database } => {
            let store = store::Store::open(&database.database).await?;
            if !store.revoke_token(&id, jiff::Timestamp::now()).await? {
                eprintln!("error: no active token `{id}`");
                return Ok(ExitCode::FAILURE);
            }
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
