//! Triage: a ticket no runbook's rules took, read by the configured
//! classifier, which may suggest the runbook that would fix it.
//!
//! The rules stay first: a runbook's `match` is deterministic and
//! reviewed, and only an event none of them matched is triaged (the
//! caller checks). The classifier is told the ticket — its text, its
//! other fields, its source, kind and subject — and every runbook of the
//! catalog as a [`Candidate`]: id, title, risk, what its rules take and
//! how its inputs come from an event, and its inputs schema.
//!
//! Its answer is sorted by one threshold: the classifier's
//! `min_confidence`, raised by the runbook's own `guardrails.min_confidence`
//! when that is higher (a runbook that asks agents to be surer asks
//! triage too). At or above it the suggestion is to be proposed, from
//! [`TRIAGE_ACTOR`], through the same plan, policy and approvals as any
//! agent's proposal; below it, it is only written to the ticket
//! ([`suggestion_note`]) and nothing runs. A failure — a timeout, a rate
//! limit, a refusal, an answer that makes no sense — gives no suggestion.
//!
//! Every triage is one audit record, `triage.suggested` or
//! `triage.failed`, with the model, the prompt's version, the request sent
//! and the answer received, as the classifier reports them (it keeps no
//! credential in them). This module decides nothing else and stores
//! nothing: the caller records the entry with the event and makes the
//! proposal or the note.

use std::sync::Arc;

use connectors::{
    Candidate, Classifier, ClassifyFailure, ClassifyFailureKind, Exchange, Suggestion,
    TriageRequest,
};
use domain::{Event, RecordKind};
use runbook::{Catalog, ConditionTest, Runbook};
use serde_json::{Map, Value, json};
use store::AuditEntry;

use crate::Runtime;

/// Who triage's suggestions come from: an agent, which may propose and
/// never approve.
pub const TRIAGE_ACTOR: &str = "agent:triage";

/// The fields a ticket's words are in, as the event sources name them
/// (a title, then a description), read in this order.
const TEXT_FIELDS: &[&str] = &[
    "short_description",
    "subject",
    "summary",
    "title",
    "description",
    "description_text",
];

/// Triage, one of the runtime's services: a ticket no runbook's rules
/// took, given to the configured classifier.
#[derive(Clone, Copy)]
pub struct Triage<'r>(pub(crate) &'r Runtime);

impl Triage<'_> {
    /// The classifier the config plugged in, if any.
    pub fn classifier(&self) -> Option<&Arc<dyn Classifier>> {
        self.0.integrations().classifier()
    }

    /// What the classifier makes of `event` against the catalog; `None`
    /// when no classifier is configured.
    pub async fn classify(&self, event: &Event) -> Option<Triaged> {
        let classifier = self.classifier()?;
        Some(triage(classifier.as_ref(), self.0.catalog(), event).await)
    }
}

impl Runtime {
    /// Triages `event`, which no runbook's rules took, in the background:
    /// the event is stored and answered already, and a slow or failing
    /// model holds nothing up.
    pub(crate) fn spawn_triage(&self, event: Event) {
        let runtime = self.clone();
        tokio::spawn(async move {
            if let Err(error) = runtime.triage().take(event).await {
                tracing::warn!(error = %error, "triage could not finish");
            }
        });
    }
}

impl Triage<'_> {
    /// Triages `event` and does what the outcome says: records what the
    /// classifier said; proposes a confident suggestion as
    /// [`TRIAGE_ACTOR`] — through the same plan, policy and approvals as
    /// any agent's proposal —; writes a less confident one to the ticket;
    /// and otherwise does nothing more.
    pub async fn take(&self, event: Event) -> crate::Result<()> {
        let Some(triaged) = self.classify(&event).await else {
            return Ok(());
        };
        self.0
            .audit_log()
            .append(None, std::slice::from_ref(&triaged.record))
            .await?;
        match triaged.outcome {
            TriageOutcome::Propose(suggested) => {
                let agent = domain::Principal::new(
                    TRIAGE_ACTOR.trim_start_matches("agent:"),
                    domain::Role::Agent,
                );
                match self
                    .0
                    .proposals()
                    .propose(proposal_of(&event, &suggested), &agent)
                    .await
                {
                    Ok(report) => tracing::info!(
                        event = %event.id,
                        runbook = %suggested.runbook,
                        run_id = report.intake.run_id.as_deref().unwrap_or("-"),
                        disposition = report.intake.disposition.as_str(),
                        "triage proposed a runbook"
                    ),
                    Err(error) => tracing::warn!(
                        event = %event.id,
                        runbook = %suggested.runbook,
                        error = %error,
                        "triage's proposal was not taken"
                    ),
                }
            }
            TriageOutcome::Note { note, .. } => {
                let Some((system, ticket)) = self.0.integrations().ticket_for(&event) else {
                    return Ok(());
                };
                // The marker names the event: a retry finds the note
                // posted and does not post it twice.
                let marker = format!("[opsgate triage {}]", event.id);
                let update = connectors::TicketUpdate {
                    run_id: event.id.clone(),
                    note: Some(connectors::Note {
                        text: format!("{note}\n\n{marker}"),
                        marker,
                    }),
                    outcome: None,
                    decisions: Vec::new(),
                };
                if let Err(error) = system.write(&ticket, update).await {
                    tracing::warn!(
                        event = %event.id,
                        ticket = %ticket,
                        error = %error,
                        "triage's suggestion could not be written to the ticket"
                    );
                }
            }
            TriageOutcome::NoneFits { .. } | TriageOutcome::Failed(_) => {}
        }
        Ok(())
    }
}

