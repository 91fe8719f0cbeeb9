//! Invalid runbooks: every problem reported, each at its line with a hint.

use std::path::Path;

use crate::{MINIMAL, edit};

/// Parses `text` and compares its diagnostics, one per line, as
/// `line:column: message` with ` [hint: ...]` when there is one.
#[track_caller]
fn check(text: &str, expected: &[&str]) {
    let diagnostics =
        match runbook::parse_runbook(Path::new("runbook.yaml"), text, connectors::STEP_ACTIONS) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics,
        };
    let actual: Vec<String> = diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.file, Path::new("runbook.yaml"));
            match &d.hint {
                Some(hint) => format!("{}:{}: {} [hint: {hint}]", d.line, d.column, d.message),
                None => format!("{}:{}: {}", d.line, d.column, d.message),
            }
        })
        .collect();
    assert_eq!(actual.join("\n"), expected.join("\n"));
}

#[test]
fn the_minimal_runbook_is_valid() {
    check(MINIMAL, &[]);
}

#[test]
fn unknown_keys_get_a_did_you_mean_hint() {
    check(
        &edit("    timeout: 30s", "    timout: 30s"),
        &["24:5: unknown key `timout` in step `restart` [hint: did you mean `timeout`?]"],
    );
    check(
        &edit("title: Restart a service", "tittle: Restart a service"),
        &[
            "1:1: missing required key `title`",
            "2:1: unknown key `tittle` [hint: did you mean `title`?]",
        ],
    );
    check(
        &edit("      method: POST", "      metod: POST"),
        &["22:7: unknown key `metod` in `with` of step `restart` [hint: did you mean `method`?]"],
    );
    check(
        &edit("  source: servicenow", "  colour: servicenow"),
        &[
            "6:3: unknown key `colour` in `match` [hint: known keys: source, kind, when, recurrence, rerun]",
        ],
    );
}

#[test]
fn wrong_types_name_what_was_expected_and_found() {
    check(
        &edit("owner: endpoint-team", "owner: [a, b]"),
        &["3:8: `owner`: expected a string, found a list"],
    );
    check(
        &edit("owner: endpoint-team", "owner: 42"),
        &["3:8: `owner`: expected a string, found an integer [hint: put it in quotes: \"42\"]"],
    );
    check(
        &edit("    timeout: 30s", "    timeout: [30s]"),
        &["24:14: `timeout` in step `restart`: expected a duration such as `30s`, found a list"],
    );
    check(
        &edit(
            "targets: { from: \"[inputs.device_id]\" }",
            "targets: [inputs.device_id]",
        ),
        &["17:10: `targets`: expected a map, found a list"],
    );
    check(
        &edit("risk: reversible", "risk: sometimes"),
        &[
            "4:7: `risk`: unknown value `sometimes` [hint: expected one of: read_only, reversible, irreversible]",
        ],
    );
}

#[test]
fn missing_required_keys_are_reported_at_their_map() {
    check(
        &edit("owner: endpoint-team\n", ""),
        &["1:1: missing required key `owner`"],
    );
    check(
        &edit(
            "      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
            "",
        ),
        &["22:7: missing required key `url` in `with` of step `restart`"],
    );
    check(
        &edit("    action: http.request\n", ""),
        &["19:5: missing required key `action` in step `restart`"],
    );
}

