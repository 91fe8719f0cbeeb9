//! What a click in Slack says: an interaction payload (a form field
//! `payload` holding JSON), read into the one thing opsgate acts on — a
//! click on Approve or Deny, by whom, and where to answer it. The server
//! has checked Slack's signature before this reads a byte.

use serde::Deserialize;

use super::{APPROVE_ACTION, ApprovalButton, DENY_ACTION};

/// What an interaction asks of opsgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// Not a button click (a shortcut, a modal): nothing of opsgate's.
    NotAButton,
    /// A button that decides nothing (the link to the approval page).
    OtherButton,
    /// A click on Approve (`approving`) or Deny.
    Decision {
        button: ApprovalButton,
        approving: bool,
        /// The Slack user who clicked (`U0123ABCD`).
        user_id: String,
        /// Where answers to this click go (`https://hooks.slack.com/actions/…`).
        response_url: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
struct InteractionForm {
    payload: String,
}

/// What opsgate reads of an interaction payload.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: Option<SlackUser>,
    #[serde(default)]
    actions: Vec<Action>,
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    value: Option<String>,
}

/// Reads the form body Slack posts, or says what is wrong with it.
pub fn read_interaction(form_body: &[u8]) -> Result<Interaction, String> {
    let form: InteractionForm = serde_urlencoded::from_bytes(form_body)
        .map_err(|error| format!("expected a `payload` form field: {error}"))?;
    let payload: Payload = serde_json::from_str(&form.payload)
        .map_err(|error| format!("the `payload` is not an interaction: {error}"))?;
    if payload.kind != "block_actions" {
        return Ok(Interaction::NotAButton);
    }
    let Some((action, approving)) =
        payload
            .actions
            .iter()
            .find_map(|action| match action.action_id.as_str() {
                APPROVE_ACTION => Some((action, true)),
                DENY_ACTION => Some((action, false)),
                _ => None,
            })
    else {
        return Ok(Interaction::OtherButton);
    };
    let button = action
        .value
        .as_deref()
        .and_then(ApprovalButton::parse)
        .ok_or("the button's value is not an opsgate approval")?;
    let user_id = payload
        .user
        .map(|user| user.id)
        .ok_or("the payload names no `user`")?;
    Ok(Interaction::Decision {
        button,
        approving,
        user_id,
        response_url: payload.response_url,
    })
}
