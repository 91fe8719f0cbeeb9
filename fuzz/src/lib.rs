//! What the fuzz targets share: the integrations built from a config as
//! `opsgate serve` builds them, and a way to wait for their futures.
//!
//! Every target feeds its bytes to the entry point the server hands a
//! request to, never to a copy of a parser, so a crash found here is a
//! crash a sender could cause. The sources that read their system back
//! (ServiceNow, Freshservice) are pointed at a local port where nothing
//! listens: the request they are sent is what is fuzzed, and a body that
//! passes its checks ends in the source's "cannot read back now" error.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;

use connectors::{Integrations, People};
use serde_json::json;

/// The secret every configured integration is given (its webhook secret,
/// signing secret, API key): what the signature targets sign with.
pub const SECRET: &str = "a secret shared with the fuzzed senders";

/// The environment variable the config's secrets are read from, as a
/// deployment names its secrets (`env:NAME`).
const SECRET_VARIABLE: &str = "OPSGATE_FUZZ_SECRET";

/// Where the sources that read their system back are sent: a local port
/// nothing listens on (the discard port), refused at once.
const NOBODY_LISTENS: &str = "http://127.0.0.1:9";

/// The integrations of a config with ServiceNow, Jira, Freshservice and
/// Slack, plus the sources every server has (Alertmanager, Grafana,
/// PagerDuty); built once per process.
pub fn integrations() -> &'static Integrations {
    static INTEGRATIONS: OnceLock<Integrations> = OnceLock::new();
    INTEGRATIONS.get_or_init(|| {
        // SAFETY: this runs at a target's first input, on libFuzzer's one
        // thread, before the runtime that runs the sources exists; no
        // other thread reads the environment.
        unsafe { std::env::set_var(SECRET_VARIABLE, SECRET) };
        let secret = format!("env:{SECRET_VARIABLE}");
        let sections = BTreeMap::from([
            (
                "servicenow".to_owned(),
                json!({
                    "instance_url": NOBODY_LISTENS,
                    "basic": {"username": "opsgate", "password": secret},
                    "timeout_seconds": 1,
                }),
            ),
            (
                "jira".to_owned(),
                json!({
                    "base_url": NOBODY_LISTENS,
                    "token": secret,
                    "webhook_secret": secret,
                    "account_id": "opsgate",
                    "timeout_seconds": 1,
                }),
            ),
            (
                "freshservice".to_owned(),
                json!({
                    "base_url": NOBODY_LISTENS,
                    "api_key": secret,
                    "timeout_seconds": 1,
                }),
            ),
            (
                "slack".to_owned(),
                json!({
                    "signing_secret": secret,
                    "bot_token": secret,
                    "channel": "C0123ABCD",
                    "api_url": NOBODY_LISTENS,
                    "timeout_seconds": 1,
                }),
            ),
        ]);
        connectors::registry::build(&sections).expect("the fuzzing config builds")
    })
}

/// Runs `future` to its end on a runtime made once per process (one
/// thread: a source's read-back needs its reactor).
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the fuzz targets")
        })
        .block_on(future)
}

/// A directory that knows everyone: every email names a person, so the
/// sources' `requested_by` paths are taken too.
pub struct Everyone;

impl People for Everyone {
    fn by_email(&self, email: &str) -> Option<String> {
        Some(format!("person-{email}"))
    }
}

/// Hears `body` as the event source `name` (`/v1/hooks/<name>`), as
/// `Intake::take_in` does, and checks each event as it does before any is
/// taken in: whatever the body, events or an error, never a panic. The
/// events heard, for the target to judge; none when the body was refused.
pub fn hear(name: &str, body: &[u8]) -> Vec<domain::NewEvent> {
    let source = integrations()
        .source(name)
        .unwrap_or_else(|| panic!("no source `{name}`"));
    let Ok(heard) = block_on(source.heard(body, &Everyone)) else {
        return Vec::new();
    };
    for event in &heard.events {
        let _ = runtime::check_event(event);
    }
    heard.events
}

/// A body a source heard, as plain JSON, for a target to look up what the
/// sender said. `None` for JSON that a source may hear and `Value` cannot
/// hold, in a field the source skips unread: the escape of a lone UTF-16
/// surrogate (`"\ud800"`) or a number beyond `f64` (`1e999`), both of
/// which JSON's grammar allows.
pub fn as_json(body: &[u8]) -> Option<serde_json::Value> {
    match serde_json::from_slice(body) {
        Ok(value) => Some(value),
        Err(error)
            if [
                "unicode code point",
                "surrogate",
                "end of hex escape",
                "number out of range",
            ]
            .iter()
            .any(|kind| error.to_string().contains(kind)) =>
        {
            None
        }
        Err(error) => panic!("a body a source heard is not JSON: {error}"),
    }
}

/// The repository's example runbooks and Rego policies, loaded as
/// `opsgate serve` loads them, with the template variables they read.
pub struct Examples {
    pub catalog: runbook::Catalog,
    pub policies: policy::PolicySet,
    pub template_env: runbook::TemplateEnv,
    /// The example events in opsgate's own format (`examples/events`,
    /// less the webhook bodies beside them), as received now.
    pub events: Vec<domain::Event>,
}

/// The examples, loaded once per process.
pub fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let report = runbook::load_dir(&dir.join("runbooks"), connectors::STEP_ACTIONS)
            .expect("the example runbooks load");
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        let policies =
            policy::PolicySet::load(&dir.join("policies")).expect("the example policies load");
        let template_env = runbook::TemplateEnv {
            vars: BTreeMap::from([
                (
                    "ENDPOINT_API".to_owned(),
                    "https://endpoints.example".to_owned(),
                ),
                (
                    "FINANCE_MAILBOX_GROUP".to_owned(),
                    "finance-mailboxes".to_owned(),
                ),
            ]),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir.join("events"))
            .expect("the example events")
            .map(|entry| entry.expect("an example event").path())
            .collect();
        paths.sort();
        let events: Vec<domain::Event> = paths
            .iter()
            .filter_map(|path| {
                let text = std::fs::read(path).expect("an example event reads");
                let new: domain::NewEvent = serde_json::from_slice(&text).ok()?;
                Some(domain::Event::from_new(
                    "example".to_owned(),
                    new,
                    jiff::Timestamp::now(),
                ))
            })
            .collect();
        assert!(!events.is_empty(), "no example event in opsgate's format");
        Examples {
            catalog: report.catalog,
            policies,
            template_env,
            events,
        }
    })
}
