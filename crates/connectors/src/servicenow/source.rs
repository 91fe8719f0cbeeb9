//! ServiceNow as an event source: `POST /v1/hooks/servicenow`, called by a
//! business rule (or a flow) on the instance when an incident or a
//! requested item is created or updated.
//!
//! ServiceNow has no fixed format for outbound calls, so opsgate publishes
//! its own contract, small on purpose: which record changed, not what it
//! holds.
//!
//! ```json
//! {"table": "incident", "sys_id": "<32 hex digits>", "number": "INC0012345",
//!  "operation": "insert", "changed": ["state", "short_description"],
//!  "sys_mod_count": "3", "sys_updated_by": "abel.tuter"}
//! ```
//!
//! `sys_updated_by` is who made the change, as the business rule sees it
//! (`current.sys_updated_by`, a user name). A change made by the user
//! opsgate writes as — its work notes, its resolution, its reassignment —
//! becomes an event marked `changed_by_opsgate`, which never starts a run.
//! It is taken from the notification, not from the record read back: by
//! then someone else may have changed the record again, and their change
//! would be taken for opsgate's (or opsgate's for theirs). A rule that
//! leaves it out is still heard; intake's one run per problem then holds
//! opsgate's own updates back.
//!
//! It is signed like any source opsgate trusts (`X-Opsgate-Source`,
//! `X-Opsgate-Timestamp`, `X-Opsgate-Signature`: an HMAC-SHA256 of
//! `"<timestamp>.<body>"` under the source's shared secret), checked by the
//! server on the raw bytes before this reads them. opsgate then reads the
//! record itself through the Table API, with display values, and its CI
//! and caller: what a runbook sees is the instance's own data at that
//! moment, not what a script chose to send. The record becomes an event of
//! source `servicenow`; a record that is resolved, closed or cancelled (or
//! deleted) resolves it, which withdraws a run still waiting for approval.
//!
//! ServiceNow being unreachable when the call comes is answered 503 (with
//! its `Retry-After`, when it gave one): nothing is stored, and the sender
//! may try again. docs/servicenow.md has the business rule to paste in.

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ServiceNow;
use crate::seam::{
    BoxFuture, CHANGED_BY_OPSGATE, EventSource, Heard, People, SourceError, parse_json,
};

/// ServiceNow's business rule, heard.
pub(crate) struct Source {
    pub(crate) client: ServiceNow,
    /// The user name opsgate writes as (the section's `basic` or `oauth`
    /// user).
    pub(crate) writes_as: String,
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
            notification
                .check()
                .map_err(|message| SourceError::Invalid {
                    code: "invalid_notification",
                    message,
                })?;
            let mut event = to_event(&self.client, &notification, people).await?;
            if let Some(updated_by) = &notification.sys_updated_by {
                event.fields["updated_by"] = json!(updated_by);
                // User names are matched ignoring case, as the instance does.
                if !self.writes_as.is_empty() && updated_by.eq_ignore_ascii_case(&self.writes_as) {
                    event.fields[CHANGED_BY_OPSGATE] = json!(true);
                }
            }
            Ok(Heard::one(Some(event)))
        })
    }
}

/// The tables whose records can start runs, with the event kind each gives
/// and the states that mean the work is over.
const TABLES: &[(&str, &str, &[&str])] = &[
    ("incident", "incident", &["6", "7", "8"]),
    ("sc_req_item", "request", &["3", "4", "7"]),
];

/// What the business rule sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Notification {
    table: String,
    sys_id: String,
    number: String,
    operation: String,
    #[serde(default)]
    changed: Vec<String>,
    /// The record's update count: two updates of a record within one
    /// second would otherwise sign the same bytes, and a signature is
    /// accepted once.
    #[serde(default)]
    sys_mod_count: Option<String>,
    /// Who made the change: the user name the instance records.
    #[serde(default)]
    sys_updated_by: Option<String>,
}

impl Notification {
    /// The contract's own rules, before anything is read: what is wrong,
    /// and where.
    fn check(&self) -> Result<(), String> {
        if !TABLES.iter().any(|(table, _, _)| *table == self.table) {
            let known: Vec<&str> = TABLES.iter().map(|(table, _, _)| *table).collect();
            return Err(format!(
                "table is `{}`: expected one of {}",
                self.table,
                known.join(", ")
            ));
        }
        if !super::is_sys_id(&self.sys_id) {
            return Err(format!(
                "sys_id is `{}`: expected 32 hexadecimal digits",
                self.sys_id
            ));
        }
        if self.number.trim().is_empty() || self.number.len() > 40 {
            return Err("number must be the record's number, such as INC0012345".to_owned());
        }
        if !matches!(self.operation.as_str(), "insert" | "update" | "delete") {
            return Err(format!(
                "operation is `{}`: expected insert, update or delete",
                self.operation
            ));
        }
        Ok(())
    }
}

