//! Freshservice as an event source: `POST /v1/hooks/freshservice`, called
//! by a Workflow Automator rule ("Trigger Webhook") when a ticket is
//! created or updated.
//!
//! The automator sends a JSON body built from placeholders, with custom
//! headers; it does not sign by itself. So opsgate publishes its own small
//! contract — which ticket, not what it holds — and the rule carries a
//! source token of `freshservice` as its `Authorization` header (or signs
//! like any source opsgate trusts), checked by the server before this
//! reads the body:
//!
//! ```json
//! {"ticket_id": "{{ticket.id}}", "event": "updated", "updated_at": "{{ticket.updated_at}}"}
//! ```
//!
//! `ticket_id` may come as a number or in Freshservice's display form
//! (`#INC-1001`). opsgate then reads the ticket itself through API v2, and
//! its requester: what a runbook sees is the desk's own data at that
//! moment, not what the rule chose to send. The ticket becomes an event of
//! source `freshservice`; a Resolved or Closed ticket resolves it, which
//! withdraws a run still waiting for approval and never starts one.
//! Freshservice being unreachable or rate limiting is answered 503 (with
//! its `Retry-After`): nothing is stored, and the automator may try again.
//!
//! Who made a change is not told here: the contract carries no actor, the
//! ticket read back through API v2 names its requester and its agent but
//! not who last changed it, and the config holds an API key, not the
//! agent it belongs to. So no event of this source is marked
//! `changed_by_opsgate`; opsgate's own notes and status changes coming
//! back are held back by intake's one run per problem (the ticket had a
//! run and was not resolved since), and docs/freshservice.md asks for the
//! rule's "Performed by" to leave out opsgate's agent, which stops them
//! at the source.

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Freshservice, status, ticket_number};
use crate::seam::{BoxFuture, EventSource, Heard, People, SourceError, parse_json};

/// The Workflow Automator's rule, heard.
pub(crate) struct Source {
    pub(crate) client: Freshservice,
}

/// What the rule sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Notification {
    /// The ticket's number, as a number or as `#INC-1001`.
    ticket_id: Value,
    /// What happened, in the rule's words (`created`, `updated`).
    #[serde(default)]
    event: Option<String>,
    /// When the ticket last changed: two updates of a ticket within one
    /// second would otherwise sign the same bytes, and a signature is
    /// accepted once.
    #[serde(default)]
    updated_at: Option<String>,
}

impl EventSource for Source {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn heard<'a>(
        &'a self,
        body: &'a [u8],
        people: &'a dyn People,
    ) -> BoxFuture<'a, Result<Heard, SourceError>> {
        Box::pin(async move {
            let notification: Notification = parse_json(body)?;
            let id = match &notification.ticket_id {
                Value::Number(number) => number.as_u64().filter(|number| *number > 0),
                Value::String(text) => ticket_number(text),
                _ => None,
            }
            .ok_or_else(|| SourceError::Invalid {
                code: "invalid_notification",
                message: format!(
                    "ticket_id is `{}`: expected the ticket's number, such as 1001 or #INC-1001",
                    notification.ticket_id
                ),
            })?;
            if let Some(event) = &notification.event
                && (event.len() > 64 || event.chars().any(char::is_control))
            {
                return Err(SourceError::Invalid {
                    code: "invalid_notification",
                    message: "event must be a short word, such as created or updated".to_owned(),
                });
            }
            self.to_event(id, &notification, people)
                .await
                .map(|event| Heard::one(Some(event)))
        })
    }
}

impl Source {
    /// Reads ticket `id` and its requester, and makes them an event. The
    /// requester, found in the directory by email, becomes
    /// `fields.requested_by` (whom separation of duties keeps from
    /// approving).
    async fn to_event(
        &self,
        id: u64,
        notification: &Notification,
        people: &dyn People,
    ) -> Result<NewEvent, SourceError> {
        let unreadable =
            |what: String| move |error| SourceError::unreadable("Freshservice", &what, error);
        let ticket = self
            .client
            .ticket(id)
            .await
            .map_err(unreadable(format!("ticket {id}")))?;
        if ticket["id"].as_u64() != Some(id) {
            return Err(SourceError::Invalid {
                code: "unreadable_record",
                message: format!(
                    "Freshservice answered ticket {} when asked for ticket {id}",
                    ticket["id"]
                ),
            });
        }
        let ticket_type = ticket["type"].as_str().unwrap_or("Incident");
        let (kind, prefix) = match ticket_type {
            "Incident" => ("incident".to_owned(), "INC"),
            "Service Request" => ("service_request".to_owned(), "SR"),
            other => (other.to_lowercase().replace(' ', "_"), "TKT"),
        };
        let status_value = ticket["status"].as_u64().unwrap_or_default();
        let mut fields = Map::new();
        fields.insert("ticket".into(), json!(id.to_string()));
        fields.insert("ticket_display".into(), json!(format!("#{prefix}-{id}")));
        if let Some(event) = &notification.event {
            fields.insert("event".into(), json!(event));
        }
        if let Some(updated_at) = &notification.updated_at {
            fields.insert("updated_at".into(), json!(updated_at));
        }
        for field in [
            "subject",
            "description_text",
            "priority",
            "urgency",
            "impact",
            "group_id",
            "category",
            "sub_category",
            "item_category",
            "custom_fields",
        ] {
            if let Some(value) = ticket.get(field).filter(|value| !value.is_null()) {
                fields.insert(field.into(), value.clone());
            }
        }
        fields.insert("type".into(), json!(ticket_type));
        fields.insert("status".into(), json!(status::label(status_value)));
        fields.insert("status_value".into(), json!(status_value));
        if let Some(requester_id) = ticket["requester_id"].as_u64() {
            let requester = self
                .client
                .requester(requester_id)
                .await
                .map_err(unreadable(format!("requester {requester_id}")))?;
            let name = [&requester["first_name"], &requester["last_name"]]
                .iter()
                .filter_map(|part| part.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            fields.insert("requester".into(), json!(name));
            if let Some(email) = requester["primary_email"].as_str() {
                fields.insert("requester_email".into(), json!(email));
                if let Some(person) = people.by_email(email) {
                    fields.insert("requested_by".into(), json!(person));
                }
            }
        }
        let status = if matches!(status_value, status::RESOLVED | status::CLOSED) {
            EventStatus::Resolved
        } else {
            EventStatus::Firing
        };
        Ok(NewEvent {
            source: super::NAME.to_owned(),
            kind,
            dedup_key: format!("freshservice:{id}"),
            subject: format!("#{prefix}-{id}"),
            fields: Value::Object(fields),
            status,
            // The workflow's `{{ticket.updated_at}}`, when it sends it.
            occurred_at: notification
                .updated_at
                .as_deref()
                .and_then(crate::event_time::rfc3339),
        })
    }
}
