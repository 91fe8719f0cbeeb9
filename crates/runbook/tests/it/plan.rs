//! Planning: rendered requests, typed templates, inputs and targets.

use domain::RiskClass;
use runbook::{Error, TemplateEnv};
use serde_json::{Value, json};

use crate::{MINIMAL, edit, event, fixture, parse};

fn env() -> TemplateEnv {
    let mut env = TemplateEnv::default();
    env.vars
        .insert("API".into(), "https://endpoints.example".into());
    env.vars
        .insert("ENDPOINT_API".into(), "https://endpoints.example/v1".into());
    env.vars
        .insert("ALERTMANAGER_URL".into(), "http://alertmanager:9093".into());
    env
}

/// Plans `text` for an event with `fields` and subject `PC-0042`, and
/// returns the first step's rendered request, or the error's text.
#[track_caller]
fn first_request(text: &str, fields: Value) -> Result<Value, String> {
    let plan = parse(text)
        .plan(&event("servicenow", "PC-0042", fields), &env())
        .map_err(|error| error.to_string())?;
    Ok(plan.steps[0].call.request.clone())
}

/// `MINIMAL` with the first step's `with` replaced by `with` (YAML, indented by 6).
fn with(with: &str) -> String {
    edit(
        "      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        with,
    )
}

#[test]
fn the_design_example_plans_fully() {
    let runbook = fixture("restart-endpoint-service.yaml");
    let event = event(
        "servicenow",
        "PC-0042",
        json!({"signature": "VPN client service stopped", "environment": "workstation"}),
    );
    let plan = runbook.plan(&event, &env()).unwrap();

    assert_eq!(plan.runbook_id, "restart-endpoint-service");
    assert_eq!(plan.runbook_version, runbook.version);
    assert_eq!(plan.risk, RiskClass::Reversible);
    assert_eq!(
        plan.inputs,
        json!({"device_id": "PC-0042", "service": "vpnagent"})
    );
    assert_eq!(plan.targets, ["PC-0042"]);
    assert_eq!(plan.steps.len(), 2);
    assert_eq!(plan.steps[1].call.action, "http.request");
    assert_eq!(plan.steps[1].call.timeout_ms, 30_000);
    assert_eq!(
        plan.steps[1].call.request,
        json!({
            "method": "POST",
            "url": "https://endpoints.example/v1/devices/PC-0042/services/vpnagent/restart",
            "headers": {"X-Ticket": "INC0012345"},
            "json": {"reason": "opsgate: VPN client service stopped", "targets": ["PC-0042"]},
        })
    );
    let verify = plan.verify.as_ref().unwrap();
    assert_eq!(
        verify.probe.request["url"],
        "https://endpoints.example/v1/devices/PC-0042/services/vpnagent"
    );
    assert_eq!(verify.expect, "response.json.status == 'running'");
    assert_eq!(plan.plan_hash, plan.compute_hash());

    // The same event plans to the same hash; a different one does not.
    assert_eq!(
        runbook.plan(&event, &env()).unwrap().plan_hash,
        plan.plan_hash
    );
    let mut other = event.clone();
    other.subject = "PC-0043".into();
    assert_ne!(
        runbook.plan(&other, &env()).unwrap().plan_hash,
        plan.plan_hash
    );
}

#[test]
fn single_expressions_keep_their_type_and_the_rest_is_text() {
    let text = with(concat!(
        "      url: \"{{ env.API }}/{{ inputs.device_id }}\"\n",
        "      json:\n",
        "        count: \"{{ event.fields.count }}\"\n",
        "        labels: \"{{ event.fields.labels }}\"\n",
        "        all: \"{{ targets }}\"\n",
        "        sum: \"{{ event.fields.count + 1 }}\"\n",
        "        text: \"count={{ event.fields.count }}\"\n",
        "        literal: plain\n",
        "        number: 7\n",
    ));
    assert_eq!(
        first_request(&text, json!({"count": 41, "labels": {"team": "ops"}})),
        Ok(json!({
            "method": "GET",
            "url": "https://endpoints.example/PC-0042",
            "json": {
                "count": 41,
                "labels": {"team": "ops"},
                "all": ["PC-0042"],
                "sum": 42,
                "text": "count=41",
                "literal": "plain",
                "number": 7,
            },
        }))
    );
}