#[test]
fn templates_may_only_name_what_exists() {
    check(
        &edit(
            "{{ inputs.device_id }}/restart",
            "{{ inputs.device }}/restart",
        ),
        &[
            "23:12: undefined template variable `inputs.device` in step `restart` with.url [hint: did you mean `device_id`?]",
        ],
    );
    check(
        &edit("{{ env.API }}", "{{ secrets.API }}"),
        &[
            "23:12: unknown template variable `secrets` in step `restart` with.url [hint: variables available here: event, inputs, env, targets]",
        ],
    );
    check(
        &edit("{{ event.subject }}", "{{ inputs.device_id }}"),
        &[
            "16:16: unknown template variable `inputs` in inputs.from_event.device_id [hint: variables available here: event, env]",
        ],
    );
    check(
        &edit("{{ event.subject }}", "{{ event.subjct }}"),
        &[
            "16:16: undefined template variable `event.subjct` in inputs.from_event.device_id [hint: did you mean `subject`?]",
        ],
    );
    check(
        &edit("[inputs.device_id]", "[targets]"),
        &[
            "17:18: unknown template variable `targets` in `targets.from` [hint: variables available here: event, inputs, env]",
        ],
    );
    check(
        &edit("[inputs.device_id]", "{{ inputs.device_id }}"),
        &[
            "17:18: invalid expression: syntax error: unexpected `}`, expected `:` in `targets.from` [hint: this is an expression, not a template: write `inputs.device_id` without the braces]",
        ],
    );
    check(
        &edit("/restart\"", "/restart{% if %}\""),
        &[
            "23:12: invalid template: syntax error: unexpected end of block in step `restart` with.url",
        ],
    );
}

#[test]
fn step_ids_are_unique() {
    let text = format!(
        "{MINIMAL}  - id: restart\n    action: http.request\n    with: {{ url: \"{{{{ env.API }}}}/x\" }}\n"
    );
    check(
        &text,
        &[
            "25:9: step id `restart` is used twice [hint: it is first used on line 19; step ids must be unique within a runbook]",
        ],
    );
}

#[test]
fn a_rollback_must_reference_a_call() {
    for rollback in [
        "    rollback:\n",
        "    rollback: {}\n",
        "    rollback: { timeout: 5s }\n",
    ] {
        check(
            &format!("{MINIMAL}{rollback}"),
            &[
                "25:5: rollback references nothing in step `restart` [hint: name the compensating call: `rollback: { action: http.request, with: { ... } }`, or remove `rollback`]",
            ],
        );
    }
    check(
        &format!(
            "{MINIMAL}    rollback: {{ action: http.request, with: {{ url: \"{{{{ inputs.nope }}}}\" }} }}\n"
        ),
        &[
            "25:52: undefined template variable `inputs.nope` in step `restart` rollback.with.url [hint: known inputs: device_id]",
        ],
    );
}

#[test]
fn the_inputs_schema_must_be_valid_json_schema() {
    check(
        &edit(
            "    device_id: { type: string }",
            "    device_id: { type: text }",
        ),
        &[
            "10:1: invalid JSON Schema in `inputs`: \"text\" is not valid under any of the schemas listed in the 'anyOf' keyword (at `/properties/type/anyOf`)",
        ],
    );
    check(
        &edit("  type: object", "  type: string"),
        &[
            "10:1: the `inputs` schema must describe an object [hint: inputs are named values: write `type: object` and declare them under `properties`]",
        ],
    );
    check(
        &edit(
            "    device_id: \"{{ event.subject }}\"",
            "    device: \"{{ event.subject }}\"",
        ),
        &[
            "16:5: `from_event` sets `device`, which is not a property of the inputs schema [hint: did you mean `device_id`?]",
        ],
    );
}

#[test]
fn durations_need_a_unit() {
    check(
        &edit("    timeout: 30s", "    timeout: 30"),
        &[
            "24:14: `timeout` in step `restart`: expected a duration such as `30s`, found an integer [hint: give a unit, e.g. `30s` or `500ms`]",
        ],
    );
    check(
        &edit("    timeout: 30s", "    timeout: 30 sec"),
        &[
            "24:14: `timeout` in step `restart`: invalid duration `30 sec` [hint: write a whole number and a unit: ms, s, m, h or d (e.g. `500ms`, `30s`, `5m`, `1h`)]",
        ],
    );
}

#[test]
fn actions_must_be_known() {
    check(
        &edit("    action: http.request", "    action: http.requests"),
        &[
            "20:13: unknown action `http.requests` in step `restart` [hint: did you mean `http.request`?]",
        ],
    );
    check(
        &edit("    action: http.request", "    action: servicenow.update"),
        &[
            "20:13: unknown action `servicenow.update` in step `restart` [hint: known actions: http.request, command.run, ansible.playbook, graph.group_membership, awx.job_template, jenkins.build]",
        ],
    );
}

