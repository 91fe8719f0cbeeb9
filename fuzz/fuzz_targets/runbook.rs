//! The runbook loader: a runbook file's text, parsed and validated as
//! `opsgate serve` and `opsgate runbook check` load one
//! (`runbook::parse_runbook`). A runbook that loads is then matched
//! against and planned with each example event: its templates, rendered.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Files are read as UTF-8 text: other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzzed.yaml");
    let Ok(runbook) = runbook::parse_runbook(path, text, connectors::STEP_ACTIONS) else {
        return;
    };
    let examples = opsgate_fuzz::examples();
    for event in &examples.events {
        let _ = runbook.matches(event);
        let _ = runbook.plan(event, &examples.template_env);
    }
});
