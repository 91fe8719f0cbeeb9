//! Prometheus Alertmanager's webhook (payload version 4) and Grafana's
//! webhook contact point (the same shape as version 1, with a title, a
//! message and links per alert) → events.
//!
//! One event per alert. The alert's fingerprint is its identity across
//! re-sends, so it becomes the dedup key; its own `status` (not the
//! group's) says firing or resolved, since one webhook can mix both. The
//! whole webhook is checked before any of it is taken in, and the sender
//! is answered with a report per alert.
//!
//! Both are event sources that need no configuration: their routes,
//! `/v1/hooks/alertmanager` and `/v1/hooks/grafana`, are always served to
//! a source of that name.

use std::sync::Arc;

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::seam::{Answer, BoxFuture, EventSource, Heard, People, SourceError, parse_json};

/// Alertmanager's webhook receiver, heard.
pub(crate) fn alertmanager() -> Arc<dyn EventSource> {
    Arc::new(Sender::Alertmanager)
}

/// Grafana's webhook contact point, heard.
pub(crate) fn grafana() -> Arc<dyn EventSource> {
    Arc::new(Sender::Grafana)
}

impl EventSource for Sender {
    fn name(&self) -> &'static str {
        Sender::name(*self)
    }

    fn heard<'a>(
        &'a self,
        body: &'a [u8],
        _people: &'a dyn People,
    ) -> BoxFuture<'a, Result<Heard, SourceError>> {
        Box::pin(async move {
            let webhook: Webhook = parse_json(body)?;
            let events = to_events(webhook, *self).map_err(|message| SourceError::Invalid {
                code: "invalid_webhook",
                message,
            })?;
            Ok(Heard {
                events,
                answer: Answer::Each,
            })
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    version: String,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    group_key: String,
    alerts: Vec<Alert>,
    /// Grafana's: the notification's title and message, and the org.
    #[serde(default)]
    title: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    org_id: Option<i64>,
}

/// Who sent a webhook of this shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Alertmanager,
    Grafana,
}

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::Alertmanager => "alertmanager",
            Sender::Grafana => "grafana",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Sender::Alertmanager => "4",
            Sender::Grafana => "1",
        }
    }
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
    /// Grafana's: links to silence the alert and to its dashboard and
    /// panel, and the values that fired it.
    #[serde(default, rename = "silenceURL")]
    silence_url: Option<String>,
    #[serde(default, rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(default, rename = "panelURL")]
    panel_url: Option<String>,
    #[serde(default)]
    values: Option<Value>,
}

/// Label names that say which machine or service an alert is about, in
/// order of preference.
const SUBJECT_LABELS: [&str; 5] = ["subject", "device", "instance", "host", "service"];

/// Checks the whole webhook and turns it into events, or says what is wrong
/// (and with which alert) without producing any.
fn to_events(webhook: Webhook, sender: Sender) -> Result<Vec<NewEvent>, String> {
    if webhook.version != sender.version() {
        return Err(format!(
            "unsupported {} payload version `{}`: expected \"{}\"",
            match sender {
                Sender::Alertmanager => "Alertmanager",
                Sender::Grafana => "Grafana webhook",
            },
            webhook.version,
            sender.version()
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
        if sender == Sender::Grafana {
            fields["title"] = json!(webhook.title);
            fields["message"] = json!(webhook.message);
            fields["org_id"] = json!(webhook.org_id);
            fields["silence_url"] = json!(alert.silence_url);
            fields["dashboard_url"] = json!(alert.dashboard_url);
            fields["panel_url"] = json!(alert.panel_url);
            fields["values"] = json!(alert.values);
        }
        events.push(NewEvent {
            source: sender.name().to_owned(),
            kind: alertname,
            dedup_key: format!("{}:{}", sender.name(), alert.fingerprint),
            subject,
            fields,
            // When it started firing, or (resolved) when it stopped.
            occurred_at: crate::event_time::rfc3339(if status.is_active() {
                &alert.starts_at
            } else {
                &alert.ends_at
            }),
            status,
        });
    }
    Ok(events)
}
