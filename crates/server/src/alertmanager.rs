//! Prometheus Alertmanager's webhook (payload version 4) → events.
//!
//! One event per alert. The alert's fingerprint is its identity across
//! re-sends, so it becomes the dedup key; its own `status` (not the
//! group's) says firing or resolved, since one webhook can mix both.

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Webhook {
    version: String,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    group_key: String,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    labels: Map<String, Value>,
    #[serde(default)]
    annotations: Map<String, Value>,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// Label names that say which machine or service an alert is about, in
/// order of preference.
const SUBJECT_LABELS: [&str; 5] = ["subject", "device", "instance", "host", "service"];

/// Checks the whole webhook and turns it into events, or says what is wrong
/// (and with which alert) without producing any.
pub(crate) fn to_events(webhook: Webhook) -> Result<Vec<NewEvent>, String> {
    if webhook.version != "4" {
        return Err(format!(
            "unsupported Alertmanager payload version `{}`: expected \"4\"",
            webhook.version
        ));
    }
    let mut events = Vec::with_capacity(webhook.alerts.len());
    for (index, alert) in webhook.alerts.into_iter().enumerate() {
        let status = match alert.status.as_str() {
            "firing" => EventStatus::Firing,
            "resolved" => EventStatus::Resolved,
            other => {
                return Err(format!(
                    "alerts[{index}].status is `{other}`: expected firing or resolved"
                ));
            }
        };
        if alert.fingerprint.trim().is_empty() {
            return Err(format!("alerts[{index}].fingerprint is empty"));
        }
        let label = |name: &str| {
            alert
                .labels
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let Some(alertname) = label("alertname") else {
            return Err(format!("alerts[{index}].labels has no `alertname`"));
        };
        let subject = SUBJECT_LABELS
            .iter()
            .find_map(|name| label(name))
            .unwrap_or_else(|| alert.fingerprint.clone());
        let mut fields = json!({
            "labels": alert.labels,
            "annotations": alert.annotations,
            "starts_at": alert.starts_at,
            "ends_at": alert.ends_at,
            "generator_url": alert.generator_url,
            "fingerprint": alert.fingerprint,
            "receiver": webhook.receiver,
            "external_url": webhook.external_url,
            "group_key": webhook.group_key,
        });
        if let Some(environment) = label("environment").or_else(|| label("env")) {
            fields["environment"] = json!(environment);
        }
        events.push(NewEvent {
            source: "alertmanager".to_owned(),
            kind: alertname,
            dedup_key: format!("alertmanager:{}", alert.fingerprint),
            subject,
            fields,
            status,
        });
    }
    Ok(events)
}