#[test]
fn with_is_checked_per_action() {
    check(
        &edit("      method: POST", "      method: post"),
        &[
            "22:15: `method` in `with` of step `restart`: unknown HTTP method `post` [hint: write it in capitals: `POST`]",
        ],
    );
    check(
        &edit("      method: POST", "      expect_status: [200, 1000]"),
        &[
            "22:28: `expect_status` in `with` of step `restart`, item 2: 1000 is out of range; it must be between 100 and 599",
        ],
    );
    check(
        &edit("    action: http.request", "    action: command.run"),
        &[
            "22:7: unknown key `method` in `with` of step `restart` [hint: known keys: program, args, env, cwd, stdin, expect_exit]",
            "22:7: missing required key `program` in `with` of step `restart`",
            "23:7: unknown key `url` in `with` of step `restart` [hint: known keys: program, args, env, cwd, stdin, expect_exit]",
        ],
    );
}

#[test]
fn ids_are_lower_case_words() {
    check(
        &edit("id: restart-service", "id: Restart_Service"),
        &[
            "1:5: invalid runbook id `Restart_Service` [hint: use 2 to 63 characters: lower-case letters, digits and `-`, starting with a letter or digit]",
        ],
    );
    check(
        &edit("id: restart-service", "id: -restart"),
        &[
            "1:5: invalid runbook id `-restart` [hint: use 2 to 63 characters: lower-case letters, digits and `-`, starting with a letter or digit]",
        ],
    );
}

#[test]
fn match_conditions() {
    check(
        &edit(
            "      equals: VPN client service stopped",
            "      equals: x\n      in: [y]",
        ),
        &[
            "10:7: a `when` condition has exactly one test; `in` is a second one [hint: write one condition per test; all conditions must hold]",
        ],
    );
    check(
        &edit(
            "    - field: fields.signature",
            "    - field: field.signature",
        ),
        &["8:14: `field`: an event has no field `field` [hint: did you mean `fields`?]"],
    );
    check(
        &edit(
            "match:\n  source: servicenow\n  when:\n    - field: fields.signature\n      equals: VPN client service stopped\n",
            "match: {}\n",
        ),
        &[
            "5:8: `match` accepts every event [hint: name a `source`, a `kind` or `when` conditions, so the runbook only handles the events it is for]",
        ],
    );
}

#[test]
fn retry_and_verify_are_checked() {
    check(
        &format!("{MINIMAL}    retry: {{ attempts: 0, retry_on: [connect, 503, teapot] }}\n"),
        &[
            "25:24: `attempts` in `retry` of step `restart`: 0 is out of range; it must be between 1 and 100",
            "25:52: `retry_on`: cannot retry on `\"teapot\"` [hint: expected `connect`, `timeout`, an HTTP status such as 503, or `exit:N` for a command's exit code]",
        ],
    );
    check(
        &format!(
            "{MINIMAL}verify:\n  probe: {{ action: http.request, with: {{ url: x }} }}\n  expect: \"response.json.status == \"\n  every: 2m\n"
        ),
        &[
            "27:11: invalid expression: syntax error: unexpected end of input, expected expression in `verify.expect`",
            "28:10: `every` in `verify` is longer than `within` [hint: the probe must get at least one chance before the deadline]",
        ],
    );
    check(
        &format!(
            "{MINIMAL}verify:\n  probe: {{ action: http.request, with: {{ url: x }} }}\n  expect: \"inputs.device_id == 'x'\"\n"
        ),
        &[
            "27:11: unknown template variable `inputs` in `verify.expect` [hint: variables available here: response]",
        ],
    );
}

