//! Several opsgate processes on one PostgreSQL database.

use serde_json::json;
use sqlx::Connection;
use test_support::postgres::Database;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, event, eventually, http_runbook, skip};

/// A fresh database, or `None` after saying the test skips (a failure
/// under `OPSGATE_REQUIRE_EXTERNAL=1`).
pub(crate) async fn database(test: &str) -> Option<Database> {
    match Database::create("opsgate_e2e").await {
        Ok(database) => Some(database),
        Err(error) => {
            let admin = test_support::postgres::admin_url();
            skip(
                test,
                &format!("PostgreSQL at {admin} is unreachable ({error})"),
            );
            None
        }
    }
}

/// How many runs are open once none is, or after a minute of waiting.
pub(crate) async fn runs_still_open(connection: &mut sqlx::PgConnection) -> i64 {
    let mut open: i64 = -1;
    for _ in 0..600 {
        open = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE is_open")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    open
}

#[tokio::test]
async fn concurrent_duplicates_posted_to_two_instances_start_one_run() {
    let Some(database) =
        database("concurrent_duplicates_posted_to_two_instances_start_one_run").await
    else {
        return;
    };
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    let runbook = http_runbook(
        "gated",
        "gated",
        &[("act", "POST", "/act", "idempotent: true")],
        "",
    )
    .replace("approval: auto", "approval: required");
    workspace.add_runbook("r.yaml", &runbook);
    let first = workspace.start(&[("TARGET", &target_server.url)]);
    let second = workspace.start(&[("TARGET", &target_server.url)]);
    let tasks: Vec<_> = (0..16)
        .map(|index| {
            let server = if index % 2 == 0 { &first } else { &second };
            let (http, url) = (server.http.clone(), format!("{}/v1/events", server.base));
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&event("gated", "INC-CLUSTER"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                response.json::<serde_json::Value>().await.unwrap()
            })
        })
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap());
    }
    let started: Vec<_> = reports
        .iter()
        .filter(|report| report["disposition"] == "started_run")
        .collect();
    assert_eq!(started.len(), 1, "{reports:#?}");
    let run_id = started[0]["run_id"].clone();
    assert!(
        reports.iter().all(|report| report["run_id"] == run_id),
        "every duplicate names the one run"
    );
    for server in [&first, &second] {
        assert_eq!(
            server.get("/v1/runs").await["runs"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(target.calls("POST /act"), 0);
}

/// Two instances on one database; the runbook's steps call `target`.
async fn cluster(
    test: &str,
    target: &str,
    runbook: &str,
) -> Option<(Database, Workspace, Server, Server)> {
    let database = database(test).await?;
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.add_runbook("r.yaml", runbook);
    let first = workspace.start(&[("TARGET", target)]);
    let second = workspace.start(&[("TARGET", target)]);
    Some((database, workspace, first, second))
}

fn actors(database: &Database) -> Vec<String> {
    crate::harness::audit_records(&database.url)
        .iter()
        .map(|record| record["actor"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn when_the_executing_instance_is_killed_another_takes_over_without_repeating() {
    let target = Scripted::default();
    target.on("POST /first", vec![Reply::json(200, json!({}))]);
    target.on(
        "POST /act",
        vec![Reply::json(200, json!({})).delayed(std::time::Duration::from_secs(3))],
    );
    let target_server = target.start().await.unwrap();
    let runbook = http_runbook(
        "crashy",
        "crashy",
        &[
            ("first", "POST", "/first", "idempotent: false"),
            ("act", "POST", "/act", "idempotent: false"),
        ],
        "",
    );
    let test = "when_the_executing_instance_is_killed_another_takes_over_without_repeating";
    let Some((database, _workspace, mut first, second)) =
        cluster(test, &target_server.url, &runbook).await
    else {
        return;
    };
    let report = first.event(&event("crashy", "INC-KILL")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(std::time::Duration::from_secs(10), || target
            .calls("POST /act")
            == 1)
        .await
    );
    first.kill9();
    let killed_at = std::time::Instant::now();
    let run = second.wait(&run_id).await;
    assert_eq!(run["state"], "needs_human", "{run:#}");
    assert!(
        run["reason"].as_str().unwrap().contains("outcome unknown"),
        "{}",
        run["reason"]
    );
    assert!(
        killed_at.elapsed() < std::time::Duration::from_secs(10),
        "taken over within the lease time and a tick"
    );
    assert_eq!(
        (target.calls("POST /first"), target.calls("POST /act")),
        (1, 1),
        "nothing ran twice"
    );
    let actors = actors(&database);
    let instances: std::collections::BTreeSet<_> = actors
        .iter()
        .filter(|actor| actor.starts_with("opsgate_"))
        .collect();
    assert_eq!(instances.len(), 2, "both instances wrote: {actors:?}");
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test]
async fn a_stalled_instance_that_lost_its_lease_is_fenced_out() {
    let target = Scripted::default();
    target.on(
        "POST /act",
        vec![
            Reply::json(503, json!({"error": "busy"})),
            Reply::json(200, json!({})),
        ],
    );
    let target_server = target.start().await.unwrap();
    let runbook = http_runbook(
        "stally",
        "stally",
        &[(
            "act",
            "POST",
            "/act",
            "idempotent: true\nretry: { attempts: 3, initial: 3s, jitter: false, retry_on: [503] }",
        )],
        "",
    );
    let test = "a_stalled_instance_that_lost_its_lease_is_fenced_out";
    let Some((database, _workspace, first, second)) =
        cluster(test, &target_server.url, &runbook).await
    else {
        return;
    };
    let report = first.event(&event("stally", "INC-STOP")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    // The first attempt got its 503; the first instance now waits 3 s to retry.
    assert!(
        eventually(std::time::Duration::from_secs(10), || target
            .calls("POST /act")
            == 1)
        .await
    );
    first.signal("STOP");
    // The second instance takes the run over once the lease expires and
    // retries when the backoff is due.
    let run = second.wait(&run_id).await;
    first.signal("CONT");
    assert_eq!(run["state"], "succeeded", "{run:#}");
    // The first instance wakes, finds its lease gone, and writes nothing.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        target.calls("POST /act"),
        2,
        "the woken instance made no call"
    );
    let after = second.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(after["state"], "succeeded");
    assert_eq!(
        after["timeline"], run["timeline"],
        "the woken instance changed nothing"
    );
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_runs_over_three_instances_each_finish_exactly_once() {
    const RUNS: usize = 1000;
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let runbook = r#"
id: fleet
title: One call per incident
owner: tests
risk: reversible
approval: auto
match: { kind: fleet }
targets: { from: "[event.subject]" }
steps:
  - id: act
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/act?key={{ event.dedup_key }}" }
    idempotent: false
"#;
    let test = "a_thousand_runs_over_three_instances_each_finish_exactly_once";
    let Some(database) = database(test).await else {
        return;
    };
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.add_runbook("r.yaml", runbook);
    let servers: Vec<Server> = (0..3)
        .map(|_| workspace.start(&[("TARGET", &target_server.url)]))
        .collect();
    let bases: Vec<String> = servers.iter().map(|server| server.base.clone()).collect();
    let http = servers[0].http.clone();
    // Post from 24 concurrent senders, round-robin over the instances.
    let senders: Vec<_> = (0..24)
        .map(|sender| {
            let (http, bases) = (http.clone(), bases.clone());
            tokio::spawn(async move {
                for index in (sender..RUNS).step_by(24) {
                    let incident = json!({
                        "source": "tests", "kind": "fleet", "dedup_key": format!("K{index:04}"),
                        "subject": format!("HOST-{index:04}"), "status": "firing", "fields": {}
                    });
                    let response = http
                        .post(format!("{}/v1/events", bases[index % 3]))
                        .json(&incident)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 202);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
    assert_eq!(
        runs_still_open(&mut connection).await,
        0,
        "every run finished"
    );
    let succeeded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(succeeded, RUNS as i64);
    let mut keys = target.queries("POST /act");
    assert_eq!(keys.len(), RUNS, "one call per run");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), RUNS, "no run called twice");
    let drivers: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT actor FROM audit WHERE kind = 'attempt.started'")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    assert_eq!(
        drivers.len(),
        3,
        "all three instances executed runs: {drivers:?}"
    );
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test]
async fn a_run_waiting_for_a_target_starts_when_another_instance_releases_it() {
    let target = Scripted::default();
    target.on(
        "POST /act",
        vec![
            Reply::json(200, json!({})).delayed(std::time::Duration::from_millis(1500)),
            Reply::json(200, json!({})),
        ],
    );
    let target_server = target.start().await.unwrap();
    let test = "a_run_waiting_for_a_target_starts_when_another_instance_releases_it";
    let Some(database) = database(test).await else {
        return;
    };
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    // Leases of a minute: the periodic check comes every 30 s. The waiting
    // run must start as soon as the target is released: by the releasing
    // instance's own nudge or by the other's LISTEN (the announcement itself
    // is checked in the store's tests).
    workspace.lease_ttl_ms = 60_000;
    workspace.add_runbook(
        "r.yaml",
        &http_runbook(
            "serial",
            "busy",
            &[("act", "POST", "/act", "idempotent: true")],
            "",
        ),
    );
    let first = workspace.start(&[("TARGET", &target_server.url)]);
    let second = workspace.start(&[("TARGET", &target_server.url)]);
    // Two incidents about HOST-1, one to each instance.
    let holder = first.event(&event("busy", "INC-A")).await;
    assert!(
        eventually(std::time::Duration::from_secs(5), || target
            .calls("POST /act")
            == 1)
        .await
    );
    let waiter = second.event(&event("busy", "INC-B")).await;
    let started = std::time::Instant::now();
    assert_eq!(
        first.wait(holder["run_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    let run = second.wait(waiter["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(10),
        "started on release, not at the 30 s check: {waited:?}"
    );
    let times = target.call_times("POST /act");
    assert!(
        times[1] - times[0] >= std::time::Duration::from_millis(1450),
        "never on HOST-1 at once"
    );
}

#[tokio::test]
async fn approval_expiries_fire_once_across_three_instances() {
    const RUNS: usize = 30;
    let Some(database) = database("approval_expiries_fire_once_across_three_instances").await
    else {
        return;
    };
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    let runbook = http_runbook(
        "gated",
        "gated",
        &[("act", "POST", "/act", "idempotent: true")],
        "",
    )
    .replace(
        "approval: auto",
        "approval: { mode: required, expires: 2s }",
    );
    workspace.add_runbook("r.yaml", &runbook);
    let target = [("TARGET", "http://127.0.0.1:9")];
    let servers = [
        workspace.start(&target),
        workspace.start(&target),
        workspace.start(&target),
    ];
    let mut run_ids = Vec::new();
    for index in 0..RUNS {
        let report = servers[index % 3]
            .event(&event("gated", &format!("INC-{index}")))
            .await;
        assert_eq!(report["state"], "awaiting_approval", "{report:#}");
        run_ids.push(report["run_id"].as_str().unwrap().to_owned());
    }
    for run_id in &run_ids {
        let run = crate::timers::run_when(
            &servers[0],
            run_id,
            std::time::Duration::from_secs(15),
            |run| run["state"] == "expired",
        )
        .await;
        assert_eq!(run["state"], "expired", "{run:#}");
        assert_eq!(
            crate::harness::count_of(&run, "approval.expired"),
            1,
            "{run:#}"
        );
        assert_eq!(run["timers"][0]["status"], "fired");
    }
    // Every instance took part or could have: what matters is that the
    // audit holds one expiry per run, each by some instance, and verifies.
    let expiries = actors_of(&database, "approval.expired");
    assert_eq!(expiries.len(), RUNS);
    assert!(
        expiries.iter().all(|actor| actor.starts_with("opsgate_")),
        "{expiries:?}"
    );
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}

/// The actors of the audit records of `kind`, in order.
fn actors_of(database: &Database, kind: &str) -> Vec<String> {
    crate::harness::audit_records(&database.url)
        .iter()
        .filter(|record| record["kind"] == kind)
        .map(|record| record["actor"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_signed_request_taken_in_by_one_instance_is_a_replay_at_another() {
    const SECRET: &str = "signed-source-secret-for-two-instances";
    let Some(database) =
        database("a_signed_request_taken_in_by_one_instance_is_a_replay_at_another").await
    else {
        return;
    };
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("signed", "signed", &[("act", "POST", "/act", "")], ""),
    );
    workspace.config_yaml =
        Some("signed_sources:\n  - name: tests\n    secret: env:TESTS_WEBHOOK_SECRET\n".to_owned());
    workspace.env = vec![("TESTS_WEBHOOK_SECRET".into(), SECRET.into())];
    let first = workspace.start(&[("TARGET", &target_server.url)]);
    let second = workspace.start(&[("TARGET", &target_server.url)]);
    let body = event("signed", "SIGNED-CLUSTER").to_string();
    let now = jiff::Timestamp::now().as_second();
    let signature = server::sign(SECRET.as_bytes(), now, body.as_bytes());
    let send = |server: &Server, signature: String| {
        let request = reqwest::Client::new()
            .post(format!("{}/v1/events", server.base))
            .header("content-type", "application/json")
            .header(server::SOURCE_HEADER, "tests")
            .header(server::TIMESTAMP_HEADER, now.to_string())
            .header(server::SIGNATURE_HEADER, signature)
            .body(body.clone());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };

    let (status, report) = send(&first, signature.clone()).await;
    assert_eq!(status, 202, "{report}");
    let run = first.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let upper_cased = format!(
        "sha256={}",
        signature.strip_prefix("sha256=").unwrap().to_uppercase()
    );
    for (server, replayed) in [
        (&second, signature.clone()),
        (&second, upper_cased.clone()),
        (&first, upper_cased),
    ] {
        let (status, answer) = send(server, replayed).await;
        assert_eq!(status, 401, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("already used"), "{message}");
    }
    assert_eq!(
        second.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(target.calls("POST /act"), 1, "the target was called once");
}

/// A deployment as an operator rolls it out: three instances under load,
/// each in turn sent SIGTERM and started again once it has exited, while
/// senders keep posting to whichever instances are up. Every acknowledged
/// event gets its run, every run finishes, none needs a person, and no
/// non-idempotent step is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_three_instances_under_load_leaves_nothing_for_a_person() {
    const EVENTS: usize = 240;
    let target = Scripted::default();
    for step in ["first", "second"] {
        let slow = Reply::json(200, json!({})).delayed(std::time::Duration::from_millis(150));
        target.on(&format!("POST /{step}"), vec![slow]);
    }
    let target_server = target.start().await.unwrap();
    let runbook = r#"
id: rolling
title: Two slow calls per incident
owner: tests
risk: reversible
approval: auto
match: { kind: rolling }
targets: { from: "[event.subject]" }
steps:
  - id: first
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/first?key={{ event.dedup_key }}" }
    idempotent: false
  - id: second
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/second?key={{ event.dedup_key }}" }
    idempotent: false
"#;
    let test = "a_rolling_restart_of_three_instances_under_load_leaves_nothing_for_a_person";
    let Some(database) = database(test).await else {
        return;
    };
    let mut workspace = Workspace::new();
    workspace.database = Some(database.url.clone());
    workspace.add_runbook("r.yaml", runbook);
    let mut servers: Vec<Server> = (0..3)
        .map(|_| workspace.start(&[("TARGET", &target_server.url)]))
        .collect();
    let bases = std::sync::Arc::new(std::sync::Mutex::new(
        servers
            .iter()
            .map(|server| server.base.clone())
            .collect::<Vec<_>>(),
    ));
    let http = servers[0].http.clone();
    // Eight senders; an event that is not acknowledged (the instance is
    // gone, or refuses) is sent again to another one.
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let (http, bases) = (http.clone(), bases.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for index in (sender..EVENTS).step_by(8) {
                    let key = format!("R{index:04}");
                    let incident = json!({
                        "source": "tests", "kind": "rolling", "dedup_key": key,
                        "subject": format!("HOST-{index:04}"), "status": "firing", "fields": {}
                    });
                    for attempt in 0.. {
                        assert!(attempt < 200, "{key} was never acknowledged");
                        let base = {
                            let bases = bases.lock().unwrap();
                            bases[(index + attempt) % bases.len()].clone()
                        };
                        let sent = http
                            .post(format!("{base}/v1/events"))
                            .json(&incident)
                            .send()
                            .await;
                        if sent.is_ok_and(|response| response.status() == 202) {
                            acknowledged.push(key.clone());
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                acknowledged
            })
        })
        .collect();
    // The rollout: one instance at a time, each after the load is on.
    for (index, server) in servers.iter_mut().enumerate() {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        server.signal("TERM");
        let status = server
            .wait_for_exit(std::time::Duration::from_secs(30))
            .await;
        assert!(status.success(), "instance {index} stopped with {status}");
        *server = workspace.start(&[("TARGET", &target_server.url)]);
        bases.lock().unwrap()[index] = server.base.clone();
    }
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert_eq!(acknowledged.len(), EVENTS);

    let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
    assert_eq!(
        runs_still_open(&mut connection).await,
        0,
        "every run finished"
    );
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    assert_eq!(
        states,
        [("succeeded".to_owned(), EVENTS as i64)],
        "every acknowledged event's run succeeded, none needs a person"
    );
    for step in ["POST /first", "POST /second"] {
        let mut keys = target.queries(step);
        keys.sort();
        let sent = keys.len();
        keys.dedup();
        assert_eq!((sent, keys.len()), (EVENTS, EVENTS), "{step}: once per run");
    }
    let handed_over: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE kind = 'run.handed_over'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(handed_over > 0, "the restarts caught runs between steps");
    let (code, stdout, _) = crate::harness::cli(&["audit", "verify", "--database", &database.url]);
    assert_eq!(code, 0, "{stdout}");
}
