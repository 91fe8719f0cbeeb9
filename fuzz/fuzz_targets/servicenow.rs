//! `POST /v1/hooks/servicenow`: opsgate's notification contract for
//! ServiceNow's business rules (the record it names is read back from an
//! instance that is not there).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    opsgate_fuzz::hear("servicenow", body);
});
