//! `opsgate eval triage`: exact scores on a small labelled file, the model
//! asked through the simulated endpoint, a file with mistakes refused at
//! their lines, and the shipped labelled set.

use serde_json::{Value, json};
use test_support::chat_completions_sim::{ChatCompletionsSim, user_message};

use crate::harness::cli;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn runbooks() -> String {
    format!("{ROOT}/examples/runbooks")
}

/// Six tickets, each a case: a rule right, a rule misled by a wrong
/// signature, a catalog request, a printer out of paper that a user filed
/// as a stuck queue, a stuck queue no rule takes, a password reset.
const SMALL: &str = r#"{"id": "queue", "text": "Nothing prints\nJobs stay in the queue.", "fields": {"ticket": "INC0050001", "signature": "Print queue stuck"}, "subject": "LAPTOP-0101", "expected": "clear-print-queue"}
{"id": "tunnel", "text": "VPN connected, nothing loads", "fields": {"ticket": "INC0050002", "signature": "VPN client service stopped"}, "subject": "LAPTOP-0150", "expected": "reset-vpn-network-profile"}
{"id": "vpn-new", "text": "VPN for Kim", "fields": {"request_type": "vpn_access", "user": "kim"}, "kind": "request", "expected": "grant-vpn-access"}

{"id": "paper", "text": "Printer out of paper", "fields": {"signature": "Print queue stuck"}, "expected": null}
{"id": "queue-2", "text": "print queue stuck on LAPTOP-0233", "fields": {}, "expected": "clear-print-queue"}
{"id": "password", "text": "Password reset please", "expected": null}
"#;

/// Writes `text` as `name` in a new temporary directory.
fn file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the file");
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn the_rules_are_scored_per_runbook_with_a_confusion_table() {
    let (_dir, path) = file("small.jsonl", SMALL);
    let (code, stdout, stderr) = cli(&["eval", "triage", &path, "--runbooks", &runbooks()]);
    assert_eq!(code, 0, "{stderr}");
    let expected = format!(
        "triage of 6 ticket(s) from {path}, by rules

runbook                    precision  recall     f1  support  predicted
clear-print-queue               0.50    0.50   0.50        2          2
expand-mailbox-quota               -       -      -        0          0
fix-print-spooler-site             -       -      -        0          0
grant-vpn-access                1.00    1.00   1.00        1          1
recycle-iis-web-tier               -       -      -        0          0
reset-vpn-network-profile          -    0.00   0.00        1          0
restart-endpoint-service        0.00       -   0.00        0          1
shared-mailbox-access              -       -      -        0          0
(none)                          0.50    0.50   0.50        2          2
micro average (runbooks)        0.50    0.50   0.50        4          4
macro average (runbooks)        0.38    0.38   0.38        4          4
accuracy 0.50 (3 of 6 tickets named as labelled)

confusion (rows: expected; columns: predicted, numbered as the rows)
                               1   2   3   4   5   6   7   8   9
 1 clear-print-queue           1   .   .   .   .   .   .   .   1
 2 expand-mailbox-quota        .   .   .   .   .   .   .   .   .
 3 fix-print-spooler-site      .   .   .   .   .   .   .   .   .
 4 grant-vpn-access            .   .   .   1   .   .   .   .   .
 5 recycle-iis-web-tier        .   .   .   .   .   .   .   .   .
 6 reset-vpn-network-profile   .   .   .   .   .   .   1   .   .
 7 restart-endpoint-service    .   .   .   .   .   .   .   .   .
 8 shared-mailbox-access       .   .   .   .   .   .   .   .   .
 9 (none)                      1   .   .   .   .   .   .   .   1

would have acted on 4 of 6 tickets at the configured thresholds (2 of them wrongly)
acted on wrongly:
  tunnel: expected reset-vpn-network-profile, a rule ran restart-endpoint-service
  paper: expected (none), a rule ran clear-print-queue
"
    );
    assert_eq!(stdout, expected);
}

