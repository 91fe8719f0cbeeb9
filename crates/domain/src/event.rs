//! Events: signals from the outside world, normalised.

use serde::{Deserialize, Serialize};

/// Whether the condition an event reports is still there. Only `firing` and
/// `open` events may start a run; `resolved` and `closed` never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Firing,
    Resolved,
    Open,
    Closed,
}

impl EventStatus {
    pub const ALL: &'static str = "firing, resolved, open, closed";

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Firing => "firing",
            EventStatus::Resolved => "resolved",
            EventStatus::Open => "open",
            EventStatus::Closed => "closed",
        }
    }

    /// True when the reported condition is still present, so a remediation
    /// may start.
    pub fn is_active(self) -> bool {
        matches!(self, EventStatus::Firing | EventStatus::Open)
    }

    pub fn parse(value: &str) -> crate::Result<Self> {
        match value {
            "firing" => Ok(EventStatus::Firing),
            "resolved" => Ok(EventStatus::Resolved),
            "open" => Ok(EventStatus::Open),
            "closed" => Ok(EventStatus::Closed),
            other => Err(crate::Error::UnknownVariant {
                what: "event status",
                value: other.to_owned(),
                expected: Self::ALL,
            }),
        }
    }
}

/// An event as it arrives, before the store gives it an id and a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    pub source: String,
    pub kind: String,
    pub dedup_key: String,
    pub subject: String,
    #[serde(default = "empty_object")]
    pub fields: serde_json::Value,
    pub status: EventStatus,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub kind: String,
    pub dedup_key: String,
    pub subject: String,
    pub fields: serde_json::Value,
    pub status: EventStatus,
    pub received_at: jiff::Timestamp,
}

impl Event {
    pub fn from_new(id: String, new: NewEvent, received_at: jiff::Timestamp) -> Self {
        Event {
            id,
            source: new.source,
            kind: new.kind,
            dedup_key: new.dedup_key,
            subject: new.subject,
            fields: new.fields,
            status: new.status,
            received_at,
        }
    }
}
