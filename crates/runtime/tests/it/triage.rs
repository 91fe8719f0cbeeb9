//! Triage against the simulated model endpoint, with the example
//! runbooks: what each answer becomes — a proposal, a note for the
//! ticket, or no suggestion — and the record that says so.

use std::sync::Arc;
use std::time::Duration;

use connectors::{Classifier, ClassifyFailureKind};
use domain::{Event, EventStatus, RecordKind};
use runtime::triage::{Suggested, TRIAGE_ACTOR, TriageOutcome, Triaged, triage};
use serde_json::{Value, json};
use test_support::Running;
use test_support::chat_completions_sim::{Behaviour, ChatCompletionsSim};

const KEY: &str = "sk-sim-triage-key-4242";
const MODEL: &str = "triage-model-1";

fn catalog() -> runbook::Catalog {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/runbooks");
    let report = runbook::load_dir(&dir, connectors::STEP_ACTIONS).expect("the examples load");
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
    report.catalog
}

/// A ticket none of the example runbooks' rules takes: no signature.
fn ticket() -> Event {
    Event {
        id: "evt_triage_1".to_owned(),
        source: "servicenow".to_owned(),
        kind: "incident".to_owned(),
        dedup_key: "servicenow:INC0031001".to_owned(),
        subject: "LAPTOP-0101".to_owned(),
        fields: json!({
            "ticket": "INC0031001",
            "short_description": "Nothing prints",
            "description": "Jobs sit in the queue since this morning, the printer itself is fine.",
            "category": "Hardware",
            "caller": "Kim Kowalski",
        }),
        status: EventStatus::Open,
        received_at: jiff::Timestamp::now(),
        occurred_at: None,
    }
}

struct Endpoint {
    sim: ChatCompletionsSim,
    server: Running,
    dir: tempfile::TempDir,
}

