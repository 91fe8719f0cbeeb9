//! `POST /v1/hooks/pagerduty`: PagerDuty's Events API v2. A `trigger`
//! fires, a `resolve` resolves, an `acknowledge` is no event: whatever
//! else the body holds, the action alone says which.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let events = opsgate_fuzz::hear("pagerduty", body);
    let Some(event) = events.first() else {
        return;
    };
    assert_eq!(events.len(), 1, "one event per call");
    let Some(sent) = opsgate_fuzz::as_json(body) else {
        return;
    };
    let action = &sent["event_action"];
    assert_eq!(
        event.status.is_active(),
        *action == "trigger",
        "{action} became {:?}",
        event.status
    );
    assert!(
        *action == "trigger" || *action == "resolve",
        "{action} became an event"
    );
});
