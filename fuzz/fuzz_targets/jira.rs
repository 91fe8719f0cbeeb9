//! `POST /v1/hooks/jira`: Jira's issue webhook, as read once its
//! `X-Hub-Signature` held (the signature is `webhook_signatures`').
//!
//! Where the issue *is* says whether it fires: an issue in the done
//! category resolves, whatever changed, so a label edited on a closed
//! issue never starts a run.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let events = opsgate_fuzz::hear("jira", body);
    let Some(event) = events.first() else {
        return;
    };
    assert_eq!(events.len(), 1, "one event per webhook");
    let Some(webhook) = opsgate_fuzz::as_json(body) else {
        return;
    };
    let category = &webhook["issue"]["fields"]["status"]["statusCategory"]["key"];
    assert_eq!(
        event.status.is_active(),
        *category != "done",
        "an issue of category {category} became {:?}",
        event.status
    );
});
