//! `POST /v1/events`: an event in opsgate's own format (`NewEvent`), read
//! and checked as the server reads it. One that passes reads back from
//! its own JSON as the same event.

#![no_main]

use domain::NewEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(event) = runtime::parse_json::<NewEvent>(body) else {
        return;
    };
    if runtime::check_event(&event).is_err() {
        return;
    }
    let json = serde_json::to_vec(&event).expect("an event serialises");
    let again: NewEvent = runtime::parse_json(&json)
        .unwrap_or_else(|error| panic!("an event's own JSON is refused: {error}"));
    assert_eq!(again, event);
});