#[test]
fn a_precheck_is_checked_like_a_probe() {
    check(
        &format!(
            "{MINIMAL}precheck:\n  probe: {{ action: http.request, with: {{ url: x }} }}\n  expect: \"response.json.status != 'running'\"\n"
        ),
        &[],
    );
    check(
        &format!(
            "{MINIMAL}precheck:\n  probe: {{ action: http.request, with: {{ url: x }} }}\n  expect: \"inputs.device_id == 'x'\"\n  every: 5s\n"
        ),
        &[
            "27:11: unknown template variable `inputs` in `precheck.expect` [hint: variables available here: response]",
            "28:3: unknown key `every` in `precheck` [hint: known keys: probe, expect]",
        ],
    );
    check(
        &format!("{MINIMAL}precheck:\n  expect: \"true\"\n"),
        &["26:3: missing required key `probe` in `precheck`"],
    );
}

#[test]
fn yaml_syntax_errors_are_one_diagnostic() {
    check(
        "id: x\n  title: y\n",
        &["2:8: invalid YAML: mapping values are not allowed in this context"],
    );
    check(
        "id: a\nid: b\n",
        &[
            "2:1: invalid YAML: duplicate mapping key: id, set DuplicateKeyPolicy in Options if acceptable",
        ],
    );
    check(
        "",
        &[
            "1:1: the file holds no runbook [hint: a runbook is a YAML map with at least `id`, `title`, `owner`, `risk`, `match`, `targets` and `steps`]",
        ],
    );
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let text = r#"id: Bad Id
title: [not, a, string]
risk: dangerous
match: { source: servicenow }
targets: { from: "[inputs.host]", max_targets: 0 }
approval: sometimes
steps:
  - id: one
    action: http.request
    with: { url: "{{ inputs.host }}", metod: GET }
    timout: 5s
    rollback: {}
  - id: one
    action: shell.exec
"#;
    check(
        text,
        &[
            "1:1: missing required key `owner`",
            "1:5: invalid runbook id `Bad Id` [hint: use 2 to 63 characters: lower-case letters, digits and `-`, starting with a letter or digit]",
            "2:8: `title`: expected a string, found a list",
            "3:7: `risk`: unknown value `dangerous` [hint: expected one of: read_only, reversible, irreversible]",
            "5:18: undefined template variable `inputs.host` in `targets.from` [hint: the inputs schema declares no properties]",
            "5:48: `max_targets` in `targets`: 0 is out of range; it must be at least 1",
            "6:11: `approval`: unknown value `sometimes` [hint: expected one of: auto, required]",
            "10:18: undefined template variable `inputs.host` in step `one` with.url [hint: the inputs schema declares no properties]",
            "10:39: unknown key `metod` in `with` of step `one` [hint: did you mean `method`?]",
            "11:5: unknown key `timout` in step `one` [hint: did you mean `timeout`?]",
            "12:5: rollback references nothing in step `one` [hint: name the compensating call: `rollback: { action: http.request, with: { ... } }`, or remove `rollback`]",
            "13:9: step id `one` is used twice [hint: it is first used on line 8; step ids must be unique within a runbook]",
            "14:13: unknown action `shell.exec` in step `one` [hint: known actions: http.request, command.run, ansible.playbook, graph.group_membership, awx.job_template, jenkins.build]",
        ],
    );
}

#[test]
fn approval_is_a_mode_or_a_mode_with_an_expiry() {
    check(
        &edit("risk: reversible", "risk: reversible\napproval: sometimes"),
        &["5:11: `approval`: unknown value `sometimes` [hint: expected one of: auto, required]"],
    );
    check(
        &edit(
            "risk: reversible",
            "risk: reversible\napproval: { mode: required, expires: soon, escalate: bob }",
        ),
        &[
            "5:38: `expires` in `approval`: invalid duration `soon` [hint: write a whole number and a unit: ms, s, m, h or d (e.g. `500ms`, `30s`, `5m`, `1h`)]",
            "5:44: unknown key `escalate` in `approval` [hint: known keys: mode, expires, approvals, stages]",
        ],
    );
    check(
        &edit(
            "risk: reversible",
            "risk: reversible\napproval: { expires: 1h }",
        ),
        &["5:11: missing required key `mode` in `approval`"],
    );
}

