//! What an event's fields reach after it is read: the runbooks' `match`
//! rules, planning (templates rendered with the event, values encoded
//! into URLs), the policy input built from the plan and the event, and
//! the Rego policies judging it — `runtime::dry_run`, the pure part of
//! intake, over the example runbooks and policies. The bytes are read as
//! `POST /v1/events` reads them.

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
    let examples = opsgate_fuzz::examples();
    let dry_run = runtime::dry_run(
        &examples.catalog,
        &examples.template_env,
        None,
        Some(&examples.policies),
        event,
    );
    if let Some(plan) = &dry_run.plan {
        assert!(
            dry_run.decision.is_some() || dry_run.message.contains("policies could not decide"),
            "a plan without a decision: {}",
            dry_run.message
        );
        assert_eq!(Some(&plan.runbook_id), dry_run.matched.as_ref());
    }
});
