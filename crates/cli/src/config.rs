//! Settings for `serve`: flags beat `OPSGATE_*` environment variables, which
//! beat the config file, which beats the defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use domain::Secret;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE: &str = "sqlite://opsgate.db";
pub const DEFAULT_RUNBOOKS: &str = "runbooks";

/// The config file (YAML). Every key is optional.
///
/// Besides opsgate's own settings, each key an integration owns
/// (`servicenow:`, `jira:`, `freshservice:`, `teams:`, `slack:`) is that
/// integration's section, which its own type reads
/// (`connectors::registry`); any other key is an error.
#[derive(Debug, Default, Deserialize)]
pub struct File {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub runbooks: Option<PathBuf>,
    pub log: Option<String>,
    pub log_format: Option<crate::serve::LogFormat>,
    pub lease_ttl_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub max_intake_in_flight: Option<usize>,
    /// Extra variables for templates' `env` (base URLs and the like).
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Webhook senders that sign their requests (HMAC-SHA256) instead of
    /// carrying a token.
    #[serde(default)]
    pub signed_sources: Vec<SignedSourceEntry>,
    /// Signed approval links: the key (shared by every instance) and the
    /// URL people reach the server at.
    pub approval_links: Option<ApprovalLinksEntry>,
    /// At most this many runs over all runbooks together within the
    /// window: `{ runs: 50, window: 1h }`.
    pub global_rate_limit: Option<GlobalRateLimitEntry>,
    /// Proposers whose events run in shadow mode whatever the runbook
    /// says: `shadow: { principals: ["agent:*"] }`.
    pub shadow: Option<ShadowEntry>,
    /// The organisation's directory (people, groups, CI owners), YAML.
    pub directory: Option<PathBuf>,
    /// A directory of Rego policies that take part in every decision.
    pub policies: Option<PathBuf>,
    /// Where `ansible.playbook` steps find relative playbooks and
    /// inventories.
    pub playbooks: Option<PathBuf>,
    /// Named credentials steps authenticate with (`with: { credential:
    /// NAME }`), every secret by reference (docs/runbooks.md).
    #[serde(default)]
    pub credentials: std::collections::BTreeMap<String, CredentialEntry>,
    /// Signed anchors of the audit chain's head, written outside the
    /// database (docs/deploy.md).
    pub audit_anchor: Option<AuditAnchorEntry>,
    /// The integrations' sections, by name, as written.
    #[serde(flatten)]
    pub integrations: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `audit_anchor: { sink, key, every_records, every_seconds }`: where
/// anchors of the audit chain's head go (`file:PATH`, or an `https://`
/// webhook), the HMAC key by reference, and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAnchorEntry {
    pub sink: String,
    /// `env:NAME` or `file:PATH`.
    pub key: String,
    /// Anchor after at most this many new records (default 100).
    pub every_records: Option<u64>,
    /// ...or after this many seconds when the chain grew (default 60).
    pub every_seconds: Option<u64>,
}

/// An anchor key shorter than this is refused: it is all that stands
/// between an attacker with the database and a forged anchor.
pub const ANCHOR_KEY_MIN_BYTES: usize = 32;

