//! Routes and handlers.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::{NewEvent, Principal, PrincipalKind, RunState};
use runtime::{Runtime, Verification};
use serde::Deserialize;
use serde_json::json;

use crate::ApiError;
use crate::access::{Permission, RouteTable};
use crate::api::{
    Decided, DryRunAnswer, Health, HookAnswer, IntakeAnswer, RunDetail, RunList, RunSummary,
    RunbookList, RunbookSummary, TimelineRecord,
};
use crate::body::{JsonBody, QueryParams, parse_body};
use crate::links;
use crate::state::AppState;

/// Every route of the API, each registered with what calling it takes:
/// nothing (`Public`), or an authenticated caller with a permission.
pub(crate) fn api_routes() -> Routes {
    use crate::access::Access::{Needs, Public};
    use axum::http::Method;
    Routes::default()
        .route("/healthz", &[(Method::GET, Public)], get(healthz))
        .route("/readyz", &[(Method::GET, Public)], get(readyz))
        .route(
            "/openapi.json",
            &[(Method::GET, Needs(Permission::Read))],
            get(openapi_json),
        )
        .route(
            "/v1/events",
            &[(Method::POST, Needs(Permission::Ingest))],
            post(post_event),
        )
        // Every event source, by its name (Alertmanager, Grafana and
        // PagerDuty always; ServiceNow, Freshservice, … when configured): a
        // source token or signed source of that name, or an admin.
        .route(
            HOOK_ROUTE,
            &[(Method::POST, Needs(Permission::ReceiveWebhook))],
            post(post_hook),
        )
        // Chat platforms sign their button clicks: the handler verifies
        // the signature (and audits a refusal) before reading anything else.
        .route(
            crate::buttons::INTERACTIONS_ROUTE,
            &[(Method::POST, Public)],
            post(crate::buttons::interactions),
        )
        // Agents' proposals: the same gate as any event.
        .route(
            "/v1/proposals",
            &[(Method::POST, Needs(Permission::Propose))],
            post(crate::proposals::propose),
        )
        .route(
            "/v1/proposals/plan",
            &[(Method::POST, Needs(Permission::Propose))],
            post(crate::proposals::plan),
        )
        .route(
            "/v1/proposals/{id}/withdraw",
            &[(Method::POST, Needs(Permission::Propose))],
            post(crate::proposals::withdraw),
        )
        .route(
            "/v1/plan",
            &[(Method::POST, Needs(Permission::DryRun))],
            post(post_plan),
        )
        .route(
            "/v1/runs",
            &[(Method::GET, Needs(Permission::Read))],
            get(list_runs),
        )
        .route(
            "/v1/runs/{id}",
            &[(Method::GET, Needs(Permission::Read))],
            get(show_run),
        )
        .route(
            "/v1/runs/{id}/wait",
            &[(Method::GET, Needs(Permission::Read))],
            get(wait_run),
        )
        .route(
            "/v1/runs/{id}/approve",
            &[(Method::POST, Needs(Permission::Decide))],
            post(approve_run),
        )
        .route(
            "/v1/runs/{id}/deny",
            &[(Method::POST, Needs(Permission::Decide))],
            post(deny_run),
        )
        .route(
            "/v1/runs/{id}/cancel",
            &[(Method::POST, Needs(Permission::Cancel))],
            post(cancel_run),
        )
        .route(
            "/v1/runs/{id}/approval-links",
            &[(Method::POST, Needs(Permission::IssueLinks))],
            post(links::issue),
        )
        // The signed link is the page's own credential.
        .route(
            "/approve/{token}",
            &[(Method::GET, Public), (Method::POST, Public)],
            get(links::page).post(links::decide),
        )
        .route(
            "/v1/runbooks",
            &[(Method::GET, Needs(Permission::Read))],
            get(list_runbooks),
        )
        // The kill switch.
        .route(
            "/v1/freezes",
            &[
                (Method::GET, Needs(Permission::Read)),
                (Method::POST, Needs(Permission::Freeze)),
            ],
            get(crate::freezes::list).post(crate::freezes::issue),
        )
        .route(
            "/v1/freezes/{id}/lift",
            &[(Method::POST, Needs(Permission::Freeze))],
            post(crate::freezes::lift),
        )
        .route(
            "/v1/status",
            &[(Method::GET, Needs(Permission::Read))],
            get(crate::freezes::status),
        )
        .route(
            "/v1/reports/shadow",
            &[(Method::GET, Needs(Permission::Read))],
            get(crate::reports::shadow),
        )
}

