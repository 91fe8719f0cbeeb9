//! `POST /v1/hooks/alertmanager` and `/v1/hooks/grafana`: Alertmanager's
//! webhook (version 4) and Grafana's contact point, one parser with a
//! version each; every body is heard by both.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    opsgate_fuzz::hear("alertmanager", body);
    opsgate_fuzz::hear("grafana", body);
});
