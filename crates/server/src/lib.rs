//! The HTTP face of opsgate: webhook intake, the REST API under `/v1`, and
//! `/healthz` and `/readyz`.
//!
//! Every route but those two is authenticated and authorised in `auth.rs`
//! before its handler runs; handlers receive the caller as a
//! [`domain::Principal`].
//!
//! Handlers are thin: they parse and validate a request into the domain's
//! vocabulary, call the runtime, and shape the answer. Bodies are read as
//! bytes and parsed by the handler (not by an extractor) so that a
//! malformed body gets one stable error format saying what and where. A
//! webhook's body is read by its event source, behind the seam
//! (`/v1/hooks/{source}`, one pipeline for every sender), and a webhook
//! carrying several alerts is validated whole before any of it is stored.

mod access;
pub mod api;
mod auth;
mod body;
mod buttons;
mod error;
mod freezes;
mod links;
mod mcp;
mod openapi;
mod proposals;
mod refusals;
mod reports;
mod routes;
mod signed;
mod signed_links;
mod state;

pub use access::{Access, AuthConfig, Permission, SignedSource};
pub use auth::{IssuedToken, SIGNATURE_HEADER, SOURCE_HEADER, TIMESTAMP_HEADER, issue_token, sign};
use std::sync::Arc;

pub use error::ApiError;
pub use signed_links::{ApprovalLink, LinkConfig, SignedPages, open_link, sign_link};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    pub auth: access::AuthConfig,
    pub links: signed_links::LinkConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            body_limit: 256 * 1024,
            auth: access::AuthConfig::default(),
            links: signed_links::LinkConfig::ephemeral(),
        }
    }
}

/// The whole API, ready for [`crate::serve`], which also closes its
/// refusal windows (`refusals.rs`) while it runs and when it stops.
pub struct Api {
    pub(crate) router: axum::Router,
    pub(crate) state: state::AppState,
}

/// The whole API.
pub fn router(runtime: runtime::Runtime, config: Config) -> Api {
    let routes::Routes { router, table } =
        routes::api_routes().with_mcp(runtime.clone(), config.links.public_url.clone());
    let state = state::AppState {
        runtime,
        auth: Arc::new(access::Authenticator::new(config.auth, config.body_limit)),
        routes: Arc::new(table),
        links: Arc::new(config.links),
        openapi: serde_json::to_vec(&openapi::document())
            .expect("the document serialises")
            .into(),
    };
    let router = router
        .fallback(routes::unknown_route)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(config.body_limit))
        .with_state(state.clone());
    Api { router, state }
}

/// Serves `api` on `listener` until `shutdown` completes. Meanwhile the
/// refusal windows that end are audited; when it stops, every open one is.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = api.state.clone();
    let closer = tokio::spawn(async move {
        let period = (state.auth.refusal_window() / 4).max(std::time::Duration::from_millis(100));
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            auth::close_refusal_windows(&state, jiff::Timestamp::now(), false).await;
        }
    });
    let served = axum::serve(listener, api.router)
        .with_graceful_shutdown(shutdown)
        .await;
    closer.abort();
    auth::close_refusal_windows(&api.state, jiff::Timestamp::now(), true).await;
    served
}

#[cfg(test)]
mod tests {
    /// The server reaches the system through the runtime's services only:
    /// of opsgate's own crates it depends on `runtime` and `domain`, never
    /// on what lies below them (the store, the gate, the runbook format,
    /// the engine, the integrations).
    #[test]
    fn the_server_depends_on_the_runtime_and_the_domain_only() {
        const OURS: &[&str] = &[
            "domain",
            "runbook",
            "policy",
            "engine",
            "store",
            "connectors",
            "runtime",
        ];
        let mut section = "";
        let mut ours = Vec::new();
        for line in include_str!("../Cargo.toml").lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[dependencies]"
                && let Some((name, _)) = line.split_once(['=', '.'])
                && OURS.contains(&name.trim())
            {
                ours.push(name.trim());
            }
        }
        assert_eq!(ours, ["domain", "runtime"]);
    }

    /// No module of the server imports, directly or through others, a
    /// module that imports it: the shared state, the route vocabulary and
    /// the error type sit below the handlers, the handlers below the
    /// router and the document. (Test code is not counted.)
    #[test]
    fn the_servers_modules_import_each_other_in_no_circle() {
        use std::collections::{BTreeMap, BTreeSet};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            if module == "lib" || path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let used = code
                .match_indices("crate::")
                .map(|(at, _)| {
                    code[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect::<String>()
                })
                .filter(|used| !used.is_empty() && *used != module)
                .collect();
            imports.insert(module, used);
        }
        assert!(imports.len() > 10, "{imports:?}");
        // Depth-first: a module met again on the current path is a circle.
        fn visit(
            module: &str,
            imports: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
        ) {
            if let Some(at) = path.iter().position(|seen| seen == module) {
                panic!("an import circle: {} -> {module}", path[at..].join(" -> "));
            }
            path.push(module.to_owned());
            for used in imports.get(module).into_iter().flatten() {
                visit(used, imports, path);
            }
            path.pop();
        }
        for module in imports.keys() {
            visit(module, &imports, &mut Vec::new());
        }
    }
}
