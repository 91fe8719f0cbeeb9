//! `on_failure`: what a failed run does to its ticket is checked at load.

use std::path::Path;

use crate::MINIMAL;

fn diagnostics(on_failure: &str) -> Vec<String> {
    let text = format!("{MINIMAL}on_failure: {on_failure}\n");
    match runbook::parse_runbook(Path::new("runbook.yaml"), &text, connectors::STEP_ACTIONS) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{} [hint: {}]",
                    d.message,
                    d.hint.clone().unwrap_or_default()
                )
            })
            .collect(),
    }
}

#[test]
fn a_resolver_group_and_a_known_state_or_a_state_number_load() {
    for good in [
        "{ escalate_to: \"group:endpoint-l2\", ticket_state: needs_human }",
        "{ ticket_state: on_hold }",
        "{ ticket_state: \"2\" }",
    ] {
        assert_eq!(diagnostics(good), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn anything_else_is_refused_saying_what_is_expected() {
    assert_eq!(
        diagnostics("{ escalate_to: \"user:carol\" }"),
        [
            "`user:carol` in `escalate_to` in `on_failure` is not a group [hint: write the resolver group as `group:NAME`]"
        ]
    );
    assert_eq!(
        diagnostics("{ ticket_state: resolved }"),
        [
            "`resolved` in `ticket_state` in `on_failure` is not a ticket state [hint: one of needs_human, new, in_progress, on_hold, or the state's number in the ticket system]"
        ]
    );
}