#[test]
fn missing_event_data_is_an_error_naming_the_template() {
    let text = with("      url: \"{{ env.API }}/users/{{ event.fields.user }}\"\n");
    assert_eq!(
        first_request(&text, json!({})),
        Err("cannot render step `restart` with.url: undefined value: `event.fields.user` is undefined".into())
    );
    let text = with("      url: x\n      json: { user: \"{{ event.fields.user }}\" }\n");
    assert_eq!(
        first_request(&text, json!({})),
        Err("cannot render step `restart` with.json.user: undefined value: `event.fields.user` is undefined".into())
    );
    let text = with("      url: \"{{ env.MISSING }}/x\"\n");
    assert_eq!(
        first_request(&text, json!({})),
        Err(
            "cannot render step `restart` with.url: undefined value: `env.MISSING` is undefined"
                .into()
        )
    );
}

/// A runbook whose inputs schema is `properties` and whose `from_event` is
/// `from_event`; returns the planned inputs or the error's text.
#[track_caller]
fn inputs(properties: &str, from_event: &str, fields: Value) -> Result<Value, String> {
    let text = MINIMAL
        .replace("  required: [device_id]\n", "")
        .replace("    device_id: { type: string }\n", properties)
        .replace("    device_id: \"{{ event.subject }}\"\n", from_event)
        .replace("[inputs.device_id]", "event.subject")
        .replace("{{ inputs.device_id }}", "{{ event.subject }}");
    let plan = parse(&text)
        .plan(&event("servicenow", "PC-0042", fields), &env())
        .map_err(|error| error.to_string())?;
    Ok(plan.inputs)
}

#[test]
fn inputs_are_coerced_to_the_schema_types() {
    let properties = "    percent: { type: number }\n    count: { type: integer }\n    force: { type: boolean }\n    name: { type: string }\n";
    let from_event = "    percent: \"{{ event.fields.p }}\"\n    count: \"{{ event.fields.c }}\"\n    force: \"{{ event.fields.f }}\"\n    name: \"{{ event.fields.c }}\"\n";
    assert_eq!(
        inputs(
            properties,
            from_event,
            json!({"p": "95.5", "c": "3", "f": "true"})
        ),
        Ok(json!({"percent": 95.5, "count": 3, "force": true, "name": "3"}))
    );
    assert_eq!(
        inputs(properties, from_event, json!({"p": 95, "c": 3, "f": false})),
        Ok(json!({"percent": 95, "count": 3, "force": false, "name": "3"})),
        "typed values pass through, and become strings where the schema wants one"
    );
    assert_eq!(
        inputs(
            "    keep: { type: integer, default: 7 }\n    host: { type: string }\n",
            "    host: \"{{ event.subject }}\"\n",
            json!({})
        ),
        Ok(json!({"keep": 7, "host": "PC-0042"})),
        "schema defaults fill missing inputs"
    );
}

#[test]
fn inputs_that_break_the_schema_are_refused_with_every_violation() {
    let properties = "    device: { type: string, pattern: \"^[A-Z]+-[0-9]+$\" }\n    percent: { type: number, maximum: 100 }\n    owner: { type: string }\n";
    let schema_required =
        |text: String| text.replace("  type: object\n", "  type: object\n  required: [owner]\n");
    let text = schema_required(
        MINIMAL
            .replace("  required: [device_id]\n", "")
            .replace("    device_id: { type: string }\n", properties)
            .replace(
                "    device_id: \"{{ event.subject }}\"\n",
                "    device: \"{{ event.fields.device }}\"\n    percent: \"{{ event.fields.percent }}\"\n",
            )
            .replace("[inputs.device_id]", "[inputs.device]")
            .replace("{{ inputs.device_id }}", "{{ inputs.device }}"),
    );
    let runbook = parse(&text);
    let error = runbook
        .plan(
            &event("x", "PC-1", json!({"device": "pc 1", "percent": "150"})),
            &env(),
        )
        .unwrap_err();
    let Error::Input { message } = &error else {
        panic!("expected an input error, got {error:?}")
    };
    assert_eq!(
        message,
        "/: \"owner\" is a required property; /device: \"pc 1\" does not match \"^[A-Z]+-[0-9]+$\"; /percent: 150 is greater than the maximum of 100"
    );
}

