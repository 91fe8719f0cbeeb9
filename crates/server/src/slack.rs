//! Approvals from Slack: `POST /v1/hooks/slack/interactions`, the app's
//! interactivity URL, where Slack delivers the clicks on the Approve and
//! Deny buttons of the message `connectors::slack::approval_message` builds.
//!
//! The request carries Slack's signature instead of an API token, so the
//! authentication middleware lets this one route through and it is checked
//! here, first, on the raw bytes: `X-Slack-Signature: v0=<hex HMAC-SHA256
//! of "v0:<X-Slack-Request-Timestamp>:<body>">` under the app's signing
//! secret, compared in constant time, with a timestamp within the replay
//! window (Slack's five minutes) and a signature accepted once, by the
//! replay rule every verifier shares (`auth::SignatureUse`: once across
//! instances, by the signature's bytes, released after an answer of 5xx so
//! a retry works). A request that fails is answered 401 in the API's error
//! format and audited as `api.refused`, like any unauthenticated call. The
//! body must be declared `application/x-www-form-urlencoded`, as Slack
//! sends it (415 otherwise).
//!
//! A genuine click is then a decision by a person: the Slack user is looked
//! up in the directory by their Slack member id, and the run is approved or
//! denied as that person with the approver role, through the runtime, so
//! every separation-of-duties rule applies as on any other route. A click
//! from someone the directory does not know, or on a message posted for an
//! approval stage that is no longer open, is refused and audited as
//! `approval.refused` on the run. Slack wants a 200 within three seconds,
//! and anything else shows the person an error icon on the button, so every
//! decision, refusals included, is answered 200 with a short ephemeral
//! message saying what happened; only a request that is not Slack's, or not
//! well formed, gets an error status.
//!
//! For message buttons Slack does not display that answer's body, so the
//! outcome is also posted to the payload's `response_url`, in a task of its
//! own after the answer (the three seconds are not spent on it): a decision
//! replaces the message's buttons with who decided, a refusal is shown to
//! the person who clicked alone. The post goes only under the configured
//! base (`SlackConfig::responder`); a payload pointing elsewhere is not
//! followed.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use connectors::slack::{
    ApprovalButton, Interaction, Responder, ResponseKind, interaction_response,
};
use domain::{Principal, Role, RunState};
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ApiError;
use crate::auth::{SignatureUse, audit_refusal};
use crate::body::FormBody;
use crate::links::open_stage;
use crate::state::AppState;
use domain::Secret;

pub(crate) const INTERACTIONS_ROUTE: &str = "/v1/hooks/slack/interactions";
pub const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SLACK_SIGNATURE_HEADER: &str = "x-slack-signature";

/// Settings of the Slack app whose buttons approve runs.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The app's signing secret (Basic Information → App Credentials).
    pub signing_secret: Secret,
    /// Tells the message a click came from what became of the click,
    /// through the payload's `response_url`.
    pub responder: Responder,
}

