//! `opsgate migrate`: bring a database's schema up to this build's version.
//!
//! `serve` also migrates when it starts; this command lets an operator do
//! it on purpose (before rolling out new instances) and see the result.

use std::process::ExitCode;

use crate::audit::DatabaseArgs;

pub async fn run(args: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = store::Store::open(&args.database).await?;
    let version = store.schema_version().await?;
    println!(
        "{} is at schema version {version} (this opsgate knows up to {})",
        args.database,
        store::latest_schema_version()
    );
    Ok(ExitCode::SUCCESS)
}
