//! The chat-completions classifier against the simulated model endpoint:
//! the request it sends, the answers it takes, and every way of getting
//! no suggestion — each with what was sent and received, and never the
//! key.

use std::sync::Arc;
use std::time::Duration;

use connectors::{
    Candidate, Classifier, ClassifyFailure, ClassifyFailureKind, Suggestion, TriageRequest,
};
use serde_json::{Value, json};
use test_support::Running;
use test_support::chat_completions_sim::{Behaviour, ChatCompletionsSim, user_message};

const KEY: &str = "sk-sim-0123456789abcdef";
const MODEL: &str = "triage-model-1";

struct Endpoint {
    sim: ChatCompletionsSim,
    server: Running,
    /// Holds the key file.
    dir: tempfile::TempDir,
}

async fn endpoint() -> Endpoint {
    let sim = ChatCompletionsSim::new(KEY, MODEL);
    let server = sim.start().await.expect("the simulator starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("key"), format!("{KEY}\n")).expect("write the key");
    Endpoint { sim, server, dir }
}

impl Endpoint {
    /// The classifier a `chat_completions:` section with `settings` (over
    /// the endpoint's URL, model and key file) builds.
    fn classifier(&self, settings: Value) -> Arc<dyn Classifier> {
        let mut section = json!({
            "url": format!("{}/v1", self.server.url),
            "model": MODEL,
            "api_key": format!("file:{}", self.dir.path().join("key").display()),
        });
        for (key, value) in settings.as_object().expect("settings are an object") {
            section[key] = value.clone();
        }
        let sections = [("chat_completions".to_owned(), section)].into();
        let integrations = connectors::registry::build(&sections).expect("the section builds");
        integrations
            .classifier()
            .expect("a classifier is plugged in")
            .clone()
    }
}

fn request() -> TriageRequest {
    TriageRequest {
        text: "Nothing prints\nJobs sit in the queue on LAPTOP-0101 since this morning".to_owned(),
        fields: serde_json::Map::from_iter([
            ("category".to_owned(), json!("Hardware")),
            ("ticket".to_owned(), json!("INC0031001")),
        ]),
        candidates: vec![
            Candidate {
                id: "clear-print-queue".to_owned(),
                title: "Restart the print spooler on a managed endpoint".to_owned(),
                risk: "reversible".to_owned(),
                description: "Print jobs stuck on one laptop.".to_owned(),
                inputs_schema: json!({"type": "object", "required": ["device_id"], "additionalProperties": false,
                    "properties": {"device_id": {"type": "string", "pattern": "^[A-Z0-9-]{3,32}$", "maxLength": 32}}}),
            },
            Candidate {
                id: "grant-vpn-access".to_owned(),
                title: "Add a person to the VPN-Users group".to_owned(),
                risk: "reversible".to_owned(),
                description: "A person needs VPN access.".to_owned(),
                inputs_schema: json!({"type": "object", "required": ["user"],
                    "properties": {"user": {"type": "string"}}}),
            },
        ],
    }
}

/// The answer a careful model gives the printing ticket.
fn queue_answer(confidence: Value) -> Value {
    json!({
        "runbook": "clear-print-queue",
        "inputs": {"device_id": "LAPTOP-0101", "user": null},
        "confidence": confidence,
        "rationale": "Jobs stay in the queue on one laptop.",
    })
}

/// Nothing of the key in anything kept.
#[track_caller]
fn keyless(failure_or_suggestion: &str) {
    assert!(
        !failure_or_suggestion.contains(KEY) && !failure_or_suggestion.contains("0123456789abcdef"),
        "the key leaked: {failure_or_suggestion}"
    );
}

#[tokio::test]
async fn a_good_answer_is_a_suggestion_with_its_exchange() {
    let endpoint = endpoint().await;
    endpoint.sim.script(|messages| {
        assert!(user_message(messages).contains("LAPTOP-0101"));
        queue_answer(json!(0.91))
    });
    let classifier = endpoint.classifier(json!({"min_confidence": 0.85}));
    assert_eq!(classifier.name(), "chat_completions");
    assert_eq!(classifier.min_confidence(), 0.85);
    let suggestion = classifier.classify(&request()).await.expect("a suggestion");
    let Suggestion {
        runbook,
        inputs,
        confidence,
        rationale,
        exchange,
    } = &suggestion;
    assert_eq!(runbook.as_deref(), Some("clear-print-queue"));
    assert_eq!(
        Value::Object(inputs.clone()),
        json!({"device_id": "LAPTOP-0101"})
    );
    assert_eq!(*confidence, 0.91);
    assert_eq!(rationale, "Jobs stay in the queue on one laptop.");
    assert_eq!(exchange.model, MODEL);
    assert_eq!(exchange.prompt_version, "triage-v1");

    let received = endpoint.sim.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    // What the audit keeps is exactly what was sent.
    let body = &received[0].body;
    assert_eq!(exchange.request.as_ref(), Some(body));
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    let format = &body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["properties"]["runbook"]["enum"],
        json!(["clear-print-queue", "grant-vpn-access", null])
    );
    let answer: Value =
        serde_json::from_str(exchange.answer.as_deref().expect("the answer is kept")).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    keyless(&format!("{suggestion:?}"));
}