/// The signature Slack sends for `body` at `timestamp` (unix seconds, as
/// the header text): `v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`.
pub fn slack_signature(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mac = signature_mac(signing_secret, timestamp, body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn signature_mac(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> hmac::Hmac<Sha256> {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(signing_secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Whether the headers' signature is Slack's for `body`, made within
/// `window_seconds` of `now`: the signature's bytes when it is, the reason
/// when it is not.
fn verify(
    signing_secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
    window_seconds: i64,
) -> Result<Vec<u8>, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| format!("a Slack request needs the `{name}` header"))
    };
    let timestamp_text = header(SLACK_TIMESTAMP_HEADER)?;
    let signature_text = header(SLACK_SIGNATURE_HEADER)?;
    let timestamp: i64 = timestamp_text.parse().map_err(|_| {
        format!("`{SLACK_TIMESTAMP_HEADER}` must be unix seconds, found `{timestamp_text}`")
    })?;
    if (now.as_second() - timestamp).abs() > window_seconds {
        return Err(format!(
            "the request's timestamp is more than {window_seconds} s from now"
        ));
    }
    let presented = signature_text
        .strip_prefix("v0=")
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or_else(|| format!("`{SLACK_SIGNATURE_HEADER}` must be v0=<hex>"))?;
    let expected = signature_mac(signing_secret, timestamp_text, body)
        .finalize()
        .into_bytes();
    if !signatures_match(&expected, &presented) {
        return Err("the signature does not match the body".to_owned());
    }
    Ok(presented)
}

/// Compares in constant time, so the answer's timing tells nothing about
/// how much of a forged signature was right.
fn signatures_match(expected: &[u8], presented: &[u8]) -> bool {
    bool::from(expected.ct_eq(presented))
}

/// The form Slack posts: one field, `payload`, holding JSON.
/// The message the person who clicked sees, and only they.
fn ephemeral(text: &str) -> Response {
    Json(interaction_response(ResponseKind::Ephemeral, text)).into_response()
}

/// `POST /v1/hooks/slack/interactions`: Slack's signature first, used
/// once, then the click.
#[utoipa::path(
    post,
    path = "/v1/hooks/slack/interactions",
    tag = "approvals",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Slack's interaction payload, signed with `X-Slack-Signature` (v0)"),
    security(()),
    responses(
        (status = 200, description = "What the person who clicked sees", body = Object),
        crate::openapi::Refusals,
    ),
)]
pub(crate) async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Result<Response, ApiError> {
    let Some(slack) = state.slack.as_deref() else {
        return Err(ApiError::NotFound {
            what: "route",
            id: INTERACTIONS_ROUTE.to_owned(),
        });
    };
    let now = Timestamp::now();
    let window = state.auth.replay_window().as_secs() as i64;
    let signature = match verify(
        slack.signing_secret.expose_bytes(),
        &headers,
        &body,
        now,
        window,
    ) {
        Ok(presented) => SignatureUse::new("slack", &presented),
        Err(message) => return Err(refuse(&state, ApiError::Unauthorized { message }).await),
    };
    if let Err(error) = signature.claim(&state, now).await {
        return Err(refuse(&state, error).await);
    }
    let held = signature.held(&state);
    let answer = answer_click(&state, slack, &body).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status_and_code().0,
    };
    held.settle(status).await;
    answer
}

/// A request that is not Slack's, audited as `api.refused`.
async fn refuse(state: &AppState, error: ApiError) -> ApiError {
    audit_refusal(
        state,
        &Method::POST,
        INTERACTIONS_ROUTE,
        "anonymous",
        &error,
    )
    .await;
    error
}

/// Reads a verified interaction and records the click it stands for.
async fn answer_click(
    state: &AppState,
    slack: &SlackConfig,
    body: &[u8],
) -> Result<Response, ApiError> {
    let interaction = connectors::slack::read_interaction(body)
        .map_err(|message| ApiError::bad_request("invalid_body", message))?;
    let (button, approving, user_id, response_url) = match interaction {
        Interaction::NotAButton => {
            return Ok(ephemeral("opsgate only handles its approval buttons."));
        }
        // Other buttons (the link to the approval page) need only an answer.
        Interaction::OtherButton => return Ok(Json(json!({})).into_response()),
        Interaction::Decision {
            button,
            approving,
            user_id,
            response_url,
        } => (button, approving, user_id, response_url),
    };
    let click = decide(state, &button, &user_id, approving).await?;
    let answer = match &click {
        Click::Recorded {
            state: run_state, ..
        } => format!(
            "You {} run {}; it is now {run_state}.",
            if approving { "approved" } else { "denied" },
            button.run
        ),
        Click::Refused { reason } => format!("Not recorded: {reason}."),
    };
    if let Some(response_url) = response_url {
        let runtime = state.runtime.clone();
        let responder = slack.responder.clone();
        tokio::spawn(async move {
            let response = click.response(&runtime, &button, approving).await;
            if let Err(error) = responder.respond(&response_url, &response).await {
                tracing::warn!(run_id = %button.run, error = %error, "could not tell Slack's message what became of the click");
            }
        });
    }
    Ok(ephemeral(&answer))
}