#[test]
fn supplied_inputs_fill_gaps_but_cannot_contradict_the_event() {
    let runbook = parse(&MINIMAL.replace(
        "    device_id: { type: string }\n",
        "    device_id: { type: string }\n    reason: { type: string }\n",
    ));
    let event = event("servicenow", "PC-0042", json!({}));
    let supplied = json!({"reason": "user asked"}).as_object().unwrap().clone();
    let plan = runbook.plan_with_inputs(&event, &env(), &supplied).unwrap();
    assert_eq!(
        plan.inputs,
        json!({"device_id": "PC-0042", "reason": "user asked"})
    );

    let contradicting = json!({"device_id": "PC-9999"}).as_object().unwrap().clone();
    assert_eq!(
        runbook
            .plan_with_inputs(&event, &env(), &contradicting)
            .unwrap_err()
            .to_string(),
        "invalid inputs: `device_id` comes from the event (`from_event`) and cannot be supplied"
    );
}

#[test]
fn a_proposals_inputs_come_first_and_the_event_fills_the_rest() {
    let runbook = parse(&MINIMAL.replace(
        "    device_id: { type: string }\n",
        "    device_id: { type: string }\n    reason: { type: string }\n",
    ));
    let event = event("agent", "PC-0042", json!({}));
    let proposed = |inputs: Value| inputs.as_object().unwrap().clone();
    let plan = runbook
        .plan_proposed(&event, &env(), &proposed(json!({"device_id": "PC-7"})))
        .unwrap();
    assert_eq!(plan.inputs, json!({"device_id": "PC-7"}), "the proposer's");
    assert_eq!(plan.targets, ["PC-7"]);
    let plan = runbook
        .plan_proposed(
            &event,
            &env(),
            &proposed(json!({"reason": "ticket says so"})),
        )
        .unwrap();
    assert_eq!(
        plan.inputs,
        json!({"device_id": "PC-0042", "reason": "ticket says so"}),
        "the event fills what the proposal left out"
    );
    // The schema judges a proposer's values as any other.
    assert!(
        runbook
            .plan_proposed(&event, &env(), &proposed(json!({"device_id": 7})))
            .unwrap_err()
            .to_string()
            .contains("/device_id: 7 is not of type \"string\"")
    );
}

#[test]
fn targets_are_a_string_or_a_list_of_strings() {
    #[track_caller]
    fn check(from: &str, max_targets: u32, fields: Value, expected: Result<&[&str], &str>) {
        let text = edit(
            "targets: { from: \"[inputs.device_id]\" }",
            &format!("targets: {{ from: {from:?}, max_targets: {max_targets} }}"),
        );
        let result = parse(&text).plan(&event("servicenow", "PC-0042", fields), &env());
        match (result, expected) {
            (Ok(plan), Ok(expected)) => assert_eq!(plan.targets, expected, "{from}"),
            (Err(error), Err(expected)) => assert_eq!(error.to_string(), expected, "{from}"),
            (result, expected) => panic!("{from}: got {result:?}, expected {expected:?}"),
        }
    }
    check("inputs.device_id", 1, json!({}), Ok(&["PC-0042"]));
    check("[inputs.device_id]", 1, json!({}), Ok(&["PC-0042"]));
    check(
        "event.fields.hosts",
        3,
        json!({"hosts": ["a", "b", "a"]}),
        Ok(&["a", "b"]),
    );
    check(
        "event.fields.hosts",
        2,
        json!({"hosts": ["a", "b", "c"]}),
        Err(
            "cannot determine targets: 3 targets, but the runbook allows at most 2 (`max_targets`)",
        ),
    );
    check(
        "event.fields.hosts",
        2,
        json!({"hosts": []}),
        Err("cannot determine targets: `event.fields.hosts` yields no target, or an empty one"),
    );
    check(
        "event.fields.hosts",
        2,
        json!({"hosts": 5}),
        Err(
            "cannot determine targets: `event.fields.hosts` yields 5; expected a string or a list of strings",
        ),
    );
    check(
        "event.fields.hosts",
        2,
        json!({}),
        Err(
            "cannot determine targets: `event.fields.hosts`: undefined value: `event.fields.hosts` is undefined",
        ),
    );
}

