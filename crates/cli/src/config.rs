//! Settings for `serve`: flags beat `OPSGATE_*` environment variables, which
//! beat the config file, which beats the defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE: &str = "sqlite://opsgate.db";
pub const DEFAULT_RUNBOOKS: &str = "runbooks";

/// The config file (YAML). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub runbooks: Option<PathBuf>,
    pub log: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    /// Extra variables for templates' `env` (base URLs and the like).
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

impl File {
    pub fn load(path: &Path) -> anyhow::Result<File> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        serde_saphyr::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Loads the catalog from `dir`, printing every problem; fails when any
/// runbook is invalid, so a server never runs with half its runbooks.
pub fn load_catalog(dir: &Path) -> anyhow::Result<runbook::Catalog> {
    let report = runbook::load_dir(dir)
        .with_context(|| format!("loading runbooks from {}", dir.display()))?;
    if !report.diagnostics.is_empty() {
        for diagnostic in &report.diagnostics {
            eprintln!("{diagnostic}");
        }
        anyhow::bail!(
            "{} problem(s) in the runbooks under {}",
            report.diagnostics.len(),
            dir.display()
        );
    }
    Ok(report.catalog)
}
