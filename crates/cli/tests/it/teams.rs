//! Teams on the real server: a run that waits for approval is announced in
//! the channel as an Adaptive Card with a signed page per approver; the
//! approver follows their link, approves, and the run's progress follows
//! as cards.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::teams_sim::TeamsSim;

use crate::harness::{Workspace, event, eventually, http_runbook};

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

#[tokio::test]
async fn an_approval_card_links_each_approver_to_their_signed_page() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let teams = TeamsSim::new();
    let teams_server = teams.start().await.unwrap();
    let mut workspace = Workspace::new();
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(
        &directory,
        "time_zone: UTC\npeople:\n  - { id: alice, name: Alice Admin }\n  - { id: bob, name: Bob Byte }\n",
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
        &http_runbook("carded", "carded", &[("act", "POST", "/act", "")], "").replace(
            "approval: auto\n",
            "approval:\n  mode: required\n  stages:\n    - { name: owner, approvers: [\"user:alice\", \"user:bob\"] }\n",
        ),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("carded", "TEAMS-1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");

    assert!(
        eventually(Duration::from_secs(10), || !teams.posted_cards().is_empty()).await,
        "an approval card was posted"
    );
    let card = teams.posted_cards()[0].clone();
    assert_eq!(card["version"], "1.5", "{card:#}");
    assert!(card.to_string().contains(&run_id), "{card:#}");
    let urls = open_urls(&card);
    assert_eq!(urls.len(), 2, "one page per approver: {urls:?}");

    // Bob follows his link and approves on the page.
    let http = reqwest::Client::new();
    let bobs = urls
        .iter()
        .find(|url| {
            let token = url.rsplit('/').next().unwrap();
            let payload = token.split('.').next().unwrap();
            String::from_utf8(hex::decode(payload).unwrap())
                .unwrap()
                .contains("\"approver\":\"bob\"")
        })
        .expect("a link for bob");
    let page = http.get(bobs).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let answer = http
        .post(bobs)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=approve&comment=looks+right")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");
    assert!(
        eventually(Duration::from_secs(10), || teams
            .posted_cards()
            .iter()
            .any(|card| card.to_string().contains("Automation succeeded")))
        .await,
        "{:#?}",
        teams.posted_cards()
    );
}
