//! `POST /v1/hooks/freshservice`: opsgate's contract for Freshservice's
//! Workflow Automator (the ticket it names is read back from a desk that
//! is not there).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    opsgate_fuzz::hear("freshservice", body);
});
