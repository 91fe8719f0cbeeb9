//! The `servicenow:` section of the config, and what it plugs in: the
//! event source of `/v1/hooks/servicenow` and the ticket system runs
//! write back to, both over one Table API client.
//!
//! ```yaml
//! servicenow:
//!   instance_url: https://acme.service-now.com
//!   basic: { username: opsgate, password: env:SN_PASSWORD }
//!   # or oauth: { client_id, client_secret, username, password }
//!   timeout_seconds: 30
//! ```

use std::sync::Arc;

use serde::Deserialize;

use super::{ServiceNow, ServiceNowAuth, ServiceNowConfig};
use crate::seam::Parts;
use crate::section::{read, seconds, secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub instance_url: String,
    pub basic: Option<Basic>,
    pub oauth: Option<OAuth>,
    /// Seconds each call may take (default 30).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    pub username: String,
    /// By reference: `env:NAME` or `file:PATH`.
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
}

impl Section {
    /// The Table API client the section describes, its secrets read.
    pub fn client(&self) -> crate::Result<ServiceNow> {
        let auth = match (&self.basic, &self.oauth) {
            (Some(basic), None) => ServiceNowAuth::Basic {
                username: basic.username.clone(),
                password: secret("servicenow.basic.password", &basic.password)?,
            },
            (None, Some(oauth)) => ServiceNowAuth::OAuth {
                client_id: oauth.client_id.clone(),
                client_secret: secret("servicenow.oauth.client_secret", &oauth.client_secret)?,
                username: oauth.username.clone(),
                password: secret("servicenow.oauth.password", &oauth.password)?,
            },
            _ => {
                return Err(crate::Error::Config {
                    at: "servicenow".to_owned(),
                    message: "give exactly one of `basic` and `oauth`".to_owned(),
                });
            }
        };
        ServiceNow::new(ServiceNowConfig {
            instance_url: self.instance_url.clone(),
            auth,
            timeout: seconds(self.timeout_seconds, 30),
        })
    }
}

impl Section {
    /// The user opsgate writes as: what the instance records as
    /// `sys_updated_by` of its own changes.
    fn writes_as(&self) -> String {
        match (&self.basic, &self.oauth) {
            (Some(basic), _) => basic.username.clone(),
            (None, Some(oauth)) => oauth.username.clone(),
            (None, None) => String::new(),
        }
    }
}

/// Reads the section and builds what it plugs in.
pub(crate) fn build(section: &serde_json::Value) -> crate::Result<Parts> {
    let section = read::<Section>(super::NAME, section)?;
    let client = section.client()?;
    Ok(Parts {
        source: Some(Arc::new(super::source::Source {
            client: client.clone(),
            writes_as: section.writes_as(),
        })),
        ticket_system: Some(Arc::new(super::desk::Desk { client })),
        ..Parts::default()
    })
}
