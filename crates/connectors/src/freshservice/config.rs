//! The `freshservice:` section of the config, and what it plugs in: the
//! event source of `/v1/hooks/freshservice` and the ticket system runs
//! write back to, both over one API v2 client.
//!
//! ```yaml
//! freshservice:
//!   base_url: https://acme.freshservice.com
//!   api_key: env:FRESHSERVICE_API_KEY
//!   timeout_seconds: 30
//! ```

use std::sync::Arc;

use serde::Deserialize;

use super::{Freshservice, FreshserviceConfig};
use crate::seam::Parts;
use crate::section::{read, seconds, secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// `https://<domain>.freshservice.com`.
    pub base_url: String,
    /// An agent's API key, by reference (`env:NAME`, `file:PATH`).
    pub api_key: String,
    /// Seconds each call may take (default 30).
    pub timeout_seconds: Option<u64>,
}

pub(crate) fn build(section: &serde_json::Value) -> crate::Result<Parts> {
    let section: Section = read(super::NAME, section)?;
    let client = Freshservice::new(FreshserviceConfig {
        base_url: section.base_url.clone(),
        api_key: secret("freshservice.api_key", &section.api_key)?,
        timeout: seconds(section.timeout_seconds, 30),
    })?;
    Ok(Parts {
        source: Some(Arc::new(super::source::Source {
            client: client.clone(),
        })),
        ticket_system: Some(Arc::new(super::desk::Desk { client })),
        ..Parts::default()
    })
}