#[tokio::test]
async fn every_unhappy_answer_is_a_failure_of_its_kind() {
    struct Case {
        name: &'static str,
        behaviour: Behaviour,
        script: Option<Value>,
        key: Option<&'static str>,
        model: Option<&'static str>,
        check: fn(&ClassifyFailureKind) -> bool,
        /// Whether an answer came back, to be kept.
        answered: bool,
    }
    let case = |name, behaviour, check| Case {
        name,
        behaviour,
        script: None,
        key: None,
        model: None,
        check,
        answered: true,
    };
    let cases = [
        case(
            "malformed content",
            Behaviour::MalformedContent,
            |kind| matches!(kind, ClassifyFailureKind::Malformed { problem } if problem.starts_with("the content is not JSON: ")),
        ),
        case(
            "refusal",
            Behaviour::Refusal("I'm sorry, I can't help with that request.".to_owned()),
            |kind| matches!(kind, ClassifyFailureKind::Refused { text } if text == "I'm sorry, I can't help with that request."),
        ),
        case(
            "cut off",
            Behaviour::CutOff,
            |kind| matches!(kind, ClassifyFailureKind::Malformed { problem } if problem.contains("finish_reason `length`")),
        ),
        case("server error", Behaviour::ServerError, |kind| {
            matches!(kind, ClassifyFailureKind::Unavailable { status: Some(500), message }
                if message.ends_with(": 500 Internal Server Error: The server had an error while processing your request. Sorry about that! (server_error)"))
        }),
        Case {
            script: Some(
                json!({"runbook": "reboot-the-datacentre", "inputs": {}, "confidence": 0.99, "rationale": "why not"}),
            ),
            ..case("unknown runbook", Behaviour::Script, |kind| {
                matches!(kind, ClassifyFailureKind::Malformed { problem }
                    if problem == "`runbook` is `reboot-the-datacentre`, which is not one of the candidates (clear-print-queue, grant-vpn-access)")
            })
        },
        Case {
            script: Some(queue_answer(json!(1.7))),
            ..case(
                "confidence 1.7",
                Behaviour::Script,
                |kind| matches!(kind, ClassifyFailureKind::Malformed { problem } if problem == "`confidence` is 1.7, outside 0 to 1"),
            )
        },
        Case {
            key: Some("sk-wrong-key-9999"),
            ..case("wrong key", Behaviour::Script, |kind| {
                matches!(kind, ClassifyFailureKind::Unavailable { status: Some(401), message }
                    if message.ends_with("401 Unauthorized: Incorrect API key provided: sk-***9999. (invalid_request_error, invalid_api_key)"))
            })
        },
        Case {
            model: Some("no-such-model"),
            ..case(
                "unknown model",
                Behaviour::Script,
                |kind| matches!(kind, ClassifyFailureKind::Unavailable { status: Some(404), message } if message.contains("model_not_found")),
            )
        },
        Case {
            answered: false,
            ..case(
                "slow",
                Behaviour::Slow(Duration::from_secs(3)),
                |kind| matches!(kind, ClassifyFailureKind::Timeout { after } if *after == Duration::from_millis(300)),
            )
        },
    ];
    for case in cases {
        let endpoint = endpoint().await;
        endpoint.sim.behave(case.behaviour.clone());
        if let Some(script) = case.script.clone() {
            endpoint.sim.script(move |_| script.clone());
        }
        let mut settings = json!({"timeout": "300ms"});
        if let Some(model) = case.model {
            settings["model"] = json!(model);
        }
        if let Some(key) = case.key {
            std::fs::write(endpoint.dir.path().join("key"), key).unwrap();
        }
        let classifier = endpoint.classifier(settings);
        let ClassifyFailure { kind, exchange } =
            classifier.classify(&request()).await.expect_err(case.name);
        assert!((case.check)(&kind), "{}: {kind:?}", case.name);
        assert_eq!(
            endpoint.sim.calls(),
            1,
            "{}: one request, no retry",
            case.name
        );
        assert_eq!(
            exchange.request.as_ref(),
            Some(&endpoint.sim.received()[0].body),
            "{}: the request is kept",
            case.name
        );
        assert_eq!(exchange.answer.is_some(), case.answered, "{}", case.name);
        assert_eq!(
            (exchange.model.as_str(), exchange.prompt_version.as_str()),
            (case.model.unwrap_or(MODEL), "triage-v1")
        );
        keyless(&format!("{kind:?} {exchange:?}"));
    }
}