#[test]
fn approval_stages_name_their_approvers_by_reference() {
    check(
        &edit(
            "risk: reversible",
            "risk: reversible\napproval:\n  mode: required\n  stages:\n    - { name: manager, approvers: [\"boss_of(requester)\"], rule: most }\n    - { name: manager, approvers: [], timeout: later }",
        ),
        &[
            "8:36: `boss_of(requester)` in `approvers` in approval stage 1 is not an approver reference [hint: write `user:ID`, `group:NAME`, `manager_of(requester)`, `manager_of(user:ID)`, `backup_of(requester)`, `backup_of(user:ID)`, `owner_of(ci)` or `owner_of(ci:NAME)`]",
            "8:65: `rule` in approval stage 1: unknown value `most` [hint: expected one of: any, all]",
            "9:7: approval stage 2 names no approvers",
            "9:48: `timeout` in approval stage 2: invalid duration `later` [hint: write a whole number and a unit: ms, s, m, h or d (e.g. `500ms`, `30s`, `5m`, `1h`)]",
        ],
    );
    check(
        &edit(
            "risk: reversible",
            "risk: reversible\napproval: { mode: required, approvals: 2, stages: [{ name: cab, approvers: [\"group:cab\"] }] }",
        ),
        &[
            "5:51: `approval` has both `approvals` and `stages` [hint: with stages, say how many approve in each stage's `rule`]",
        ],
    );
}

/// `MINIMAL` with its step turned into `ansible.playbook` with `with` (YAML,
/// indented by 6, starting on line 22).
fn ansible_step(with: &str) -> String {
    edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        &format!("    action: ansible.playbook\n    with:\n{with}"),
    )
}

#[test]
fn ansible_playbook_with_is_checked() {
    check(
        &ansible_step(
            "      playbook: restart-service.yml\n      inventory: \"{{ inputs.device_id }},\"\n      limit: web\n      extra_vars: { service: vpnagent, ticket: \"{{ event.dedup_key }}\" }\n      check: true\n      tags: [restart]\n",
        ),
        &[],
    );
    check(
        &ansible_step(
            "      playbook: restart-service.yml\n      inventory: localhost,\n      extra_var: { service: vpnagent }\n",
        ),
        &[
            "24:7: unknown key `extra_var` in `with` of step `restart` [hint: did you mean `extra_vars`?]",
        ],
    );
    check(
        &ansible_step("      inventory: localhost,\n"),
        &["22:7: missing required key `playbook` in `with` of step `restart`"],
    );
    check(
        &ansible_step("      playbook: restart-service.yml\n"),
        &["22:7: missing required key `inventory` in `with` of step `restart`"],
    );
    check(
        &edit(
            "    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
            "",
        )
        .replace("action: http.request", "action: ansible.playbook"),
        &[
            "19:5: missing required key `with` in step `restart` [hint: `ansible.playbook` needs at least `with: { playbook: ..., inventory: ... }`]",
        ],
    );
}

#[test]
fn ansible_playbook_with_has_typed_keys() {
    check(
        &ansible_step(
            "      playbook: [restart-service.yml]\n      inventory: localhost,\n      limit: 3\n      extra_vars: [service]\n      check: \"yes\"\n      tags: restart\n",
        ),
        &[
            "22:17: `playbook` in `with` of step `restart`: expected a string, found a list",
            "24:14: `limit` in `with` of step `restart`: expected a string, found an integer [hint: put it in quotes: \"3\"]",
            "25:19: `extra_vars` in `with` of step `restart`: expected a map, found a list",
            "26:14: `check` in `with` of step `restart`: expected `true` or `false`, found a string",
            "27:13: `tags` in `with` of step `restart`: expected a list, found a string",
        ],
    );
    check(
        &ansible_step(
            "      playbook: \"{{ env.PLAYBOOKS }}/restart.yml\"\n      inventory: localhost,\n      extra_vars: { device: \"{{ inputs.devce_id }}\" }\n",
        ),
        &[
            "24:29: undefined template variable `inputs.devce_id` in step `restart` with.extra_vars.device [hint: did you mean `device_id`?]",
        ],
    );
}

