//! Approvals from Slack on the real server: the approval message is posted
//! to the simulated Slack with the connector, its buttons are clicked the
//! way Slack delivers clicks (a signed `block_actions` callback), and the
//! run follows. Requests Slack did not sign, strangers, a requester
//! approving their own run and a click on an old stage's message are
//! refused, and every refusal is audited. Each click's outcome is posted to
//! its `response_url` — replacing the buttons, or to the clicker alone —
//! and only under the configured base. The signature scheme is also
//! checked against Slack's official Python SDK.

use std::process::Command;
use std::time::Duration;

use connectors::slack::ApprovalButton;
use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};
use test_support::slack_sim::{SignedInteraction, SlackSim, block_actions, sign_interaction};

use crate::harness::{
    Server, Workspace, event, http_runbook, refusal_records, refused_total, skip, timeline, which,
};

const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";
const BOT_TOKEN: &str = "xoxb-tests-bot-token";
const CHANNEL: &str = "C0APPROVALS";
const ALICE: &str = "U0ALICE001";
const KIM: &str = "U0KIM00001";
const INTERACTIONS: &str = "/v1/hooks/slack/interactions";

const DIRECTORY: &str = "time_zone: UTC
people:
  - { id: kim, name: Kim Kowalski, chat: { slack: U0KIM00001 } }
  - { id: alice, name: Alice Admin, chat: { slack: U0ALICE001 } }
  - { id: bob, name: Bob Byte }
";

/// A Slack-enabled opsgate in front of a target that counts its calls.
struct Setup {
    server: Server,
    workspace: Workspace,
    target: Scripted,
    target_server: test_support::Running,
    slack: SlackSim,
    _slack_server: test_support::Running,
}

