//! `POST /v1/hooks/pagerduty`: PagerDuty's Events API v2.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| opsgate_fuzz::hear("pagerduty", body));
