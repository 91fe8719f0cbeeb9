//! `POST /v1/hooks/alertmanager` and `/v1/hooks/grafana`: Alertmanager's
//! webhook (version 4) and Grafana's contact point, one parser with a
//! version each; every body is heard by both.
//!
//! A resolved alert must never start a run: each event heard is active
//! exactly when its own alert (one event per alert, in order) is firing,
//! whatever the group's status says.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for source in ["alertmanager", "grafana"] {
        let events = opsgate_fuzz::hear(source, body);
        if events.is_empty() {
            continue;
        }
        let Some(webhook) = opsgate_fuzz::as_json(body) else {
            continue;
        };
        let alerts = webhook["alerts"].as_array().expect("heard, so alerts");
        assert_eq!(events.len(), alerts.len(), "one event per alert");
        for (event, alert) in events.iter().zip(alerts) {
            assert_eq!(
                event.status.is_active(),
                alert["status"] == "firing",
                "{source}: {alert} became {:?}",
                event.status
            );
        }
    }
});
