//! The Teams cards against Microsoft's Adaptive Card 1.5 schema, and the
//! webhook client against the simulated Workflows webhook.

use std::sync::LazyLock;
use std::time::Duration;

use connectors::teams::{
    self, ApprovalCard, ApprovalLinks, ApproverLink, CardStep, Fact, ProgressCard, Teams,
};
use connectors::{Secret, WriteError};
use domain::RunState;
use serde_json::{Value, json};
use test_support::Running;
use test_support::teams_sim::TeamsSim;

use crate::{Expect, failed_as};

/// Microsoft's published schema, vendored unmodified (see `tests/schemas/README.md`).
static ADAPTIVE_CARD_1_5: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value =
        serde_json::from_str(include_str!("../schemas/adaptive-card-1.5.json")).unwrap();
    jsonschema::validator_for(&schema).expect("the published schema compiles")
});

/// The schema's errors for `card`, plus the two things it leaves out: the
/// top-level `type` and `version`.
fn card_errors(card: &Value) -> Vec<String> {
    let mut errors: Vec<String> = ADAPTIVE_CARD_1_5
        .iter_errors(card)
        .map(|error| format!("{}: {error}", error.instance_path().as_str()))
        .collect();
    if card["type"] != "AdaptiveCard" {
        errors.push("the card's `type` is not AdaptiveCard".to_owned());
    }
    if card["version"] != teams::CARD_VERSION {
        errors.push(format!(
            "the card's `version` is not {}",
            teams::CARD_VERSION
        ));
    }
    errors
}

fn check_valid(what: &str, card: &Value) {
    let errors = card_errors(card);
    assert!(
        errors.is_empty(),
        "{what} is not a valid card: {errors:#?}\n{card:#}"
    );
}

fn approval(links: ApprovalLinks) -> ApprovalCard {
    ApprovalCard {
        run_id: "run_01J9Z6Q4T7".into(),
        runbook_title: "Restart nginx on the Lyon web tier".into(),
        steps: vec![
            CardStep {
                name: "drain".into(),
                action: "http.request".into(),
                request: "POST https://lb.example.test/pools/web/members/web-01/drain".into(),
            },
            CardStep {
                name: "restart-nginx".into(),
                action: "command.run".into(),
                request: "systemctl restart nginx".into(),
            },
        ],
        targets: vec!["web-01.lyon".into(), "web-02.lyon".into()],
        reasons: vec![
            "Production targets need an approval outside the change window.".into(),
            // Markdown from an alert must stay text, never become a link.
            "Alert says: [click here](https://evil.example.test) **now**".into(),
        ],
        approval_stage: "1 of 2 (service owner)".into(),
        approvers: vec!["Jane Doe".into(), "Web Platform on-call".into()],
        links,
    }
}

fn shared_link() -> ApprovalLinks {
    ApprovalLinks::Shared {
        url: "https://opsgate.example.test/approvals/run_01J9Z6Q4T7?sig=abc".into(),
    }
}

fn per_approver_links(count: usize) -> ApprovalLinks {
    ApprovalLinks::PerApprover(
        (1..=count)
            .map(|n| ApproverLink {
                approver: format!("Approver {n}"),
                url: format!(
                    "https://opsgate.example.test/approvals/run_01J9Z6Q4T7?for={n}&sig=s{n}"
                ),
            })
            .collect(),
    )
}

fn progress(state: RunState) -> ProgressCard {
    ProgressCard {
        run_id: "run_01J9Z6Q4T7".into(),
        runbook_title: "Restart nginx on the Lyon web tier".into(),
        state,
        what_happened: format!("The run is now {state}."),
        facts: vec![
            Fact {
                title: "Step".into(),
                value: "restart-nginx".into(),
            },
            Fact {
                title: "Attempt".into(),
                value: "2 of 3".into(),
            },
        ],
        run_url: Some("https://opsgate.example.test/runs/run_01J9Z6Q4T7".into()),
    }
}

#[test]
fn approval_cards_are_valid_adaptive_cards() {
    for (what, links) in [
        ("one shared link", shared_link()),
        ("one link per approver", per_approver_links(2)),
        ("more links than buttons", per_approver_links(8)),
    ] {
        check_valid(what, &teams::approval_card(&approval(links)));
    }
    let mut long = approval(shared_link());
    long.steps = (0..40)
        .map(|n| CardStep {
            name: format!("step-{n}"),
            action: "command.run".into(),
            request: "x".repeat(2000),
        })
        .collect();
    long.targets.clear();
    check_valid("a long plan", &teams::approval_card(&long));
}

#[test]
fn progress_cards_are_valid_adaptive_cards_in_every_state() {
    for state in RunState::ALL {
        check_valid(state.as_str(), &teams::progress_card(&progress(state)));
    }
    let mut bare = progress(RunState::Running);
    bare.facts.clear();
    bare.run_url = None;
    check_valid("no facts, no link", &teams::progress_card(&bare));
}

