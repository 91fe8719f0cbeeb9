//! Approvals from chat buttons: `POST /v1/hooks/{source}/interactions`,
//! where a chat platform delivers the clicks on the Approve and Deny
//! buttons of the approval messages its channel posted (Slack's app
//! interactivity URL is `/v1/hooks/slack/interactions`).
//!
//! The request carries the platform's signature instead of an API token,
//! so the authentication middleware lets the route through and the
//! signature is checked here, first, on the raw bytes, by the one pipeline
//! of signed requests (`signed.rs`: the scheme, then the replay rule; a
//! request that fails is answered 401 and audited as `api.refused`). The
//! body must be declared `application/x-www-form-urlencoded`, as Slack
//! sends it (415 otherwise).
//!
//! A genuine click is then a decision by a person, made by the runtime
//! ([`runtime::Decisions::decide_click`]): who the chat user is in the
//! directory, whether the message's stage is still open, and every
//! separation-of-duties rule. A platform wants a quick 200 (Slack: within
//! three seconds, or the person sees an error icon), so every decision,
//! refusals included, is answered 200 with a short message for the person
//! who clicked; only a request that is not the platform's, or not well
//! formed, gets an error status. What became of the click is also told to
//! the message it came from, in a task of its own after the answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use runtime::{ButtonSource, Click, Pressed, Reply};

use crate::ApiError;
use crate::body::FormBody;
use crate::state::AppState;

/// The route of every chat platform's buttons.
pub(crate) const INTERACTIONS_ROUTE: &str = "/v1/hooks/{source}/interactions";

/// `POST /v1/hooks/{source}/interactions`: the platform's signature first,
/// used once, then the click.
#[utoipa::path(
    post,
    path = "/v1/hooks/{source}/interactions",
    tag = "approvals",
    params(("source" = String, Path, description = "The chat platform whose buttons were clicked: `slack`, when configured")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "The platform's interaction payload, signed its way (Slack: `X-Slack-Signature`, v0)"),
    security(()),
    responses(
        (status = 200, description = "What the person who clicked sees, in the platform's format", body = Object),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn interactions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Result<Response, ApiError> {
    let Some(buttons) = state.runtime.decisions().buttons(&name) else {
        return Err(ApiError::NotFound {
            what: "route",
            id: format!("/v1/hooks/{name}/interactions (no `{name}:` buttons are configured)"),
        });
    };
    let route = format!("/v1/hooks/{name}/interactions");
    let signature = buttons.signature();
    let held = crate::signed::verify(
        &state,
        &route,
        buttons.name(),
        signature.as_ref(),
        &headers,
        &body,
    )
    .await?;
    let answer = answer_click(&state, buttons, &body).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status_and_code().0,
    };
    held.settle(status).await;
    answer
}

/// Reads a verified click and records the decision it stands for.
async fn answer_click(
    state: &AppState,
    buttons: std::sync::Arc<dyn ButtonSource>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let pressed = buttons
        .read(body)
        .map_err(|message| ApiError::bad_request("invalid_body", message))?;
    let (click, reply_to) = match pressed {
        Pressed::NotOurs => {
            let text = "opsgate only handles its approval buttons.";
            return Ok(Json(buttons.answer(Reply::ToThePerson, text)).into_response());
        }
        // Other buttons (the link to the approval page) need only an answer.
        Pressed::Nothing => return Ok(Json(serde_json::json!({})).into_response()),
        Pressed::Decision {
            run,
            stage,
            approving,
            user_id,
            reply_to,
        } => (
            Click {
                run,
                stage,
                approving,
                user_id,
            },
            reply_to,
        ),
    };
    let clicked = state
        .runtime
        .decisions()
        .decide_click(buttons.as_ref(), &click)
        .await?;
    let answer = buttons.answer(Reply::ToThePerson, &runtime::click_answer(&click, &clicked));
    if let Some(reply_to) = reply_to {
        let runtime = state.runtime.clone();
        tokio::spawn(async move {
            let (reply, text) = runtime.decisions().click_follow_up(&click, &clicked).await;
            if let Err(error) = buttons.follow_up(&reply_to, reply, &text).await {
                tracing::warn!(run_id = %click.run, error = %error, "could not tell the chat message what became of the click");
            }
        });
    }
    Ok(Json(answer).into_response())
}
