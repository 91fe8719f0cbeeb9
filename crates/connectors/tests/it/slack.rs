//! The Slack client against the simulated Web API: what it posts, and how
//! each refusal is classified (Slack's errors come with HTTP 200).

use std::time::Duration;

use connectors::slack::{ApprovalButton, PostedMessage};
use connectors::{Secret, Slack, SlackConfig, WriteError, approval_message};
use serde_json::json;
use test_support::Running;
use test_support::slack_sim::SlackSim;

const TOKEN: &str = "xoxb-0000000000-sim-bot-token";
const CHANNEL: &str = "C0APPROVALS";

async fn workspace() -> (SlackSim, Running) {
    let sim = SlackSim::new(TOKEN, &[CHANNEL]);
    let server = sim.start().await.expect("the simulator starts");
    (sim, server)
}

fn client(server: &Running, token: &str) -> Slack {
    Slack::new(SlackConfig {
        api_url: format!("{}/api", server.url),
        bot_token: Secret::new(token),
        timeout: Duration::from_secs(5),
    })
    .expect("a client")
}

fn message() -> serde_json::Value {
    approval_message(
        "run-42",
        "security",
        "Restart the print spooler",
        &["PRN-7".to_owned()],
        &["the runbook requires approval".to_owned()],
        Some("https://opsgate.example/approve/token"),
    )
}

fn permanent(result: Result<PostedMessage, WriteError>) -> String {
    match result {
        Err(WriteError::Permanent { message }) => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn posts_the_approval_message_with_its_buttons() {
    let (sim, server) = workspace().await;
    let posted = client(&server, TOKEN)
        .post_message(CHANNEL, &message())
        .await
        .expect("posted");
    let received = sim.posted();
    assert_eq!(received.len(), 1);
    assert_eq!(
        posted,
        PostedMessage {
            channel: CHANNEL.to_owned(),
            ts: received[0].ts.clone()
        }
    );
    let body = &received[0].body;
    assert_eq!(body["channel"], CHANNEL);
    assert_eq!(body["blocks"], message()["blocks"]);
    let approve = &body["blocks"][2]["elements"][0];
    assert_eq!(approve["action_id"], "approve");
    assert_eq!(
        ApprovalButton::parse(approve["value"].as_str().unwrap()),
        Some(ApprovalButton {
            run: "run-42".into(),
            stage: "security".into()
        })
    );
}

#[tokio::test]
async fn slack_errors_inside_a_200_are_errors() {
    let (sim, server) = workspace().await;
    let cases = [
        (TOKEN, "C0NOSUCHCHANNEL", message(), "channel_not_found"),
        ("xoxb-wrong", CHANNEL, message(), "invalid_auth"),
        (TOKEN, CHANNEL, json!({"text": ""}), "no_text"),
    ];
    for (token, channel, body, code) in cases {
        let refused = permanent(client(&server, token).post_message(channel, &body).await);
        assert!(refused.contains(code), "{code}: {refused}");
        assert!(!refused.contains(token), "the token never shows: {refused}");
    }
    assert!(sim.posted().is_empty());
}

#[tokio::test]
async fn a_rate_limit_is_retryable_with_slacks_retry_after() {
    let (sim, server) = workspace().await;
    sim.rate_limit(Some(30));
    let slack = client(&server, TOKEN);
    match slack.post_message(CHANNEL, &message()).await {
        Err(WriteError::Retryable {
            message,
            retry_after,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)));
            assert!(message.contains("429"), "{message}");
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    sim.rate_limit(None);
    slack
        .post_message(CHANNEL, &message())
        .await
        .expect("posted once the limit lifts");
    assert_eq!((sim.calls(), sim.posted().len()), (2, 1));
}

#[tokio::test]
async fn an_unreachable_slack_is_retryable() {
    let (_sim, server) = workspace().await;
    let url = server.url.clone();
    drop(server);
    let slack = Slack::new(SlackConfig {
        api_url: format!("{url}/api"),
        bot_token: Secret::new(TOKEN),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let outcome = slack.post_message(CHANNEL, &message()).await;
    assert!(
        matches!(outcome, Err(WriteError::Retryable { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_message_that_is_not_an_object_is_refused_before_sending() {
    let (sim, server) = workspace().await;
    let refused = permanent(
        client(&server, TOKEN)
            .post_message(CHANNEL, &json!(["not", "a", "message"]))
            .await,
    );
    assert!(refused.contains("JSON object"), "{refused}");
    assert_eq!(sim.calls(), 0);
}
