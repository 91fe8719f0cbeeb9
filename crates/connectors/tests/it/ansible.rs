//! `ansible.playbook` against the real `ansible-playbook`, on `localhost`
//! with `connection: local`: each case a tiny playbook in a scratch
//! directory and the outcome the connector makes of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use connectors::{AnsibleConfig, Config, Connectors};
use domain::{AttemptOutcome, FailureCause, PlannedCall};
use serde_json::{Value, json};

const WRITE_A_MARKER: &str = r#"- name: Write a marker
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Write the marker file
      ansible.builtin.copy:
        dest: "{{ marker }}"
        content: "{{ value }}\n"
"#;

const FAIL_A_TASK: &str = r#"- name: Refuse
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Ignored failure
      ansible.builtin.command: "false"
      ignore_errors: true
    - name: Check the disk
      ansible.builtin.fail:
        msg: "disk /var is 99% full"
"#;

/// A scratch playbooks directory holding `playbooks`, and a connector
/// configured to look there.
struct Playbooks {
    dir: tempfile::TempDir,
    connectors: Connectors,
}

impl Playbooks {
    fn new(playbooks: &[(&str, &str)]) -> Playbooks {
        Playbooks::with_program("ansible-playbook", playbooks)
    }

    fn with_program(program: &str, playbooks: &[(&str, &str)]) -> Playbooks {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, text) in playbooks {
            std::fs::write(dir.path().join(name), text).expect("write a playbook");
        }
        let connectors = Connectors::new(Config {
            ansible: AnsibleConfig {
                program: PathBuf::from(program),
                playbooks_dir: Some(dir.path().to_owned()),
            },
            ..Config::default()
        })
        .expect("connectors");
        Playbooks { dir, connectors }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn run(&self, with: Value, timeout: Duration) -> AttemptOutcome {
        self.connectors
            .call(&PlannedCall {
                action: "ansible.playbook".into(),
                request: with,
                timeout_ms: timeout.as_millis() as u64,
            })
            .await
    }
}

const USUALLY: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_playbook_that_writes_a_file_succeeds_with_a_summary() {
    if !installed("a_playbook_that_writes_a_file_succeeds_with_a_summary") {
        return;
    }
    let playbooks = Playbooks::new(&[("marker.yml", WRITE_A_MARKER)]);
    let marker = playbooks.path("marker.txt");
    let outcome = playbooks
        .run(
            json!({
                "playbook": "marker.yml",
                "inventory": "localhost,",
                "extra_vars": {"marker": marker, "value": "INC0012345 it's \"quoted\" $HOME"},
            }),
            USUALLY,
        )
        .await;
    let AttemptOutcome::Succeeded { response } = outcome else {
        panic!("expected success, got {outcome:#?}");
    };
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "INC0012345 it's \"quoted\" $HOME\n",
        "extra vars reach the playbook as they are, through no shell"
    );
    assert_eq!(
        response,
        json!({
            "exit_code": 0,
            "check": false,
            "plays": ["Write a marker"],
            "hosts": {"localhost": {"ok": 1, "changed": 1, "failures": 0, "unreachable": 0, "skipped": 0}},
        })
    );
}

#[tokio::test]
async fn check_mode_changes_nothing_and_says_what_would_change() {
    if !installed("check_mode_changes_nothing_and_says_what_would_change") {
        return;
    }
    let playbooks = Playbooks::new(&[("marker.yml", WRITE_A_MARKER)]);
    let marker = playbooks.path("marker.txt");
    let outcome = playbooks
        .run(
            json!({
                "playbook": playbooks.path("marker.yml"),
                "inventory": "localhost,",
                "extra_vars": {"marker": marker, "value": "v"},
                "check": true,
            }),
            USUALLY,
        )
        .await;
    let AttemptOutcome::Succeeded { response } = outcome else {
        panic!("expected success, got {outcome:#?}");
    };
    assert!(!marker.exists(), "--check wrote the file");
    assert_eq!(response["check"], true);
    assert_eq!(response["hosts"]["localhost"]["changed"], 1);
}

