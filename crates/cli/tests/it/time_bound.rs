//! Time-bound access on the real server, against a local Microsoft Graph
//! and a local ServiceNow: the grant holds `in_effect` and closes the
//! request; at the end date a durable timer removes the member again —
//! also when the end fell due while no opsgate was running — and the
//! removal is audited and written to the request. A person can end the
//! access early.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::graph_sim::{self, GraphSim};
use test_support::servicenow_sim::{Credentials, ServiceNowSim};

use crate::harness::{Server, Workspace, count_of, eventually, timeline};
use crate::timers::run_when;

const USER: &str = "kim@contoso.example";
const ITEM: &str = "RITM0010077";

const RUNBOOK: &str = r#"id: shared-mailbox-access
title: Time-bound access to a shared mailbox
owner: messaging
risk: reversible
approval: auto
match:
  kind: mailbox_access
inputs:
  type: object
  required: [user, until]
  properties:
    user: { type: string }
    until: { type: string }
  from_event:
    user: "{{ event.fields.user }}"
    until: "{{ event.fields.until }}"
targets:
  from: "[inputs.user]"
steps:
  - id: grant
    action: graph.group_membership
    with: { group_id: "{{ env.GROUP }}", user_id: "{{ inputs.user }}", ensure: present }
    idempotent: true
    rollback:
      action: graph.group_membership
      with: { group_id: "{{ env.GROUP }}", user_id: "{{ inputs.user }}", ensure: absent }
time_bound: { until: "{{ inputs.until }}", at_most: 30d }
writeback: { ticket: true, resolve_on_success: { close_code: "Solution provided" } }
"#;

/// The two local peers, a request in ServiceNow, and a workspace that
/// reaches both.
struct World {
    graph: GraphSim,
    group: String,
    servicenow: ServiceNowSim,
    item: String,
    workspace: Workspace,
    _servers: Vec<test_support::Running>,
}

async fn world() -> World {
    let graph_credentials = graph_sim::Credentials::default();
    let graph = GraphSim::new(graph_credentials.clone());
    let graph_server = graph.start().await.unwrap();
    graph.add_user(USER);
    let group = graph.add_group();
    let sn_credentials = Credentials::default();
    let servicenow = ServiceNowSim::new(sn_credentials.clone());
    let sn_server = servicenow.start().await.unwrap();
    let item = servicenow.seed_record(
        "sc_req_item",
        &[
            ("number", ITEM),
            (
                "short_description",
                "Access to the Finance shared mailbox until Friday",
            ),
            ("state", "1"),
        ],
    );
    let mut workspace = Workspace::new();
    workspace.add_runbook("r.yaml", RUNBOOK);
    workspace.config_yaml = Some(format!(
        "servicenow:\n  instance_url: {sn}\n  basic: {{ username: {user}, password: env:T_SN_PASSWORD }}\n\
         graph:\n  tenant_id: {tenant}\n  client_id: {client}\n  client_secret: env:T_GRAPH_SECRET\n  \
         authority_url: {graph_url}\n  graph_url: {graph_url}\n",
        sn = sn_server.url,
        user = sn_credentials.username,
        tenant = graph_credentials.tenant_id,
        client = graph_credentials.client_id,
        graph_url = graph_server.url,
    ));
    workspace.env = vec![
        ("T_SN_PASSWORD".into(), sn_credentials.password),
        ("T_GRAPH_SECRET".into(), graph_credentials.client_secret),
    ];
    World {
        graph,
        group,
        servicenow,
        item,
        workspace,
        _servers: vec![graph_server, sn_server],
    }
}

fn request(until: &str) -> Value {
    json!({
        "source": "servicenow", "kind": "mailbox_access",
        "dedup_key": format!("servicenow:{ITEM}"), "subject": USER, "status": "firing",
        "fields": {"ticket": ITEM, "ticket_table": "sc_req_item", "user": USER, "until": until}
    })
}

/// `seconds` from now, as RFC 3339.
fn in_seconds(seconds: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds))
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

async fn notes_holding(world: &World, text: &str) -> String {
    let found = eventually(Duration::from_secs(15), || {
        world
            .servicenow
            .journal_of(&world.item, "work_notes")
            .iter()
            .any(|note| note.contains(text))
    })
    .await;
    let notes = world
        .servicenow
        .journal_of(&world.item, "work_notes")
        .join("\n---\n");
    assert!(found, "no note holds `{text}`:\n{notes}");
    notes
}