impl AuditAnchorEntry {
    pub fn resolve(&self) -> anyhow::Result<runtime::AnchorConfig> {
        let sink = if let Some(path) = self.sink.strip_prefix("file:") {
            anyhow::ensure!(!path.is_empty(), "audit_anchor.sink: `file:` needs a path");
            let path = PathBuf::from(path);
            let directory = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            anyhow::ensure!(
                directory.is_dir(),
                "audit_anchor.sink: the directory {} does not exist",
                directory.display()
            );
            runtime::AnchorSink::File(path)
        } else if self.sink.starts_with("https://") || self.sink.starts_with("http://") {
            let url = reqwest::Url::parse(&self.sink)
                .with_context(|| format!("audit_anchor.sink: `{}` is not a URL", self.sink))?;
            anyhow::ensure!(
                url.host_str().is_some(),
                "audit_anchor.sink: `{}` names no host",
                self.sink
            );
            runtime::AnchorSink::Webhook {
                url: url.to_string(),
                // A redirect is the sink's answer, not a written anchor.
                client: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .context("audit_anchor: an HTTP client for the webhook")?,
            }
        } else {
            anyhow::bail!(
                "audit_anchor.sink: `{}` is neither `file:PATH` nor an `https://` webhook URL",
                self.sink
            );
        };
        let key = resolve_secret(&self.key).context("audit_anchor.key")?;
        anyhow::ensure!(
            key.expose_bytes().len() >= ANCHOR_KEY_MIN_BYTES,
            "audit_anchor.key: the key is {} bytes; use at least {ANCHOR_KEY_MIN_BYTES} random bytes",
            key.expose_bytes().len()
        );
        let every_records = self.every_records.unwrap_or(100);
        anyhow::ensure!(
            every_records >= 1,
            "audit_anchor.every_records must be at least 1"
        );
        let every_seconds = self.every_seconds.unwrap_or(60);
        anyhow::ensure!(
            every_seconds >= 1,
            "audit_anchor.every_seconds must be at least 1"
        );
        Ok(runtime::AnchorConfig {
            sink,
            key,
            every_records,
            every: std::time::Duration::from_secs(every_seconds),
        })
    }
}

/// One named credential: at most one of `bearer: { token }`, `basic: {
/// username, password }` and `header: { name, value }`, and optionally
/// `tls: { client_cert, client_key, ca }`; secrets and TLS files by
/// reference (`env:NAME`, `file:PATH`). `hosts` lists the hosts it may be
/// sent to (`api.example`, `*.corp.example`); without it, any.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    pub bearer: Option<BearerEntry>,
    pub basic: Option<BasicEntry>,
    pub header: Option<HeaderEntry>,
    pub tls: Option<TlsEntry>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerEntry {
    pub token: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEntry {
    pub name: String,
    pub value: String,
}

/// A client certificate and its key (PEM, together or not at all), and
/// the CA certificates (PEM) the server's must chain to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsEntry {
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub ca: Option<String>,
}

impl CredentialEntry {
    pub fn resolve(&self, name: &str) -> anyhow::Result<connectors::Credential> {
        let secret = |what: &str, reference: &str| -> anyhow::Result<Secret> {
            resolve_secret(reference).with_context(|| format!("credentials.{name}.{what}"))
        };
        // Certificates are not secret, but are given by reference the same way.
        let text = |what: &str, reference: &str| -> anyhow::Result<String> {
            Ok(secret(what, reference)?.expose().to_owned())
        };
        let auth = match (&self.bearer, &self.basic, &self.header) {
            (None, None, None) => None,
            (Some(bearer), None, None) => Some(connectors::Auth::Bearer {
                token: secret("bearer.token", &bearer.token)?,
            }),
            (None, Some(basic), None) => Some(connectors::Auth::Basic {
                username: basic.username.clone(),
                password: secret("basic.password", &basic.password)?,
            }),
            (None, None, Some(header)) => Some(connectors::Auth::Header {
                name: header.name.clone(),
                value: secret("header.value", &header.value)?,
            }),
            _ => anyhow::bail!(
                "credentials.{name}: give one of `bearer`, `basic` and `header`, not several"
            ),
        };
        let tls = match &self.tls {
            None => None,
            Some(tls) => {
                let identity = match (&tls.client_cert, &tls.client_key) {
                    (Some(cert), Some(key)) => Some(connectors::ClientIdentity {
                        cert_pem: text("tls.client_cert", cert)?,
                        key_pem: secret("tls.client_key", key)?,
                    }),
                    (None, None) => None,
                    _ => anyhow::bail!(
                        "credentials.{name}.tls: `client_cert` and `client_key` go together"
                    ),
                };
                let ca = tls.ca.as_deref().map(|ca| text("tls.ca", ca)).transpose()?;
                anyhow::ensure!(
                    identity.is_some() || ca.is_some(),
                    "credentials.{name}.tls: give `client_cert` and `client_key`, or `ca`, or all three"
                );
                Some(connectors::ClientTls { identity, ca })
            }
        };
        Ok(connectors::Credential {
            auth,
            tls,
            hosts: self.hosts.clone(),
        })
    }
}