#[tokio::test]
async fn a_failed_task_is_reported_with_its_host_and_message() {
    if !installed("a_failed_task_is_reported_with_its_host_and_message") {
        return;
    }
    let playbooks = Playbooks::new(&[("fail.yml", FAIL_A_TASK)]);
    let outcome = playbooks
        .run(
            json!({"playbook": "fail.yml", "inventory": "localhost,"}),
            USUALLY,
        )
        .await;
    let AttemptOutcome::Failed {
        cause,
        error,
        response,
        ..
    } = outcome
    else {
        panic!("expected a failure, got {outcome:#?}");
    };
    assert_eq!(cause, FailureCause::ExitCode(2));
    assert_eq!(
        error,
        "task `Check the disk` failed on `localhost`: disk /var is 99% full"
    );
    let response = response.expect("a summary");
    assert_eq!(
        response["failed_tasks"],
        json!([{"host": "localhost", "task": "Check the disk", "message": "disk /var is 99% full"}]),
        "the ignored failure before it is not the cause"
    );
    assert_eq!(response["hosts"]["localhost"]["failures"], 1);
}

#[tokio::test]
async fn an_unreachable_host_fails_as_a_connection_failure() {
    if !installed("an_unreachable_host_fails_as_a_connection_failure") {
        return;
    }
    let ping = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: Ping\n      ansible.builtin.ping:\n";
    let playbooks = Playbooks::new(&[("ping.yml", ping)]);
    let outcome = playbooks
        .run(
            json!({"playbook": "ping.yml", "inventory": "nowhere.invalid,"}),
            USUALLY,
        )
        .await;
    let AttemptOutcome::Failed { cause, error, .. } = outcome else {
        panic!("expected a failure, got {outcome:#?}");
    };
    assert_eq!(cause, FailureCause::Connect, "{error}");
    assert!(
        error.starts_with("host `nowhere.invalid` is unreachable: "),
        "{error}"
    );
}