#[test]
fn a_file_with_mistakes_is_refused_at_each_line() {
    let text = concat!(
        r#"{"text": "fine", "expected": null}"#,
        "\n",
        r#"{"text": "broken", "expected": nul"#,
        "\n",
        r#"{"text": "Reboot my phone", "expected": "reboot-phone"}"#,
        "\n",
        r#"{"text": "no label"}"#,
        "\n",
        r#"{"text": "fields wrong", "fields": "category=Hardware", "expected": null}"#,
        "\n",
        r#"{"text": "typo", "expectd": null}"#,
        "\n",
    );
    let (_dir, path) = file("bad.jsonl", text);
    let (code, stdout, stderr) = cli(&["eval", "triage", &path, "--runbooks", &runbooks()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "{path}:2: not JSON at column 34: EOF while parsing a value
{path}:3: `expected` names runbook `reboot-phone`, which is not in the catalog (there are: clear-print-queue, expand-mailbox-quota, fix-print-spooler-site, grant-vpn-access, recycle-iis-web-tier, reset-vpn-network-profile, restart-endpoint-service, shared-mailbox-access)
{path}:4: no `expected`: give a runbook id, or null for none
{path}:5: `fields` is \"category=Hardware\": expected an object
{path}:6: unknown key `expectd` (a line has id, text, fields, expected, source, kind, subject)
"
        )
    );
}

#[test]
fn the_model_needs_a_configured_endpoint() {
    let (_dir, path) = file("small.jsonl", SMALL);
    let (code, _, stderr) = cli(&[
        "eval",
        "triage",
        &path,
        "--runbooks",
        &runbooks(),
        "--with",
        "model",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr,
        "error: --with model needs a model: give --config with a `chat_completions:` section\n"
    );
}

/// The small file and three more tickets no rule takes: a full mailbox
/// the model is unsure of, slow VPN the model mistakes for a dead tunnel,
/// and a flickering screen for which it names a runbook that does not
/// exist.
fn with_model_tickets() -> String {
    format!(
        "{SMALL}{}\n{}\n{}\n",
        r#"{"id": "mailbox", "text": "Mailbox full, can't send - r.meyer", "expected": "expand-mailbox-quota"}"#,
        r#"{"id": "vpn-slow", "text": "VPN slow in the evening on LAPTOP-0342", "expected": null}"#,
        r#"{"id": "screen", "text": "My screen flickers", "expected": null}"#,
    )
}

/// What the simulated model answers each of those tickets.
fn model_answer(messages: &[Value]) -> Value {
    let ticket = user_message(messages);
    let answer = |runbook: Option<&str>, inputs: Value, confidence: f64| json!({"runbook": runbook, "inputs": inputs, "confidence": confidence, "rationale": "from the test's script"});
    if ticket.contains("print queue stuck") {
        answer(
            Some("clear-print-queue"),
            json!({"device_id": "LAPTOP-0233"}),
            0.92,
        )
    } else if ticket.contains("Mailbox full") {
        answer(
            Some("expand-mailbox-quota"),
            json!({"user": "r.meyer"}),
            0.6,
        )
    } else if ticket.contains("VPN slow") {
        answer(
            Some("reset-vpn-network-profile"),
            json!({"device_id": "LAPTOP-0342"}),
            0.85,
        )
    } else if ticket.contains("flickers") {
        answer(Some("replace-screen"), json!({}), 0.9)
    } else {
        answer(None, json!({}), 0.97)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_takes_what_the_rules_did_not() {
    let sim = ChatCompletionsSim::new("sk-eval-key-5151", "triage-model-1");
    sim.script(model_answer);
    let server = sim.start().await.expect("the simulator starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "sk-eval-key-5151\n").unwrap();
    let config = dir.path().join("opsgate.yaml");
    std::fs::write(
        &config,
        format!(
            "chat_completions:\n  url: {}/v1\n  model: triage-model-1\n  api_key: file:{}\n  timeout: 5s\n",
            server.url,
            dir.path().join("key").display()
        ),
    )
    .unwrap();
    let tickets = dir.path().join("tickets.jsonl");
    std::fs::write(&tickets, with_model_tickets()).unwrap();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "eval",
            "triage",
            &tickets.display().to_string(),
            "--runbooks",
            &runbooks(),
            "--config",
            &config.display().to_string(),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        // The binary is waited for on a thread of its own, so the
        // simulator keeps answering.
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args)
        })
    };

    let (code, stdout, stderr) = run(&["--json"]).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["with"], "both", "both, by default, with a model");
    assert_eq!(
        report["model"],
        json!({"model": "triage-model-1", "prompt_version": "triage-v1", "min_confidence": 0.8})
    );
    let judged: Vec<(String, String, Value, bool)> = report["judged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ticket| {
            (
                ticket["id"].as_str().unwrap().to_owned(),
                ticket["by"].as_str().unwrap().to_owned(),
                ticket["predicted"].clone(),
                ticket["acted"].as_bool().unwrap(),
            )
        })
        .collect();
    let expect = |id: &str, by: &str, predicted: Value, acted: bool| {
        (id.to_owned(), by.to_owned(), predicted, acted)
    };
    assert_eq!(
        judged,
        vec![
            expect("queue", "rules", json!("clear-print-queue"), true),
            expect("tunnel", "rules", json!("restart-endpoint-service"), true),
            expect("vpn-new", "rules", json!("grant-vpn-access"), true),
            expect("paper", "rules", json!("clear-print-queue"), true),
            expect("queue-2", "model", json!("clear-print-queue"), true),
            expect("password", "nobody", Value::Null, false),
            expect("mailbox", "model", json!("expand-mailbox-quota"), false),
            expect(
                "vpn-slow",
                "model",
                json!("reset-vpn-network-profile"),
                true
            ),
            expect("screen", "nobody", Value::Null, false),
        ]
    );
    assert_eq!(
        report["acted"],
        json!({"total": 6, "wrong": 3, "by_rules": 4, "by_rules_wrong": 2, "by_model": 2, "by_model_wrong": 1})
    );
    assert_eq!(report["model_failures"], json!({"malformed": 1}));
    assert_eq!(
        sim.calls(),
        5,
        "the model is asked only about what no rule took"
    );

    let (code, stdout, stderr) = run(&[]).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "triage of 9 ticket(s) from ",
        "model triage-model-1 (prompt triage-v1), proposing at confidence 0.8 or more (or a runbook's own min_confidence when higher)",
        "would have acted on 6 of 9 tickets at the configured thresholds (3 of them wrongly)",
        "  by rules 4 (2 wrongly), by the model 2 (1 wrongly); 1 suggestion(s) below the threshold only noted",
        "  the model gave no suggestion for 1 ticket(s): 1 malformed",
        "  vpn-slow: expected (none), the model ran reset-vpn-network-profile",
    ] {
        assert!(stdout.contains(line), "`{line}` is missing from:\n{stdout}");
    }

    // The model alone is asked about every ticket.
    let (code, stdout, stderr) = run(&["--with", "model", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["acted"]["by_rules"], 0);
    assert_eq!(sim.calls(), 5 + 5 + 9);
}

