//! A local model endpoint speaking the chat-completions wire format:
//! `POST /v1/chat/completions` with a bearer key, answered from a script
//! (a closure from the request's messages to the answer's content), or
//! switched to the unhappy paths a triage client must survive.
//!
//! What it checks and answers as the hosted API does (OpenAI's API
//! reference for chat completions and its structured-outputs guide):
//! - `Authorization: Bearer <key>`; a missing or wrong key is a `401` with
//!   the error envelope `{"error": {"message", "type", "param", "code"}}`,
//!   code `invalid_api_key`.
//! - A body that is not JSON, or without `model` or `messages`, is a
//!   `400 invalid_request_error`; a model it does not serve is a `404`,
//!   code `model_not_found`.
//! - `response_format: {"type": "json_schema", "json_schema": {"name",
//!   "strict": true, "schema"}}` is checked for what strict mode demands
//!   of every object in the schema — `additionalProperties: false`, and
//!   every property listed in `required` — and refused with a `400` in the
//!   API's words otherwise; a schema name outside `[a-zA-Z0-9_-]{1,64}` too.
//! - A completion is `{"id", "object": "chat.completion", "created",
//!   "model", "choices": [{"index": 0, "message": {"role": "assistant",
//!   "content", "refusal"}, "finish_reason"}], "usage"}`.
//!
//! The switches ([`Behaviour`]): content that is not JSON, a refusal
//! (`content: null`, `refusal: "…"`), an answer cut off at the token limit
//! (`finish_reason: "length"`), `429` with `Retry-After` and the envelope
//! (code `rate_limit_exceeded`), a slow answer, and a `500`.
//!
//! Assumed rather than checked against the real service: the exact
//! wording of its messages beyond the envelope's shape, and that a
//! rate-limited answer carries `Retry-After` in seconds (the hosted API
//! also sends `x-ratelimit-reset-*`, which the sim sends too but a client
//! need not read).
//!
//! Every request is recorded — refused ones too — so a test can read the
//! body that was sent and count the calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

/// What the model says to a request's messages: the answer's content, a
/// JSON value sent as the text of `choices[0].message.content`.
pub type Script = Arc<dyn Fn(&[Value]) -> Value + Send + Sync>;

/// How the endpoint answers, from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// A completion whose content is what the script says.
    Script,
    /// A completion whose content is not JSON (a model that ignored the
    /// format).
    MalformedContent,
    /// A refusal: `content: null` and `refusal` saying this.
    Refusal(String),
    /// The script's content cut short, with `finish_reason: "length"`.
    CutOff,
    /// `429` with `Retry-After: <seconds>` and the error envelope.
    RateLimited { retry_after_seconds: u64 },
    /// The script's answer, after this long.
    Slow(Duration),
    /// `500` with the error envelope.
    ServerError,
}

/// One request the endpoint got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body as JSON (`null` when it was not JSON).
    pub body: Value,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    pub at: Instant,
}

/// A model endpoint with one key and one model. Cheap to clone; clones
/// share the endpoint.
#[derive(Clone)]
pub struct ChatCompletionsSim {
    state: Arc<Mutex<Endpoint>>,
}

struct Endpoint {
    api_key: String,
    model: String,
    script: Script,
    behaviour: Behaviour,
    received: Vec<Received>,
}

impl ChatCompletionsSim {
    /// An endpoint serving `model` to `api_key`, answering every ticket
    /// with "no runbook" until a script is set.
    pub fn new(api_key: &str, model: &str) -> ChatCompletionsSim {
        ChatCompletionsSim {
            state: Arc::new(Mutex::new(Endpoint {
                api_key: api_key.to_owned(),
                model: model.to_owned(),
                script: Arc::new(
                    |_| json!({"runbook": null, "inputs": {}, "confidence": 0.5, "rationale": "no script"}),
                ),
                behaviour: Behaviour::Script,
                received: Vec::new(),
            })),
        }
    }