#[test]
fn rollbacks_and_command_steps_are_rendered() {
    let runbook = fixture("rotate-logs-on-full-disk.yaml");
    let event = event(
        "alertmanager",
        "web-01",
        json!({
            "labels": {"alertname": "DiskAlmostFull", "mountpoint": "/var", "instance": "web-01:9100"},
            "annotations": {"used_percent": "93.5"},
        }),
    );
    assert!(runbook.matches(&event));
    let plan = runbook.plan(&event, &env()).unwrap();
    assert_eq!(
        plan.inputs,
        json!({"host": "web-01", "used_percent": 93.5, "keep_days": 7})
    );
    assert_eq!(plan.targets, ["web-01"]);
    let rollback = plan.steps[0].rollback.as_ref().unwrap();
    assert_eq!(
        rollback.request,
        json!({"method": "DELETE", "url": "http://alertmanager:9093/api/v2/silences/INC0012345"})
    );
    assert_eq!(rollback.timeout_ms, 10_000);
    assert_eq!(
        plan.steps[1].call.request,
        json!({
            "program": "/usr/local/sbin/rotate-logs",
            "args": ["--host", "web-01", "--keep-days", 7],
            "env": {"LANG": "C"},
            "expect_exit": [0],
        })
    );
}

#[test]
fn ansible_playbook_extra_vars_keep_their_types() {
    let request = first_request(
        &with(
            "      playbook: \"{{ env.API | replace('https://', '/srv/') }}/restart.yml\"\n      inventory: \"{{ targets | join(',') }},\"\n      extra_vars:\n        device: \"{{ inputs.device_id }}\"\n        hosts: \"{{ targets }}\"\n        note: \"for {{ event.dedup_key }}\"\n      check: true\n      tags: [restart]\n",
        )
        .replace("action: http.request", "action: ansible.playbook"),
        json!({}),
    );
    assert_eq!(
        request,
        Ok(json!({
            "playbook": "/srv/endpoints.example/restart.yml",
            "inventory": "PC-0042,",
            "extra_vars": {"device": "PC-0042", "hosts": ["PC-0042"], "note": "for INC0012345"},
            "check": true,
            "tags": ["restart"],
        }))
    );
}

/// Plans `MINIMAL` with the step's URL `url`, for an event with `subject`
/// and `fields`, and returns the URL the plan holds or the error's text.
#[track_caller]
fn planned_url(url: &str, subject: &str, fields: Value) -> Result<String, String> {
    let text = with(&format!("      method: POST\n      url: \"{url}\"\n"));
    let mut env = env();
    env.vars
        .insert("NOT_HTTP".into(), "file:///etc/passwd".into());
    env.vars
        .insert("RELATIVE".into(), "endpoints.example/v1".into());
    env.vars.insert(
        "WALKS".into(),
        "https://endpoints.example/v1/../admin".into(),
    );
    let plan = parse(&text)
        .plan(&event("servicenow", subject, fields), &env)
        .map_err(|error| error.to_string())?;
    Ok(plan.steps[0].call.request["url"]
        .as_str()
        .expect("a URL")
        .to_owned())
}

#[test]
fn event_values_in_a_url_path_are_one_encoded_segment_or_refused() {
    const DEVICE: &str = "{{ env.API }}/devices/{{ event.subject }}/restart";
    let check = |subject: &str, expected: Result<&str, &str>| {
        let planned = planned_url(DEVICE, subject, json!({}));
        let expected = expected
            .map(|segment| format!("https://endpoints.example/devices/{segment}/restart"))
            .map_err(|reason| format!("refused step `restart` with.url: {reason}"));
        assert_eq!(planned, expected, "subject {subject:?}");
    };
    check("PC-0042", Ok("PC-0042"));
    check("pc_42.lab~1", Ok("pc_42.lab~1"));
    check("../../admin", Ok("..%2F..%2Fadmin"));
    check("a/b", Ok("a%2Fb"));
    check("a\\b", Ok("a%5Cb"));
    check("a?x=1", Ok("a%3Fx%3D1"));
    check("a#b", Ok("a%23b"));
    check("a b", Ok("a%20b"));
    check("a\nb\t", Ok("a%0Ab%09"));
    check("%2e%2e%2fadmin", Ok("%252e%252e%252fadmin"));
    check("Zoë-Ωmega", Ok("Zo%C3%AB-%CE%A9mega"));
    check("a;b=c,d@e:f", Ok("a%3Bb%3Dc%2Cd%40e%3Af"));
    let dot_segment = |value: &str| {
        format!(
            "`event.subject` gives `{value}`, a `.` or `..` path segment, which would leave the path the runbook names"
        )
    };
    check("..", Err(&dot_segment("..")));
    check(".", Err(&dot_segment(".")));
    check("%2e%2e", Err(&dot_segment("%2e%2e")));
    check("%2E", Err(&dot_segment("%2E")));
    check(".%2e", Err(&dot_segment(".%2e")));
}

