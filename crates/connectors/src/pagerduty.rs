//! PagerDuty Events v2-shaped events → one event.
//!
//! `trigger` fires, `resolve` resolves (and withdraws a run still waiting
//! for approval, like a resolved alert), `acknowledge` means a person has
//! taken the incident and changes nothing here. The `routing_key` is the
//! sender's integration key: opsgate authenticates senders itself, so it is
//! neither checked nor kept.

//!
//! An event source that needs no configuration: its route,
//! `/v1/hooks/pagerduty`, is always served to a source of that name, and
//! answers as PagerDuty's Events API does (`status`, `message`,
//! `dedup_key`), with opsgate's report beside them.

use std::sync::Arc;

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::seam::{Answer, BoxFuture, EventSource, Heard, People, SourceError, parse_json};

/// PagerDuty Events v2, heard.
pub(crate) fn source() -> Arc<dyn EventSource> {
    Arc::new(Source)
}

struct Source;

impl EventSource for Source {
    fn name(&self) -> &'static str {
        "pagerduty"
    }

    fn heard<'a>(
        &'a self,
        body: &'a [u8],
        _people: &'a dyn People,
    ) -> BoxFuture<'a, Result<Heard, SourceError>> {
        Box::pin(async move {
            let event: Event = parse_json(body)?;
            let (dedup_key, event) = to_event(event).map_err(|message| SourceError::Invalid {
                code: "invalid_event",
                message,
            })?;
            let mut fields = serde_json::Map::new();
            fields.insert("status".into(), json!("success"));
            fields.insert("message".into(), json!("Event processed"));
            fields.insert("dedup_key".into(), json!(dedup_key));
            Ok(Heard {
                events: event.into_iter().collect(),
                answer: Answer::Fields(fields),
            })
        })
    }
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    #[allow(dead_code, reason = "read by serde, deliberately never kept")]
    routing_key: String,
    event_action: String,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    payload: Option<Payload>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    client_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    summary: String,
    source: String,
    severity: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    custom_details: Option<Value>,
}

const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// The event's dedup key and, for `trigger` and `resolve`, the event to
/// take in; or what is wrong, and where.
fn to_event(event: Event) -> Result<(String, Option<NewEvent>), String> {
    let status = match event.event_action.as_str() {
        "trigger" => EventStatus::Firing,
        "resolve" => EventStatus::Resolved,
        "acknowledge" => {
            let dedup_key = required_key(&event)?;
            return Ok((dedup_key, None));
        }
        other => {
            return Err(format!(
                "event_action is `{other}`: expected trigger, acknowledge or resolve"
            ));
        }
    };
    if status == EventStatus::Resolved {
        let dedup_key = required_key(&event)?;
        let new = NewEvent {
            source: "pagerduty".to_owned(),
            kind: "alert".to_owned(),
            dedup_key: format!("pagerduty:{dedup_key}"),
            subject: dedup_key.clone(),
            fields: json!({"dedup_key": dedup_key}),
            status,
            occurred_at: None,
        };
        return Ok((dedup_key, Some(new)));
    }
    let Some(payload) = event.payload else {
        return Err("payload is missing: a trigger needs summary, source and severity".to_owned());
    };
    if payload.summary.trim().is_empty() {
        return Err("payload.summary is empty".to_owned());
    }
    if payload.source.trim().is_empty() {
        return Err("payload.source is empty".to_owned());
    }
    if !SEVERITIES.contains(&payload.severity.as_str()) {
        return Err(format!(
            "payload.severity is `{}`: expected one of {}",
            payload.severity,
            SEVERITIES.join(", ")
        ));
    }
    // Without a key of the sender's, one trigger per source and summary.
    let dedup_key = event
        .dedup_key
        .filter(|key| !key.trim().is_empty())
        .unwrap_or_else(|| {
            domain::sha256_hex(format!("{}\n{}", payload.source, payload.summary).as_bytes())
        });
    let fields = json!({
        "summary": payload.summary,
        "severity": payload.severity,
        "timestamp": payload.timestamp,
        "component": payload.component,
        "group": payload.group,
        "class": payload.class,
        "custom_details": payload.custom_details,
        "client": event.client,
        "client_url": event.client_url,
        "dedup_key": dedup_key,
    });
    let new = NewEvent {
        source: "pagerduty".to_owned(),
        kind: payload.class.clone().unwrap_or_else(|| "alert".to_owned()),
        dedup_key: format!("pagerduty:{dedup_key}"),
        subject: payload.source,
        fields,
        status,
        occurred_at: payload
            .timestamp
            .as_deref()
            .and_then(crate::event_time::rfc3339),
    };
    Ok((dedup_key, Some(new)))
}

fn required_key(event: &Event) -> Result<String, String> {
    event
        .dedup_key
        .clone()
        .filter(|key| !key.trim().is_empty())
        .ok_or_else(|| format!("dedup_key is required to {}", event.event_action))
}
