//! What every handler can reach, in a module of its own so that the
//! handlers, the authentication middleware and the signature verifiers can
//! all name it without importing one another.

use std::sync::Arc;

use axum::extract::FromRef;
use runtime::Runtime;

use crate::access::{Authenticator, RouteTable};
use crate::signed_links::LinkConfig;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) runtime: Runtime,
    pub(crate) auth: Arc<Authenticator>,
    /// What each route and method takes, as registered.
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) links: Arc<LinkConfig>,
    /// The OpenAPI document, as served at `/openapi.json`.
    pub(crate) openapi: axum::body::Bytes,
}

impl FromRef<AppState> for Runtime {
    fn from_ref(state: &AppState) -> Runtime {
        state.runtime.clone()
    }
}