/// Reads the record `notification` names, with its CI and caller, and
/// makes it an event. The caller, found in the directory by email, becomes
/// `fields.requested_by` (whom separation of duties keeps from approving).
async fn to_event(
    servicenow: &ServiceNow,
    notification: &Notification,
    people: &dyn People,
) -> Result<NewEvent, SourceError> {
    let (_, kind, closed_states) = TABLES
        .iter()
        .find(|(table, _, _)| *table == notification.table)
        .expect("checked by Notification::check");
    let dedup_key = format!("servicenow:{}", notification.number);
    if notification.operation == "delete" {
        return Ok(NewEvent {
            source: "servicenow".to_owned(),
            kind: (*kind).to_owned(),
            dedup_key,
            subject: notification.number.clone(),
            fields: json!({"ticket": notification.number, "ticket_table": notification.table}),
            status: EventStatus::Resolved,
            occurred_at: None,
        });
    }
    let record = servicenow
        .get(&notification.table, &notification.sys_id)
        .await
        .map_err(|error| unreadable(&notification.table, &notification.number, error))?;
    if value(&record, "number") != notification.number {
        return Err(SourceError::Invalid {
            code: "invalid_notification",
            message: format!(
                "number is `{}` but record {} of {} is numbered `{}`",
                notification.number,
                notification.sys_id,
                notification.table,
                value(&record, "number")
            ),
        });
    }
    let mut fields = Map::new();
    fields.insert("ticket".into(), json!(notification.number));
    fields.insert("ticket_table".into(), json!(notification.table));
    fields.insert("sys_id".into(), json!(notification.sys_id));
    fields.insert("operation".into(), json!(notification.operation));
    fields.insert("changed".into(), json!(notification.changed));
    if let Some(count) = &notification.sys_mod_count {
        fields.insert("sys_mod_count".into(), json!(count));
    }
    for field in [
        "short_description",
        "description",
        "category",
        "priority",
        "impact",
        "urgency",
    ] {
        if let Some(field_value) = record.get(field) {
            fields.insert(field.into(), json!(display(field_value)));
        }
    }
    fields.insert("state".into(), json!(display(&record["state"])));
    fields.insert("state_value".into(), json!(value(&record, "state")));
    fields.insert(
        "assignment_group".into(),
        json!(display(&record["assignment_group"])),
    );
    // How a person resolved it: what shadow mode compares with what
    // opsgate would have done.
    for field in ["close_code", "close_notes", "resolved_at"] {
        let field_value = value(&record, field);
        if !field_value.is_empty() {
            fields.insert(field.into(), json!(field_value));
        }
    }
    let resolved_by = display(&record["resolved_by"]);
    if !resolved_by.is_empty() {
        fields.insert("resolved_by".into(), json!(resolved_by));
    }
    let mut subject = notification.number.clone();
    let ci = value(&record, "cmdb_ci");
    if !ci.is_empty() {
        let ci_record = servicenow
            .get("cmdb_ci", ci)
            .await
            .map_err(|error| unreadable("cmdb_ci", ci, error))?;
        let name = display(&ci_record["name"]);
        if !name.is_empty() {
            subject = name.to_owned();
        }
        fields.insert(
            "ci".into(),
            json!({
                "sys_id": ci,
                "name": name,
                "fqdn": display(&ci_record["fqdn"]),
                "ip_address": display(&ci_record["ip_address"]),
                "class": display(&ci_record["sys_class_name"]),
            }),
        );
    }
    // The person the ticket is for: an incident's caller, an item's
    // requested-for.
    let person = ["caller_id", "requested_for"]
        .into_iter()
        .map(|field| value(&record, field))
        .find(|sys_id| !sys_id.is_empty());
    if let Some(user) = person {
        let user_record = servicenow
            .get("sys_user", user)
            .await
            .map_err(|error| unreadable("sys_user", user, error))?;
        let email = display(&user_record["email"]);
        fields.insert("caller".into(), json!(display(&user_record["name"])));
        fields.insert(
            "caller_user_name".into(),
            json!(display(&user_record["user_name"])),
        );
        fields.insert("caller_email".into(), json!(email));
        if let Some(person) = (!email.is_empty())
            .then(|| people.by_email(email))
            .flatten()
        {
            fields.insert("requested_by".into(), json!(person));
        }
    }
    let status = if closed_states.contains(&value(&record, "state")) {
        EventStatus::Resolved
    } else {
        EventStatus::Firing
    };
    Ok(NewEvent {
        source: "servicenow".to_owned(),
        kind: (*kind).to_owned(),
        dedup_key,
        subject,
        fields: Value::Object(fields),
        status,
        // The change the notification reports happened when the record
        // was last updated.
        occurred_at: crate::event_time::servicenow(value(&record, "sys_updated_on")),
    })
}

/// A field's database value in a record read with `sysparm_display_value=all`.
fn value<'r>(record: &'r Value, field: &str) -> &'r str {
    record[field]["value"].as_str().unwrap_or_default()
}

/// A field's label (a choice's label, a reference's display value).
fn display(field: &Value) -> &str {
    field["display_value"].as_str().unwrap_or_default()
}

fn unreadable(table: &str, id: &str, error: crate::WriteError) -> SourceError {
    SourceError::unreadable("ServiceNow", &format!("{table} {id}"), error)
}
