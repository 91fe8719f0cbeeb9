//! Reading an integration's config section: its own keys, strictly, and
//! secrets by reference.
//!
//! Each integration owns its section (`servicenow:`, `jira:`, …) as a
//! serde type of its folder; [`crate::registry`] hands it the section's
//! value. A secret is never written in the config file: a section names
//! it as `env:NAME` or `file:PATH`, and [`secret`] reads it.

use serde::de::DeserializeOwned;

use crate::{Error, Secret};

/// `value` read as the section `T` of integration `name`, every key
/// known: a mistyped key is an error naming the section and the key.
pub fn read<T: DeserializeOwned>(name: &str, value: &serde_json::Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let at = if path == "." || path.is_empty() {
            name.to_owned()
        } else {
            format!("{name}.{path}")
        };
        Error::Config {
            at,
            message: error.into_inner().to_string(),
        }
    })
}

/// Whether `value` reads as the section `T` of integration `name`, every
/// key known, without resolving any secret: what a config file is checked
/// against when it loads.
pub fn check<T: DeserializeOwned>(name: &str, value: &serde_json::Value) -> Result<(), Error> {
    read::<T>(name, value).map(drop)
}

/// The secret `reference` names (`env:NAME`, `file:PATH`), read for the
/// config key `at` (`servicenow.basic.password`), which an error names.
pub fn secret(at: &str, reference: &str) -> Result<Secret, Error> {
    resolve_secret(reference).map_err(|message| Error::Config {
        at: at.to_owned(),
        message,
    })
}

/// The secret `reference` names: the environment variable of `env:NAME`,
/// or the file of `file:PATH` without its trailing line ending. A secret
/// written in place, or an empty one, is refused.
pub fn resolve_secret(reference: &str) -> Result<Secret, String> {
    let secret = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|error| format!("reading {path}: {error}"))?
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    } else {
        return Err(
            "a secret is given by reference, `env:NAME` or `file:PATH`, never inline".to_owned(),
        );
    };
    if secret.is_empty() {
        return Err(format!("the secret `{reference}` refers to is empty"));
    }
    Ok(Secret::new(secret))
}

/// A timeout given in whole seconds, or `default` seconds.
pub fn seconds(given: Option<u64>, default: u64) -> std::time::Duration {
    std::time::Duration::from_secs(given.unwrap_or(default))
}
