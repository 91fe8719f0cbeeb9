//! Rate limits, cooldowns, the global limit and concurrency caps under a
//! burst: fifty events posted at once, to one instance on SQLite or split
//! between two on one PostgreSQL, let exactly as many runs act as the
//! limit allows; the others are stored denied, saying which limit.

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, event, http_runbook};

/// How many events a burst posts at once.
const BURST: usize = 50;

/// One limit, and what a burst against it must come to.
struct Case {
    /// The runbook's `guardrails:` lines (none when empty).
    guardrails: &'static str,
    /// The server's config file, when the limit is the gate's.
    config: Option<&'static str>,
    /// Whether every event names the same target (a cooldown is per target).
    one_target: bool,
    /// How long the target takes to answer each call.
    call_ms: u64,
    /// How many runs may act.
    allowed: usize,
    /// What every denied run's reasons say.
    reason: &'static str,
}

const RATE_LIMIT: Case = Case {
    guardrails: "  rate_limit: { runs: 3, window: 1h }\n",
    config: None,
    one_target: false,
    call_ms: 0,
    allowed: 3,
    reason: "rate limit: the runbook ran 3 times in the last 1h; the limit is 3",
};

const COOLDOWN: Case = Case {
    guardrails: "  cooldown: { per: target, runs: 2, window: 1h }\n",
    config: None,
    one_target: true,
    call_ms: 0,
    allowed: 2,
    reason: "cooldown: the runbook ran 2 times in the last 1h on `HOST-1`; it allows 2 per target",
};

const GLOBAL_LIMIT: Case = Case {
    guardrails: "",
    config: Some("global_rate_limit: { runs: 4, window: 1h }\n"),
    one_target: false,
    call_ms: 0,
    allowed: 4,
    reason: "rate limit: all runbooks together ran 4 times in the last 1h; the limit is 4",
};

/// The calls take long enough that the burst's runs would all be under
/// way together if nothing stopped them.
const CONCURRENCY_CAP: Case = Case {
    guardrails: "  max_concurrent: 2\n",
    config: None,
    one_target: false,
    call_ms: 3_000,
    allowed: 2,
    reason: "concurrency cap: 2 runs of the runbook under way; it allows 2 at once",
};

fn capped_runbook(guardrails: &str) -> String {
    let tail = if guardrails.is_empty() {
        String::new()
    } else {
        format!("guardrails:\n{guardrails}")
    };
    http_runbook(
        "capped",
        "capped",
        &[("act", "POST", "/act", "idempotent: true")],
        &tail,
    )
}

/// The `index`th event of a burst: its own incident, on its own target
/// unless the case wants them all on one.
fn burst_event(case: &Case, index: usize) -> Value {
    let mut incident = event("capped", &format!("BURST-{index}"));
    if !case.one_target {
        incident["subject"] = json!(format!("HOST-{index}"));
    }
    incident
}

/// Posts `BURST` events at once, spread over `servers` in turn, and
/// returns the intake reports.
async fn burst(case: &Case, servers: &[&Server]) -> Vec<Value> {
    let tasks: Vec<_> = (0..BURST)
        .map(|index| {
            let server = servers[index % servers.len()];
            let (http, url) = (server.http.clone(), format!("{}/v1/events", server.base));
            let body = burst_event(case, index);
            tokio::spawn(async move {
                let response = http.post(url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 202);
                response.json::<Value>().await.unwrap()
            })
        })
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap());
    }
    reports
}