/// The proposal a confident suggestion becomes: the ticket's own fields
/// (what the runbook's templates may read), the suggested inputs, what the
/// model said, and a key per problem (the event's dedup key), so an update
/// of the same ticket proposes nothing twice.
fn proposal_of(event: &Event, suggested: &Suggested) -> domain::Proposal {
    let mut fields = event.fields.as_object().cloned().unwrap_or_default();
    for reserved in domain::PROPOSAL_FIELDS {
        fields.remove(reserved);
    }
    let key: String = format!("triage:{}", event.dedup_key)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(domain::proposal_limits::MAX_IDEMPOTENCY_KEY)
        .collect();
    let rationale: String = suggested
        .rationale
        .chars()
        .take(domain::proposal_limits::MAX_RATIONALE / 4)
        .collect();
    domain::Proposal {
        runbook: Some(suggested.runbook.clone()),
        inputs: suggested.inputs.clone(),
        targets: None,
        ticket: event.fields["ticket"].as_str().map(str::to_owned),
        subject: Some(event.subject.clone()),
        fields,
        rationale: if rationale.trim().is_empty() {
            "(the model gave no rationale)".to_owned()
        } else {
            rationale
        },
        evidence: vec![domain::Evidence {
            kind: "event".to_owned(),
            url: None,
            text: Some(format!(
                "triaged from event {} ({} {} on {})",
                event.id, event.source, event.kind, event.subject
            )),
        }],
        confidence: suggested.confidence,
        model: Some(domain::Model {
            name: suggested.model.clone(),
            version: None,
        }),
        prompt_version: Some(suggested.prompt_version.clone()),
        idempotency_key: key,
    }
}

/// What triage made of a ticket, and the record that says so.
#[derive(Debug, Clone)]
pub struct Triaged {
    pub outcome: TriageOutcome,
    /// `triage.suggested` or `triage.failed`, by [`TRIAGE_ACTOR`], to be
    /// recorded with the event.
    pub record: AuditEntry,
}

/// What is to be done with a ticket triage read.
#[derive(Debug, Clone, PartialEq)]
pub enum TriageOutcome {
    /// At or above the threshold: propose it.
    Propose(Suggested),
    /// Below the threshold: write `note` to the ticket; nothing runs.
    Note { suggested: Suggested, note: String },
    /// The classifier found that no runbook fits.
    NoneFits { confidence: f64, rationale: String },
    /// The classifier gave no answer, and why: nothing more is done for
    /// this ticket (a rate limit says when asking again may help).
    Failed(ClassifyFailureKind),
}

/// A runbook triage suggests for a ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggested {
    pub runbook: String,
    pub runbook_title: String,
    /// The inputs read from the ticket, by the runbook's input names.
    pub inputs: Map<String, Value>,
    pub confidence: f64,
    /// The confidence it needed to be proposed.
    pub threshold: f64,
    pub rationale: String,
    /// The model that suggested it, and the version of the prompt it was
    /// asked with.
    pub model: String,
    pub prompt_version: String,
}

/// Asks `classifier` about `event`, a ticket none of `catalog`'s rules
/// matched.
pub async fn triage(classifier: &dyn Classifier, catalog: &Catalog, event: &Event) -> Triaged {
    let request = request_for(catalog, event);
    let answer = classifier.classify(&request).await;
    judge(classifier, catalog, event, answer)
}