async fn setup() -> Setup {
    let target = Scripted::default();
    target.on("POST /restart", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let slack = SlackSim::new(BOT_TOKEN, &[CHANNEL]);
    let slack_server = slack.start().await.unwrap();
    let mut workspace = Workspace::new();
    let runbook = http_runbook(
        "spooler",
        "spooler",
        &[("restart", "POST", "/restart", "")],
        "",
    )
    .replace("approval: auto", "approval: required");
    workspace.add_runbook("r.yaml", &runbook);
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(&directory, DIRECTORY).unwrap();
    workspace.config_yaml = Some(format!(
        "directory: {}\nslack:\n  signing_secret: env:TESTS_SLACK_SIGNING_SECRET\n  bot_token: env:TESTS_SLACK_BOT_TOKEN\n  channel: {CHANNEL}\n  api_url: {url}/api\n  response_url_base: {url}/actions/\n",
        directory.display(),
        url = slack_server.url,
    ));
    workspace.env = vec![
        ("TESTS_SLACK_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
        ("TESTS_SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
    ];
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    Setup {
        server,
        workspace,
        target,
        target_server,
        slack,
        _slack_server: slack_server,
    }
}

impl Setup {
    /// A run kim asked for, awaiting approval, once opsgate has posted its
    /// approval request to the channel; returns the run id.
    async fn run_awaiting_approval(&self, dedup_key: &str) -> String {
        self.run_requested_by("kim", dedup_key).await
    }

    /// A run `requester` asked for, as [`Setup::run_awaiting_approval`].
    async fn run_requested_by(&self, requester: &str, dedup_key: &str) -> String {
        let mut event = event("spooler", dedup_key);
        event["fields"]["requested_by"] = json!(requester);
        let report = self.server.event(&event).await;
        assert_eq!(report["state"], "awaiting_approval", "{report:#}");
        let run_id = report["run_id"].as_str().unwrap().to_owned();
        let posted = crate::harness::eventually(Duration::from_secs(10), || {
            self.slack.posted().iter().any(|message| {
                message.channel == CHANNEL
                    && message.body["text"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(&run_id)
            })
        })
        .await;
        assert!(
            posted,
            "opsgate asked the channel: {:#?}",
            self.slack.posted()
        );
        run_id
    }

    /// The `value` of the button `action_id` on the message posted for `run_id`.
    fn button(&self, run_id: &str, action_id: &str) -> String {
        let posted = self.slack.posted();
        let message = posted
            .iter()
            .find(|message| message.body["text"].as_str().unwrap().contains(run_id))
            .expect("a message for the run");
        let elements = message.body["blocks"][2]["elements"].as_array().unwrap();
        let button = elements
            .iter()
            .find(|element| element["action_id"] == action_id)
            .expect("the button");
        button["value"].as_str().unwrap().to_owned()
    }

    /// `user_id` clicks `action_id` on `run_id`'s message, as Slack delivers
    /// it (with a `response_url` on the simulator).
    async fn click(&self, user_id: &str, run_id: &str, action_id: &str) -> (u16, Value) {
        let value = self.button(run_id, action_id);
        let payload = self.slack.block_actions(user_id, action_id, &value);
        self.deliver(&payload).await
    }

    /// Posts a signed interaction as it was signed.
    async fn post_signed(&self, signed: &SignedInteraction) -> (u16, Value) {
        self.post(
            &signed.body,
            Some(&signed.timestamp),
            Some(&signed.signature),
        )
        .await
    }

    /// Posts `payload` signed, as Slack delivers it.
    async fn deliver(&self, payload: &Value) -> (u16, Value) {
        let signed = sign_interaction(SIGNING_SECRET, jiff::Timestamp::now().as_second(), payload);
        self.post_signed(&signed).await
    }

    /// The answer posted to the `response_url` of the `nth` click (from 1),
    /// once it arrives.
    async fn response_to_click(&self, nth: usize) -> Value {
        let path = format!("/actions/T0SIMTEAM/{nth}/");
        let answered = || {
            self.slack
                .responses()
                .into_iter()
                .find(|response| response.path.starts_with(&path))
        };
        let arrived =
            crate::harness::eventually(Duration::from_secs(10), || answered().is_some()).await;
        assert!(
            arrived,
            "an answer to click {nth}: {:#?}",
            self.slack.responses()
        );
        answered().unwrap().body
    }

    async fn post(
        &self,
        body: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{INTERACTIONS}", self.server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
        if let Some(timestamp) = timestamp {
            request = request.header("X-Slack-Request-Timestamp", timestamp);
        }
        if let Some(signature) = signature {
            request = request.header("X-Slack-Signature", signature);
        }
        let response = request.send().await.expect("reach opsgate");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn state(&self, run_id: &str) -> String {
        let run = self.server.get(&format!("/v1/runs/{run_id}")).await;
        run["state"].as_str().unwrap().to_owned()
    }

    /// The run's `approval.refused` records as (actor, reason).
    async fn refusals(&self, run_id: &str) -> Vec<(String, String)> {
        let run = self.server.get(&format!("/v1/runs/{run_id}")).await;
        timeline(&run)
            .into_iter()
            .filter(|(kind, _, _)| kind == "approval.refused")
            .map(|(_, actor, detail)| {
                (
                    actor,
                    detail["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn text(answer: &Value) -> &str {
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    answer["text"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn alice_approves_from_slack_and_the_run_executes() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-1").await;
    let (status, answer) = setup.click(ALICE, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("You approved run"), "{answer}");
    let run = setup.server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(setup.target.calls("POST /restart"), 1);
    let approved: Vec<(String, String, Value)> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind.starts_with("approval."))
        .collect();
    assert!(
        approved.iter().any(|(_, actor, _)| actor == "user:alice"),
        "decided as alice, the directory's person: {approved:#?}"
    );
    // The channel hears how it ended.
    let told = crate::harness::eventually(Duration::from_secs(10), || {
        setup.slack.posted().iter().any(|message| {
            let text = message.body["text"].as_str().unwrap_or_default();
            text.contains(&run_id) && text.contains("Automation succeeded.")
        })
    })
    .await;
    assert!(told, "{:#?}", setup.slack.posted());
}

#[tokio::test]
async fn an_approval_replaces_the_buttons_with_who_approved() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-7").await;
    let (status, answer) = setup.click(ALICE, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    let response = setup.response_to_click(1).await;
    assert_eq!(response["replace_original"], true, "{response:#}");
    let text = response["text"].as_str().unwrap();
    assert!(
        text.starts_with("Approved by Alice Admin (stage `approval`, 1 of 1); the run is now "),
        "{text}"
    );
    assert!(
        response["blocks"][0]["text"]["text"] == text,
        "the buttons give way to the text: {response:#}"
    );
    assert_eq!(setup.server.wait(&run_id).await["state"], "succeeded");
}

#[tokio::test]
async fn a_refused_click_is_told_to_the_clicker_alone() {
    let setup = setup().await;
    setup.workspace.create_token("kim", "approver");
    let run_id = setup.run_awaiting_approval("SLACK-8").await;
    // Kim asked for the run; she cannot approve it.
    let (status, answer) = setup.click(KIM, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    let response = setup.response_to_click(1).await;
    assert_eq!(response["response_type"], "ephemeral", "{response:#}");
    assert_eq!(response["replace_original"], false, "{response:#}");
    let text = response["text"].as_str().unwrap();
    assert!(
        text.starts_with("Refused: ") && text.contains("separation of duties"),
        "{text}"
    );
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
}

#[tokio::test]
async fn a_response_url_off_the_configured_base_is_not_followed() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-9").await;
    // Signed as Slack signs, but answering it would post to the target.
    let value = setup.button(&run_id, "approve");
    let mut elsewhere = setup.slack.block_actions(KIM, "approve", &value);
    elsewhere["response_url"] = json!(format!(
        "{}/actions/T0SIMTEAM/1/stolen",
        setup.target_server.url
    ));
    let (status, answer) = setup.deliver(&elsewhere).await;
    assert_eq!(status, 200, "{answer}");
    // A second click is answered on the simulator, so the first was handled.
    setup.click(KIM, &run_id, "approve").await;
    setup.response_to_click(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        setup.target.calls("POST /actions/T0SIMTEAM/1/stolen"),
        0,
        "nothing was posted off the base"
    );
    assert!(
        setup
            .slack
            .responses()
            .iter()
            .all(|response| !response.path.starts_with("/actions/T0SIMTEAM/1/")),
        "{:#?}",
        setup.slack.responses()
    );
}

#[tokio::test]
async fn the_deny_button_denies() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-2").await;
    let (status, answer) = setup.click(ALICE, &run_id, "deny").await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("You denied run"), "{answer}");
    assert_eq!(setup.state(&run_id).await, "denied");
    let response = setup.response_to_click(1).await;
    assert_eq!(response["replace_original"], true, "{response:#}");
    assert_eq!(
        response["text"],
        "Denied by Alice Admin (stage `approval`); the run is now denied."
    );
    assert_eq!(setup.target.calls("POST /restart"), 0);
}

#[tokio::test]
async fn requests_slack_did_not_sign_are_refused_and_audited() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-3").await;
    let value = setup.button(&run_id, "approve");
    let payload = block_actions(ALICE, "approve", &value);
    let now = jiff::Timestamp::now().as_second();
    let fresh = sign_interaction(SIGNING_SECRET, now, &payload);
    let old = sign_interaction(SIGNING_SECRET, now - 6 * 60, &payload);
    let forged = sign_interaction("not-the-signing-secret", now, &payload);
    let tampered_body = fresh.body.replace(ALICE, "U0MALLORY1");
    let future = (now + 6 * 60).to_string();
    // (case, body, (timestamp, signature) headers, what the refusal says)
    let cases = [
        ("unsigned", &fresh.body, None, "header"),
        (
            "tampered",
            &tampered_body,
            Some((&fresh.timestamp, &fresh.signature)),
            "does not match",
        ),
        (
            "wrong secret",
            &fresh.body,
            Some((&forged.timestamp, &forged.signature)),
            "does not match",
        ),
        (
            "six minutes old",
            &old.body,
            Some((&old.timestamp, &old.signature)),
            "timestamp",
        ),
        (
            "future",
            &fresh.body,
            Some((&future, &fresh.signature)),
            "timestamp",
        ),
    ];
    for (case, body, headers, reason) in cases {
        let (timestamp, signature) = headers.unzip();
        let (status, answer) = setup
            .post(
                body,
                timestamp.map(String::as_str),
                signature.map(String::as_str),
            )
            .await;
        assert_eq!(status, 401, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{case}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{case}: {message}");
    }
    // The genuine request passes once; the same request again is a replay.
    let (status, answer) = setup.post_signed(&fresh).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = setup.post_signed(&fresh).await;
    assert_eq!(status, 401, "a replay: {answer}");

    // Refusals of one kind (two signatures that do not match, two
    // timestamps out of the window) are audited once in full and counted;
    // the counts are written when the server stops.
    let mut setup = setup;
    setup.server.stop().await;
    let refused: Vec<Value> = refusal_records(&setup.workspace.database_url())
        .into_iter()
        .filter(|record| record["detail"]["route"] == INTERACTIONS)
        .collect();
    assert_eq!(refused_total(&refused), 6, "{refused:#?}");
    for record in &refused {
        assert_eq!(record["detail"]["status"], 401);
        let detail = record["detail"].to_string();
        assert!(!detail.contains(SIGNING_SECRET), "{detail}");
    }
}

#[tokio::test]
async fn a_slack_user_outside_the_directory_is_the_wrong_person() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-4").await;
    let (status, answer) = setup.click("U0STRANGER", &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("wrong person"), "{answer}");
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
    let refusals = setup.refusals(&run_id).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0, "slack:U0STRANGER");
    assert!(
        refusals[0].1.contains("not a person in the directory"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn a_person_without_the_approver_role_cannot_approve_from_slack() {
    // kim is a person of the directory with a Slack id, but holds no
    // approver token: a button gives her no power she does not have.
    let setup = setup().await;
    let run_id = setup.run_requested_by("bob", "SLACK-ROLE").await;
    let (status, answer) = setup.click(KIM, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        text(&answer).contains("does not hold the approver role"),
        "{answer}"
    );
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
    let refusals = setup.refusals(&run_id).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0, "user:kim");
    assert_eq!(setup.target.calls("POST /restart"), 0);
}

#[tokio::test]
async fn the_requester_cannot_approve_their_own_run_from_slack() {
    let setup = setup().await;
    // kim holds the approver role too; she still asked for this run.
    setup.workspace.create_token("kim", "approver");
    let run_id = setup.run_awaiting_approval("SLACK-5").await;
    let (status, answer) = setup.click(KIM, &run_id, "approve").await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("separation of duties"), "{answer}");
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
    let refusals = setup.refusals(&run_id).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0, "user:kim");
    assert_eq!(setup.target.calls("POST /restart"), 0);
}

#[tokio::test]
async fn a_click_for_another_stage_is_refused_like_a_stale_link() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-6").await;
    let stale = ApprovalButton {
        run: run_id.clone(),
        stage: "an-earlier-stage".to_owned(),
    };
    let payload = block_actions(ALICE, "approve", &stale.to_value());
    let signed = sign_interaction(SIGNING_SECRET, jiff::Timestamp::now().as_second(), &payload);
    let (status, answer) = setup.post_signed(&signed).await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("an-earlier-stage"), "{answer}");
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
    let refusals = setup.refusals(&run_id).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0, "user:alice");
}

/// Runs `script` with `python3`, giving it `input` on stdin; `None` when
/// python3 or slack_sdk is missing (the caller skips).
fn python_with_slack_sdk(script: &str, input: &Value) -> Option<Value> {
    which("python3")?;
    let probe = Command::new("python3")
        .args(["-c", "import slack_sdk.signature"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("python3 ran");
    assert!(output.status.success(), "the Python check failed");
    Some(serde_json::from_slice(&output.stdout).expect("JSON from python3"))
}

/// Verifies each case's signature with the SDK's `SignatureVerifier`, and
/// makes one with its `generate_signature`, at the case's own clock.
const SDK_CHECK: &str = r#"
import json, sys
from slack_sdk.signature import SignatureVerifier

class At:
    def __init__(self, now):
        self.at = now
    def now(self):
        return self.at

cases = json.load(sys.stdin)
answers = []
for case in cases:
    verifier = SignatureVerifier(case["secret"], clock=At(int(case["timestamp"])))
    answers.append({
        "valid": verifier.is_valid(body=case["body"], timestamp=case["timestamp"], signature=case["signature"]),
        "sdk_signature": verifier.generate_signature(timestamp=case["timestamp"], body=case["body"]),
    })
json.dump(answers, sys.stdout)
"#;

#[tokio::test]
async fn our_signatures_and_the_official_sdks_agree() {
    let test = "slack::our_signatures_and_the_official_sdks_agree";
    // Random bodies and secrets, some with characters that need encoding.
    let seed = jiff::Timestamp::now().as_nanosecond() as u64 | 1;
    let mut random = Bytes(seed);
    let cases: Vec<Value> = (0..40)
        .map(|n| {
            let secret = hex::encode(random.take(16));
            let text: String = random
                .take(1 + n * 7)
                .iter()
                .map(|byte| char::from(b' ' + byte % 95))
                .chain("é→✓".chars().take(n % 4))
                .collect();
            let payload = block_actions("U0RANDOM01", "approve", &text);
            let signed = sign_interaction(&secret, 1_700_000_000 + n as i64, &payload);
            let ours = connectors::slack::slack_signature(secret.as_bytes(), &signed.timestamp, signed.body.as_bytes());
            assert_eq!(ours, signed.signature, "the simulator signs as the server verifies");
            json!({"secret": secret, "timestamp": signed.timestamp, "body": signed.body, "signature": ours})
        })
        .collect();
    let Some(answers) = python_with_slack_sdk(SDK_CHECK, &json!(cases)) else {
        skip(
            test,
            "python3 with the slack_sdk package is not installed (pip install slack_sdk)",
        );
        return;
    };
    for (case, answer) in cases.iter().zip(answers.as_array().unwrap()) {
        assert_eq!(
            answer["valid"], true,
            "seed {seed}: the SDK accepts ours: {case}"
        );
        assert_eq!(
            answer["sdk_signature"], case["signature"],
            "seed {seed}: ours accepts the SDK's: {case}"
        );
    }

    // And the real server takes a callback the SDK signed.
    let setup = setup().await;
    let body = sign_interaction(
        SIGNING_SECRET,
        0,
        &block_actions(ALICE, "open_approval_page", ""),
    )
    .body;
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let check = json!([{"secret": SIGNING_SECRET, "timestamp": timestamp, "body": body, "signature": "v0=00"}]);
    let sdk_signature =
        python_with_slack_sdk(SDK_CHECK, &check).expect("python3 ran before")[0]["sdk_signature"]
            .as_str()
            .unwrap()
            .to_owned();
    let (status, answer) = setup
        .post(&body, Some(&timestamp), Some(&sdk_signature))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = setup.post(&body, Some(&timestamp), Some("v0=00")).await;
    assert_eq!(status, 401);
}

/// Pseudo-random bytes (xorshift), from a seed the failure messages name.
struct Bytes(u64);

impl Bytes {
    fn take(&mut self, count: usize) -> Vec<u8> {
        (0..count)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

#[tokio::test]
async fn a_click_is_taken_once_however_its_signature_is_written() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-REPLAY").await;
    let value = setup.button(&run_id, "approve");
    let payload = block_actions(ALICE, "approve", &value);
    let signed = sign_interaction(SIGNING_SECRET, jiff::Timestamp::now().as_second(), &payload);
    let hex_digits = signed.signature.strip_prefix("v0=").unwrap();

    let (status, answer) = setup.post_signed(&signed).await;
    assert_eq!(status, 200, "{answer}");
    let run = setup.server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");

    let replays = [
        (
            "hex upper-cased",
            format!("v0={}", hex_digits.to_uppercase()),
            "already used",
        ),
        ("the same header", signed.signature.clone(), "already used"),
        ("prefix upper-cased", format!("V0={hex_digits}"), "v0=<hex>"),
    ];
    for (case, replayed, reason) in replays {
        let (status, answer) = setup
            .post(&signed.body, Some(&signed.timestamp), Some(&replayed))
            .await;
        assert_eq!(status, 401, "{case}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{case}: {message}");
    }
    let run = setup.server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(
        crate::harness::count_of(&run, "approval.granted"),
        1,
        "{run:#}"
    );
    assert_eq!(
        setup.target.calls("POST /restart"),
        1,
        "the target was called once"
    );
}

#[tokio::test]
async fn an_interaction_must_be_a_form() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-MEDIA").await;
    let value = setup.button(&run_id, "approve");
    let payload = block_actions(ALICE, "approve", &value);
    let signed = sign_interaction(SIGNING_SECRET, jiff::Timestamp::now().as_second(), &payload);
    for content_type in ["application/json", "text/plain"] {
        let response = reqwest::Client::new()
            .post(format!("{}{INTERACTIONS}", setup.server.base))
            .header("content-type", content_type)
            .header("X-Slack-Request-Timestamp", &signed.timestamp)
            .header("X-Slack-Signature", &signed.signature)
            .body(signed.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["error"]["code"], "unsupported_media_type",
            "{answer}"
        );
    }
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
    // Declared as Slack declares it, the same click counts.
    let (status, answer) = setup.post_signed(&signed).await;
    assert_eq!(status, 200, "{answer}");
}

/// A genuine click, signed by Slack, sent to the interactions route of
/// another source (one with no buttons, one not configured, one that walks
/// the path) is not taken anywhere, and does not use up its signature: at
/// Slack's own route it then decides once.
#[tokio::test]
async fn a_click_counts_only_at_its_own_platforms_route() {
    let setup = setup().await;
    let run_id = setup.run_awaiting_approval("SLACK-9").await;
    let value = setup.button(&run_id, "approve");
    let payload = setup.slack.block_actions(ALICE, "approve", &value);
    let signed = sign_interaction(SIGNING_SECRET, jiff::Timestamp::now().as_second(), &payload);
    for route in [
        "/v1/hooks/pagerduty/interactions",
        "/v1/hooks/teams/interactions",
        "/v1/hooks/freshservice/interactions",
        "/v1/hooks/..%2Fslack/interactions",
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}{route}", setup.server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", &signed.timestamp)
            .header("X-Slack-Signature", &signed.signature)
            .body(signed.body.clone())
            .send()
            .await
            .expect("reach opsgate");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 404, "{route}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found", "{route}: {answer}");
    }
    assert_eq!(setup.state(&run_id).await, "awaiting_approval");
    let (status, answer) = setup.post_signed(&signed).await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("You approved run"), "{answer}");
    let (status, answer) = setup.post_signed(&signed).await;
    assert_eq!(status, 401, "a replay: {answer}");
}