#[test]
fn query_values_are_encoded_so_they_stay_one_value() {
    let check = |url: &str, fields: Value, expected: &str| {
        assert_eq!(
            planned_url(url, "PC-0042", fields),
            Ok(expected.to_owned()),
            "{url}"
        );
    };
    check(
        "{{ env.API }}/search?q={{ event.fields.q }}&limit=5",
        json!({"q": "a&limit=1000"}),
        "https://endpoints.example/search?q=a%26limit%3D1000&limit=5",
    );
    check(
        "{{ env.API }}/search?q={{ event.fields.q }}",
        json!({"q": "a+b=c#frag /x?y"}),
        "https://endpoints.example/search?q=a%2Bb%3Dc%23frag%20%2Fx%3Fy",
    );
    check(
        "{{ env.API }}/search?n={{ event.fields.n }}&on={{ event.fields.on }}",
        json!({"n": 41, "on": true}),
        "https://endpoints.example/search?n=41&on=true",
    );
    // A base path from configuration is kept as it is.
    check(
        "{{ env.ENDPOINT_API }}/devices/{{ event.subject }}",
        json!({}),
        "https://endpoints.example/v1/devices/PC-0042",
    );
    // The plan holds the URL as it is sent: as the `url` crate writes it.
    check(
        "HTTPS://Endpoints.Example:443/devices/{{ event.subject }}",
        json!({}),
        "https://endpoints.example/devices/PC-0042",
    );
}

#[test]
fn a_url_that_is_not_http_or_leaves_its_prefix_is_refused() {
    let check = |url: &str, subject: &str, fields: Value, reason: &str| {
        assert_eq!(
            planned_url(url, subject, fields),
            Err(format!("refused step `restart` with.url: {reason}")),
            "{url} with {subject:?}"
        );
    };
    check(
        "{{ env.NOT_HTTP }}/{{ event.subject }}",
        "PC-0042",
        json!({}),
        "the URL's base `file:///etc/passwd` is not an absolute http(s) URL",
    );
    check(
        "{{ env.RELATIVE }}/{{ event.subject }}",
        "PC-0042",
        json!({}),
        "the URL's base `endpoints.example/v1` is not an absolute http(s) URL: relative URL without a base",
    );
    check(
        "{{ env.WALKS }}/devices/{{ event.subject }}",
        "PC-0042",
        json!({}),
        "`https://endpoints.example/v1/../admin/devices/PC-0042` has the path segment `..`, which walks the path",
    );
    // A value that completes a dot segment written around it.
    check(
        "{{ env.API }}/devices/.{{ event.fields.tail }}/restart",
        "PC-0042",
        json!({"tail": ""}),
        "`https://endpoints.example/devices/./restart` has the path segment `.`, which walks the path",
    );
    check(
        "{{ env.API }}/devices/{{ event.fields.labels }}",
        "PC-0042",
        json!({"labels": {"a": 1}}),
        "`event.fields.labels` gives {\"a\":1}, which cannot be written into a URL",
    );
    check(
        "https://{{ event.subject }}.corp.example/restart",
        "evil.example/x?",
        json!({}),
        "`event.subject` gives `evil.example/x?` for the URL's host, which is not a host name",
    );
    check(
        "https://user:pw@endpoints.example/{{ event.subject }}",
        "PC-0042",
        json!({}),
        "the URL carries user information; use a `credential` instead",
    );
    assert_eq!(
        planned_url(
            "https://{{ event.subject }}.corp.example/restart",
            "pc-0042",
            json!({})
        ),
        Ok("https://pc-0042.corp.example/restart".to_owned())
    );
}