/// `MINIMAL` with its step turned into `graph.group_membership` with `with`
/// (YAML, indented by 6, starting on line 22).
fn graph_step(with: &str) -> String {
    edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        &format!("    action: graph.group_membership\n    with:\n{with}"),
    )
}

#[test]
fn graph_group_membership_with_is_checked() {
    check(
        &graph_step(
            "      group_id: 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\n      user_id: alice@contoso.com\n      ensure: present\n",
        ),
        &[],
    );
    check(
        &graph_step(
            "      group_id: \"{{ env.VPN_USERS_GROUP }}\"\n      user_id: \"{{ inputs.device_id }}@contoso.com\"\n      ensure: \"{{ 'absent' if event.status == 'resolved' else 'present' }}\"\n",
        ),
        &[],
    );
    check(
        &graph_step(
            "      group_id: 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\n      user: alice@contoso.com\n      ensure: present\n",
        ),
        &[
            "22:7: missing required key `user_id` in `with` of step `restart`",
            "23:7: unknown key `user` in `with` of step `restart` [hint: did you mean `user_id`?]",
        ],
    );
    check(
        &graph_step(
            "      group_id: 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\n      user_id: alice@contoso.com\n",
        ),
        &["22:7: missing required key `ensure` in `with` of step `restart`"],
    );
    check(
        &edit(
            "    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
            "",
        )
        .replace("action: http.request", "action: graph.group_membership"),
        &[
            "19:5: missing required key `with` in step `restart` [hint: `graph.group_membership` needs at least `with: { group_id: ..., user_id: ..., ensure: ... }`]",
        ],
    );
}

#[test]
fn graph_group_membership_values_are_checked_where_they_are_literal() {
    check(
        &graph_step("      group_id: VPN Users\n      user_id: alice\n      ensure: member\n"),
        &[
            "22:17: `group_id` in `with` of step `restart`: `VPN Users` is not a group's object id [hint: give the group's object id, a GUID such as `0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d` (Entra admin center, the group's Overview), or a template]",
            "23:16: `user_id` in `with` of step `restart`: `alice` is neither a user's object id nor a user principal name [hint: give a GUID, a user principal name such as `alice@contoso.com`, or a template]",
            "24:15: `ensure` in `with` of step `restart`: unknown value `member` [hint: expected one of: present, absent]",
        ],
    );
    check(
        &graph_step(
            "      group_id: [0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d]\n      user_id: \"{{ inputs.user }}\"\n      ensure: true\n",
        ),
        &[
            "22:17: `group_id` in `with` of step `restart`: expected a string, found a list",
            "23:16: undefined template variable `inputs.user` in step `restart` with.user_id [hint: known inputs: device_id]",
            "24:15: `ensure` in `with` of step `restart`: expected a string, found a boolean [hint: put it in quotes: \"true\"]",
        ],
    );
}

/// `MINIMAL` with its step turned into `action` with `with` (YAML,
/// indented by 6, starting on line 22).
fn step(action: &str, with: &str) -> String {
    edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        &format!("    action: {action}\n    with:\n{with}"),
    )
}

#[test]
fn awx_job_template_with_is_checked() {
    check(
        &step(
            "awx.job_template",
            "      base_url: https://awx.example.com\n      template_id: 42\n      extra_vars: { service: vpnagent, device: \"{{ inputs.device_id }}\" }\n      credential: awx-prod\n      poll_every: 10s\n",
        ),
        &[],
    );
    check(
        &step(
            "awx.job_template",
            "      base_url: \"{{ env.AWX_URL }}\"\n      template_id: \"{{ env.RESTART_TEMPLATE }}\"\n      extra_vars: \"{{ {'device': inputs.device_id} }}\"\n      credential: awx_prod.v2\n",
        ),
        &[],
    );
    check(
        &step(
            "awx.job_template",
            "      template_id: 42\n      extra_var: {}\n",
        ),
        &[
            "22:7: missing required key `base_url` in `with` of step `restart`",
            "22:7: missing required key `credential` in `with` of step `restart`",
            "23:7: unknown key `extra_var` in `with` of step `restart` [hint: did you mean `extra_vars`?]",
        ],
    );
    check(
        &edit(
            "    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
            "",
        )
        .replace("action: http.request", "action: awx.job_template"),
        &[
            "19:5: missing required key `with` in step `restart` [hint: `awx.job_template` needs at least `with: { base_url: ..., template_id: ..., credential: ... }`]",
        ],
    );
}