/// The API's routes as they are registered: the router, and what each
/// route and method takes.
#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) router: Router<AppState>,
    pub(crate) table: RouteTable,
}

impl Routes {
    /// Adds MCP at `/mcp` (`mcp.rs`): tools over the runtime's services,
    /// for agents, authenticated as every route is.
    pub(crate) fn with_mcp(self, runtime: Runtime, public_url: Option<String>) -> Routes {
        use crate::access::Access::Needs;
        self.route(
            crate::mcp::MCP_ROUTE,
            &[(axum::http::Method::POST, Needs(Permission::Propose))],
            axum::routing::post_service(crate::mcp::service(runtime, public_url)),
        )
    }

    /// Registers `handler` at `path`, with what calling each of its
    /// methods takes.
    fn route(
        mut self,
        path: &'static str,
        access: &[(axum::http::Method, crate::access::Access)],
        handler: axum::routing::MethodRouter<AppState>,
    ) -> Routes {
        for (method, access) in access {
            self.table.declare(method.clone(), path, *access);
        }
        self.router = self.router.route(path, handler);
        self
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "The server is up", body = Health),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready for work: `ready`", body = Health),
        (status = 503, description = "Shutting down (`draining`): send work to another instance", body = Health),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn readyz(State(runtime): State<Runtime>) -> (StatusCode, Json<Health>) {
    if runtime.is_draining() {
        let status = "draining".to_owned();
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status }))
    } else {
        let status = "ready".to_owned();
        (StatusCode::OK, Json(Health { status }))
    }
}