#[test]
fn every_url_of_a_plan_must_name_an_allowed_host() {
    let text = |allowed: &str, rollback_url: &str, probe_url: &str| {
        format!(
            "allowed_hosts: {allowed}\n{MINIMAL}    rollback:\n      action: http.request\n      with: {{ url: \"{rollback_url}\" }}\nverify:\n  probe: {{ action: http.request, with: {{ url: \"{probe_url}\" }} }}\n  expect: \"response.status == 200\"\n"
        )
    };
    let check = |allowed: &str, rollback_url: &str, probe_url: &str, expected: Result<(), &str>| {
        let planned = parse(&text(allowed, rollback_url, probe_url))
            .plan(&event("servicenow", "PC-0042", json!({})), &env())
            .map(|_| ())
            .map_err(|error| error.to_string());
        assert_eq!(planned, expected.map_err(str::to_owned), "{allowed}");
    };
    let api = "{{ env.API }}/devices/{{ inputs.device_id }}";
    check("[endpoints.example]", api, api, Ok(()));
    check("[\"*.example\"]", api, api, Ok(()));
    check(
        "[api.corp.example]",
        api,
        api,
        Err(
            "refused step `restart` with.url: `https://endpoints.example/devices/PC-0042/restart` names the host `endpoints.example`, which is not one of the runbook's `allowed_hosts` (api.corp.example)",
        ),
    );
    check(
        "[endpoints.example]",
        "https://elsewhere.example/undo/{{ inputs.device_id }}",
        api,
        Err(
            "refused step `restart` rollback.with.url: `https://elsewhere.example/undo/PC-0042` names the host `elsewhere.example`, which is not one of the runbook's `allowed_hosts` (endpoints.example)",
        ),
    );
    check(
        "[endpoints.example]",
        api,
        "http://alertmanager:9093/health",
        Err(
            "refused verify.probe with.url: `http://alertmanager:9093/health` names the host `alertmanager`, which is not one of the runbook's `allowed_hosts` (endpoints.example)",
        ),
    );
}

/// The shipped, auto-approved quota runbook once accepted the subject `..`
/// and sent `PUT /api/quota`: its schema now refuses a user name that is a
/// dot segment or holds a character that leaves a path segment, and the
/// URL rule would refuse the dot segment anyway.
#[test]
fn the_shipped_quota_runbook_refuses_subjects_that_walk_the_path() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/runbooks/expand-mailbox-quota.yaml");
    let text = std::fs::read_to_string(&path).expect("the example exists");
    let runbook = parse(&text);
    let mut env = env();
    env.vars
        .insert("ENDPOINT_API".into(), "http://127.0.0.1:8080/api".into());
    let plan = |subject: &str| {
        runbook.plan(
            &event(
                "monitoring",
                subject,
                json!({"usage_percent": 96, "quota_mb": 1000}),
            ),
            &env,
        )
    };
    let planned = plan("j.doe").expect("a plain user plans");
    assert_eq!(
        planned.steps[1].call.request["url"],
        "http://127.0.0.1:8080/api/mailboxes/j.doe/quota"
    );
    for hostile in [
        "..",
        ".",
        "../admin",
        "a/b",
        "a\\b",
        "a?x=1",
        "a#b",
        "%2e%2e",
        &"a".repeat(65),
    ] {
        match plan(hostile) {
            Err(Error::Input { message }) => assert!(message.starts_with("/user: "), "{message}"),
            other => panic!("{hostile:?}: expected the inputs to be refused, got {other:?}"),
        }
    }
}