#[tokio::test]
async fn after_a_429_nothing_is_sent_until_retry_after_has_passed() {
    let endpoint = endpoint().await;
    endpoint.sim.script(|_| queue_answer(json!(0.9)));
    endpoint.sim.behave(Behaviour::RateLimited {
        retry_after_seconds: 1,
    });
    let classifier = endpoint.classifier(json!({}));
    let failure = classifier
        .classify(&request())
        .await
        .expect_err("rate limited");
    assert!(
        matches!(&failure.kind, ClassifyFailureKind::RateLimited { retry_after, sent: true, message }
            if *retry_after == Duration::from_secs(1) && message.contains("429 Too Many Requests: Rate limit reached")),
        "{:?}",
        failure.kind
    );
    assert!(failure.exchange.answer.is_some());
    // The endpoint is fine again, but the client waits as it was told.
    endpoint.sim.behave(Behaviour::Script);
    for _ in 0..5 {
        let failure = classifier
            .classify(&request())
            .await
            .expect_err("still backing off");
        assert!(
            matches!(&failure.kind, ClassifyFailureKind::RateLimited { retry_after, sent: false, .. } if *retry_after <= Duration::from_secs(1)),
            "{:?}",
            failure.kind
        );
        assert_eq!(failure.exchange.request, None, "nothing was sent");
        assert_eq!(failure.exchange.answer, None);
    }
    assert_eq!(
        endpoint.sim.calls(),
        1,
        "no call arrived during the back-off"
    );
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let suggestion = classifier.classify(&request()).await.expect("asked again");
    assert_eq!(suggestion.runbook.as_deref(), Some("clear-print-queue"));
    let received = endpoint.sim.received();
    assert_eq!(received.len(), 2);
    assert!(received[1].at.duration_since(received[0].at) >= Duration::from_secs(1));
}

#[tokio::test]
async fn the_rate_bound_is_kept_without_asking() {
    let endpoint = endpoint().await;
    endpoint.sim.script(|_| queue_answer(json!(0.9)));
    let classifier = endpoint.classifier(json!({"max_per_minute": 2}));
    for _ in 0..2 {
        classifier
            .classify(&request())
            .await
            .expect("within the bound");
    }
    let failure = classifier
        .classify(&request())
        .await
        .expect_err("over the bound");
    assert!(
        matches!(&failure.kind, ClassifyFailureKind::RateLimited { sent: false, message, retry_after }
            if message.contains("max_per_minute") && *retry_after > Duration::from_secs(59)),
        "{:?}",
        failure.kind
    );
    assert_eq!(endpoint.sim.calls(), 2);
}

#[tokio::test]
async fn an_endpoint_that_is_not_there_is_unavailable() {
    let endpoint = endpoint().await;
    let classifier = endpoint.classifier(json!({}));
    let url = endpoint.server.url.clone();
    drop(endpoint.server);
    // Nothing listens there once the server has stopped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let failure = classifier
        .classify(&request())
        .await
        .expect_err("unavailable");
    assert!(
        matches!(&failure.kind, ClassifyFailureKind::Unavailable { status: None, message }
            if message.starts_with(&format!("POST {url}/v1/chat/completions failed: "))),
        "{:?}",
        failure.kind
    );
    assert!(failure.exchange.request.is_some());
    assert_eq!(failure.exchange.answer, None);
}