/// Reads every configured credential.
pub fn resolve_credentials(
    entries: &std::collections::BTreeMap<String, CredentialEntry>,
) -> anyhow::Result<std::collections::BTreeMap<String, connectors::Credential>> {
    entries
        .iter()
        .map(|(name, entry)| Ok((name.clone(), entry.resolve(name)?)))
        .collect()
}

/// Fails, printing each, when runbooks name credentials that are not
/// configured: found when the server starts rather than when a run
/// reaches the step.
pub fn check_credentials(
    catalog: &runbook::Catalog,
    credentials: &std::collections::BTreeMap<String, connectors::Credential>,
    template_env: &runbook::TemplateEnv,
) -> anyhow::Result<()> {
    let mut not_configured = 0;
    let mut elsewhere = 0;
    for runbook in catalog.iter() {
        for (place, call) in runbook.calls() {
            let Some(name) = call.credential() else {
                continue;
            };
            let Some(credential) = credentials.get(name) else {
                eprintln!(
                    "{}: {place} names credential `{name}`, which is not configured (add it under `credentials:` in the config file)",
                    runbook.path.display()
                );
                not_configured += 1;
                continue;
            };
            // Known now when the URL is written out or starts with its
            // base from `env`; otherwise the connector checks each call.
            if let Some(host) = call.host_before_planning(template_env)
                && !credential.hosts.is_empty()
                && !credential
                    .hosts
                    .iter()
                    .any(|pattern| domain::host_matches(pattern, &host))
            {
                eprintln!(
                    "{}: {place} sends credential `{name}` to `{host}`, which is not one of its `hosts` ({})",
                    runbook.path.display(),
                    credential.hosts.join(", ")
                );
                elsewhere += 1;
            }
        }
    }
    anyhow::ensure!(
        not_configured == 0,
        "{not_configured} runbook call(s) name credentials that are not configured"
    );
    anyhow::ensure!(
        elsewhere == 0,
        "{elsewhere} runbook call(s) would send a credential to a host it does not name"
    );
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicEntry {
    pub username: String,
    pub password: String,
}

/// `shadow: { principals: [...] }`: the actors (globs: `agent:*`,
/// `agent:triage-bot`) whose events are matched, planned and decided, and
/// stopped before any call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowEntry {
    pub principals: Vec<String>,
}