#[test]
fn awx_job_template_values_are_checked_where_they_are_literal() {
    check(
        &step(
            "awx.job_template",
            "      base_url: awx.example.com\n      template_id: restart-service\n      extra_vars: [service]\n      credential: \"{{ env.AWX_CREDENTIAL }}\"\n      poll_every: 10\n",
        ),
        &[
            "22:17: `base_url` in `with` of step `restart`: `awx.example.com` is not an http(s) address [hint: give the server's address, such as `https://awx.example.com`, or a template such as `\"{{ env.AWX_URL }}\"`]",
            "23:20: `template_id` in `with` of step `restart`: expected a job template's id, found a string [hint: AWX names job templates by number: the id in the template's URL (`/#/templates/job_template/42`)]",
            "24:19: `extra_vars` in `with` of step `restart`: expected a map, found a list",
            "25:19: `credential` in `with` of step `restart`: a credential is named as it is, not by a template [hint: write the name of an entry of the server's `credentials:` (e.g. `credential: awx-prod`)]",
            "26:19: `poll_every` in `with` of step `restart`: expected a duration such as `30s`, found an integer [hint: give a unit, e.g. `30s` or `500ms`]",
        ],
    );
    check(
        &step(
            "awx.job_template",
            "      base_url: https://awx.example.com\n      template_id: 0\n      credential: awx prod\n",
        ),
        &[
            "23:20: `template_id` in `with` of step `restart`: 0 is out of range; it must be at least 1",
            "24:19: `credential` in `with` of step `restart`: `awx prod` is not a credential name [hint: credential names are letters, digits, `-`, `_` and `.`]",
        ],
    );
}

#[test]
fn jenkins_build_with_is_checked() {
    check(
        &step(
            "jenkins.build",
            "      base_url: https://ci.example.com/jenkins\n      job: platform/deploy web\n      parameters: { TICKET: \"{{ event.dedup_key }}\", DRY_RUN: false }\n      credential: jenkins\n      poll_every: 2s\n",
        ),
        &[],
    );
    check(
        &step(
            "jenkins.build",
            "      base_url: https://ci.example.com\n      job: /deploy\n      parameters: TICKET=1\n      credential: jenkins\n      poll_every: 0s\n",
        ),
        &[
            "23:12: `job` in `with` of step `restart`: `/deploy` is not a job's full name [hint: give the job's name, with its folders separated by `/` (`team/deploy`), without a leading or trailing `/`]",
            "24:19: `parameters` in `with` of step `restart`: expected a map, found a string",
            "26:19: `poll_every` in `with` of step `restart`: a duration must be longer than zero",
        ],
    );
    check(
        &step("jenkins.build", "      base_url: https://ci.example.com\n"),
        &[
            "22:7: missing required key `job` in `with` of step `restart`",
            "22:7: missing required key `credential` in `with` of step `restart`",
        ],
    );
}

#[test]
fn http_request_names_its_credential_literally() {
    check(
        &edit(
            "      method: POST\n",
            "      method: POST\n      credential: inventory-api\n",
        ),
        &[],
    );
    check(
        &edit(
            "      method: POST\n",
            "      method: POST\n      credential: \"{{ env.CREDENTIAL }}\"\n",
        ),
        &[
            "23:19: `credential` in `with` of step `restart`: a credential is named as it is, not by a template [hint: write the name of an entry of the server's `credentials:` (e.g. `credential: awx-prod`)]",
        ],
    );
}