fn reasons(report: &Value) -> String {
    report["decision"]["reasons"]
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// The target the runbook's step calls, answering after the case's delay.
async fn target(case: &Case) -> (Scripted, test_support::Running) {
    let target = Scripted::default();
    target.on(
        "POST /act",
        vec![Reply::json(200, json!({})).delayed(std::time::Duration::from_millis(case.call_ms))],
    );
    let server = target.start().await.unwrap();
    (target, server)
}

/// Bursts `case` at `servers` (all on one database) and checks that
/// exactly `case.allowed` runs acted and the others were denied for the
/// limit; returns the reports of the runs that acted.
async fn check(case: &Case, target: &Scripted, servers: &[&Server]) -> Vec<Value> {
    let reports = burst(case, servers).await;
    let (started, denied): (Vec<&Value>, Vec<&Value>) = reports
        .iter()
        .partition(|report| report["disposition"] == "started_run");
    assert_eq!(started.len(), case.allowed, "{reports:#?}");
    assert_eq!(denied.len(), BURST - case.allowed, "{reports:#?}");
    for report in &denied {
        assert_eq!(report["disposition"], "denied_run", "{report:#}");
        assert_eq!(report["state"], "denied", "{report:#}");
        let reasons = reasons(report);
        assert!(reasons.contains(case.reason), "{reasons}");
    }
    // Each run let through at intake stays let through when it is decided
    // again before it starts, and acts.
    for report in &started {
        let run_id = report["run_id"].as_str().unwrap();
        let run = servers[0].wait(run_id).await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
    }
    assert_eq!(target.calls("POST /act"), case.allowed);
    started.into_iter().cloned().collect()
}

/// One instance on its SQLite file.
async fn on_sqlite(case: &Case) -> (Workspace, Server, Scripted, test_support::Running) {
    let (target, target_server) = self::target(case).await;
    let mut workspace = Workspace::new();
    workspace.config_yaml = case.config.map(str::to_owned);
    workspace.add_runbook("r.yaml", &capped_runbook(case.guardrails));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    (workspace, server, target, target_server)
}

/// Two instances on one fresh PostgreSQL database, or `None` after saying
/// why the test skips.
async fn on_two_postgres_instances(
    test: &str,
    case: &Case,
) -> Option<(
    test_support::postgres::Database,
    Workspace,
    [Server; 2],
    Scripted,
    test_support::Running,
)> {
    let database = crate::postgres::database(test).await?;
    let (target, target_server) = self::target(case).await;
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.config_yaml = case.config.map(str::to_owned);
    workspace.add_runbook("r.yaml", &capped_runbook(case.guardrails));
    let first = workspace.start(&[("TARGET", &target_server.url)]);
    let second = workspace.start(&[("TARGET", &target_server.url)]);
    Some((database, workspace, [first, second], target, target_server))
}

#[tokio::test]
async fn a_rate_limit_lets_exactly_its_runs_through_a_burst_on_sqlite() {
    let (_workspace, server, target, _target) = on_sqlite(&RATE_LIMIT).await;
    check(&RATE_LIMIT, &target, &[&server]).await;
}

#[tokio::test]
async fn a_cooldown_lets_exactly_its_runs_through_a_burst_on_one_target_on_sqlite() {
    let (_workspace, server, target, _target) = on_sqlite(&COOLDOWN).await;
    check(&COOLDOWN, &target, &[&server]).await;
}

#[tokio::test]
async fn the_global_limit_lets_exactly_its_runs_through_a_burst_on_sqlite() {
    let (_workspace, server, target, _target) = on_sqlite(&GLOBAL_LIMIT).await;
    check(&GLOBAL_LIMIT, &target, &[&server]).await;
}

#[tokio::test]
async fn a_concurrency_cap_lets_its_runs_through_a_burst_and_frees_places_as_they_finish() {
    let (_workspace, server, target, _target) = on_sqlite(&CONCURRENCY_CAP).await;
    check(&CONCURRENCY_CAP, &target, &[&server]).await;
    // The two have finished: their places are free again.
    let report = server.event(&burst_event(&CONCURRENCY_CAP, BURST)).await;
    assert_eq!(report["disposition"], "started_run", "{report:#}");
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /act"), 3);
}

#[tokio::test]
async fn a_rate_limit_holds_across_two_postgres_instances() {
    let test = "a_rate_limit_holds_across_two_postgres_instances";
    let Some((_database, _workspace, [first, second], target, _target)) =
        on_two_postgres_instances(test, &RATE_LIMIT).await
    else {
        return;
    };
    check(&RATE_LIMIT, &target, &[&first, &second]).await;
}

#[tokio::test]
async fn a_cooldown_holds_across_two_postgres_instances() {
    let test = "a_cooldown_holds_across_two_postgres_instances";
    let Some((_database, _workspace, [first, second], target, _target)) =
        on_two_postgres_instances(test, &COOLDOWN).await
    else {
        return;
    };
    check(&COOLDOWN, &target, &[&first, &second]).await;
}

#[tokio::test]
async fn the_global_limit_holds_across_two_postgres_instances() {
    let test = "the_global_limit_holds_across_two_postgres_instances";
    let Some((_database, _workspace, [first, second], target, _target)) =
        on_two_postgres_instances(test, &GLOBAL_LIMIT).await
    else {
        return;
    };
    check(&GLOBAL_LIMIT, &target, &[&first, &second]).await;
}

#[tokio::test]
async fn a_concurrency_cap_holds_across_two_postgres_instances() {
    let test = "a_concurrency_cap_holds_across_two_postgres_instances";
    let Some((_database, _workspace, [first, second], target, _target)) =
        on_two_postgres_instances(test, &CONCURRENCY_CAP).await
    else {
        return;
    };
    check(&CONCURRENCY_CAP, &target, &[&first, &second]).await;
}

/// What the ticket and the on-call chat are told when a limit holds a
/// ticket's run back.
const KEEPS_COMING_BACK: &str = "This keeps coming back; automation is not fixing the root cause.";

#[tokio::test]
async fn a_ticket_held_back_by_a_cooldown_is_told_it_keeps_coming_back_and_goes_to_the_escalation_group()
 {
    use test_support::servicenow_sim::{Credentials, NewIncident, ServiceNowSim};
    use test_support::teams_sim::TeamsSim;

    let (target, target_server) = self::target(&COOLDOWN).await;
    let servicenow = ServiceNowSim::new(Credentials::default());
    let servicenow_server = servicenow.start().await.unwrap();
    let group = servicenow.seed_record("sys_user_group", &[("name", "endpoint-l2")]);
    let incidents: Vec<_> = (0..2)
        .map(|_| {
            servicenow.seed_incident(NewIncident {
                short_description: "VPN client service stopped again".into(),
                state: "2".into(),
                ..NewIncident::default()
            })
        })
        .collect();
    let teams = TeamsSim::new();
    let teams_server = teams.start().await.unwrap();

    let mut workspace = Workspace::new();
    let credentials = Credentials::default();
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {}\n  basic: {{ username: {}, password: \"env:OPSGATE_TEST_SN_PASSWORD\" }}\n\
         teams: {{ webhook_url: \"env:OPSGATE_TEST_TEAMS_URL\" }}\n",
        servicenow_server.url, credentials.username
    ));
    workspace.env.extend([
        (
            "OPSGATE_TEST_SN_PASSWORD".to_owned(),
            credentials.password.clone(),
        ),
        (
            "OPSGATE_TEST_TEAMS_URL".to_owned(),
            teams.webhook_url(&teams_server.url),
        ),
    ]);
    workspace.add_runbook(
        "r.yaml",
        &capped_runbook("  cooldown: { per: target, runs: 1, window: 1h }\n").replace(
            "guardrails:",
            "writeback: { ticket: true }\n\
             on_failure: { escalate_to: \"group:endpoint-l2\", ticket_state: needs_human }\n\
             guardrails:",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    // Two tickets about the same machine, one after the other.
    let mut reports = Vec::new();
    for incident in &incidents {
        let mut ticket = event("capped", &format!("servicenow:{}", incident.number));
        ticket["source"] = json!("servicenow");
        ticket["fields"]["ticket"] = json!(incident.number);
        let report = server.event(&ticket).await;
        server.wait(report["run_id"].as_str().unwrap()).await;
        reports.push(report);
    }
    assert_eq!(reports[0]["disposition"], "started_run", "{:#}", reports[0]);
    assert_eq!(reports[1]["disposition"], "denied_run", "{:#}", reports[1]);
    assert_eq!(target.calls("POST /act"), 1);

    let held_back = &incidents[1];
    let told = crate::harness::eventually(std::time::Duration::from_secs(15), || {
        let record = servicenow.record("incident", &held_back.sys_id).unwrap();
        record["assignment_group"] == group.as_str()
            && servicenow
                .work_notes(&held_back.sys_id)
                .iter()
                .any(|note| note.contains(KEEPS_COMING_BACK))
    })
    .await;
    let notes = servicenow.work_notes(&held_back.sys_id).join("\n");
    assert!(told, "{notes}");
    assert!(
        notes.contains("cooldown: the runbook ran 1 time"),
        "{notes}"
    );
    let first_notes = servicenow.work_notes(&incidents[0].sys_id).join("\n");
    assert!(!first_notes.contains(KEEPS_COMING_BACK), "{first_notes}");

    // On call hears of the run held back, and only of it.
    assert!(
        crate::harness::eventually(std::time::Duration::from_secs(15), || teams
            .received()
            .iter()
            .any(|body| body.to_string().contains(KEEPS_COMING_BACK)))
        .await,
        "{:#?}",
        teams.received()
    );
    let first_run = reports[0]["run_id"].as_str().unwrap();
    assert!(
        teams
            .received()
            .iter()
            .all(|body| !body.to_string().contains(first_run)),
        "{:#?}",
        teams.received()
    );
}
