//! The kill switch over HTTP: `POST /v1/freezes` issues a freeze, `GET`
//! lists the ones in force, `POST /v1/freezes/{id}/lift` lifts one, and
//! `GET /v1/status` says at a glance whether automation is live. The rule
//! lives in the runtime's `Freezes` service, which the CLI shares.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use domain::{Freeze, FreezeScope, OnRuns, Principal};
use jiff::{SignedDuration, Timestamp};
use runtime::{FreezeOrder, Runtime};
use serde::Deserialize;

use crate::ApiError;
use crate::api::{FreezeList, StatusAnswer};
use crate::body::{JsonBody, parse_body};

/// A freeze as an operator asks for it. With none of `runbook`, `targets`
/// or `principal`, it covers all automation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FreezeBody {
    /// Why automation is stopped: it goes to the audit, to every run it
    /// pauses and to their tickets. Required, not blank.
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    reason: String,
    /// Only the runbooks whose id matches this glob.
    runbook: Option<String>,
    /// Only runs acting on a target that matches this glob.
    targets: Option<String>,
    /// Only what this principal posts, as an actor glob (`agent:*`).
    principal: Option<String>,
    /// How long it lasts (`30m`, `2h`, `1 day`); without it (or
    /// `expires_at`), until it is lifted.
    expires_in: Option<String>,
    /// When it ends by itself (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    /// What happens to runs under way at their next step: `pause`
    /// (the default; they go on when it lifts) or `cancel` (their
    /// completed steps are rolled back).
    #[serde(default)]
    on_runs: OnRuns,
}

impl FreezeBody {
    fn order(self, now: Timestamp) -> Result<FreezeOrder, ApiError> {
        let scopes = [
            self.runbook.map(FreezeScope::Runbook),
            self.targets.map(FreezeScope::Targets),
            self.principal.map(FreezeScope::Principal),
        ];
        let mut named = scopes.into_iter().flatten();
        let scope = named.next().unwrap_or(FreezeScope::Everything);
        if named.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_body",
                "a freeze covers one of `runbook`, `targets` or `principal` (or, with none, everything): \
                 issue one freeze for each",
            ));
        }
        let expires_at = match (self.expires_in, self.expires_at) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "give `expires_in` or `expires_at`, not both",
                ));
            }
            (Some(text), None) => {
                let lasts: SignedDuration = text.trim().parse().map_err(|error| {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("`expires_in` must be a duration such as `30m` or `2h`: {error}"),
                    )
                })?;
                if lasts <= SignedDuration::ZERO {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "`expires_in` must be longer than nothing",
                    ));
                }
                Some(now.checked_add(lasts).map_err(|_| {
                    ApiError::bad_request("invalid_body", "`expires_in` is too far away")
                })?)
            }
            (None, at) => at,
        };
        Ok(FreezeOrder {
            scope,
            reason: self.reason,
            expires_at,
            on_runs: self.on_runs,
        })
    }
}

/// Freezes automation: all of it, a runbook, targets or a principal's
/// events. Runs it covers pause before their next step (or, with
/// `on_runs: cancel`, roll back), and new events it covers are stored
/// `frozen` and start nothing. It reaches every instance through the
/// store's announcement.
#[utoipa::path(
    post,
    path = "/v1/freezes",
    tag = "freezes",
    request_body(content = FreezeBody),
    responses(
        (status = 201, description = "The freeze, in force", body = Freeze),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn issue(
    State(runtime): State<Runtime>,
    Extension(caller): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Freeze>), ApiError> {
    let body: FreezeBody = parse_body(&body)?;
    let order = body.order(Timestamp::now())?;
    let freeze = runtime.freezes().issue(order, &caller).await?;
    Ok((StatusCode::CREATED, Json(freeze)))
}

/// The freezes in force, oldest first.
#[utoipa::path(
    get,
    path = "/v1/freezes",
    tag = "freezes",
    responses(
        (status = 200, description = "The freezes in force", body = FreezeList),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn list(State(runtime): State<Runtime>) -> Result<Json<FreezeList>, ApiError> {
    let freezes = runtime.freezes().active().await?;
    Ok(Json(FreezeList { freezes }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiftBody {
    /// Why it is lifted now; optional.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// Lifts a freeze in force. The runs it paused go on (unless another
/// freeze holds them), on whichever instance claims each.
#[utoipa::path(
    post,
    path = "/v1/freezes/{id}/lift",
    tag = "freezes",
    params(("id" = String, Path, description = "The freeze's id")),
    request_body(content = LiftBody),
    responses(
        (status = 200, description = "The freeze, lifted", body = Freeze),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn lift(
    State(runtime): State<Runtime>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Freeze>, ApiError> {
    let LiftBody { reason } = if body.iter().all(u8::is_ascii_whitespace) {
        LiftBody::default()
    } else {
        parse_body(&body)?
    };
    let freeze = runtime.freezes().lift(&id, &caller, reason).await?;
    Ok(Json(freeze))
}

/// Whether automation is live: `live`, `partly_frozen` or `frozen`, with
/// the freezes in force and the runs they paused.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "freezes",
    responses(
        (status = 200, description = "Whether automation is live", body = StatusAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn status(State(runtime): State<Runtime>) -> Result<Json<StatusAnswer>, ApiError> {
    let status = runtime.freezes().status().await?;
    Ok(Json(StatusAnswer {
        automation: status.automation,
        freezes: status.freezes,
        paused_runs: status.paused_runs,
    }))
}