async fn endpoint() -> Endpoint {
    connectors::install_crypto_provider();
    let sim = ChatCompletionsSim::new(KEY, MODEL);
    let server = sim.start().await.expect("the simulator starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), KEY).unwrap();
    Endpoint { sim, server, dir }
}

impl Endpoint {
    fn integrations(&self, settings: &Value) -> connectors::Integrations {
        let mut section = json!({
            "url": format!("{}/v1", self.server.url),
            "model": MODEL,
            "api_key": format!("file:{}", self.dir.path().join("key").display()),
        });
        for (key, value) in settings.as_object().unwrap() {
            section[key] = value.clone();
        }
        connectors::registry::build(&[("chat_completions".to_owned(), section)].into())
            .expect("the section builds")
    }

    fn classifier(&self, settings: &Value) -> Arc<dyn Classifier> {
        self.integrations(settings)
            .classifier()
            .expect("a classifier")
            .clone()
    }
}

fn answer(runbook: Option<&str>, inputs: Value, confidence: f64, rationale: &str) -> Value {
    json!({"runbook": runbook, "inputs": inputs, "confidence": confidence, "rationale": rationale})
}

/// What a case expects: the outcome, and the record's kind and the
/// detail fields that must hold.
struct Expect {
    outcome: TriageOutcome,
    kind: RecordKind,
    detail: Value,
    /// Whether the request went out, and an answer came back.
    sent: bool,
    answered: bool,
}

#[tokio::test]
async fn each_answer_becomes_a_proposal_a_note_or_nothing() {
    let suggested =
        |runbook: &str, title: &str, inputs: Value, confidence, threshold, why: &str| Suggested {
            runbook: runbook.to_owned(),
            runbook_title: title.to_owned(),
            inputs: inputs.as_object().unwrap().clone(),
            confidence,
            threshold,
            rationale: why.to_owned(),
            model: MODEL.to_owned(),
            prompt_version: "triage-v1".to_owned(),
        };
    let queue_title = "Restart the print spooler on a managed endpoint";
    let cases: Vec<(&str, Behaviour, Value, Value, Expect)> = vec![
        (
            "a good answer",
            Behaviour::Script,
            answer(Some("clear-print-queue"), json!({"device_id": "LAPTOP-0101"}), 0.93, "Jobs stay in the queue; the printer is fine."),
            json!({}),
            Expect {
                outcome: TriageOutcome::Propose(suggested("clear-print-queue", queue_title, json!({"device_id": "LAPTOP-0101"}), 0.93, 0.8, "Jobs stay in the queue; the printer is fine.")),
                kind: RecordKind::TriageSuggested,
                detail: json!({"runbook": "clear-print-queue", "confidence": 0.93, "threshold": 0.8, "disposition": "propose", "inputs": {"device_id": "LAPTOP-0101"}}),
                sent: true,
                answered: true,
            },
        ),
        (
            "below the threshold",
            Behaviour::Script,
            answer(Some("clear-print-queue"), json!({"device_id": "LAPTOP-0101"}), 0.62, "Jobs stay in the queue."),
            json!({}),
            Expect {
                outcome: TriageOutcome::Note {
                    suggested: suggested("clear-print-queue", queue_title, json!({"device_id": "LAPTOP-0101"}), 0.62, 0.8, "Jobs stay in the queue."),
                    note: "Suggested runbook clear-print-queue (\"Restart the print spooler on a managed endpoint\"), confidence 0.62, because: Jobs stay in the queue. That is below the threshold of 0.8, so nothing was run; a person decides.".to_owned(),
                },
                kind: RecordKind::TriageSuggested,
                detail: json!({"runbook": "clear-print-queue", "confidence": 0.62, "threshold": 0.8, "disposition": "note"}),
                sent: true,
                answered: true,
            },
        ),
        (
            "a runbook that asks agents to be surer",
            Behaviour::Script,
            answer(Some("recycle-iis-web-tier"), json!({"server": "WEB-01"}), 0.75, "The shop answers 503."),
            json!({"min_confidence": 0.6}),
            Expect {
                outcome: TriageOutcome::Note {
                    suggested: suggested("recycle-iis-web-tier", "Restart the IIS web service on a production web server", json!({"server": "WEB-01"}), 0.75, 0.8, "The shop answers 503."),
                    note: "Suggested runbook recycle-iis-web-tier (\"Restart the IIS web service on a production web server\"), confidence 0.75, because: The shop answers 503. That is below the threshold of 0.8, so nothing was run; a person decides.".to_owned(),
                },
                kind: RecordKind::TriageSuggested,
                detail: json!({"runbook": "recycle-iis-web-tier", "threshold": 0.8, "disposition": "note"}),
                sent: true,
                answered: true,
            },
        ),
        (
            "no runbook fits",
            Behaviour::Script,
            answer(None, json!({"device_id": null}), 0.9, "A password reset; no runbook does that."),
            json!({}),
            Expect {
                outcome: TriageOutcome::NoneFits { confidence: 0.9, rationale: "A password reset; no runbook does that.".to_owned() },
                kind: RecordKind::TriageSuggested,
                detail: json!({"runbook": null, "confidence": 0.9, "disposition": "none", "inputs": {}}),
                sent: true,
                answered: true,
            },
        ),
        (
            "malformed JSON",
            Behaviour::MalformedContent,
            Value::Null,
            json!({}),
            Expect {
                outcome: TriageOutcome::Failed(ClassifyFailureKind::Malformed { problem: "the content is not JSON: expected value at line 1 column 1".to_owned() }),
                kind: RecordKind::TriageFailed,
                detail: json!({"failure": "malformed", "sent": true}),
                sent: true,
                answered: true,
            },
        ),
        (
            "a refusal",
            Behaviour::Refusal("I can't help with that.".to_owned()),
            Value::Null,
            json!({}),
            Expect {
                outcome: TriageOutcome::Failed(ClassifyFailureKind::Refused { text: "I can't help with that.".to_owned() }),
                kind: RecordKind::TriageFailed,
                detail: json!({"failure": "refused", "message": "the model declined: I can't help with that."}),
                sent: true,
                answered: true,
            },
        ),
        (
            "a timeout",
            Behaviour::Slow(Duration::from_secs(3)),
            answer(None, json!({}), 0.5, "late"),
            json!({"timeout": "300ms"}),
            Expect {
                outcome: TriageOutcome::Failed(ClassifyFailureKind::Timeout { after: Duration::from_millis(300) }),
                kind: RecordKind::TriageFailed,
                detail: json!({"failure": "timeout", "sent": true, "answer": null}),
                sent: true,
                answered: false,
            },
        ),
        (
            "an unknown runbook",
            Behaviour::Script,
            answer(Some("wipe-laptop"), json!({}), 0.97, "Reinstall it."),
            json!({}),
            Expect {
                outcome: TriageOutcome::Failed(ClassifyFailureKind::Malformed { problem: "`runbook` is `wipe-laptop`, which is not one of the candidates (clear-print-queue, expand-mailbox-quota, fix-print-spooler-site, grant-vpn-access, recycle-iis-web-tier, reset-vpn-network-profile, restart-endpoint-service, shared-mailbox-access)".to_owned() }),
                kind: RecordKind::TriageFailed,
                detail: json!({"failure": "malformed"}),
                sent: true,
                answered: true,
            },
        ),
        (
            "a confidence of 1.7",
            Behaviour::Script,
            answer(Some("clear-print-queue"), json!({}), 1.7, "Very sure."),
            json!({}),
            Expect {
                outcome: TriageOutcome::Failed(ClassifyFailureKind::Malformed { problem: "`confidence` is 1.7, outside 0 to 1".to_owned() }),
                kind: RecordKind::TriageFailed,
                detail: json!({"failure": "malformed"}),
                sent: true,
                answered: true,
            },
        ),
    ];
    let catalog = catalog();
    for (name, behaviour, content, settings, expect) in cases {
        let endpoint = endpoint().await;
        endpoint.sim.behave(behaviour);
        endpoint.sim.script(move |_| content.clone());
        let classifier = endpoint.classifier(&settings);
        let Triaged { outcome, record } = triage(classifier.as_ref(), &catalog, &ticket()).await;
        assert_eq!(outcome, expect.outcome, "{name}");
        assert_eq!(record.kind, expect.kind.as_str(), "{name}");
        assert_eq!(record.actor, TRIAGE_ACTOR, "{name}");
        let detail = &record.detail;
        for (key, value) in expect.detail.as_object().unwrap() {
            assert_eq!(&detail[key], value, "{name}: detail `{key}` of {detail}");
        }
        assert_eq!(detail["event"], "evt_triage_1", "{name}");
        assert_eq!(detail["classifier"], "chat_completions", "{name}");
        assert_eq!(detail["model"], MODEL, "{name}");
        assert_eq!(detail["prompt_version"], "triage-v1", "{name}");
        assert_eq!(endpoint.sim.calls(), 1, "{name}: one request");
        if expect.sent {
            assert_eq!(detail["request"], endpoint.sim.received()[0].body, "{name}");
        }
        assert_eq!(detail["answer"].is_string(), expect.answered, "{name}");
        assert!(
            !detail.to_string().contains(KEY),
            "{name}: the key is in {detail}"
        );
    }
}

#[tokio::test]
async fn after_a_429_the_next_ticket_sends_nothing_and_is_recorded_as_such() {
    let endpoint = endpoint().await;
    endpoint.sim.behave(Behaviour::RateLimited {
        retry_after_seconds: 30,
    });
    let classifier = endpoint.classifier(&json!({}));
    let catalog = catalog();
    let first = triage(classifier.as_ref(), &catalog, &ticket()).await;
    assert_eq!(first.record.kind, RecordKind::TriageFailed.as_str());
    assert_eq!(first.record.detail["failure"], "rate_limited");
    assert_eq!(first.record.detail["sent"], true);
    assert_eq!(first.record.detail["retry_after_ms"], 30_000);
    assert!(
        first.record.detail["answer"]
            .as_str()
            .unwrap()
            .contains("rate_limit_exceeded")
    );

    endpoint.sim.behave(Behaviour::Script);
    let second = triage(classifier.as_ref(), &catalog, &ticket()).await;
    assert!(
        matches!(&second.outcome, TriageOutcome::Failed(ClassifyFailureKind::RateLimited { sent: false, message, retry_after })
            if message == "the endpoint asked for a pause (429) that has not ended: nothing sent" && *retry_after <= Duration::from_secs(30)),
        "{:?}",
        second.outcome
    );
    let detail = &second.record.detail;
    assert_eq!(detail["failure"], "rate_limited");
    assert_eq!(detail["sent"], false);
    assert_eq!(detail["request"], Value::Null);
    assert_eq!(detail["answer"], Value::Null);
    assert!(detail["retry_after_ms"].as_u64().unwrap() <= 30_000);
    assert_eq!(
        endpoint.sim.calls(),
        1,
        "nothing was sent during the back-off"
    );
}

#[tokio::test]
async fn the_request_tells_the_ticket_and_every_runbook() {
    let catalog = catalog();
    let request = runtime::triage::request_for(&catalog, &ticket());
    assert_eq!(
        request.text,
        "Nothing prints\n\nJobs sit in the queue since this morning, the printer itself is fine."
    );
    assert_eq!(
        Value::Object(request.fields.clone()),
        json!({
            "event.source": "servicenow", "event.kind": "incident", "event.subject": "LAPTOP-0101",
            "ticket": "INC0031001", "category": "Hardware", "caller": "Kim Kowalski",
        })
    );
    assert_eq!(request.candidates.len(), catalog.len());
    let spooler = request
        .candidates
        .iter()
        .find(|candidate| candidate.id == "fix-print-spooler-site")
        .unwrap();
    assert_eq!(spooler.risk, "reversible");
    assert_eq!(
        spooler.description,
        "Owned by endpoint-team. Its rules take events where source is servicenow and kind is incident and fields.signature is \"Print spooler crashed\". It runs once 5 such events arrive within 2h. From an event it reads site from {{ event.fields.site }}."
    );
    assert_eq!(
        spooler.inputs_schema["properties"]["site"]["pattern"],
        "^[A-Z]{3}-[0-9]$"
    );
}

#[tokio::test]
async fn the_runtime_triages_only_with_a_classifier() {
    let endpoint = endpoint().await;
    endpoint.sim.script(|_| {
        answer(
            Some("clear-print-queue"),
            json!({"device_id": "LAPTOP-0101"}),
            0.9,
            "Jobs stay in the queue.",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let runtime_with = |integrations: connectors::Integrations, name: &str| {
        let path = dir.path().join(name);
        async move {
            let store = store::Store::open(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            runtime::Runtime::new(
                store,
                runtime::Config {
                    catalog: catalog(),
                    template_env: runbook::TemplateEnv::default(),
                    connectors: connectors::Connectors::new(connectors::Config::default()).unwrap(),
                    lease_ttl_ms: runtime::Config::DEFAULT_LEASE_TTL_MS,
                    global_rate_limit: None,
                    shadow_principals: Vec::new(),
                    directory: None,
                    policies: None,
                    integrations,
                    approval_pages: None,
                    max_intake_in_flight: runtime::Config::DEFAULT_MAX_INTAKE_IN_FLIGHT,
                    clock: runtime::Clock::system(),
                },
            )
        }
    };
    let without = runtime_with(connectors::Integrations::default(), "a.db").await;
    assert!(without.triage().classifier().is_none());
    assert!(without.triage().classify(&ticket()).await.is_none());
    assert_eq!(endpoint.sim.calls(), 0);

    let with = runtime_with(endpoint.integrations(&json!({})), "b.db").await;
    let triaged = with.triage().classify(&ticket()).await.expect("triaged");
    assert!(matches!(
        triaged.outcome,
        TriageOutcome::Propose(Suggested { ref runbook, .. }) if runbook == "clear-print-queue"
    ));
    assert_eq!(endpoint.sim.calls(), 1);
}