/// What became of a click on Approve or Deny.
enum Click {
    /// The decision was recorded, as the directory's `person` (their name);
    /// the run is now in `state`.
    Recorded { person: String, state: RunState },
    /// It was not, and why.
    Refused { reason: String },
}

impl Click {
    /// The answer for the message the click came from. A decision replaces
    /// its buttons with who decided — except an approval that leaves the
    /// stage waiting for more people, whose buttons must stay: that one is
    /// a line in the channel. A refusal is for the person who clicked only.
    async fn response(
        &self,
        runtime: &runtime::Runtime,
        button: &ApprovalButton,
        approving: bool,
    ) -> serde_json::Value {
        let (person, run_state) = match self {
            Click::Refused { reason } => {
                return interaction_response(
                    ResponseKind::Ephemeral,
                    &format!("Refused: {reason}."),
                );
            }
            Click::Recorded { person, state } => (person, *state),
        };
        if !approving {
            return interaction_response(
                ResponseKind::ReplaceOriginal,
                &format!(
                    "Denied by {person} (stage `{}`); the run is now {run_state}.",
                    button.stage
                ),
            );
        }
        // Read again: how far the stage got is known only after the
        // decision. A run that cannot be read is told as the decision left it.
        let run = runtime.reads().run(&button.run).await.ok().flatten();
        let stages = run
            .as_ref()
            .map_or(&[][..], |run| run.machine.progress.stages.as_slice());
        let position = stages
            .iter()
            .position(|stage| stage.name == button.stage)
            .map(|index| format!(", {} of {}", index + 1, stages.len()))
            .unwrap_or_default();
        let approved = format!("Approved by {person} (stage `{}`{position})", button.stage);
        let stage_still_waiting = run
            .as_ref()
            .filter(|run| run.state == RunState::AwaitingApproval)
            .and_then(|run| run.machine.progress.stages.get(run.machine.progress.stage))
            .filter(|stage| stage.name == button.stage);
        match stage_still_waiting {
            Some(stage) => {
                let missing = stage
                    .required
                    .saturating_sub(stage.approved_by.len() as u32);
                interaction_response(
                    ResponseKind::InChannel,
                    &format!("{approved}; the stage waits for {missing} more approval(s)."),
                )
            }
            None => interaction_response(
                ResponseKind::ReplaceOriginal,
                &format!("{approved}; the run is now {run_state}."),
            ),
        }
    }
}

