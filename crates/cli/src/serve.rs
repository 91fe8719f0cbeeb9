//! `opsgate serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{self, File};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "OPSGATE_LISTEN")]
    pub listen: Option<String>,
    /// Database URL (sqlite://PATH).
    #[arg(long, env = "OPSGATE_DATABASE")]
    pub database: Option<String>,
    /// Directory of runbook YAML files.
    #[arg(long, env = "OPSGATE_RUNBOOKS")]
    pub runbooks: Option<PathBuf>,
    /// Config file (YAML).
    #[arg(long, env = "OPSGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "OPSGATE_LOG")]
    pub log: Option<String>,
    /// Log lines as text (default) or as JSON objects, one per line, with
    /// the run's `run_id` and `event_id` on every line about a run.
    #[arg(long, env = "OPSGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// How long a run's lease lasts without renewal, in milliseconds: after
    /// a crash, another instance (or this one, restarted) takes the run
    /// over once it expires.
    #[arg(long, env = "OPSGATE_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// On SIGTERM (or Ctrl-C), how long the calls in flight may take to
    /// finish, in milliseconds, before opsgate stops anyway (default 30 s).
    /// A second signal stops it at once.
    #[arg(long, env = "OPSGATE_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// At most this many events (webhooks, posted events, proposals) are
    /// stored at once; beyond it an event is answered 503 with
    /// `Retry-After: 1`, to be sent again (default 128).
    #[arg(long, env = "OPSGATE_MAX_INTAKE_IN_FLIGHT")]
    pub max_intake_in_flight: Option<usize>,
    /// The directory of people and groups (YAML; docs/directory.md). When
    /// set, only people in it approve.
    #[arg(long, env = "OPSGATE_DIRECTORY")]
    pub directory: Option<PathBuf>,
    /// A directory of Rego policies (docs/policies.md) that take part in
    /// every decision.
    #[arg(long, env = "OPSGATE_POLICIES")]
    pub policies: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people: coloured only when written to a terminal.
    #[default]
    Text,
    /// For log collectors: one JSON object per line.
    Json,
}

/// How long, by default, the calls in flight may take to finish once a
/// shutdown is asked for.
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;

/// Settings after merging flags, environment, file and defaults.
pub struct Settings {
    pub listen: String,
    pub database: String,
    pub runbooks: PathBuf,
    pub log: String,
    pub log_format: LogFormat,
    pub lease_ttl_ms: u64,
    pub shutdown_grace: std::time::Duration,
    pub max_intake_in_flight: usize,
    pub vars: std::collections::BTreeMap<String, String>,
    pub signed_sources: Vec<config::SignedSourceEntry>,
    pub approval_links: Option<config::ApprovalLinksEntry>,
    pub global_rate_limit: Option<config::GlobalRateLimitEntry>,
    pub shadow: Option<config::ShadowEntry>,
    pub directory: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    /// The integrations' config sections, by name (`servicenow`, …).
    pub integrations: std::collections::BTreeMap<String, serde_json::Value>,
    pub playbooks: Option<PathBuf>,
    pub credentials: std::collections::BTreeMap<String, config::CredentialEntry>,
    pub audit_anchor: Option<config::AuditAnchorEntry>,
}

impl Args {
    pub fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => File::load(path)?,
            None => File::default(),
        };
        Ok(Settings {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| config::DEFAULT_LISTEN.to_owned()),
            database: self
                .database
                .or(file.database)
                .unwrap_or_else(|| config::DEFAULT_DATABASE.to_owned()),
            runbooks: self
                .runbooks
                .or(file.runbooks)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_RUNBOOKS)),
            log: self.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            lease_ttl_ms: self
                .lease_ttl_ms
                .or(file.lease_ttl_ms)
                .unwrap_or(runtime::Config::DEFAULT_LEASE_TTL_MS),
            shutdown_grace: std::time::Duration::from_millis(
                self.shutdown_grace_ms
                    .or(file.shutdown_grace_ms)
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
            ),
            max_intake_in_flight: self
                .max_intake_in_flight
                .or(file.max_intake_in_flight)
                .unwrap_or(runtime::Config::DEFAULT_MAX_INTAKE_IN_FLIGHT),
            vars: file.vars,
            signed_sources: file.signed_sources,
            approval_links: file.approval_links,
            global_rate_limit: file.global_rate_limit,
            shadow: file.shadow,
            directory: self.directory.or(file.directory),
            policies: self.policies.or(file.policies),
            integrations: file.integrations,
            playbooks: file.playbooks,
            credentials: file.credentials,
            audit_anchor: file.audit_anchor,
        })
    }
}