/// The API's OpenAPI document (`openapi.rs`).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses(
        (status = 200, description = "This document", body = Object),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn openapi_json(
    State(state): State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

/// A path the API does not have, answered in its error format.
pub(crate) async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        what: "route",
        id: uri.path().to_owned(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content = crate::api::NewEventSchema, description = "An event"),
    responses(
        (status = 202, description = "Taken in: the intake report (disposition, run, decision)", body = IntakeAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn post_event(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<IntakeAnswer>), ApiError> {
    let event: NewEvent = parse_body(&body)?;
    runtime::check_event(&event)?;
    // A webhook sender speaks for itself only. On the webhook routes that
    // is a rule of `auth::Permission`; here the source is in the body.
    if caller.kind() == PrincipalKind::Source && event.source != caller.name {
        let error = ApiError::Forbidden {
            message: format!(
                "{} may only post events whose `source` is `{}`, not `{}`",
                caller.actor(),
                caller.name,
                event.source
            ),
        };
        let method = axum::http::Method::POST;
        crate::auth::audit_refusal(&state, &method, "/v1/events", &caller.actor(), &error).await;
        return Err(error);
    }
    let report = state.runtime.intake().ingest(event, &caller).await?;
    Ok((StatusCode::ACCEPTED, Json(IntakeAnswer::from(report))))
}

use crate::access::HOOK_ROUTE;

/// A signal from an event source, verified as the source says: its sender
/// by the authentication middleware, or its own signature by the pipeline
/// of signed requests (`signed.rs`). The runtime then takes it in
/// ([`Intake::take_in`]). A source that is not configured is answered 404.
#[utoipa::path(
    post,
    path = "/v1/hooks/{source}",
    tag = "events",
    params(("source" = String, Path, description = "The event source: `alertmanager`, `grafana`, `pagerduty`, and `servicenow`, `jira`, `freshservice`, … when configured")),
    request_body(content = Object, description = "The sender's own payload. Jira signs with `X-Hub-Signature` instead of a token."),
    responses(
        (status = 202, description = "Taken in: the intake reports, in the shape the sender expects", body = HookAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn post_hook(
    State(state): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    let runtime = &state.runtime;
    let Some(source) = runtime.intake().source(&name) else {
        return Err(ApiError::NotFound {
            what: "route",
            id: format!("/v1/hooks/{name} (no `{name}:` event source is configured)"),
        });
    };
    match (source.verification(), caller) {
        (Verification::Sender, Some(Extension(caller))) => {
            take_in(runtime, source.as_ref(), &caller, &body).await
        }
        (Verification::Signed(signature), _) => {
            let route = format!("/v1/hooks/{name}");
            let held = crate::signed::verify(
                &state,
                &route,
                source.name(),
                signature.as_ref(),
                &headers,
                &body,
            )
            .await?;
            let caller = Principal::new(source.name().to_owned(), domain::Role::Source);
            let answer = take_in(runtime, source.as_ref(), &caller, &body).await;
            let status = match &answer {
                Ok((status, _)) => *status,
                Err(error) => error.status_and_code().0,
            };
            held.settle(status).await;
            answer
        }
        // The middleware authenticates every sender a source leaves to it.
        (Verification::Sender, None) => Err(ApiError::Unauthorized {
            message: "this route takes an authenticated source".to_owned(),
        }),
    }
}

/// A verified request of `source`, taken in; the sender is answered as
/// the source asks.
async fn take_in(
    runtime: &Runtime,
    source: &dyn runtime::EventSource,
    caller: &Principal,
    body: &[u8],
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    let taken = runtime.intake().take_in(source, caller, body).await?;
    Ok((StatusCode::ACCEPTED, Json(HookAnswer::new(taken))))
}

#[utoipa::path(
    post,
    path = "/v1/plan",
    tag = "runs",
    request_body(content = crate::api::NewEventSchema, description = "An event, as for `/v1/events`; nothing is stored"),
    responses(
        (status = 200, description = "What would happen: the match, the plan and the decision; nothing is stored", body = DryRunAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn post_plan(
    State(runtime): State<Runtime>,
    JsonBody(body): JsonBody,
) -> Result<Json<DryRunAnswer>, ApiError> {
    let event: NewEvent = parse_body(&body)?;
    runtime::check_event(&event)?;
    Ok(Json(DryRunAnswer::from(runtime.intake().dry_run(event))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    state: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    params(RunsQuery),
    responses(
        (status = 200, description = "The runs, the newest first", body = RunList),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn list_runs(
    State(runtime): State<Runtime>,
    QueryParams(query): QueryParams<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let state = query
        .state
        .as_deref()
        .map(RunState::parse)
        .transpose()
        .map_err(|error| ApiError::bad_request("invalid_query", error.to_string()))?;
    let runs = runtime
        .reads()
        .runs(&runtime::RunFilter {
            state,
            limit: query.limit,
        })
        .await?;
    Ok(Json(RunList {
        runs: runs.iter().map(run_summary).collect(),
    }))
}

fn run_summary(run: &runtime::RunRow) -> RunSummary {
    RunSummary {
        id: run.id.clone(),
        state: run.state,
        runbook: run.plan.runbook_id.clone(),
        runbook_version: run.plan.runbook_version.clone(),
        targets: run.plan.targets.clone(),
        dedup_key: run.dedup_key.clone(),
        decision: run.decision.kind,
        reason: run.reason.clone(),
        created_at: run.created_at,
        updated_at: run.updated_at,
    }
}

async fn run_detail(runtime: &Runtime, id: &str) -> Result<RunDetail, ApiError> {
    let detail = runtime
        .reads()
        .run_detail(id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "run",
            id: id.to_owned(),
        })?;
    let run = detail.run;
    Ok(RunDetail {
        id: run.id,
        state: run.state,
        runbook: run.plan.runbook_id.clone(),
        runbook_version: run.plan.runbook_version.clone(),
        targets: run.plan.targets.clone(),
        dedup_key: run.dedup_key,
        reason: run.reason,
        created_at: run.created_at,
        updated_at: run.updated_at,
        event: json!(detail.event),
        plan: run.plan,
        decision: run.decision,
        progress: json!(run.machine.progress),
        attempts: json!(detail.attempts),
        timers: json!(detail.timers),
        writebacks: json!(detail.writebacks),
        timeline: detail
            .timeline
            .into_iter()
            .map(|record| TimelineRecord {
                seq: record.seq,
                at: record.recorded_at,
                kind: record.kind,
                actor: record.actor,
                detail: record.detail,
            })
            .collect(),
    })
}

#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run: its event, plan, decision, progress, attempts, timers, write-backs and timeline", body = RunDetail),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn show_run(
    State(runtime): State<Runtime>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    Ok(Json(run_detail(&runtime, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    /// Longest wait, in milliseconds (at most 60 s).
    timeout_ms: Option<u64>,
}

/// Answers once the run is settled (finished, waiting for approval, or in
/// effect until its end), or when the timeout passes: a long-poll woken by
/// the runtime's notifications, which include runs settled by other
/// instances sharing the database. A look at the store every few seconds
/// covers a notification lost to a dropped connection.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/wait",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id"), WaitQuery),
    responses(
        (status = 200, description = "The run, once settled or when the wait is over", body = RunDetail),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn wait_run(
    State(runtime): State<Runtime>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<WaitQuery>,
) -> Result<Json<RunDetail>, ApiError> {
    let settled = RunState::is_settled;
    let mut updates = runtime.subscribe();
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(30_000).min(60_000));
    let current = runtime
        .reads()
        .run(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "run",
            id: id.clone(),
        })?;
    if !settled(current.state) {
        let settled_in_store = || async {
            matches!(runtime.reads()
        .run(&id).await, Ok(Some(run)) if settled(run.state))
        };
        let wait = async {
            let mut recheck = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    update = updates.recv() => match update {
                        Ok(update) if update.run_id == id && settled(update.state) => return,
                        Ok(_) => {}
                        // Missed updates: the store is the truth, look there.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            if settled_in_store().await {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = recheck.tick() => {
                        if settled_in_store().await {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
    Ok(Json(run_detail(&runtime, &id).await?))
}

/// An approval or denial: the caller decides as themselves, with a comment.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/runs/{id}/approve",
    tag = "approvals",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = DecisionBody, description = "An optional comment; an empty body is no comment"),
    responses(
        (status = 200, description = "Recorded: the run's state now", body = Decided),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn approve_run(
    State(runtime): State<Runtime>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Decided>, ApiError> {
    let decision = decision_body(&body)?;
    let state = runtime
        .decisions()
        .approve(&id, &caller, decision.comment)
        .await?;
    Ok(Json(Decided {
        run_id: id,
        state,
        by: caller.actor(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/runs/{id}/deny",
    tag = "approvals",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = DecisionBody, description = "An optional comment; an empty body is no comment"),
    responses(
        (status = 200, description = "Recorded: the run's state now", body = Decided),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn deny_run(
    State(runtime): State<Runtime>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Decided>, ApiError> {
    let decision = decision_body(&body)?;
    let state = runtime
        .decisions()
        .deny(&id, &caller, decision.comment)
        .await?;
    Ok(Json(Decided {
        run_id: id,
        state,
        by: caller.actor(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// Why: it goes to the audit and the ticket; not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    reason: String,
}

/// Cancels a run that has not acted yet, or ends a time-bound change
/// early (it is undone now). The reason is required: it goes to the audit
/// and the ticket.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = CancelBody),
    responses(
        (status = 200, description = "Cancelled, or a time-bound change ended early", body = Decided),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn cancel_run(
    State(runtime): State<Runtime>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Decided>, ApiError> {
    let CancelBody { reason } = parse_body(&body)?;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "`reason` must say why the run is cancelled",
        ));
    }
    let state = runtime
        .decisions()
        .cancel(&id, &caller.actor(), reason)
        .await?;
    Ok(Json(Decided {
        run_id: id,
        state,
        by: caller.actor(),
    }))
}

/// The body is optional: an empty one approves without a comment.
fn decision_body(body: &Bytes) -> Result<DecisionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    parse_body(body)
}

#[utoipa::path(
    get,
    path = "/v1/runbooks",
    tag = "runbooks",
    responses(
        (status = 200, description = "The catalogue: each runbook with its id, version, title, risk", body = RunbookList),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn list_runbooks(State(runtime): State<Runtime>) -> Json<RunbookList> {
    let runbooks = runtime
        .catalog()
        .iter()
        .map(|runbook| RunbookSummary {
            id: runbook.id.clone(),
            title: runbook.title.clone(),
            owner: runbook.owner.clone(),
            risk: runbook.risk,
            version: runbook.version.clone(),
            path: runbook.path.display().to_string(),
            steps: runbook.steps.len(),
            mode: runbook.mode.as_str().to_owned(),
        })
        .collect();
    Json(RunbookList { runbooks })
}
