//! Every integration opsgate has, by the name of its config section: the
//! one place an integration is registered.
//!
//! [`build`] reads the config's integration sections, hands each to its
//! integration's `build()`, and gathers the parts they return into
//! [`Integrations`] — what the runtime and the server are given, instead
//! of a field per vendor.

use std::collections::BTreeMap;

use crate::seam::{Integrations, Parts};

/// One integration: its section's name, and how it is built from it.
pub struct Integration {
    /// The config section (`servicenow:`), and the name its parts go by.
    pub name: &'static str,
    /// Whether it is a ticket system whose own events are about its own
    /// tickets (see [`Integrations::ticket_for`]).
    pub ticket_system: bool,
    pub build: fn(&serde_json::Value) -> crate::Result<Parts>,
    /// Whether a section reads, every key known, without resolving any
    /// secret or building anything: what a config file is checked against
    /// when it loads.
    pub check: fn(&'static str, &serde_json::Value) -> crate::Result<()>,
}

/// Every integration, in the order their parts are asked.
pub const INTEGRATIONS: &[Integration] = &[
    crate::servicenow::INTEGRATION,
    crate::jira::INTEGRATION,
    crate::freshservice::INTEGRATION,
    crate::teams::INTEGRATION,
    crate::slack::INTEGRATION,
    crate::graph::INTEGRATION,
    crate::chat_completions::INTEGRATION,
];

/// The event sources that need no configuration, always served: the
/// webhooks of monitoring systems, authenticated like any source.
const ALWAYS_ON: &[fn() -> std::sync::Arc<dyn crate::EventSource>] = &[
    crate::alertmanager::alertmanager,
    crate::alertmanager::grafana,
    crate::pagerduty::source,
];

/// Whether `name` is an integration's name.
pub fn is_integration(name: &str) -> bool {
    INTEGRATIONS
        .iter()
        .any(|integration| integration.name == name)
}

/// Whether events of source `name` come from a ticket system, and so are
/// about that system's tickets only.
pub fn is_ticket_system(name: &str) -> bool {
    INTEGRATIONS
        .iter()
        .any(|integration| integration.ticket_system && integration.name == name)
}

/// Whether every one of `sections` names an integration and reads as its
/// section: a mistyped key is an error naming `section.path` and the key.
/// Nothing is resolved or built.
pub fn check(sections: &BTreeMap<String, serde_json::Value>) -> crate::Result<()> {
    for (name, section) in sections {
        let Some(integration) = INTEGRATIONS
            .iter()
            .find(|integration| integration.name == name)
        else {
            return Err(unknown(name));
        };
        (integration.check)(integration.name, section)?;
    }
    Ok(())
}

fn unknown(name: &str) -> crate::Error {
    crate::Error::Config {
        at: name.to_owned(),
        message: format!(
            "no integration has this name (there are: {})",
            names().join(", ")
        ),
    }
}

/// The integrations the config's `sections` configure, built, with the
/// sources that need no configuration. A section
/// no integration owns is an error that lists the ones there are.
pub fn build(sections: &BTreeMap<String, serde_json::Value>) -> crate::Result<Integrations> {
    let mut integrations = Integrations {
        sources: ALWAYS_ON.iter().map(|source| source()).collect(),
        ..Integrations::default()
    };
    if let Some(name) = sections.keys().find(|name| !is_integration(name)) {
        return Err(unknown(name));
    }
    for integration in INTEGRATIONS {
        if let Some(section) = sections.get(integration.name) {
            integrations.plug((integration.build)(section)?);
        }
    }
    Ok(integrations)
}

/// Every integration's name.
pub fn names() -> Vec<&'static str> {
    INTEGRATIONS
        .iter()
        .map(|integration| integration.name)
        .collect()
}
