//! `POST /v1/hooks/jira`: Jira's issue webhook, as read once its
//! `X-Hub-Signature` held (the signature is `webhook_signatures`').

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| opsgate_fuzz::hear("jira", body));
