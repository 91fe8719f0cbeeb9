//! Reports over HTTP: `GET /v1/reports/shadow` is the shadow report (the
//! runtime's `Shadow` service, which the CLI reads through this route).

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use runtime::Runtime;
use serde::Deserialize;

use crate::ApiError;
use crate::api::ShadowReportAnswer;
use crate::body::QueryParams;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    /// From when: a time (RFC 3339) or how long ago (`7d`, `24h`, `90m`);
    /// thirty days when not given.
    since: Option<String>,
}

/// Per runbook, what opsgate saw and would have done in shadow mode —
/// shadowed, held off, would run / ask / refuse — and how that compares
/// with what people did when they resolved the tickets, with the cases
/// that differ.
#[utoipa::path(
    get,
    path = "/v1/reports/shadow",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The shadow report", body = ShadowReportAnswer),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn shadow(
    State(runtime): State<Runtime>,
    QueryParams(query): QueryParams<ReportQuery>,
) -> Result<Json<ShadowReportAnswer>, ApiError> {
    let since = runtime::report_since(query.since.as_deref(), Timestamp::now())
        .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    let report = runtime.shadow().report(since).await?;
    Ok(Json(report.into()))
}