#[test]
fn broken_cards_fail_the_schema() {
    let valid = teams::approval_card(&approval(shared_link()));
    assert!(ADAPTIVE_CARD_1_5.is_valid(&valid));
    let broken = |what: &str, change: fn(&mut Value)| {
        let mut card = valid.clone();
        change(&mut card);
        assert!(
            !ADAPTIVE_CARD_1_5.is_valid(&card),
            "{what} should fail: {card:#}"
        );
    };
    broken("an action type that does not exist", |card| {
        card["actions"][0]["type"] = json!("Action.Approve")
    });
    broken("an OpenUrl without its url", |card| {
        card["actions"][0].as_object_mut().unwrap().remove("url");
    });
    broken("a misspelt property", |card| {
        card["body"][1]["inline"] = json!([])
    });
    broken("an unknown element", |card| {
        card["body"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Markdown", "text": "hi"}))
    });
    broken("a fact without its value", |card| {
        card["body"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "FactSet", "facts": [{"title": "Run"}]}))
    });
    broken("a style that does not exist", |card| {
        card["body"][0]["style"] = json!("danger")
    });

    // The published schema does not require the top-level `version`, though
    // its own text says it is required there: `card_errors` checks it.
    let mut unversioned = valid.clone();
    unversioned.as_object_mut().unwrap().remove("version");
    assert!(ADAPTIVE_CARD_1_5.is_valid(&unversioned));
    assert!(!card_errors(&unversioned).is_empty());
    let mut older = valid.clone();
    older["version"] = json!("1.2");
    assert!(!card_errors(&older).is_empty());
}

/// Collects the text a person reads on a card, in order.
fn texts(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(text)) = object.get("text") {
                into.push(text.clone());
            }
            if let Some(Value::String(title)) = object.get("title") {
                into.push(title.clone());
            }
            object.values().for_each(|child| texts(child, into));
        }
        Value::Array(items) => items.iter().for_each(|child| texts(child, into)),
        _ => {}
    }
}

fn read(card: &Value) -> String {
    let mut found = Vec::new();
    texts(card, &mut found);
    found.join("")
}

#[test]
fn an_approval_card_says_what_who_why_and_where_to_decide() {
    let card = teams::approval_card(&approval(per_approver_links(2)));
    let text = read(&card);
    for expected in [
        "Approval needed",
        "Restart nginx on the Lyon web tier",
        "1. drain · http.request",
        "POST https://lb.example.test/pools/web/members/web-01/drain",
        "2. restart-nginx · command.run",
        "systemctl restart nginx",
        "On: web-01.lyon, web-02.lyon",
        "Production targets need an approval outside the change window.",
        "Approval stage: 1 of 2 (service owner)",
        "Who may approve: Jane Doe, Web Platform on-call",
        "Run: run_01J9Z6Q4T7",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from {text}");
    }
    let buttons: Vec<(&str, &str)> = card["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|action| {
            assert_eq!(action["type"], "Action.OpenUrl");
            (
                action["title"].as_str().unwrap(),
                action["url"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        buttons,
        [
            (
                "Review as Approver 1",
                "https://opsgate.example.test/approvals/run_01J9Z6Q4T7?for=1&sig=s1"
            ),
            (
                "Review as Approver 2",
                "https://opsgate.example.test/approvals/run_01J9Z6Q4T7?for=2&sig=s2"
            ),
        ]
    );
}

#[test]
fn text_from_a_run_is_never_rendered_as_markdown() {
    let card = teams::approval_card(&approval(shared_link()));
    // Markdown renders only in TextBlocks; every TextBlock holds our own words.
    fn text_blocks(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if object.get("type") == Some(&json!("TextBlock")) {
                    into.push(object["text"].as_str().unwrap().to_owned());
                }
                object.values().for_each(|child| text_blocks(child, into));
            }
            Value::Array(items) => items.iter().for_each(|child| text_blocks(child, into)),
            _ => {}
        }
    }
    let mut blocks = Vec::new();
    text_blocks(&card, &mut blocks);
    assert_eq!(
        blocks,
        ["Approval needed", "What will run", "Why approval is needed"]
    );
    assert!(read(&card).contains("[click here](https://evil.example.test) **now**"));
}

#[test]
fn a_progress_card_names_its_run_and_state() {
    let card = teams::progress_card(&progress(RunState::Failed));
    let text = read(&card);
    for expected in [
        "Failed",
        "Restart nginx on the Lyon web tier",
        "The run is now failed.",
        "Step: restart-nginx",
        "Attempt: 2 of 3",
        "Run: run_01J9Z6Q4T7",
        "Open the run",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from {text}");
    }
    assert_eq!(card["body"][0]["style"], "attention");
}