    fn endpoint(&self) -> std::sync::MutexGuard<'_, Endpoint> {
        self.state.lock().expect("chat-completions simulator lock")
    }

    /// Answers from `script` from now on.
    pub fn script(&self, script: impl Fn(&[Value]) -> Value + Send + Sync + 'static) {
        self.endpoint().script = Arc::new(script);
    }

    /// Answers as `behaviour` says from now on.
    pub fn behave(&self, behaviour: Behaviour) {
        self.endpoint().behaviour = behaviour;
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.endpoint().received.clone()
    }

    /// How many requests arrived.
    pub fn calls(&self) -> usize {
        self.endpoint().received.len()
    }

    /// The API under `/v1` (clients use `<url>/v1` as their base).
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(self.clone())
    }

    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }
}

/// The text of the request's last user message: the ticket, as a client
/// sends it.
pub fn user_message(messages: &[Value]) -> &str {
    messages
        .iter()
        .rev()
        .find(|message| message["role"] == "user")
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
}

/// The error envelope, with `status`.
fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    crate::json_answer(
        status,
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

async fn completions(
    State(sim): State<ChatCompletionsSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (script, behaviour, model) = {
        let mut endpoint = sim.endpoint();
        endpoint.received.push(Received {
            body: parsed.clone().unwrap_or(Value::Null),
            authorization: authorization.clone(),
            at: Instant::now(),
        });
        let key = authorization
            .as_deref()
            .and_then(|value| value.strip_prefix("Bearer "));
        if key != Some(endpoint.api_key.as_str()) {
            let message = match key {
                None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".to_owned(),
                Some(key) => format!("Incorrect API key provided: {}.", masked(key)),
            };
            return error(
                StatusCode::UNAUTHORIZED,
                &message,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            );
        }
        (
            endpoint.script.clone(),
            endpoint.behaviour.clone(),
            endpoint.model.clone(),
        )
    };
    let Some(request) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
            "invalid_request_error",
            None,
            None,
        );
    };
    if let Some(refused) = refusal_of(&request, &model) {
        return refused;
    }
    match behaviour {
        Behaviour::RateLimited {
            retry_after_seconds,
        } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in {retry_after_seconds}s."
                ),
                "requests",
                Some("requests"),
                Some("rate_limit_exceeded"),
            );
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, retry_after_seconds.into());
            headers.insert("x-ratelimit-limit-requests", 3.into());
            headers.insert("x-ratelimit-remaining-requests", 0.into());
            if let Ok(reset) = format!("{retry_after_seconds}s").parse() {
                headers.insert("x-ratelimit-reset-requests", reset);
            }
            return response;
        }
        Behaviour::ServerError => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            );
        }
        Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let scripted = || script(&messages).to_string();
    let (content, refusal, finish_reason) = match behaviour {
        Behaviour::MalformedContent => (
            json!("Sure! The runbook for this ticket is clear-print-queue."),
            Value::Null,
            "stop",
        ),
        Behaviour::Refusal(text) => (Value::Null, json!(text), "stop"),
        Behaviour::CutOff => {
            let text = scripted();
            let cut: String = text.chars().take(text.chars().count() / 2).collect();
            (json!(cut), Value::Null, "length")
        }
        _ => (json!(scripted()), Value::Null, "stop"),
    };
    let prompt_tokens = body.len() / 4;
    let completion_tokens = content.as_str().map_or(8, |text| text.len() / 4);
    crate::json_answer(
        StatusCode::OK,
        json!({
            "id": format!("chatcmpl-sim{}", jiff::Timestamp::now().as_nanosecond()),
            "object": "chat.completion",
            "created": jiff::Timestamp::now().as_second(),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_sim",
        }),
    )
}

/// A key as the API shows it in an error: its ends only.
fn masked(key: &str) -> String {
    let characters: Vec<char> = key.chars().collect();
    if characters.len() <= 8 {
        return "*".repeat(characters.len());
    }
    let start: String = characters[..3].iter().collect();
    let end: String = characters[characters.len() - 4..].iter().collect();
    format!("{start}***{end}")
}

