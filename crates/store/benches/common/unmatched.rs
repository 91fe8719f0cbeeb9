//! The event both benchmarks store: an alert that matches no runbook, as
//! intake stores it (the event and two audit records, no run). Included
//! by each benchmark (`#[path]`), as benches share no library of their own.

use domain::{Event, EventStatus};
use jiff::Timestamp;
use serde_json::json;
use store::{AuditEntry, Disposition, Intake};

/// Unmatched alert `name`, received at `now`.
pub fn unmatched_intake(name: &str, now: Timestamp) -> Intake {
    let event = Event {
        id: format!("event-{name}"),
        source: "alertmanager".into(),
        kind: "VpnDown".into(),
        dedup_key: format!("vpn-down-{name}"),
        subject: "edge-1".into(),
        fields: json!({"severity": "critical", "device": "edge-1"}),
        status: EventStatus::Firing,
        received_at: now,
        occurred_at: None,
    };
    Intake {
        records: vec![
            AuditEntry::new(
                "event.received",
                "opsgate",
                json!({"source": "alertmanager"}),
            ),
            AuditEntry::new("event.no_match", "opsgate", json!({"runbooks": 3})),
        ],
        event,
        disposition: Disposition::NoMatch,
        detail: Some("no runbook matches".into()),
        recurrence_key: None,
        requester: Some("source:alertmanager".into()),
        run: None,
        one_run_per_problem: None,
        earlier_run_records: None,
    }
}