impl ShadowEntry {
    /// The principals, each checked to name a kind (`agent:`, `user:`,
    /// `source:`): a bare name would match nobody.
    pub fn resolve(&self) -> anyhow::Result<Vec<String>> {
        for principal in &self.principals {
            anyhow::ensure!(
                domain::PrincipalKind::of_actor(principal).is_some(),
                "shadow.principals: `{principal}` is not a principal: write its kind and name, e.g. `agent:triage-bot` or `agent:*`"
            );
        }
        Ok(self.principals.clone())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRateLimitEntry {
    pub runs: u32,
    pub window: String,
}

impl GlobalRateLimitEntry {
    pub fn resolve(&self) -> anyhow::Result<runbook::RateLimit> {
        let window_ms = runbook::parse_duration(&self.window).with_context(|| {
            format!(
                "global_rate_limit.window: `{}` is not a duration such as `30s`, `5m` or `1h`",
                self.window
            )
        })?;
        anyhow::ensure!(self.runs > 0, "global_rate_limit.runs must be at least 1");
        Ok(runbook::RateLimit {
            runs: self.runs,
            window_ms,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalLinksEntry {
    /// `env:NAME` or `file:PATH`.
    pub secret: String,
    pub public_url: Option<String>,
    /// Seconds a link stays valid (default 3600).
    pub ttl_seconds: Option<i64>,
}

impl ApprovalLinksEntry {
    pub fn resolve(&self) -> anyhow::Result<server::LinkConfig> {
        Ok(server::LinkConfig {
            key: resolve_secret(&self.secret).context("the approval links' secret")?,
            public_url: self.public_url.clone(),
            default_ttl_seconds: self.ttl_seconds.unwrap_or(3600),
        })
    }
}

/// A signing webhook sender. Its secret is given by reference only:
/// `env:NAME` (an environment variable) or `file:PATH`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSourceEntry {
    pub name: String,
    pub secret: String,
}

impl SignedSourceEntry {
    /// Reads the secret the entry refers to.
    pub fn resolve(&self) -> anyhow::Result<server::SignedSource> {
        Ok(server::SignedSource {
            name: self.name.clone(),
            secret: resolve_secret(&self.secret)
                .with_context(|| format!("the secret of signed source `{}`", self.name))?,
        })
    }
}

/// `env:NAME` or `file:PATH` → the secret. A secret written inline is
/// refused: configuration files end up in repositories.
pub fn resolve_secret(reference: &str) -> anyhow::Result<Secret> {
    connectors::section::resolve_secret(reference).map_err(anyhow::Error::msg)
}

impl File {
    pub fn load(path: &Path) -> anyhow::Result<File> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let file: File = serde_saphyr::from_str(&text)
            .with_context(|| format!("config file {}", path.display()))?;
        file.check_keys()
            .with_context(|| format!("config file {}", path.display()))?;
        // Each integration's section is checked as it is read, and a
        // mistake is located in the file (the sections arrive as plain
        // values, which know no lines).
        if let Err(error) = connectors::registry::check(&file.integrations) {
            let line = match &error {
                connectors::Error::Config { at, message } => line_of(&text, at, message),
                _ => None,
            };
            return Err(match line {
                Some(line) => {
                    anyhow::anyhow!("config file {}, line {line}: {error}", path.display())
                }
                None => anyhow::anyhow!("config file {}: {error}", path.display()),
            });
        }
        Ok(file)
    }

    /// Refuses a key that is neither a setting nor an integration's
    /// section (a typo would otherwise be ignored).
    fn check_keys(&self) -> anyhow::Result<()> {
        match self
            .integrations
            .keys()
            .find(|key| !connectors::registry::is_integration(key))
        {
            Some(key) => anyhow::bail!(
                "unknown key `{key}`: expected one of opsgate's settings (docs/deploy.md) or an integration's section ({})",
                connectors::registry::names().join(", ")
            ),
            None => Ok(()),
        }
    }
}

/// The line (from 1) of the key an integration section's error is about:
/// `at` is the path to it (`servicenow.basic`), and an unknown key is
/// named in the message (``unknown field `passwrd` ``). Block mappings are
/// followed by indentation; what cannot be followed gives the deepest key
/// found.
fn line_of(text: &str, at: &str, message: &str) -> Option<usize> {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    let lines: Vec<&str> = text.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let is_content = |line: &str| {
        let trimmed = line.trim_start();
        !trimmed.is_empty() && !trimmed.starts_with('#')
    };
    // (the line of the key found so far, its indentation); the file's top
    // level sits "above" column 0.
    let mut found: Option<(usize, usize)> = None;
    for key in at.split('.').chain(unknown) {
        let (from, parent_indent) = match found {
            Some((index, indent)) => (index + 1, Some(indent)),
            None => (0, None),
        };
        let block = lines[from..]
            .iter()
            .enumerate()
            .take_while(|(_, line)| {
                !is_content(line) || parent_indent.is_none_or(|parent| indent(line) > parent)
            })
            .filter(|(_, line)| is_content(line));
        let mut child_indent = None;
        let hit = block
            .filter(|(_, line)| {
                // Only the block's own keys, not those nested deeper.
                let own = *child_indent.get_or_insert(indent(line));
                indent(line) == own
            })
            .find(|(_, line)| {
                let trimmed = line.trim_start().trim_start_matches("- ");
                trimmed
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            });
        match hit {
            Some((offset, line)) => found = Some((from + offset, indent(line))),
            None => break,
        }
    }
    found.map(|(index, _)| index + 1)
}

/// Loads the catalog from `dir`, printing every problem; fails when any
/// runbook is invalid, so a server never runs with half its runbooks.
pub fn load_catalog(dir: &Path) -> anyhow::Result<runbook::Catalog> {
    let report = runbook::load_dir(dir, connectors::STEP_ACTIONS)
        .with_context(|| format!("loading runbooks from {}", dir.display()))?;
    if !report.diagnostics.is_empty() {
        for diagnostic in &report.diagnostics {
            eprintln!("{diagnostic}");
        }
        anyhow::bail!(
            "{} problem(s) in the runbooks under {}",
            report.diagnostics.len(),
            dir.display()
        );
    }
    Ok(report.catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Credentials = std::collections::BTreeMap<String, connectors::Credential>;

    /// The `credentials:` of a config file, read.
    fn credentials(yaml: &str) -> anyhow::Result<Credentials> {
        let file: File = serde_saphyr::from_str(yaml)?;
        resolve_credentials(&file.credentials)
    }

    #[test]
    fn credentials_are_read_by_reference() {
        let dir = tempfile::tempdir().unwrap();
        let secret = |name: &str, value: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            format!("file:{}", path.display())
        };
        let yaml = format!(
            "credentials:\n  awx: {{ bearer: {{ token: {} }} }}\n  jenkins: {{ basic: {{ username: opsgate, password: {} }} }}\n  inventory:\n    header: {{ name: X-Api-Key, value: {} }}\n    tls: {{ ca: {} }}\n",
            secret("token", "t0ken"),
            secret("password", "pa55"),
            secret("key", "k3y"),
            secret("ca.pem", "-----BEGIN CERTIFICATE-----"),
        );
        let credentials = credentials(&yaml).expect("valid credentials");
        assert!(matches!(
            &credentials["awx"].auth,
            Some(connectors::Auth::Bearer { token }) if token.expose() == "t0ken"
        ));
        assert!(matches!(
            &credentials["jenkins"].auth,
            Some(connectors::Auth::Basic { username, password })
                if username == "opsgate" && password.expose() == "pa55"
        ));
        let inventory = &credentials["inventory"];
        assert!(matches!(
            &inventory.auth,
            Some(connectors::Auth::Header { name, value }) if name == "X-Api-Key" && value.expose() == "k3y"
        ));
        let tls = inventory.tls.as_ref().expect("tls");
        assert!(tls.identity.is_none());
        assert_eq!(tls.ca.as_deref(), Some("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn credentials_that_cannot_be_used_are_refused() {
        let check = |yaml: &str, expect: &str| {
            let error = format!("{:#}", credentials(yaml).expect_err("refused"));
            assert!(
                error.contains(expect),
                "`{error}` should contain `{expect}`"
            );
        };
        check(
            "credentials:\n  awx: { bearer: { token: s3cr3t } }\n",
            "credentials.awx.bearer.token: a secret is given by reference, `env:NAME` or `file:PATH`, never inline",
        );
        check(
            "credentials:\n  awx: { bearer: { token: env:A }, basic: { username: u, password: env:B } }\n",
            "credentials.awx: give one of `bearer`, `basic` and `header`, not several",
        );
        check(
            "credentials:\n  api: { tls: { client_cert: file:/nonexistent/cert.pem } }\n",
            "credentials.api.tls: `client_cert` and `client_key` go together",
        );
        check(
            "credentials:\n  api: { oauth: { token: env:A } }\n",
            "unknown field `oauth`",
        );
    }

    #[test]
    fn audit_anchor_settings_are_checked() {
        connectors::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let key = |name: &str, value: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            format!("file:{}", path.display())
        };
        let long_key = key("long.key", &"k".repeat(32));
        let sink = format!("file:{}", dir.path().join("anchors.jsonl").display());
        let resolve = |yaml: String| -> anyhow::Result<runtime::AnchorConfig> {
            let file: File = serde_saphyr::from_str(&yaml)?;
            file.audit_anchor.expect("audit_anchor").resolve()
        };

        let config = resolve(format!(
            "audit_anchor: {{ sink: \"{sink}\", key: \"{long_key}\" }}\n"
        ))
        .expect("valid");
        assert!(matches!(config.sink, runtime::AnchorSink::File(_)));
        assert_eq!((config.every_records, config.every.as_secs()), (100, 60));
        let config = resolve(format!(
            "audit_anchor: {{ sink: \"https://anchors.example.com/in\", key: \"{long_key}\", every_records: 5, every_seconds: 2 }}\n"
        ))
        .expect("valid");
        assert!(matches!(config.sink, runtime::AnchorSink::Webhook { .. }));
        assert_eq!((config.every_records, config.every.as_secs()), (5, 2));

        let check = |yaml: String, expect: &str| {
            let error = format!("{:#}", resolve(yaml).expect_err("refused"));
            assert!(
                error.contains(expect),
                "`{error}` should contain `{expect}`"
            );
        };
        check(
            format!("audit_anchor: {{ sink: \"syslog:local0\", key: \"{long_key}\" }}\n"),
            "audit_anchor.sink: `syslog:local0` is neither `file:PATH` nor an `https://` webhook URL",
        );
        check(
            format!(
                "audit_anchor: {{ sink: \"file:/nonexistent/dir/anchors.jsonl\", key: \"{long_key}\" }}\n"
            ),
            "audit_anchor.sink: the directory /nonexistent/dir does not exist",
        );
        check(
            format!("audit_anchor: {{ sink: \"{sink}\", key: s3cr3t }}\n"),
            "audit_anchor.key: a secret is given by reference",
        );
        check(
            format!(
                "audit_anchor: {{ sink: \"{sink}\", key: \"{}\" }}\n",
                key("short.key", "short")
            ),
            "audit_anchor.key: the key is 5 bytes; use at least 32 random bytes",
        );
        check(
            format!(
                "audit_anchor: {{ sink: \"{sink}\", key: \"{long_key}\", every_records: 0 }}\n"
            ),
            "audit_anchor.every_records must be at least 1",
        );
        check(
            format!(
                "audit_anchor: {{ sink: \"{sink}\", key: \"{long_key}\", every_seconds: 0 }}\n"
            ),
            "audit_anchor.every_seconds must be at least 1",
        );
        check(
            format!("audit_anchor: {{ sink: \"{sink}\", key: \"{long_key}\", every: 5 }}\n"),
            "unknown field `every`",
        );
    }

    #[test]
    fn runbooks_may_only_name_configured_credentials() {
        let runbook = runbook::parse_runbook(
            std::path::Path::new("runbooks/restart.yaml"),
            "id: restart\ntitle: Restart\nowner: ops\nrisk: reversible\nmatch: { source: servicenow }\ninputs: { type: object }\ntargets: { from: \"['web-01']\" }\nsteps:\n  - id: restart\n    action: http.request\n    with: { url: \"https://inventory.example.com/restart\", credential: inventory }\n", connectors::STEP_ACTIONS)
        .unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
        let catalog = runbook::Catalog::new(vec![runbook]);
        let env = runbook::TemplateEnv::default();
        let error = check_credentials(&catalog, &Credentials::new(), &env).unwrap_err();
        assert_eq!(
            error.to_string(),
            "1 runbook call(s) name credentials that are not configured"
        );
        let configured = Credentials::from([(
            "inventory".to_owned(),
            connectors::Credential {
                auth: Some(connectors::Auth::Bearer {
                    token: Secret::new("t"),
                }),
                tls: None,
                hosts: Vec::new(),
            },
        )]);
        check_credentials(&catalog, &configured, &env).expect("every credential is configured");
    }

    #[test]
    fn a_credential_with_hosts_is_not_sent_elsewhere_by_any_runbook() {
        let step = |url: &str| {
            format!(
                "  - id: s{}\n    action: http.request\n    with: {{ url: \"{url}\", credential: inventory }}\n",
                url.len()
            )
        };
        let text = format!(
            "id: restart\ntitle: Restart\nowner: ops\nrisk: reversible\nmatch: {{ source: servicenow }}\ntargets: {{ from: \"['web-01']\" }}\nsteps:\n{}{}{}",
            step("https://inventory.example.com/restart"),
            step("{{ env.INVENTORY }}/devices/{{ event.subject }}"),
            step("https://{{ event.subject }}.corp.example/x"),
        );
        let runbook = runbook::parse_runbook(
            std::path::Path::new("runbooks/restart.yaml"),
            &text,
            connectors::STEP_ACTIONS,
        )
        .unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
        let catalog = runbook::Catalog::new(vec![runbook]);
        let credentials = |hosts: &[&str]| {
            Credentials::from([(
                "inventory".to_owned(),
                connectors::Credential {
                    auth: Some(connectors::Auth::Bearer {
                        token: Secret::new("t"),
                    }),
                    tls: None,
                    hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
                },
            )])
        };
        let mut env = runbook::TemplateEnv::default();
        env.vars
            .insert("INVENTORY".into(), "https://evil.example/api".into());
        let error =
            check_credentials(&catalog, &credentials(&["*.example.com"]), &env).unwrap_err();
        // The step whose host comes from the event is left to the connector.
        assert_eq!(
            error.to_string(),
            "1 runbook call(s) would send a credential to a host it does not name"
        );
        env.vars
            .insert("INVENTORY".into(), "https://api.example.com/v2".into());
        check_credentials(&catalog, &credentials(&["*.example.com"]), &env)
            .expect("both known hosts are the credential's");
        check_credentials(&catalog, &credentials(&[]), &env).expect("no hosts: any host");
        let error =
            check_credentials(&catalog, &credentials(&["other.example"]), &env).unwrap_err();
        assert_eq!(
            error.to_string(),
            "2 runbook call(s) would send a credential to a host it does not name"
        );
    }

    /// A mistyped key in an integration's section is reported with its
    /// file and line, as a typed setting's is: the section is checked when
    /// the file loads, before any secret is read.
    #[test]
    fn a_mistake_in_an_integrations_section_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsgate.yaml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            match File::load(&path) {
                Ok(_) => panic!("refused: {text}"),
                Err(error) => format!("{error:#}"),
            }
        };
        let text = "listen: 127.0.0.1:0\n\
                    # the desk\n\
                    freshservice:\n\
                    \x20 base_url: https://acme.freshservice.com\n\
                    \x20 apikey: env:FS_KEY\n";
        let message = load(text);
        assert!(
            message.contains("line 5") && message.contains("unknown field `apikey`"),
            "{message}"
        );
        let text = "servicenow:\n\
                    \x20 instance_url: https://acme.service-now.com\n\
                    \x20 basic:\n\
                    \x20   username: opsgate\n\
                    \x20   passwrd: env:SN_PASSWORD\n\
                    \x20 timeout_seconds: 30\n";
        let message = load(text);
        assert!(
            message.contains("line 5") && message.contains("passwrd"),
            "{message}"
        );
        let text = "graph:\n\
                    \x20 tenant_id: t\n\
                    \x20 client_id: c\n\
                    \x20 client_secret: env:GRAPH_SECRET\n\
                    \x20 graph_url: [not, a, url]\n";
        let message = load(text);
        assert!(
            message.contains("line 5") && message.contains("graph.graph_url"),
            "{message}"
        );
        // A missing key names the section's line.
        let message = load("jira:\n  email: ops@acme.example\n");
        assert!(
            message.contains("line 1") && message.contains("missing field `base_url`"),
            "{message}"
        );
        // Nothing is resolved yet: a secret named by an unset variable is
        // not an error at load.
        std::fs::write(
            &path,
            "freshservice:\n  base_url: https://acme.freshservice.com\n  api_key: env:OPSGATE_TEST_UNSET_7f3a\n",
        )
        .unwrap();
        File::load(&path).expect("the section reads");
    }
}