/// The answer to a request the API would refuse, if it would.
fn refusal_of(request: &Value, model: &str) -> Option<Response> {
    let invalid = |message: String, param: &str| {
        Some(error(
            StatusCode::BAD_REQUEST,
            &message,
            "invalid_request_error",
            Some(param),
            None,
        ))
    };
    let Some(asked) = request["model"].as_str() else {
        return invalid("you must provide a model parameter".to_owned(), "model");
    };
    let messages = request["messages"].as_array();
    if messages.is_none_or(|messages| messages.is_empty()) {
        return invalid("[] is too short - 'messages'".to_owned(), "messages");
    }
    for (index, message) in messages.into_iter().flatten().enumerate() {
        let role_known = message["role"]
            .as_str()
            .is_some_and(|role| ["system", "developer", "user", "assistant"].contains(&role));
        if !role_known || !message["content"].is_string() {
            return invalid(
                format!("Invalid value for 'messages[{index}]': expected a role and text content."),
                &format!("messages.[{index}]"),
            );
        }
    }
    if asked != model {
        return Some(error(
            StatusCode::NOT_FOUND,
            &format!("The model `{asked}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ));
    }
    let format = &request["response_format"];
    if format.is_null() || format["type"] == "text" {
        return None;
    }
    if format["type"] != "json_schema" {
        return invalid(
            format!(
                "Invalid value: {}. Supported values are: 'text', 'json_object', and 'json_schema'.",
                format["type"]
            ),
            "response_format.type",
        );
    }
    let schema = &format["json_schema"];
    let name = schema["name"].as_str().unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return invalid(
            format!(
                "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters, got '{name}'."
            ),
            "response_format.json_schema.name",
        );
    }
    if schema["strict"] == true
        && let Some(problem) = strict_problem(&schema["schema"], &mut Vec::new())
    {
        return invalid(
            format!("Invalid schema for response_format '{name}': {problem}"),
            "response_format",
        );
    }
    None
}

/// What strict mode refuses in `schema`, in the API's words: an object
/// that allows other properties, or does not require all of its own.
fn strict_problem(schema: &Value, context: &mut Vec<String>) -> Option<String> {
    let at = || {
        let parts: Vec<String> = context.iter().map(|part| format!("'{part}'")).collect();
        format!("In context=({})", parts.join(", "))
    };
    let is_object = schema["type"] == "object"
        || schema["type"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "object"));
    if is_object {
        if schema["additionalProperties"] != false {
            return Some(format!(
                "{}, 'additionalProperties' is required to be supplied and to be false.",
                at()
            ));
        }
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(missing) = properties
            .keys()
            .find(|key| !required.contains(&key.as_str()))
        {
            return Some(format!(
                "{}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing}'.",
                at()
            ));
        }
        for (key, property) in &properties {
            context.extend(["properties".to_owned(), key.clone()]);
            let problem = strict_problem(property, context);
            context.truncate(context.len() - 2);
            if problem.is_some() {
                return problem;
            }
        }
    }
    if let Some(items) = schema.get("items") {
        context.push("items".to_owned());
        let problem = strict_problem(items, context);
        context.pop();
        if problem.is_some() {
            return problem;
        }
    }
    for (index, branch) in schema["anyOf"].as_array().into_iter().flatten().enumerate() {
        context.extend(["anyOf".to_owned(), index.to_string()]);
        let problem = strict_problem(branch, context);
        context.truncate(context.len() - 2);
        if problem.is_some() {
            return problem;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_wants_closed_objects_that_require_every_property() {
        let check = |schema: Value, expect: Option<&str>| {
            assert_eq!(
                strict_problem(&schema, &mut Vec::new()).as_deref(),
                expect,
                "{schema}"
            );
        };
        check(
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false}),
            None,
        );
        check(
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
            Some(
                "In context=(), 'additionalProperties' is required to be supplied and to be false.",
            ),
        );
        check(
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "required": ["a"], "additionalProperties": false}),
            Some(
                "In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing 'b'.",
            ),
        );
        check(
            json!({"type": "object", "properties": {"inputs": {"type": "object"}}, "required": ["inputs"], "additionalProperties": false}),
            Some(
                "In context=('properties', 'inputs'), 'additionalProperties' is required to be supplied and to be false.",
            ),
        );
    }

    #[test]
    fn keys_are_masked_in_errors() {
        assert_eq!(masked("sk-wrong-key-1234"), "sk-***1234");
        assert_eq!(masked("short"), "*****");
    }
}
