//! Teams on the real server: a run that waits for approval is announced in
//! the channel as an Adaptive Card with a signed page per approver; the
//! approver follows their link, approves, and the run's progress follows
//! as cards. The links work as long as the run waits (not an hour), each is
//! audited as issued, and a stage anyone may approve gets a link for each
//! person of the directory who may.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::teams_sim::TeamsSim;

use crate::harness::{Server, Workspace, event, eventually, http_runbook, timeline};

/// The URLs of every `Action.OpenUrl` in `card`.
fn open_urls(card: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    let mut stack = vec![card];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("Action.OpenUrl"))
                    && let Some(url) = map.get("url").and_then(Value::as_str)
                {
                    urls.push(url.to_owned());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    urls
}

/// What an approval link's token binds (`<hex of the link's JSON>.<mac>`).
fn signed_link(url: &str) -> Value {
    let token = url.rsplit('/').next().unwrap();
    let payload = token.split('.').next().unwrap();
    serde_json::from_slice(&hex::decode(payload).unwrap()).unwrap()
}

/// An opsgate telling a simulated Teams channel about runs of a runbook
/// with `approval` (the runbook's YAML `approval:` block), and a target
/// that answers.
struct Setup {
    server: Server,
    /// Holds the database and the directory the server uses.
    workspace: Workspace,
    teams: TeamsSim,
    _teams_server: test_support::Running,
    _target_server: test_support::Running,
}

async fn setup(approval: &str) -> Setup {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let teams = TeamsSim::new();
    let teams_server = teams.start().await.unwrap();
    let mut workspace = Workspace::new();
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(
        &directory,
        "time_zone: UTC\npeople:\n  - { id: alice, name: Alice Admin }\n  - { id: bob, name: Bob Byte }\n  - { id: kim, name: Kim Kowalski }\n  - { id: dora, name: Dora Desk }\n",
    )
    .unwrap();
    workspace.config_yaml = Some(format!(
        "directory: {}\nteams: {{ webhook_url: \"env:OPSGATE_TEST_TEAMS_URL\" }}\n",
        directory.display()
    ));
    workspace.env.push((
        "OPSGATE_TEST_TEAMS_URL".to_owned(),
        teams.webhook_url(&teams_server.url),
    ));
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("carded", "carded", &[("act", "POST", "/act", "")], "")
            .replace("approval: auto\n", approval),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    Setup {
        server,
        workspace,
        teams,
        _teams_server: teams_server,
        _target_server: target_server,
    }
}

impl Setup {
    /// A run kim asked for, awaiting approval; returns its id and the
    /// approval card posted for it.
    async fn run_awaiting_approval(&self, dedup_key: &str) -> (String, Value) {
        let mut event = event("carded", dedup_key);
        event["fields"]["requested_by"] = json!("kim");
        let report = self.server.event(&event).await;
        assert_eq!(report["state"], "awaiting_approval", "{report:#}");
        let run_id = report["run_id"].as_str().unwrap().to_owned();
        let card = || {
            self.teams
                .posted_cards()
                .into_iter()
                .find(|card| card.to_string().contains("Approval needed"))
        };
        assert!(
            eventually(Duration::from_secs(10), || card().is_some()).await,
            "an approval card was posted: {:#?}",
            self.teams.posted_cards()
        );
        (run_id, card().unwrap())
    }

    /// `url`'s page, approved with a comment; waits for the run to end.
    async fn approve_through(&self, url: &str, run_id: &str) -> Value {
        let http = reqwest::Client::new();
        let page = http.get(url).send().await.unwrap();
        assert_eq!(page.status(), 200, "the page opens");
        let answer = http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("decision=approve&comment=looks+right")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
        self.server.wait(run_id).await
    }
}

#[tokio::test]
async fn an_approval_card_links_each_approver_to_their_signed_page() {
    let setup = setup(
        "approval:\n  mode: required\n  stages:\n    - { name: owner, approvers: [\"user:alice\", \"user:bob\"] }\n",
    )
    .await;
    let (run_id, card) = setup.run_awaiting_approval("TEAMS-1").await;
    assert_eq!(card["version"], "1.5", "{card:#}");
    assert!(card.to_string().contains(&run_id), "{card:#}");
    let urls = open_urls(&card);
    assert_eq!(urls.len(), 2, "one page per approver: {urls:?}");

    // Bob follows his link and approves on the page.
    let bobs = urls
        .iter()
        .find(|url| signed_link(url)["approver"] == "bob")
        .expect("a link for bob");
    let run = setup.approve_through(bobs, &run_id).await;
    assert_eq!(run["state"], "succeeded");
    assert!(
        eventually(Duration::from_secs(10), || setup
            .teams
            .posted_cards()
            .iter()
            .any(|card| card.to_string().contains("Automation succeeded")))
        .await,
        "{:#?}",
        setup.teams.posted_cards()
    );
}

