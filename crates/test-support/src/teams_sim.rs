//! A local Microsoft Teams Workflows webhook: the "When a Teams webhook
//! request is received" trigger of a flow that posts each Adaptive Card
//! attachment to a channel.
//!
//! It answers as the real endpoint does. The URL is signed (`sig=` in the
//! query) and a wrong signature gets a 401. A triggered flow gets
//! `202 Accepted` with an empty body and an `x-ms-workflow-run-id` header,
//! before the flow has done anything: the stock template accepts any JSON,
//! and a body that is not a message with an Adaptive Card attachment makes
//! the *run* fail afterwards, visible only in the flow's run history
//! ([`TeamsSim::failed_runs`]). A flow whose trigger validates its request
//! body against a schema ([`TeamsSim::validate_schema`]) refuses such a body
//! at once with `400` and `TriggerInputSchemaMismatch`. Errors use the
//! Power Automate envelope `{"error": {"code", "message"}}`.
//!
//! `rate_limit_next` answers `429` with `Retry-After`; `down(true)` answers
//! `502` with a gateway's HTML page, as a regional outage does.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The id of the simulated flow, as it appears in its URL.
pub const WORKFLOW_ID: &str = "5c1f0a7e9b3d4e2f8a6c1b0d9e8f7a6b";

const TRIGGER_PATH: &str =
    "/powerautomate/automations/direct/workflows/{workflow_id}/triggers/manual/paths/invoke";

/// The simulated flow, shared with its server.
#[derive(Debug, Clone)]
pub struct TeamsSim {
    flow: Arc<Mutex<Flow>>,
}

#[derive(Debug)]
struct Flow {
    signature: String,
    validate_schema: bool,
    down: bool,
    rate_limited_requests: u32,
    retry_after_secs: u64,
    /// Every body that triggered a run, in order.
    received: Vec<Value>,
    /// The cards the runs posted to the channel.
    posted: Vec<Value>,
    /// Why runs failed, as the run history says it.
    failed_runs: Vec<String>,
    runs: u64,
}

impl Default for TeamsSim {
    fn default() -> Self {
        TeamsSim::new()
    }
}

impl TeamsSim {
    pub fn new() -> TeamsSim {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64;
        TeamsSim {
            flow: Arc::new(Mutex::new(Flow {
                signature: format!(
                    "{:016x}{:016x}",
                    crate::splitmix64(seed),
                    crate::splitmix64(seed ^ 0x5EED)
                ),
                validate_schema: false,
                down: false,
                rate_limited_requests: 0,
                retry_after_secs: 0,
                received: Vec::new(),
                posted: Vec::new(),
                failed_runs: Vec::new(),
                runs: 0,
            })),
        }
    }

    fn flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().expect("Teams simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route(TRIGGER_PATH, post(trigger))
            .fallback(no_such_path)
            .with_state(self.clone())
    }

    /// Starts the simulator on a free loopback port.
    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }

    /// The webhook URL, as the trigger shows it, of the simulator at `base`.
    pub fn webhook_url(&self, base: &str) -> String {
        format!(
            "{base}/powerautomate/automations/direct/workflows/{WORKFLOW_ID}/triggers/manual/paths/invoke\
             ?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={}",
            self.signature()
        )
    }

    /// The URL's signature: the secret part of it.
    pub fn signature(&self) -> String {
        self.flow().signature.clone()
    }

    /// Whether the trigger checks the body against the message schema
    /// (off, as in the stock template).
    pub fn validate_schema(&self, validate: bool) {
        self.flow().validate_schema = validate;
    }

    /// While down, every request gets a 502 with an HTML page.
    pub fn down(&self, down: bool) {
        self.flow().down = down;
    }

    /// The next `requests` requests get a 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, requests: u32, retry_after_secs: u64) {
        let mut flow = self.flow();
        flow.rate_limited_requests = requests;
        flow.retry_after_secs = retry_after_secs;
    }

    /// Every body that triggered a run, oldest first.
    pub fn received(&self) -> Vec<Value> {
        self.flow().received.clone()
    }

    /// The Adaptive Cards the flow posted to the channel, oldest first.
    pub fn posted_cards(&self) -> Vec<Value> {
        self.flow().posted.clone()
    }

    /// The errors of the runs that failed after their `202`, oldest first.
    pub fn failed_runs(&self) -> Vec<String> {
        self.flow().failed_runs.clone()
    }
}