#[test]
fn urls_allowed_hosts_and_redirects_are_checked_when_loaded() {
    const URL: &str = "      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n";
    check(
        &edit(URL, "      url: \"{{ inputs.device_id }}/restart\"\n"),
        &[
            "23:12: `url` in `with` of step `restart`: `inputs.device_id` starts the URL, so it gives its scheme and host, and it reads `inputs` [hint: start the URL with its base from configuration (`{{ env.API }}/...`) or with `https://host/`, and put event values after the host, where they are encoded]",
        ],
    );
    check(
        &edit(
            URL,
            "      url: \"{{ env.API }}/{% if inputs.device_id %}x{% endif %}\"\n",
        ),
        &[
            "23:12: `url` in `with` of step `restart`: a URL is fixed text and `{{ expression }}`s: no `{% %}` blocks or `{# #}` comments",
        ],
    );
    check(
        &edit(URL, &format!("{URL}      follow_redirects: always\n")),
        &[
            "24:25: `follow_redirects` in `with` of step `restart`: unknown value `always` [hint: expected one of: none, same_origin]",
        ],
    );
    check(
        &edit(URL, &format!("{URL}      follow_redirects: same_origin\n")),
        &[],
    );
    check(
        &format!(
            "{MINIMAL}allowed_hosts: [endpoint.example, \"*.corp.example\", \"https://api.example/\", \"api.example:8443\", 7]\n"
        ),
        &[
            "25:53: `https://api.example/` in `allowed_hosts` is not a host name or `*.domain` [hint: write the host alone, without scheme, port or path: `endpoint.example`, or `\"*.corp.example\"` for the hosts below a domain]",
            "25:77: `api.example:8443` in `allowed_hosts` is not a host name or `*.domain` [hint: write the host alone, without scheme, port or path: `endpoint.example`, or `\"*.corp.example\"` for the hosts below a domain]",
            "25:97: `allowed_hosts`, item 5: expected a string, found an integer [hint: put it in quotes: \"7\"]",
        ],
    );
    check(
        &format!("{MINIMAL}allowed_hosts: []\n"),
        &[
            "25:16: `allowed_hosts` is empty, so no call could be made [hint: name the hosts the runbook calls, or leave `allowed_hosts` out]",
        ],
    );
}

#[test]
fn rerun_after_is_a_duration_longer_than_nothing() {
    let with_rerun = |rerun: &str| {
        edit(
            "  source: servicenow",
            &format!("  source: servicenow\n  rerun: {rerun}"),
        )
    };
    check(&with_rerun("{ after: 1h }"), &[]);
    check(
        &with_rerun("{ after: 0s }"),
        &["7:19: `after` in `match.rerun`: a duration must be longer than zero"],
    );
    check(
        &with_rerun("{ after: 60 }"),
        &[
            "7:19: `after` in `match.rerun`: expected a duration such as `30s`, found an integer [hint: give a unit, e.g. `30s` or `500ms`]",
        ],
    );
    check(
        &with_rerun("{ every: 1h }"),
        &[
            "7:10: missing required key `after` in `match.rerun`",
            "7:12: unknown key `every` in `match.rerun` [hint: known keys: after]",
        ],
    );
}

#[test]
fn mode_is_live_or_shadow_and_only_shadow_takes_a_hold() {
    let lines = MINIMAL.lines().count();
    check(
        &format!("{MINIMAL}mode: shadowed\n"),
        &[&format!(
            "{}:7: `mode`: unknown value `shadowed` [hint: did you mean `shadow`?]",
            lines + 1
        )],
    );
    check(
        &format!("{MINIMAL}shadow_hold: 2h\n"),
        &[&format!(
            "{}:14: `shadow_hold` needs `mode: shadow` [hint: a live runbook's repeats are held off by its `cooldown`]",
            lines + 1
        )],
    );
    check(
        &format!("{MINIMAL}mode: shadow\nshadow_hold: soon\n"),
        &[&format!(
            "{}:14: `shadow_hold`: invalid duration `soon` [hint: write a whole number and a unit: ms, s, m, h or d (e.g. `500ms`, `30s`, `5m`, `1h`)]",
            lines + 2
        )],
    );
}
