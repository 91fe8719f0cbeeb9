//! `POST /v1/hooks/slack/interactions`: the form body Slack posts when a
//! button is clicked (a `payload` field holding JSON), as read once its
//! signature held.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let buttons = opsgate_fuzz::integrations()
        .buttons("slack")
        .expect("the config plugs in Slack's buttons");
    let _ = buttons.read(body);
});