/// Approves or denies `button`'s run as the person behind `user_id`.
async fn decide(
    state: &AppState,
    button: &ApprovalButton,
    user_id: &str,
    approving: bool,
) -> Result<Click, ApiError> {
    let decision = if approving { "approve" } else { "deny" };
    let runtime = &state.runtime;
    let run = runtime.reads().run(&button.run).await?;
    let directory = runtime.directory();
    let found = directory
        .and_then(|directory| directory.find_by_chat(runtime::ChatPlatform::Slack, user_id));
    let checked = match (&run, found) {
        (None, _) => Err(format!("run `{}` does not exist", button.run)),
        (Some(_), None) if directory.is_none() => Err(format!(
            "wrong person: no directory is configured, so Slack user {user_id} cannot be matched to a person"
        )),
        (Some(_), None) => Err(format!(
            "wrong person: Slack user {user_id} is not a person in the directory"
        )),
        (Some(run), Some(_))
            if run.state == domain::RunState::AwaitingApproval
                && open_stage(run) != button.stage =>
        {
            Err(format!(
                "this message was for approval stage `{}`; the run is now at stage `{}`",
                button.stage,
                open_stage(run)
            ))
        }
        (Some(_), Some(person)) => Ok(person),
    };
    let person = match checked {
        Ok(person) => person,
        Err(reason) => {
            let actor = found.map_or_else(
                || format!("slack:{user_id}"),
                |person| format!("user:{}", person.id),
            );
            let record = runtime::AuditEntry::new(
                domain::RecordKind::ApprovalRefused,
                actor,
                json!({"reason": reason, "decision": decision, "slack_user": user_id, "stage": button.stage}),
            );
            let run_id = run.as_ref().map(|run| run.id.as_str());
            runtime.audit_log().append(run_id, &[record]).await?;
            tracing::warn!(run_id = %button.run, slack_user = user_id, reason = %reason, "Slack decision refused");
            return Ok(Click::Refused { reason });
        }
    };
    let approver = Principal {
        name: person.id.clone(),
        role: Role::Approver,
    };
    let comment = Some(format!("from Slack (user {user_id})"));
    let outcome = if approving {
        runtime.approve(&button.run, &approver, comment).await
    } else {
        runtime.deny(&button.run, &approver, comment).await
    };
    // Refusals from here on (separation of duties, a run that moved on)
    // are audited by the runtime itself.
    match outcome {
        Ok(state) => Ok(Click::Recorded {
            person: person.name.clone(),
            state,
        }),
        Err(runtime::Error::ApprovalRefused { reason }) => Ok(Click::Refused { reason }),
        Err(runtime::Error::Engine(error)) => Ok(Click::Refused {
            reason: error.to_string(),
        }),
        Err(runtime::Error::Store(runtime::StoreError::Conflict { .. })) => Ok(Click::Refused {
            reason: "the run changed meanwhile; look at it and try again".to_owned(),
        }),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's worked example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SLACK_TIMESTAMP_HEADER, timestamp.parse().unwrap());
        headers.insert(SLACK_SIGNATURE_HEADER, signature.parse().unwrap());
        headers
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn check(headers: HeaderMap, body: &str, now: i64) -> Result<(), String> {
        verify(SECRET.as_bytes(), &headers, body.as_bytes(), at(now), 300).map(drop)
    }

    #[test]
    fn slacks_published_example_signs_and_verifies() {
        assert_eq!(
            slack_signature(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes()),
            SIGNATURE
        );
        assert_eq!(
            check(headers(TIMESTAMP, SIGNATURE), BODY, 1531420618),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let sent = 1531420618;
        let tampered = BODY.replace("roadrunner", "coyote");
        let mut last_digit = SIGNATURE.to_owned();
        last_digit.replace_range(SIGNATURE.len() - 1.., "4");
        let cases: &[(HeaderMap, &str, i64, &str)] = &[
            (
                headers(TIMESTAMP, SIGNATURE),
                &tampered,
                sent,
                "does not match",
            ),
            (
                headers(TIMESTAMP, &last_digit),
                BODY,
                sent,
                "does not match",
            ),
            (
                headers(TIMESTAMP, "v0=a2114d57"),
                BODY,
                sent,
                "does not match",
            ),
            (headers(TIMESTAMP, &SIGNATURE[3..]), BODY, sent, "v0=<hex>"),
            (headers(TIMESTAMP, "v0=not-hex"), BODY, sent, "v0=<hex>"),
            (
                headers("1531420619", SIGNATURE),
                BODY,
                sent,
                "does not match",
            ),
            (
                headers(TIMESTAMP, SIGNATURE),
                BODY,
                sent + 301,
                "more than 300 s",
            ),
            (
                headers(TIMESTAMP, SIGNATURE),
                BODY,
                sent - 301,
                "more than 300 s",
            ),
            (headers("yesterday", SIGNATURE), BODY, sent, "unix seconds"),
            (HeaderMap::new(), BODY, sent, "x-slack-request-timestamp"),
        ];
        for (headers, body, now, expected) in cases {
            let refusal = check(headers.clone(), body, *now).expect_err(expected);
            assert!(refusal.contains(expected), "{expected}: {refusal}");
        }
        // At the edge of the window it still passes.
        assert_eq!(
            check(headers(TIMESTAMP, SIGNATURE), BODY, sent + 300),
            Ok(())
        );
    }

    #[test]
    fn the_comparison_is_subtles_constant_time_equality() {
        let expected = [7u8; 32];
        let mut first = expected;
        first[0] ^= 1;
        let mut last = expected;
        last[31] ^= 1;
        assert!(signatures_match(&expected, &expected));
        for presented in [&first[..], &last[..], &expected[..31], &[][..]] {
            assert!(!signatures_match(&expected, presented));
        }
    }
}
