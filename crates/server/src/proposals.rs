//! Agents' proposals over HTTP: `POST /v1/proposals` takes one in,
//! `POST /v1/proposals/plan` says what would become of it, and
//! `POST /v1/proposals/{run_id}/withdraw` withdraws the agent's own while
//! it waits for a person. The rules live in the runtime's `Proposals`
//! service, which the MCP server shares; here is only the wire format.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use domain::{Principal, Proposal};
use serde::Deserialize;

use crate::ApiError;
use crate::api::{Decided, DryRunAnswer, ProposalAnswer};
use crate::body::{JsonBody, parse_body};
use crate::state::AppState;

#[utoipa::path(
    post,
    path = "/v1/proposals",
    tag = "proposals",
    request_body(content = domain::Proposal, description = "An agent's proposal"),
    responses(
        (status = 202, description = "Taken in (or taken in before, under the same idempotency key): the run and its decision", body = ProposalAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn propose(
    State(state): State<AppState>,
    Extension(agent): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ProposalAnswer>), ApiError> {
    let proposal: Proposal = parse_body(&body)?;
    let report = state.runtime.proposals().propose(proposal, &agent).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ProposalAnswer::new(
            report,
            state.links.public_url.as_deref(),
        )),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/proposals/plan",
    tag = "proposals",
    request_body(content = domain::Proposal, description = "An agent's proposal"),
    responses(
        (status = 200, description = "What would become of it: the runbook, the plan and the decision; nothing is stored or run", body = DryRunAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn plan(
    State(state): State<AppState>,
    Extension(agent): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<Json<DryRunAnswer>, ApiError> {
    let proposal: Proposal = parse_body(&body)?;
    let dry_run = state.runtime.proposals().dry_run(proposal, &agent).await?;
    Ok(Json(DryRunAnswer::from(dry_run)))
}

/// Why the agent withdraws its proposal.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WithdrawBody {
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/proposals/{id}/withdraw",
    tag = "proposals",
    params(("id" = String, Path, description = "The run the proposal started")),
    request_body(content = WithdrawBody, description = "Why (optional)"),
    responses(
        (status = 200, description = "Withdrawn: the run is cancelled and never acts", body = Decided),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    Extension(agent): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Decided>, ApiError> {
    let body: WithdrawBody = if body.is_empty() {
        WithdrawBody::default()
    } else {
        parse_body(&body)?
    };
    if body.reason.len() > 500 {
        return Err(ApiError::bad_request(
            "invalid_body",
            "`reason` is longer than 500 bytes",
        ));
    }
    let state_now = state
        .runtime
        .proposals()
        .withdraw(&id, &agent, body.reason)
        .await?;
    Ok(Json(Decided {
        run_id: id,
        state: state_now,
        by: agent.actor(),
    }))
}