#[tokio::test]
async fn a_playbook_that_does_not_parse_fails_with_stderr() {
    if !installed("a_playbook_that_does_not_parse_fails_with_stderr") {
        return;
    }
    let broken = "- hosts: all\n  tasks:\n    - name: x\n      no_such_module: {}\n";
    let playbooks = Playbooks::new(&[("broken.yml", broken)]);
    let outcome = playbooks
        .run(
            json!({"playbook": "broken.yml", "inventory": "localhost,"}),
            USUALLY,
        )
        .await;
    let AttemptOutcome::Failed {
        cause,
        error,
        response,
        ..
    } = outcome
    else {
        panic!("expected a failure, got {outcome:#?}");
    };
    // ansible exits 4 for a parse error too; with no unreachable host it
    // is not a connection failure.
    assert_eq!(cause, FailureCause::ExitCode(4), "{error}");
    assert!(error.contains("no_such_module"), "{error}");
    let stderr = response.expect("a summary")["stderr"].clone();
    assert!(
        stderr.as_str().unwrap().contains("no_such_module"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_playbook_and_what_it_started() {
    if !installed("a_timeout_kills_the_playbook_and_what_it_started") {
        return;
    }
    let slow = r#"- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Start
      ansible.builtin.file: { path: "{{ dir }}/started", state: touch }
    - name: Take long
      ansible.builtin.shell: "sleep 10 && touch {{ dir }}/finished"
"#;
    let playbooks = Playbooks::new(&[("slow.yml", slow)]);
    let dir = playbooks.dir.path().to_owned();
    let outcome = playbooks
        .run(
            json!({"playbook": "slow.yml", "inventory": "localhost,", "extra_vars": {"dir": dir}}),
            Duration::from_secs(5),
        )
        .await;
    let AttemptOutcome::Failed { cause, .. } = outcome else {
        panic!("expected a timeout, got {outcome:#?}");
    };
    assert_eq!(cause, FailureCause::Timeout);
    let started = std::fs::metadata(dir.join("started"))
        .and_then(|started| started.modified())
        .expect("the slow task started before the timeout");
    // Wait past the moment the slow task would have finished, had it survived.
    let would_finish = started + Duration::from_secs(11);
    if let Ok(left) = would_finish.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert!(
        !dir.join("finished").exists(),
        "the task outlived the timeout"
    );
}

#[tokio::test]
async fn paths_and_inventories_are_checked_before_anything_runs() {
    // None of these reaches ansible-playbook, so none needs it installed.
    let playbooks = Playbooks::new(&[("site.yml", WRITE_A_MARKER)]);
    let dir = playbooks.dir.path().display();
    let cases = [
        (
            json!({"playbook": "missing.yml", "inventory": "localhost,"}),
            format!("playbook `{dir}/missing.yml` does not exist"),
        ),
        (
            json!({"playbook": "site.yml", "inventory": "localhost"}),
            format!(
                "inventory `{dir}/localhost` does not exist; a list of hosts needs a comma, as in `localhost,`"
            ),
        ),
        (
            json!({"playbook": "site.yml", "inventory": "localhost,", "check": "yes"}),
            "`check` must be true or false, not \"yes\"".to_owned(),
        ),
        (
            json!({"playbook": "site.yml", "inventory": "localhost,", "extra_vars": [1]}),
            "`extra_vars` must be a map, not [1]".to_owned(),
        ),
    ];
    for (with, expected) in cases {
        let outcome = playbooks.run(with.clone(), USUALLY).await;
        let AttemptOutcome::Failed { cause, error, .. } = outcome else {
            panic!("{with}: expected a failure, got {outcome:#?}");
        };
        assert_eq!(cause, FailureCause::Other, "{with}");
        assert_eq!(error, expected, "{with}");
    }
    let unconfigured = Connectors::new(Config::default()).unwrap();
    let outcome = unconfigured
        .call(&PlannedCall {
            action: "ansible.playbook".into(),
            request: json!({"playbook": "site.yml", "inventory": "localhost,"}),
            timeout_ms: 1000,
        })
        .await;
    assert!(
        matches!(&outcome, AttemptOutcome::Failed { error, .. } if error == "playbook `site.yml` is a relative path, and no playbooks directory is configured; give an absolute path"),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_missing_ansible_playbook_says_it_is_not_installed() {
    let playbooks = Playbooks::with_program(
        "ansible-playbook-that-is-not-there",
        &[("marker.yml", WRITE_A_MARKER)],
    );
    let outcome = playbooks
        .run(
            json!({"playbook": "marker.yml", "inventory": "localhost,"}),
            USUALLY,
        )
        .await;
    let AttemptOutcome::Failed { cause, error, .. } = outcome else {
        panic!("expected a failure, got {outcome:#?}");
    };
    assert_eq!(cause, FailureCause::Other);
    assert_eq!(
        error,
        "`ansible-playbook-that-is-not-there` is not installed: it was not found on PATH (Debian's `ansible` package provides it)"
    );
}

/// Whether `ansible-playbook` is on PATH; says the test is skipped when not,
/// and fails it instead under `OPSGATE_REQUIRE_EXTERNAL=1`.
fn installed(test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join("ansible-playbook").is_file())
    });
    if !found {
        let require = std::env::var("OPSGATE_REQUIRE_EXTERNAL").is_ok_and(|value| value == "1");
        assert!(
            !require,
            "{test}: ansible-playbook is not installed, and OPSGATE_REQUIRE_EXTERNAL=1 forbids skipping"
        );
        eprintln!(
            "SKIPPED {test}: ansible-playbook is not installed (set OPSGATE_REQUIRE_EXTERNAL=1 to make this a failure)"
        );
    }
    found
}