/// Sorts the classifier's answer by the threshold, and words its record.
fn judge(
    classifier: &dyn Classifier,
    catalog: &Catalog,
    event: &Event,
    answer: Result<Suggestion, ClassifyFailure>,
) -> Triaged {
    let suggestion = match answer {
        Ok(suggestion) => suggestion,
        Err(ClassifyFailure { kind, exchange }) => {
            tracing::info!(
                event = %event.id,
                classifier = classifier.name(),
                failure = kind.as_str(),
                "triage gave no suggestion"
            );
            return Triaged {
                record: failed_record(classifier, event, &kind, exchange),
                outcome: TriageOutcome::Failed(kind),
            };
        }
    };
    let Some(runbook) = suggestion.runbook.as_deref().and_then(|id| catalog.get(id)) else {
        tracing::info!(
            event = %event.id,
            classifier = classifier.name(),
            confidence = suggestion.confidence,
            "triage found no runbook that fits"
        );
        let detail = suggested_detail(classifier, event, &suggestion, None, "none");
        return Triaged {
            outcome: TriageOutcome::NoneFits {
                confidence: suggestion.confidence,
                rationale: suggestion.rationale,
            },
            record: AuditEntry::new(RecordKind::TriageSuggested, TRIAGE_ACTOR, detail),
        };
    };
    let threshold = threshold_for(classifier, runbook);
    let suggested = Suggested {
        runbook: runbook.id.clone(),
        runbook_title: runbook.title.clone(),
        inputs: suggestion.inputs.clone(),
        confidence: suggestion.confidence,
        threshold,
        rationale: suggestion.rationale.clone(),
        model: suggestion.exchange.model.clone(),
        prompt_version: suggestion.exchange.prompt_version.clone(),
    };
    let propose = suggestion.confidence >= threshold;
    let disposition = if propose { "propose" } else { "note" };
    tracing::info!(
        event = %event.id,
        classifier = classifier.name(),
        runbook = %runbook.id,
        confidence = suggestion.confidence,
        threshold,
        disposition,
        "triage suggested a runbook"
    );
    let detail = suggested_detail(
        classifier,
        event,
        &suggestion,
        Some((runbook, threshold)),
        disposition,
    );
    let outcome = if propose {
        TriageOutcome::Propose(suggested)
    } else {
        TriageOutcome::Note {
            note: suggestion_note(&suggested),
            suggested,
        }
    };
    Triaged {
        outcome,
        record: AuditEntry::new(RecordKind::TriageSuggested, TRIAGE_ACTOR, detail),
    }
}

/// The confidence a suggestion of `runbook` needs to be proposed: the
/// classifier's, or the runbook's own `min_confidence` when higher.
pub fn threshold_for(classifier: &dyn Classifier, runbook: &Runbook) -> f64 {
    let own = runbook.guardrails.min_confidence.unwrap_or(0.0);
    classifier.min_confidence().max(own)
}

/// The note a ticket gets for a suggestion below its threshold: "Suggested
/// runbook X ("title"), confidence 0.62, because: …".
pub fn suggestion_note(suggested: &Suggested) -> String {
    let detail = json!({
        "runbook": suggested.runbook,
        "runbook_title": suggested.runbook_title,
        "confidence": suggested.confidence,
        "threshold": suggested.threshold,
        "rationale": suggested.rationale,
        "disposition": "note",
    });
    domain::narrate(
        domain::Told {
            kind: RecordKind::TriageSuggested,
            detail: &detail,
            actor: TRIAGE_ACTOR,
            run_id: None,
        },
        domain::Voice::Ticket,
    )
    .unwrap_or_default()
}

/// The ticket as a classifier is told of it, with every runbook of
/// `catalog` as a candidate.
pub fn request_for(catalog: &Catalog, event: &Event) -> TriageRequest {
    let mut texts: Vec<&str> = Vec::new();
    for name in TEXT_FIELDS {
        if let Some(text) = event.fields[*name].as_str().map(str::trim)
            && !text.is_empty()
            && !texts.contains(&text)
        {
            texts.push(text);
        }
    }
    let mut fields = Map::new();
    fields.insert("event.source".into(), json!(event.source));
    fields.insert("event.kind".into(), json!(event.kind));
    fields.insert("event.subject".into(), json!(event.subject));
    for (name, value) in event.fields.as_object().into_iter().flatten() {
        if !TEXT_FIELDS.contains(&name.as_str()) && !value.is_null() {
            fields.insert(name.clone(), value.clone());
        }
    }
    TriageRequest {
        text: texts.join("\n\n"),
        fields,
        candidates: catalog.iter().map(candidate).collect(),
    }
}

/// A runbook as a classifier is told of it.
pub fn candidate(runbook: &Runbook) -> Candidate {
    Candidate {
        id: runbook.id.clone(),
        title: runbook.title.clone(),
        risk: runbook.risk.as_str().to_owned(),
        description: describe(runbook),
        inputs_schema: runbook.inputs.schema.clone(),
    }
}

