//! `ansible.playbook` end to end: the real server runs the real
//! `ansible-playbook` on localhost, and the run's outcome follows the
//! playbook's.

use serde_json::json;

use crate::harness::{Workspace, skip, which};

const WRITE_A_MARKER: &str = r#"- name: Write a marker
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Write the marker file
      ansible.builtin.copy:
        dest: "{{ marker }}"
        content: "{{ ticket }}\n"
"#;

const CHECK_THE_DISK: &str = r#"- name: Check the disk
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Refuse to go on
      ansible.builtin.fail:
        msg: "disk /var is 99% full on {{ inventory_hostname }}"
"#;

/// A runbook for events of `kind` whose one step runs `playbook` from the
/// `PLAYBOOKS` directory, with the event's ticket as an extra var.
fn playbook_runbook(kind: &str, playbook: &str) -> String {
    format!(
        r#"id: {kind}
title: Run {playbook}
owner: tests
risk: reversible
approval: auto
match:
  kind: {kind}
targets:
  from: "[event.subject]"
steps:
  - id: run-playbook
    action: ansible.playbook
    with:
      playbook: "{{{{ env.PLAYBOOKS }}}}/{playbook}"
      inventory: "localhost,"
      extra_vars:
        marker: "{{{{ env.PLAYBOOKS }}}}/marker.txt"
        ticket: "{{{{ event.fields.ticket }}}}"
    timeout: 60s
"#
    )
}

#[tokio::test]
async fn a_playbook_step_runs_ansible_and_its_outcome_ends_the_run() {
    let test = "a_playbook_step_runs_ansible_and_its_outcome_ends_the_run";
    if which("ansible-playbook").is_none() {
        skip(test, "ansible-playbook is not installed");
        return;
    }
    let playbooks = tempfile::tempdir().unwrap();
    std::fs::write(playbooks.path().join("marker.yml"), WRITE_A_MARKER).unwrap();
    std::fs::write(playbooks.path().join("disk.yml"), CHECK_THE_DISK).unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "marker.yaml",
        &playbook_runbook("write-marker", "marker.yml"),
    );
    workspace.add_runbook("disk.yaml", &playbook_runbook("check-disk", "disk.yml"));
    let server = workspace.start(&[("PLAYBOOKS", &playbooks.path().display().to_string())]);
    let event = |kind: &str| {
        json!({
            "source": "tests", "kind": kind, "dedup_key": kind,
            "subject": "HOST-1", "status": "firing", "fields": {"ticket": "INC0042"}
        })
    };

    let report = server.event(&event("write-marker")).await;
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        std::fs::read_to_string(playbooks.path().join("marker.txt")).unwrap(),
        "INC0042\n"
    );
    let outcome = &run["attempts"][0]["outcome"];
    assert_eq!(
        outcome["response"]["hosts"]["localhost"]["changed"], 1,
        "{outcome:#}"
    );

    let report = server.event(&event("check-disk")).await;
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "rolled_back", "{run:#}");
    let outcome = &run["attempts"][0]["outcome"];
    assert_eq!(outcome["outcome"], "failed", "{outcome:#}");
    assert_eq!(outcome["cause"], json!({"kind": "exit_code", "value": 2}));
    assert_eq!(
        outcome["error"],
        "task `Refuse to go on` failed on `localhost`: disk /var is 99% full on localhost"
    );
    assert_eq!(
        outcome["response"]["failed_tasks"][0]["message"],
        "disk /var is 99% full on localhost"
    );
}