async fn trigger(
    State(sim): State<TeamsSim>,
    Path(workflow_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut flow = sim.flow();
    if flow.down {
        return bad_gateway();
    }
    if workflow_id != WORKFLOW_ID {
        return error(
            StatusCode::NOT_FOUND,
            "WorkflowNotFound",
            &format!("The workflow '{workflow_id}' could not be found."),
        );
    }
    let signed = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.strip_prefix("sig=") == Some(flow.signature.as_str()));
    if !signed {
        return error(
            StatusCode::UNAUTHORIZED,
            "DirectApiInvalidAuthorizationSignature",
            "The provided authorization signature is not valid.",
        );
    }
    if flow.rate_limited_requests > 0 {
        flow.rate_limited_requests -= 1;
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "WorkflowRequestsThrottled",
            &format!(
                "Number of requests for workflow '{WORKFLOW_ID}' exceeded the limit of '100' \
                 over time window of '00:01:00'."
            ),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(flow.retry_after_secs),
        );
        return response;
    }
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if flow.validate_schema
        && let Err(details) = check_message_schema(&payload)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "TriggerInputSchemaMismatch",
            &format!(
                "The input body for trigger 'manual' of type 'Request' did not match its \
                 schema definition. Error details: '{details}'."
            ),
        );
    }
    flow.runs += 1;
    let run_id = format!("08584{:016}CU00", flow.runs);
    match run_the_flow(&payload) {
        Ok(cards) => flow.posted.extend(cards),
        Err(failure) => flow.failed_runs.push(failure),
    }
    flow.received.push(payload);
    let mut response = StatusCode::ACCEPTED.into_response();
    response.headers_mut().insert(
        "x-ms-workflow-run-id",
        HeaderValue::from_str(&run_id).expect("a run id is a header value"),
    );
    response
}

/// The schema the trigger validates against when told to: a message whose
/// attachments are Adaptive Cards. The details read as the trigger's do.
fn check_message_schema(payload: &Value) -> Result<(), String> {
    let Some(message) = payload.as_object() else {
        return Err(format!(
            "Invalid type. Expected Object but got {}.",
            json_type(payload)
        ));
    };
    let missing: Vec<&str> = ["type", "attachments"]
        .into_iter()
        .filter(|field| !message.contains_key(*field))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "Required properties are missing from object: {}.",
            missing.join(", ")
        ));
    }
    if message["type"] != "message" {
        return Err(format!("Value {} is not defined in enum.", message["type"]));
    }
    let Some(attachments) = message["attachments"].as_array() else {
        return Err(format!(
            "Invalid type. Expected Array but got {}.",
            json_type(&message["attachments"])
        ));
    };
    for attachment in attachments {
        let Some(attachment) = attachment.as_object() else {
            return Err(format!(
                "Invalid type. Expected Object but got {}.",
                json_type(attachment)
            ));
        };
        let missing: Vec<&str> = ["contentType", "content"]
            .into_iter()
            .filter(|field| !attachment.contains_key(*field))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "Required properties are missing from object: {}.",
                missing.join(", ")
            ));
        }
        if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return Err(format!(
                "Value {} is not defined in enum.",
                attachment["contentType"]
            ));
        }
    }
    Ok(())
}

/// What the stock template does with a triggered body: post each attachment's
/// content as a card, or fail the run.
fn run_the_flow(payload: &Value) -> Result<Vec<Value>, String> {
    let Some(attachments) = payload.get("attachments").and_then(Value::as_array) else {
        return Err(format!(
            "The execution of template action 'Send_each_adaptive_card' failed: the result of \
             the evaluation of 'foreach' expression '@triggerOutputs()?['body']?['attachments']' \
             is of type '{}'. The result must be a valid array.",
            template_type(payload.get("attachments").unwrap_or(&Value::Null))
        ));
    };
    let mut cards = Vec::new();
    for attachment in attachments {
        let content = &attachment["content"];
        if content["type"] != "AdaptiveCard" {
            return Err(
                "Action 'Post_card_in_a_chat_or_channel' failed: InvalidBotAdaptiveCard: \
                        The specified Teams flowbot adaptive card request is missing or invalid. \
                        Property 'type' must be 'AdaptiveCard'"
                    .to_owned(),
            );
        }
        cards.push(content.clone());
    }
    Ok(cards)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(number) if number.is_f64() => "Number",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

/// Type names as the workflow expression language prints them.
fn template_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "Null",
        Value::Object(_) => "Object",
        Value::Array(_) => "Array",
        _ => json_type(value),
    }
}

async fn no_such_path() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "InvalidRequestPath",
        "The request path is not valid.",
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

fn bad_gateway() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>502 Bad Gateway</title></head>\
         <body><h1>502 Bad Gateway</h1></body></html>",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_schema_names_what_is_wrong() {
        let check = |payload: Value, expect: Result<(), &str>| {
            assert_eq!(
                check_message_schema(&payload),
                expect.map_err(str::to_owned),
                "{payload}"
            );
        };
        let card = json!({"type": "AdaptiveCard", "version": "1.5", "body": []});
        check(
            json!({"type": "message", "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}
            ]}),
            Ok(()),
        );
        check(
            json!({"text": "Hello World!"}),
            Err("Required properties are missing from object: type, attachments."),
        );
        check(
            json!("hello"),
            Err("Invalid type. Expected Object but got String."),
        );
        check(
            json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive"}]}),
            Err("Required properties are missing from object: content."),
        );
        check(
            json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.teams.card.o365connector", "content": {}}]}),
            Err(
                "Value \"application/vnd.microsoft.teams.card.o365connector\" is not defined in enum.",
            ),
        );
    }
}