/// Posts the request and waits for the grant to be in effect.
async fn granted(world: &World, server: &Server, until: &str) -> String {
    let report = server.event(&request(until)).await;
    let run_id = report["run_id"].as_str().expect("a run").to_owned();
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "in_effect", "{run:#}");
    assert_eq!(world.graph.members(&world.group).len(), 1, "kim was added");
    run_id
}

/// Waits for the run to end `succeeded` with kim removed; returns the run.
async fn removed(world: &World, server: &Server, run_id: &str) -> Value {
    let run = run_when(server, run_id, Duration::from_secs(15), |run| {
        run["state"] == "succeeded"
    })
    .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert!(
        world.graph.members(&world.group).is_empty(),
        "kim was removed"
    );
    run
}

#[tokio::test]
async fn access_ends_at_its_end_date_even_after_a_restart_and_the_request_hears_of_it() {
    ends_after_a_restart(world().await).await;
}

/// The same on PostgreSQL: the instance that grants dies, and another one
/// started after the end date fires the timer.
#[tokio::test]
async fn on_postgres_another_instance_ends_the_access() {
    let Some(database) =
        crate::postgres::database("on_postgres_another_instance_ends_the_access").await
    else {
        return;
    };
    let mut world = world().await;
    world.workspace.database = Some(database.url.clone());
    ends_after_a_restart(world).await;
}

async fn ends_after_a_restart(world: World) {
    let vars = [("GROUP", world.group.as_str())];
    let mut server = world.workspace.start(&vars);
    let until = in_seconds(4);
    let run_id = granted(&world, &server, &until).await;

    // The request is closed complete at once, and says until when.
    let notes = notes_holding(&world, "In effect until").await;
    assert!(notes.contains(&until), "{notes}");
    let item = world.servicenow.record("sc_req_item", &world.item).unwrap();
    assert_eq!(item["state"], "3", "closed complete: {item:?}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["timers"][0]["kind"], "term_ends", "{run:#}");
    assert_eq!(run["timers"][0]["status"], "pending");
    assert_eq!(run["plan"]["ends_at"], until.as_str(), "{run:#}");

    // opsgate is down when the end date passes.
    server.kill9();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert_eq!(
        world.graph.members(&world.group).len(),
        1,
        "nothing removed it yet"
    );
    let server = world.workspace.start(&vars);
    let run = removed(&world, &server, &run_id).await;
    assert_eq!(run["timers"][0]["status"], "fired");
    assert_eq!(count_of(&run, "time_bound.ended"), 1, "{run:#}");
    let removal: Vec<_> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, detail)| kind == "attempt.finished" && detail["phase"] == "rollback")
        .collect();
    assert_eq!(removal.len(), 1, "one removal: {removal:?}");
    assert_eq!(removal[0].2["outcome"]["outcome"], "succeeded");

    let notes = notes_holding(&world, "The time-bound change was undone").await;
    assert!(notes.contains("End date reached"), "{notes}");
    assert!(
        notes.contains("Rollback grant (attempt 1) succeeded."),
        "{notes}"
    );
    // Written once each: the note of the removal is not repeated.
    assert_eq!(notes.matches("End date reached").count(), 1, "{notes}");
}

#[tokio::test]
async fn a_person_ends_access_early_and_only_with_a_reason_and_the_right_role() {
    let world = world().await;
    let server = world.workspace.start(&[("GROUP", world.group.as_str())]);
    let run_id = granted(&world, &server, &in_seconds(3_600)).await;
    let path = format!("/v1/runs/{run_id}/cancel");

    let viewer = world.workspace.create_token("vic", "viewer");
    let (status, body) = server
        .post_raw_as(&viewer, &path, r#"{"reason": "not mine to end"}"#)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.post_raw(&path, r#"{"reason": "  "}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("`reason`"), "{body}");
    assert_eq!(world.graph.members(&world.group).len(), 1, "still a member");

    let (status, body) = server
        .post(&path, &json!({"reason": "the contractor left"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let run = removed(&world, &server, &run_id).await;
    assert_eq!(run["timers"][0]["status"], "disarmed", "{run:#}");
    let notes = notes_holding(&world, "The time-bound change was undone").await;
    assert!(
        notes.contains("Ended early by user:tests-operator (the contractor left)"),
        "{notes}"
    );
}
