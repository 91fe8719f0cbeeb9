//! Loading a directory of runbooks into a catalog.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{MINIMAL, event};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("runbook-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_directory_loads_valid_runbooks_and_reports_the_rest() {
    let dir = TempDir::new("load");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in [
        "restart-endpoint-service.yaml",
        "rotate-logs-on-full-disk.yaml",
    ] {
        dir.write(name, &std::fs::read_to_string(fixtures.join(name)).unwrap());
    }
    dir.write("a-minimal.yml", MINIMAL);
    dir.write("b-same-id.yaml", MINIMAL);
    dir.write("c-broken.yaml", "id: broken\n");
    dir.write("notes.txt", "not a runbook");

    let report = runbook::load_dir(&dir.0, connectors::STEP_ACTIONS).unwrap();
    let ids: Vec<&str> = report
        .catalog
        .iter()
        .map(|runbook| runbook.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "restart-endpoint-service",
            "restart-service",
            "rotate-logs-on-full-disk"
        ]
    );
    assert_eq!(report.catalog.len(), 3);
    assert!(!report.catalog.is_empty());
    assert_eq!(
        report.catalog.get("restart-service").unwrap().path,
        dir.0.join("a-minimal.yml")
    );
    assert!(report.catalog.get("broken").is_none());

    let rendered: Vec<String> = report
        .diagnostics
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}: {}",
                d.file.file_name().unwrap().to_string_lossy(),
                d.line,
                d.column,
                d.message
            )
        })
        .collect();
    assert_eq!(
        rendered[0],
        format!(
            "b-same-id.yaml:1:5: runbook id `restart-service` is already used by {}",
            dir.0.join("a-minimal.yml").display()
        )
    );
    assert!(
        rendered[1..]
            .iter()
            .all(|line| line.starts_with("c-broken.yaml:1:1: missing required key")),
        "{rendered:#?}"
    );
    assert_eq!(rendered.len(), 1 + 6, "{rendered:#?}");
}

#[test]
fn matching_returns_runbooks_in_id_order() {
    let dir = TempDir::new("matching");
    dir.write("one.yaml", MINIMAL);
    dir.write(
        "two.yaml",
        &MINIMAL.replace("id: restart-service", "id: another-restart"),
    );
    let catalog = runbook::load_dir(&dir.0, connectors::STEP_ACTIONS)
        .unwrap()
        .catalog;

    let event = event(
        "servicenow",
        "PC-0042",
        json!({"signature": "VPN client service stopped"}),
    );
    let matched: Vec<&str> = catalog
        .matching(&event)
        .map(|runbook| runbook.id.as_str())
        .collect();
    assert_eq!(matched, ["another-restart", "restart-service"]);

    let unrelated = crate::event(
        "servicenow",
        "PC-0042",
        json!({"signature": "printer jammed"}),
    );
    assert_eq!(catalog.matching(&unrelated).count(), 0);
}

#[test]
fn an_unreadable_directory_is_an_io_error() {
    let missing = std::env::temp_dir().join("runbook-it-does-not-exist");
    let error = runbook::load_dir(&missing, connectors::STEP_ACTIONS).unwrap_err();
    assert!(
        matches!(&error, runbook::Error::Io { path, .. } if *path == missing),
        "{error:?}"
    );
}
