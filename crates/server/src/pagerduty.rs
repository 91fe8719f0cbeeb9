//! PagerDuty Events v2-shaped events → one event.
//!
//! `trigger` fires, `resolve` resolves (and withdraws a run still waiting
//! for approval, like a resolved alert), `acknowledge` means a person has
//! taken the incident and changes nothing here. The `routing_key` is the
//! sender's integration key: opsgate authenticates senders itself, so it is
//! neither checked nor kept.

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
pub(crate) struct Event {
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
pub(crate) fn to_event(event: Event) -> Result<(String, Option<NewEvent>), String> {
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