#[tokio::test]
async fn card_links_last_until_the_approval_expires_and_are_audited() {
    let setup = setup(
        "approval:\n  mode: required\n  expires: 24h\n  stages:\n    - { name: owner, approvers: [\"user:alice\", \"user:bob\"] }\n",
    )
    .await;
    let (run_id, card) = setup.run_awaiting_approval("TEAMS-2").await;
    let urls = open_urls(&card);
    assert_eq!(urls.len(), 2, "{urls:?}");

    let run = setup.server.get(&format!("/v1/runs/{run_id}")).await;
    let records = timeline(&run);
    let (_, _, requested) = records
        .iter()
        .find(|(kind, _, _)| kind == "approval.requested")
        .expect("the approval request");
    let approval_expires: jiff::Timestamp =
        requested["expires_at"].as_str().unwrap().parse().unwrap();
    // An hour — the links' default lifetime — is far short of the wait.
    let an_hour_from_now = jiff::Timestamp::now().as_second() + 3600;
    assert!(approval_expires.as_second() > an_hour_from_now + 20 * 3600);
    for url in &urls {
        let link = signed_link(url);
        assert_eq!(
            link["expires_at"],
            approval_expires.as_second(),
            "the link lives as long as the approval: {link}"
        );
    }

    // One record per link, by opsgate, naming what the link binds and
    // never the token.
    let issued: Vec<&Value> = records
        .iter()
        .filter(|(kind, _, _)| kind == "approval.link_issued")
        .map(|(_, actor, detail)| {
            assert_eq!(actor, "opsgate");
            detail
        })
        .collect();
    let mut approvers: Vec<&str> = issued
        .iter()
        .map(|detail| detail["approver"].as_str().unwrap())
        .collect();
    approvers.sort_unstable();
    assert_eq!(approvers, ["alice", "bob"], "{issued:#?}");
    for detail in &issued {
        assert_eq!(detail["stage"], "owner");
        assert_eq!(detail["plan_hash"], run["plan"]["plan_hash"]);
        assert_eq!(detail["expires_at"], approval_expires.as_second());
        let text = detail.to_string();
        for url in &urls {
            let token = url.rsplit('/').next().unwrap();
            let (payload, mac) = token.split_once('.').unwrap();
            assert!(!text.contains(payload) && !text.contains(mac), "{text}");
        }
    }

    // The write-back follows these records too, and makes nothing of them:
    // still one approval card, still two links issued.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let approval_cards = setup
        .teams
        .posted_cards()
        .iter()
        .filter(|card| card.to_string().contains("Approval needed"))
        .count();
    assert_eq!(approval_cards, 1, "{:#?}", setup.teams.posted_cards());
    let run = setup.server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(crate::harness::count_of(&run, "approval.link_issued"), 2);

    let run = setup.approve_through(&urls[0], &run_id).await;
    assert_eq!(run["state"], "succeeded");
}

#[tokio::test]
async fn a_stage_anyone_may_approve_links_each_person_who_may() {
    // No stages: any one person with the approver role approves.
    let setup = setup("approval: required\n").await;
    let (run_id, card) = setup.run_awaiting_approval("TEAMS-3").await;
    let urls = open_urls(&card);
    let mut linked: Vec<String> = urls
        .iter()
        .map(|url| signed_link(url)["approver"].as_str().unwrap().to_owned())
        .collect();
    linked.sort_unstable();
    // Kim asked for the run: she may not approve it, so she gets no link;
    // Dora is in the directory but holds no approver token, so neither.
    assert_eq!(linked, ["alice", "bob"], "{card:#}");
    assert!(!card.to_string().contains("dora"), "{card:#}");
    let text = card.to_string();
    assert!(text.contains("user:alice, user:bob"), "{card:#}");

    let alices = urls
        .iter()
        .find(|url| signed_link(url)["approver"] == "alice")
        .unwrap();
    let run = setup.approve_through(alices, &run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
}

#[tokio::test]
async fn a_card_links_only_people_who_hold_the_approver_role_and_a_revoked_link_stops() {
    // dora is a person of the directory named by the stage, but she holds
    // no approver token: a link would give her a power she does not have.
    let setup = setup(
        "approval:\n  mode: required\n  stages:\n    - { name: owner, approvers: [\"user:alice\", \"user:dora\"] }\n",
    )
    .await;
    let (run_id, card) = setup.run_awaiting_approval("TEAMS-ROLE").await;
    let urls = open_urls(&card);
    let approvers: Vec<Value> = urls
        .iter()
        .map(|url| signed_link(url)["approver"].clone())
        .collect();
    assert_eq!(approvers, [json!("alice")], "{card:#}");
    assert!(
        card.to_string().contains("dora"),
        "the card still says dora may approve: {card:#}"
    );
    let link = signed_link(&urls[0]);
    assert_eq!(link["issued_by"], "opsgate", "{link}");

    // alice's role is taken away after the card was posted: her link no
    // longer decides anything.
    let alice_token = setup.server.tokens.alice.clone();
    let token_id = alice_token
        .strip_prefix("og_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id.to_owned())
        .unwrap();
    let (code, _, stderr) = crate::harness::cli(&[
        "token",
        "revoke",
        &token_id,
        "--database",
        &setup.workspace.database_url(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let answer = reqwest::Client::new()
        .post(&urls[0])
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=approve&comment=still+mine%3F")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let page = answer.text().await.unwrap();
    assert!(page.contains("no longer holds the approver role"), "{page}");
    let run = setup.server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "awaiting_approval", "{run:#}");
    assert_eq!(crate::harness::count_of(&run, "approval.granted"), 0);
}