pub fn init_logging(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    // The MCP SDK logs every stateless request's lifecycle at info: only
    // its warnings, unless the filter asks for it by name.
    let filter = if filter.contains("rmcp") {
        filter.to_owned()
    } else {
        format!("{filter},rmcp=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colour codes are for a terminal; a file or a collector gets
        // plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // The run's span (`run_id`, `event_id`) rides on each line, beside
        // the event's own fields.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// A started server: its address, and the runtime behind it.
pub struct Started {
    pub address: std::net::SocketAddr,
    pub runtime: runtime::Runtime,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Writes anchors of the audit chain's head, when configured; finish
    /// it after the server stopped, for a last anchor.
    pub anchors: Option<runtime::AnchorLoop>,
}

/// Opens the store, loads runbooks, resumes unfinished runs, binds, and
/// serves in the background.
pub async fn start(
    settings: &Settings,
    extra_vars: &[(String, String)],
) -> anyhow::Result<Started> {
    let catalog = config::load_catalog(&settings.runbooks)?;
    let signed_sources = settings
        .signed_sources
        .iter()
        .map(config::SignedSourceEntry::resolve)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let directory = settings
        .directory
        .as_deref()
        .map(policy::Directory::load)
        .transpose()?;
    let policies = settings
        .policies
        .as_deref()
        .map(policy::PolicySet::load)
        .transpose()?;
    if let Some(policies) = &policies {
        tracing::info!(files = policies.files().len(), version = %policies.version(), "policies loaded");
    }
    let global_rate_limit = settings
        .global_rate_limit
        .as_ref()
        .map(config::GlobalRateLimitEntry::resolve)
        .transpose()?;
    let shadow_principals = match &settings.shadow {
        Some(shadow) => shadow.resolve()?,
        None => Vec::new(),
    };
    let integrations = connectors::registry::build(&settings.integrations)?;
    let audit_anchor = settings
        .audit_anchor
        .as_ref()
        .map(config::AuditAnchorEntry::resolve)
        .transpose()?;
    let links = match &settings.approval_links {
        Some(entry) => entry.resolve()?,
        None => server::LinkConfig::ephemeral(),
    };
    let store = store::Store::open(&settings.database)
        .await
        .with_context(|| format!("opening {}", settings.database))?;
    let mut template_env = runbook::TemplateEnv::from_process();
    template_env.vars.extend(settings.vars.clone());
    template_env.vars.extend(extra_vars.iter().cloned());
    let mut connector_config = connectors::Config::default();
    connector_config.ansible.playbooks_dir = settings.playbooks.clone();
    connector_config.credentials = config::resolve_credentials(&settings.credentials)?;
    config::check_credentials(&catalog, &connector_config.credentials, &template_env)?;
    let connectors = connectors::Connectors::new(connector_config)?;
    // Chat messages link to signed approval pages, built on the address
    // people reach this server at.
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let address = listener.local_addr()?;
    let base = links
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    // Every link is built on this base, never on a request's Host header.
    let links = server::LinkConfig {
        public_url: Some(base.clone()),
        ..links
    };
    let approval_pages: Arc<dyn runtime::ApprovalPages> =
        Arc::new(server::SignedPages::new(links.clone(), base));
    let runtime = runtime::Runtime::new(
        store,
        runtime::Config {
            catalog,
            template_env,
            connectors,
            lease_ttl_ms: settings.lease_ttl_ms,
            global_rate_limit,
            shadow_principals,
            directory,
            policies,
            integrations,
            approval_pages: Some(approval_pages),
            max_intake_in_flight: settings.max_intake_in_flight,
            clock: runtime::Clock::system(),
        },
    );
    let resumed = runtime.start().await?;
    let anchors = audit_anchor.map(|config| runtime.spawn_anchor_loop(config));
    tracing::info!(%address, runbooks = runtime.catalog().len(), resumed, "opsgate is ready");
    let server_config = server::Config {
        auth: server::AuthConfig {
            signed_sources,
            ..server::AuthConfig::default()
        },
        links,
        ..server::Config::default()
    };
    let app = server::router(runtime.clone(), server_config);
    let task = tokio::spawn(server::serve(
        listener,
        app,
        drain_on_signal(runtime.clone(), settings.shutdown_grace),
    ));
    Ok(Started {
        address,
        runtime,
        task,
        anchors,
    })
}

/// Resolves when the server should stop serving: at a shutdown signal the
/// runtime drains (the server meanwhile reports itself not ready), and
/// this resolves once every call in flight has finished and been
/// committed, when `grace` has passed, or at a second signal.
async fn drain_on_signal(runtime: runtime::Runtime, grace: std::time::Duration) {
    shutdown_signal().await;
    runtime.drain();
    tokio::select! {
        () = runtime.drained() => {
            tracing::info!("drained: every call in flight finished and was committed");
        }
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "the grace period ended with calls still in flight: stopping now");
        }
        () = shutdown_signal() => {
            tracing::warn!("a second signal: stopping now");
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    init_logging(&settings.log, settings.log_format);
    if settings.approval_links.is_none() {
        tracing::warn!(
            "no approval_links secret configured: approval links are signed with a key of this process only, \
             and die with it (configure one shared secret for every instance)"
        );
    }
    if settings.audit_anchor.is_none() {
        tracing::warn!(
            "no audit_anchor configured: a lost or removed tail of the audit chain (the newest records) \
             cannot be detected (docs/deploy.md)"
        );
    }
    let started = start(&settings, &[]).await?;
    println!("opsgate listening on http://{}", started.address);
    started.task.await??;
    if let Some(anchors) = started.anchors {
        anchors.finish().await;
    }
    Ok(ExitCode::SUCCESS)
}