#[test]
fn awx_and_jenkins_base_urls_and_job_folders_are_checked_too() {
    let step = |with: &str| {
        format!(
            "allowed_hosts: [endpoints.example]\n{}",
            edit(
                "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
                with,
            )
        )
    };
    let check = |with: &str, subject: &str, expected: Result<(), &str>| {
        let planned = parse(&step(with))
            .plan(&event("servicenow", subject, json!({})), &env())
            .map(|_| ())
            .map_err(|error| error.to_string());
        assert_eq!(planned, expected.map_err(str::to_owned), "{with}");
    };
    let awx = |base: &str| {
        format!(
            "    action: awx.job_template\n    with: {{ base_url: \"{base}\", template_id: 42, credential: awx }}\n"
        )
    };
    check(&awx("{{ env.API }}"), "PC-0042", Ok(()));
    check(
        &awx("{{ env.ALERTMANAGER_URL }}"),
        "PC-0042",
        Err(
            "refused step `restart` with.base_url: `http://alertmanager:9093/` names the host `alertmanager`, which is not one of the runbook's `allowed_hosts` (endpoints.example)",
        ),
    );
    let jenkins = "    action: jenkins.build\n    with: { base_url: \"{{ env.API }}\", job: \"team/{{ inputs.device_id }}\", credential: jenkins }\n";
    check(jenkins, "deploy", Ok(()));
    check(
        jenkins,
        "../admin-job",
        Err(
            "refused step `restart` with.job: `team/../admin-job` names the folder `..`, which walks the path",
        ),
    );
}

#[test]
fn template_syntax_in_event_values_stays_text() {
    // An event value that looks like a template is data: it is never
    // rendered again, so it cannot read `env` or evaluate anything.
    let text = with(
        "      url: \"{{ env.API }}/notes\"\n      json: { note: \"{{ event.fields.note }}\" }\n",
    );
    for hostile in [
        "{{ env.API }}",
        "{{ 7 * 7 }}",
        "{% for x in range(9) %}x{% endfor %}",
    ] {
        let request = first_request(&text, json!({ "note": hostile })).unwrap();
        assert_eq!(request["json"]["note"], hostile, "{request}");
    }
}

/// A value placed right after the URL's host — after the base from `env`
/// or after a host written in the URL — lands in the host, where a value
/// only has to look like a host name: `.evil.example` makes the request go
/// to `endpoints.example.evil.example`, a host the event's sender can own.
/// The runbook loads and the plan is made, though the validator says no
/// event value chooses the host. Such a template should be refused when
/// the runbook is loaded, or such a value when the plan is made.
#[test]
fn a_value_cannot_extend_the_host_written_before_it() {
    for url in [
        "{{ env.API }}{{ inputs.device_id }}/restart",
        "https://endpoints.example{{ inputs.device_id }}/restart",
    ] {
        let text = with(&format!("      method: POST\n      url: \"{url}\"\n"));
        let Ok(runbook) = runbook::parse_runbook(
            std::path::Path::new("runbook.yaml"),
            &text,
            connectors::STEP_ACTIONS,
        ) else {
            continue; // refused when loaded: holds
        };
        let planned = runbook.plan(
            &event(
                "servicenow",
                ".evil.example",
                json!({"signature": "VPN client service stopped"}),
            ),
            &env(),
        );
        if let Ok(plan) = planned {
            panic!(
                "`{url}` with the subject `.evil.example` is planned as {}",
                plan.steps[0].call.request["url"]
            );
        }
    }
}

#[test]
fn a_precheck_is_rendered_into_the_plan_and_hashed_only_when_there_is_one() {
    let event = event(
        "servicenow",
        "PC-0042",
        json!({"signature": "VPN client service stopped"}),
    );
    let without = parse(MINIMAL);
    let with = parse(&format!(
        "{MINIMAL}precheck:\n  probe: {{ action: http.request, with: {{ url: \"{{{{ env.API }}}}/devices/{{{{ inputs.device_id }}}}\" }} }}\n  expect: \"response.json.status != 'running'\"\n"
    ));
    let plain = without.plan(&event, &env()).unwrap();
    assert_eq!(plain.precheck, None);
    let serialised = serde_json::to_value(&plain).unwrap();
    assert!(serialised.get("precheck").is_none(), "{serialised}");
    let plan = with.plan(&event, &env()).unwrap();
    let precheck = plan.precheck.as_ref().unwrap();
    assert_eq!(
        precheck.probe.request["url"],
        "https://endpoints.example/devices/PC-0042"
    );
    assert_eq!(precheck.expect, "response.json.status != 'running'");
    assert_ne!(plan.plan_hash, plain.plan_hash);
    assert_eq!(plan.plan_hash, plan.compute_hash());
}