#[test]
fn the_shipped_labelled_set_runs_and_is_big_and_varied_enough() {
    let path = format!("{ROOT}/examples/triage/tickets.jsonl");
    let text = std::fs::read_to_string(&path).expect("the shipped set");
    let lines: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    assert!(lines.len() >= 100, "{} tickets", lines.len());
    let nothing = lines
        .iter()
        .filter(|line| line["expected"].is_null())
        .count();
    assert!(nothing >= 30, "{nothing} tickets match nothing");

    let (code, stdout, stderr) = cli(&[
        "eval",
        "triage",
        &path,
        "--runbooks",
        &runbooks(),
        "--with",
        "rules",
        "--json",
    ]);
    // Exit 0: every line reads, and every expected runbook exists.
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["tickets"], lines.len());
    let scores = report["scores"].as_array().unwrap();
    for runbook in scores.iter().filter(|scores| scores["label"] != "(none)") {
        assert!(
            runbook["support"].as_u64().unwrap() >= 5,
            "too few tickets for {runbook}"
        );
    }
    let none = scores
        .iter()
        .find(|scores| scores["label"] == "(none)")
        .unwrap();
    assert_eq!(none["support"], nothing);
    // The rules act only on what their fields say; the look-alikes filed
    // under a wrong signature or request type are what they get wrong.
    assert!(report["acted"]["wrong"].as_u64().unwrap() > 0);
    assert!(
        report["acted"]["total"].as_u64().unwrap() < lines.len() as u64 / 2,
        "most tickets carry no field a rule reads"
    );
}
