//! The catalog: every valid runbook of a directory, by id.
//!
//! Loading never fails because one file is wrong: an invalid runbook is
//! left out and its diagnostics reported next to the catalog, so a server
//! keeps serving the good runbooks while `opsgate runbook validate` shows
//! what to fix. Only an unreadable directory or file is an error.

use std::path::Path;

use domain::Event;

use crate::diagnostic::Diagnostic;
use crate::model::Runbook;
use crate::validate;
use crate::{Error, Result};

/// Validated runbooks, sorted by id, ids unique.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    runbooks: Vec<Runbook>,
}

/// What [`load_dir`] found: the valid runbooks, and every problem in the others.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub catalog: Catalog,
    pub diagnostics: Vec<Diagnostic>,
}

impl Catalog {
    /// Sorts by id. Of two runbooks with the same id, the first given wins
    /// ([`load_dir`] reports the second as a diagnostic before this point).
    pub fn new(runbooks: Vec<Runbook>) -> Catalog {
        let mut runbooks = runbooks;
        runbooks.sort_by(|a, b| a.id.cmp(&b.id));
        runbooks.dedup_by(|later, earlier| later.id == earlier.id);
        Catalog { runbooks }
    }

    pub fn get(&self, id: &str) -> Option<&Runbook> {
        let index = self
            .runbooks
            .binary_search_by(|runbook| runbook.id.as_str().cmp(id))
            .ok()?;
        Some(&self.runbooks[index])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Runbook> {
        self.runbooks.iter()
    }

    pub fn len(&self) -> usize {
        self.runbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runbooks.is_empty()
    }

    /// Every runbook whose matcher accepts the event, in id order.
    pub fn matching<'a, 'e>(
        &'a self,
        event: &'e Event,
    ) -> impl Iterator<Item = &'a Runbook> + use<'a, 'e> {
        self.runbooks
            .iter()
            .filter(move |runbook| runbook.matches(event))
    }
}

/// Reads every `*.yaml` and `*.yml` file directly in `dir` (not in
/// subdirectories), in file-name order.
pub fn load_dir(dir: &Path, actions: &[&'static domain::ActionShape]) -> Result<LoadReport> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let is_yaml = path
            .extension()
            .is_some_and(|extension| extension == "yaml" || extension == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();

    let mut runbooks: Vec<Runbook> = Vec::new();
    let mut diagnostics = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let Ok(text) = String::from_utf8(bytes) else {
            diagnostics.push(Diagnostic {
                file: path,
                line: 1,
                column: 1,
                message: "the file is not valid UTF-8".into(),
                hint: None,
            });
            continue;
        };
        match validate::parse(&path, &text, actions) {
            Ok(parsed) => {
                if let Some(first) = runbooks
                    .iter()
                    .find(|runbook| runbook.id == parsed.runbook.id)
                {
                    diagnostics.push(Diagnostic {
                        file: path,
                        line: parsed.id_line,
                        column: parsed.id_column,
                        message: format!(
                            "runbook id `{}` is already used by {}",
                            parsed.runbook.id,
                            first.path.display()
                        ),
                        hint: Some("runbook ids must be unique; rename one of them".into()),
                    });
                    continue;
                }
                runbooks.push(parsed.runbook);
            }
            Err(found) => diagnostics.extend(found),
        }
    }
    Ok(LoadReport {
        catalog: Catalog::new(runbooks),
        diagnostics,
    })
}
