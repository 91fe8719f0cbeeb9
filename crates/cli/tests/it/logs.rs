//! What `opsgate serve` logs about a run, as an operator reading a file
//! or a log collector sees it: how each run ended and why, no colour
//! codes outside a terminal, and JSON lines that name the run and its
//! event.

use serde_json::Value;

use crate::harness::{Workspace, event, http_runbook};

/// A port nothing listens on: every call to it is refused.
fn refused_target() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Runs one event whose only step's call is refused; returns the run's id
/// and the server's log.
async fn a_refused_run(workspace: &mut Workspace) -> (String, String) {
    workspace.capture_log = true;
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("refused", "refused", &[("act", "POST", "/act", "")], ""),
    );
    let server = workspace.start(&[("TARGET", &refused_target())]);
    let report = server.event(&event("refused", "LOG-1")).await;
    let run_id = report["run_id"].as_str().expect("a run").to_owned();
    let run = server.wait(&run_id).await;
    assert!(
        ["failed", "rolled_back", "needs_human"].contains(&run["state"].as_str().unwrap()),
        "{run:#}"
    );
    drop(server);
    let log = std::fs::read_to_string(workspace.log_path()).unwrap();
    (run_id, log)
}

#[tokio::test]
async fn a_run_that_fails_says_so_in_plain_text_when_the_log_is_a_file() {
    let mut workspace = Workspace::new();
    let (run_id, log) = a_refused_run(&mut workspace).await;

    assert!(!log.contains('\u{1b}'), "colour codes in a file:\n{log}");
    let ended: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("run ended") && line.contains(&run_id))
        .collect();
    assert_eq!(ended.len(), 1, "{log}");
    assert!(ended[0].contains("WARN"), "{}", ended[0]);
    assert!(
        ended[0].contains("state=") && ended[0].contains("reason="),
        "{}",
        ended[0]
    );
}

#[tokio::test]
async fn json_lines_name_the_run_and_its_event() {
    let mut workspace = Workspace::new();
    workspace
        .env
        .push(("OPSGATE_LOG_FORMAT".to_owned(), "json".to_owned()));
    let (run_id, log) = a_refused_run(&mut workspace).await;

    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let event_id = lines
        .iter()
        .find(|line| line["message"] == "event taken in" && line["run_id"] == run_id.as_str())
        .and_then(|line| line["event_id"].as_str())
        .expect("the intake's line names the event")
        .to_owned();
    // Every line the run's driver wrote carries the run and its event,
    // in its own fields or its span's.
    let driven: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("runtime::driver"))
        })
        .collect();
    assert!(driven.len() > 1, "{log}");
    let named = |line: &Value, field: &str| {
        line[field]
            .as_str()
            .or(line["spans"][0][field].as_str())
            .map(str::to_owned)
    };
    for line in &driven {
        assert_eq!(
            (named(line, "run_id"), named(line, "event_id")),
            (Some(run_id.clone()), Some(event_id.clone())),
            "{line}"
        );
    }
    let ended = lines
        .iter()
        .find(|line| line["message"] == "run ended" && line["run_id"] == run_id.as_str())
        .unwrap_or_else(|| panic!("no end line:\n{log}"));
    assert_eq!(ended["level"], "WARN", "{ended}");
    assert!(
        ended["state"].is_string() && ended["reason"].is_string(),
        "{ended}"
    );
    assert_eq!(ended["spans"][0]["event_id"], event_id.as_str(), "{ended}");
}
