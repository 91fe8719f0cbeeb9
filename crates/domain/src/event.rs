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
    /// When it happened, as the sender says (an alert's `startsAt`, a
    /// ticket's update time); the time received when not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<jiff::Timestamp>,
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
    /// When it happened, when the sender said and it is no later than
    /// `received_at` (a clock ahead of ours is not believed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<jiff::Timestamp>,
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
            occurred_at: new.occurred_at.filter(|at| *at <= received_at),
            received_at,
        }
    }

    /// The event's time, which windows, recurrences and schedules are
    /// judged in: when it happened, bounded by when it was received — so a
    /// backlog flushed after an outage, or a replay, is seen spread over
    /// the time it happened in, never in the future.
    pub fn time(&self) -> jiff::Timestamp {
        self.occurred_at.unwrap_or(self.received_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(occurred_at: Option<&str>) -> NewEvent {
        NewEvent {
            source: "s".into(),
            kind: "k".into(),
            dedup_key: "d".into(),
            subject: "x".into(),
            fields: serde_json::json!({}),
            status: EventStatus::Firing,
            occurred_at: occurred_at.map(|at| at.parse().unwrap()),
        }
    }

    #[test]
    fn an_events_time_is_when_it_happened_never_after_it_was_received() {
        let received: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let at = |event: NewEvent| Event::from_new("e".into(), event, received).time();
        assert_eq!(at(new(None)), received);
        assert_eq!(
            at(new(Some("2026-12-05T09:30:00Z"))),
            "2026-12-05T09:30:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(at(new(Some("2026-12-05T12:00:00Z"))), received);
        assert_eq!(
            at(new(Some("2026-12-05T14:00:00Z"))),
            received,
            "ahead of our clock"
        );
        let ahead = Event::from_new("e".into(), new(Some("2026-12-06T00:00:00Z")), received);
        assert_eq!(ahead.occurred_at, None, "not kept either");
    }
}