#[test]
fn the_message_is_the_workflows_envelope() {
    let card = teams::progress_card(&progress(RunState::Succeeded));
    assert_eq!(
        teams::message(card.clone()),
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        })
    );
}

struct Webhook {
    sim: TeamsSim,
    server: Running,
}

async fn webhook() -> Webhook {
    let sim = TeamsSim::new();
    let server = sim.start().await.expect("the simulator starts");
    Webhook { sim, server }
}

impl Webhook {
    fn client(&self) -> Teams {
        client_at(&self.sim.webhook_url(&self.server.url))
    }
}

fn client_at(url: &str) -> Teams {
    Teams::new(Secret::new(url), Duration::from_secs(5)).expect("the client builds")
}

/// Checks the failure, and that neither the URL nor its signature leaks.
fn check(result: Result<(), WriteError>, expect: Expect, webhook_url: &str, signature: &str) {
    let (error, message) = failed_as(result, expect);
    for secret in [webhook_url, signature, "/workflows/"] {
        assert!(!message.contains(secret), "`{message}` leaks `{secret}`");
    }
    assert!(!format!("{error:?}").contains(signature));
}

#[tokio::test]
async fn an_accepted_card_is_posted_to_the_channel() {
    let webhook = webhook().await;
    let card = teams::approval_card(&approval(shared_link()));
    webhook
        .client()
        .post(&teams::message(card.clone()))
        .await
        .expect("the webhook accepts the message");
    assert_eq!(webhook.sim.posted_cards(), [card]);
    assert!(webhook.sim.failed_runs().is_empty());
}

#[tokio::test]
async fn accepted_is_not_posted_when_the_trigger_does_not_validate() {
    let webhook = webhook().await;
    // The stock template takes any JSON and fails the run afterwards.
    webhook
        .client()
        .post(&json!({"text": "Hello World!"}))
        .await
        .expect("202 Accepted");
    assert!(webhook.sim.posted_cards().is_empty());
    let failed = webhook.sim.failed_runs();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains("is of type 'Null'"), "{failed:?}");
}

#[tokio::test]
async fn refusals_are_sorted_and_never_show_the_url() {
    let webhook = webhook().await;
    let url = webhook.sim.webhook_url(&webhook.server.url);
    let signature = webhook.sim.signature();
    let client = webhook.client();
    let card = teams::message(teams::progress_card(&progress(RunState::Running)));

    webhook.sim.validate_schema(true);
    check(
        client.post(&json!({"text": "Hello World!"})).await,
        Expect::Permanent(&[
            "Teams webhook POST http://127.0.0.1:",
            "400 Bad Request",
            "TriggerInputSchemaMismatch",
            "Required properties are missing from object: type, attachments.",
        ]),
        &url,
        &signature,
    );
    client.post(&card).await.expect("a card passes the schema");

    webhook.sim.rate_limit_next(1, 7);
    check(
        client.post(&card).await,
        Expect::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            says: &["429 Too Many Requests", "WorkflowRequestsThrottled"],
        },
        &url,
        &signature,
    );
    client.post(&card).await.expect("the limit has passed");

    webhook.sim.down(true);
    check(
        client.post(&card).await,
        Expect::Retryable {
            retry_after: None,
            says: &["502 Bad Gateway", "text/html"],
        },
        &url,
        &signature,
    );
    webhook.sim.down(false);

    let forged = url.replace(&signature, "0000");
    check(
        client_at(&forged).post(&card).await,
        Expect::Permanent(&["401 Unauthorized", "DirectApiInvalidAuthorizationSignature"]),
        &forged,
        "0000",
    );
    assert_eq!(webhook.sim.posted_cards().len(), 2);
}

#[tokio::test]
async fn a_webhook_nobody_answers_is_retryable() {
    let unused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!(
        "http://{unused}/powerautomate/automations/direct/workflows/abc/triggers/manual/paths/invoke?sig=s3cr3t-sig"
    );
    check(
        client_at(&url).post(&json!({})).await,
        Expect::Retryable {
            retry_after: None,
            says: &["Teams webhook POST", "failed"],
        },
        &url,
        "s3cr3t-sig",
    );
    check(
        client_at("teams webhook s3cr3t-sig").post(&json!({})).await,
        Expect::Permanent(&["is not a URL"]),
        "teams webhook s3cr3t-sig",
        "s3cr3t-sig",
    );
}

#[test]
fn the_client_does_not_show_its_url() {
    let client =
        client_at("https://example.test/workflows/abc/triggers/manual/paths/invoke?sig=s3cr3t");
    assert!(!format!("{client:?}").contains("s3cr3t"));
}