/// What a runbook is for, as far as its file says: its owner, the events
/// its rules take, and how its inputs are read from an event.
fn describe(runbook: &Runbook) -> String {
    let matcher = &runbook.matcher;
    let mut takes: Vec<String> = Vec::new();
    if let Some(source) = &matcher.source {
        takes.push(format!("source is {source}"));
    }
    if let Some(kind) = &matcher.kind {
        takes.push(format!("kind is {kind}"));
    }
    for condition in &matcher.when {
        takes.push(match &condition.test {
            ConditionTest::Equals(value) => format!("{} is {value}", condition.field),
            ConditionTest::OneOf(values) => format!(
                "{} is one of {}",
                condition.field,
                Value::Array(values.clone())
            ),
            ConditionTest::Exists(true) => format!("{} is given", condition.field),
            ConditionTest::Exists(false) => format!("{} is not given", condition.field),
            ConditionTest::AtLeast(minimum) => format!("{} is at least {minimum}", condition.field),
        });
    }
    let mut description = format!("Owned by {}.", runbook.owner);
    if !takes.is_empty() {
        description.push_str(&format!(
            " Its rules take events where {}.",
            takes.join(" and ")
        ));
    }
    if let Some(recurrence) = &matcher.recurrence {
        let window = jiff::SignedDuration::from_millis(
            i64::try_from(recurrence.window_ms).unwrap_or(i64::MAX),
        );
        description.push_str(&format!(
            " It runs once {} such events arrive within {window:#}.",
            recurrence.count
        ));
    }
    if !runbook.inputs.from_event.is_empty() {
        let reads: Vec<String> = runbook
            .inputs
            .from_event
            .iter()
            .map(|(name, template)| format!("{name} from {template}"))
            .collect();
        description.push_str(&format!(" From an event it reads {}.", reads.join(", ")));
    }
    description
}

/// The detail of a `triage.suggested` record; `chosen` is the runbook
/// named and its threshold, when one is.
fn suggested_detail(
    classifier: &dyn Classifier,
    event: &Event,
    suggestion: &Suggestion,
    chosen: Option<(&Runbook, f64)>,
    disposition: &str,
) -> Value {
    let mut detail = exchange_detail(classifier, event, &suggestion.exchange);
    detail.extend([
        (
            "runbook".into(),
            json!(chosen.map(|(runbook, _)| &runbook.id)),
        ),
        (
            "runbook_title".into(),
            json!(chosen.map(|(runbook, _)| &runbook.title)),
        ),
        ("inputs".into(), Value::Object(suggestion.inputs.clone())),
        ("confidence".into(), json!(suggestion.confidence)),
        (
            "threshold".into(),
            json!(
                chosen
                    .map(|(_, threshold)| threshold)
                    .unwrap_or(classifier.min_confidence())
            ),
        ),
        ("disposition".into(), json!(disposition)),
        ("rationale".into(), json!(suggestion.rationale)),
    ]);
    Value::Object(detail)
}

fn failed_record(
    classifier: &dyn Classifier,
    event: &Event,
    kind: &ClassifyFailureKind,
    exchange: Exchange,
) -> AuditEntry {
    let mut detail = exchange_detail(classifier, event, &exchange);
    detail.insert("failure".into(), json!(kind.as_str()));
    detail.insert("message".into(), json!(kind.to_string()));
    detail.insert("sent".into(), json!(exchange.request.is_some()));
    match kind {
        ClassifyFailureKind::RateLimited { retry_after, .. } => {
            detail.insert(
                "retry_after_ms".into(),
                json!(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)),
            );
        }
        ClassifyFailureKind::Unavailable { status, .. } => {
            detail.insert("status".into(), json!(status));
        }
        _ => {}
    }
    AuditEntry::new(
        RecordKind::TriageFailed,
        TRIAGE_ACTOR,
        Value::Object(detail),
    )
}

/// What every triage record holds: the event, who was asked with which
/// prompt, and the request and answer as exchanged.
fn exchange_detail(
    classifier: &dyn Classifier,
    event: &Event,
    exchange: &Exchange,
) -> Map<String, Value> {
    Map::from_iter([
        ("event".into(), json!(event.id)),
        ("classifier".into(), json!(classifier.name())),
        ("model".into(), json!(exchange.model)),
        ("prompt_version".into(), json!(exchange.prompt_version)),
        ("request".into(), json!(exchange.request)),
        ("answer".into(), json!(exchange.answer)),
    ])
}
