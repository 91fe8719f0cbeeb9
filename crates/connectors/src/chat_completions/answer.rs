//! Reading a chat completion: the wire format's envelope first, then the
//! model's answer inside it, checked strictly.
//!
//! A successful completion is `{"choices": [{"message": {"content":
//! "<JSON text>", "refusal": null}, "finish_reason": "stop"}], …}`. A
//! refusal comes as `content: null` with `refusal` saying why; a
//! `finish_reason` of `length` means the answer was cut off (its JSON is
//! incomplete) and `content_filter` that the provider's filter stopped it.
//! An error comes as `{"error": {"message", "type", "code"}}` with a 4xx or
//! 5xx status.
//!
//! The schema asked for is strict, but the check here does not rely on
//! it: an endpoint that ignores `response_format`, or a model that drifts,
//! gives an answer that is refused with what was wrong, never a
//! suggestion that names a runbook nobody offered or a confidence of 1.7.

use serde_json::{Map, Value};

use crate::http::one_line;
use crate::seam::{Candidate, ClassifyFailureKind};
use crate::text::clip;

/// How long a rationale may be, in characters; a longer one is cut.
const MAX_RATIONALE_CHARS: usize = 1_000;

/// The model's answer, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub runbook: Option<String>,
    pub inputs: Map<String, Value>,
    pub confidence: f64,
    pub rationale: String,
}

/// The message content of a successful completion's `body`, or why there
/// is no answer in it.
pub(crate) fn content(body: &str) -> Result<String, ClassifyFailureKind> {
    let malformed = |problem: String| ClassifyFailureKind::Malformed { problem };
    let body: Value = serde_json::from_str(body)
        .map_err(|error| malformed(format!("the body is not JSON: {error}")))?;
    let Some(choice) = body["choices"]
        .as_array()
        .and_then(|choices| choices.first())
    else {
        return Err(malformed("the body has no `choices[0]`".to_owned()));
    };
    let message = &choice["message"];
    if let Some(refusal) = message["refusal"]
        .as_str()
        .filter(|text| !text.trim().is_empty())
    {
        return Err(ClassifyFailureKind::Refused {
            text: clip(&one_line(Some(refusal)), 500),
        });
    }
    match choice["finish_reason"].as_str() {
        Some("length") => {
            return Err(malformed(
                "the answer was cut off at the token limit (finish_reason `length`)".to_owned(),
            ));
        }
        Some("content_filter") => {
            return Err(ClassifyFailureKind::Refused {
                text: "the provider's content filter stopped the answer (finish_reason `content_filter`)"
                    .to_owned(),
            });
        }
        _ => {}
    }
    match &message["content"] {
        Value::String(content) => Ok(content.clone()),
        Value::Null => Err(malformed(
            "`choices[0].message.content` is missing or null".to_owned(),
        )),
        _ => Err(malformed(
            "`choices[0].message.content` is not text".to_owned(),
        )),
    }
}

/// The answer `content` holds, when it is one: an object with exactly
/// `runbook` (one of `candidates`' ids, or null), `inputs` (an object),
/// `confidence` (a number from 0 to 1) and `rationale` (text). Of the
/// inputs, the chosen runbook's that are not null are kept.
pub(crate) fn read(content: &str, candidates: &[Candidate]) -> Result<Answer, String> {
    let value: Value = serde_json::from_str(content.trim())
        .map_err(|error| format!("the content is not JSON: {error}"))?;
    let Value::Object(mut answer) = value else {
        return Err("the content is not a JSON object".to_owned());
    };
    if let Some(unexpected) = answer
        .keys()
        .find(|key| !["runbook", "inputs", "confidence", "rationale"].contains(&key.as_str()))
    {
        return Err(format!("the answer has an unexpected key `{unexpected}`"));
    }
    let mut take = |key: &str| {
        answer
            .remove(key)
            .ok_or(format!("the answer has no `{key}`"))
    };
    let runbook = match take("runbook")? {
        Value::Null => None,
        Value::String(id) => match candidates.iter().find(|candidate| candidate.id == id) {
            Some(candidate) => Some(candidate),
            None => {
                let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
                return Err(format!(
                    "`runbook` is `{}`, which is not one of the candidates ({})",
                    clip(&id, 80),
                    if ids.is_empty() {
                        "there are none".to_owned()
                    } else {
                        ids.join(", ")
                    }
                ));
            }
        },
        other => return Err(format!("`runbook` is {}, not an id or null", kind(&other))),
    };
    let inputs = match take("inputs")? {
        Value::Object(inputs) => inputs,
        other => return Err(format!("`inputs` is {}, not an object", kind(&other))),
    };
    let confidence = match take("confidence")? {
        Value::Number(number) => number
            .as_f64()
            .filter(|confidence| (0.0..=1.0).contains(confidence))
            .ok_or_else(|| format!("`confidence` is {number}, outside 0 to 1"))?,
        other => return Err(format!("`confidence` is {}, not a number", kind(&other))),
    };
    let rationale = match take("rationale")? {
        Value::String(text) => clip(text.trim(), MAX_RATIONALE_CHARS),
        other => return Err(format!("`rationale` is {}, not text", kind(&other))),
    };
    let inputs = match runbook {
        Some(candidate) => {
            let names = candidate.inputs_schema["properties"].as_object();
            inputs
                .into_iter()
                .filter(|(name, value)| {
                    !value.is_null() && names.is_some_and(|names| names.contains_key(name))
                })
                .collect()
        }
        None => Map::new(),
    };
    Ok(Answer {
        runbook: runbook.map(|candidate| candidate.id.clone()),
        inputs,
        confidence,
        rationale,
    })
}

/// What a JSON value is, in an error: `"high"` (a string), `[…]`.
fn kind(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the text \"{}\"", clip(text, 40)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn candidates() -> Vec<Candidate> {
        ["clear-print-queue", "grant-vpn-access"]
            .into_iter()
            .map(|id| Candidate {
                id: id.to_owned(),
                title: String::new(),
                risk: "reversible".to_owned(),
                description: String::new(),
                inputs_schema: json!({"type": "object", "properties": {
                    if id == "grant-vpn-access" { "user" } else { "device_id" }: {"type": "string"}
                }}),
            })
            .collect()
    }

    #[test]
    fn answers_are_read_strictly() {
        let check = |content: &str, expect: Result<Answer, &str>| {
            assert_eq!(
                read(content, &candidates()),
                expect.map_err(str::to_owned),
                "{content}"
            );
        };
        let answer = |runbook: Option<&str>, inputs: Value, confidence: f64, rationale: &str| {
            Ok(Answer {
                runbook: runbook.map(str::to_owned),
                inputs: inputs.as_object().unwrap().clone(),
                confidence,
                rationale: rationale.to_owned(),
            })
        };
        check(
            r#"{"runbook": "clear-print-queue", "inputs": {"device_id": "LAPTOP-0101", "user": null}, "confidence": 0.92, "rationale": " Jobs stay queued. "}"#,
            answer(
                Some("clear-print-queue"),
                json!({"device_id": "LAPTOP-0101"}),
                0.92,
                "Jobs stay queued.",
            ),
        );
        // Another runbook's input, and a null, are dropped.
        check(
            r#"{"runbook": "clear-print-queue", "inputs": {"device_id": null, "user": "kim"}, "confidence": 1, "rationale": "queue"}"#,
            answer(Some("clear-print-queue"), json!({}), 1.0, "queue"),
        );
        check(
            r#"{"runbook": null, "inputs": {"device_id": "X"}, "confidence": 0, "rationale": "a password reset"}"#,
            answer(None, json!({}), 0.0, "a password reset"),
        );
        check(
            "not json",
            Err("the content is not JSON: expected ident at line 1 column 2"),
        );
        check(
            r#"{"runbook": "clear-print-queue", "inputs": {}, "confidence": 0.9"#,
            Err("the content is not JSON: EOF while parsing an object at line 1 column 64"),
        );
        check("[1, 2]", Err("the content is not a JSON object"));
        check(
            r#"{"runbook": "reboot-everything", "inputs": {}, "confidence": 0.9, "rationale": "r"}"#,
            Err(
                "`runbook` is `reboot-everything`, which is not one of the candidates (clear-print-queue, grant-vpn-access)",
            ),
        );
        check(
            r#"{"runbook": 7, "inputs": {}, "confidence": 0.9, "rationale": "r"}"#,
            Err("`runbook` is 7, not an id or null"),
        );
        check(
            r#"{"runbook": null, "inputs": {}, "confidence": 1.7, "rationale": "r"}"#,
            Err("`confidence` is 1.7, outside 0 to 1"),
        );
        check(
            r#"{"runbook": null, "inputs": {}, "confidence": -0.1, "rationale": "r"}"#,
            Err("`confidence` is -0.1, outside 0 to 1"),
        );
        check(
            r#"{"runbook": null, "inputs": {}, "confidence": "high", "rationale": "r"}"#,
            Err("`confidence` is the text \"high\", not a number"),
        );
        check(
            r#"{"runbook": null, "inputs": {}, "rationale": "r"}"#,
            Err("the answer has no `confidence`"),
        );
        check(
            r#"{"inputs": {}, "confidence": 0.5, "rationale": "r"}"#,
            Err("the answer has no `runbook`"),
        );
        check(
            r#"{"runbook": null, "inputs": [], "confidence": 0.5, "rationale": "r"}"#,
            Err("`inputs` is a list, not an object"),
        );
        check(
            r#"{"runbook": null, "inputs": {}, "confidence": 0.5, "rationale": null}"#,
            Err("`rationale` is null, not text"),
        );
        check(
            r#"{"runbook": null, "inputs": {}, "confidence": 0.5, "rationale": "r", "run_now": true}"#,
            Err("the answer has an unexpected key `run_now`"),
        );
    }

    #[test]
    fn the_envelope_gives_the_content_or_says_why_not() {
        let check = |body: Value, expect: Result<&str, ClassifyFailureKind>| {
            assert_eq!(
                content(&body.to_string()),
                expect.map(str::to_owned),
                "{body}"
            );
        };
        let malformed = |problem: &str| {
            Err(ClassifyFailureKind::Malformed {
                problem: problem.to_owned(),
            })
        };
        let choice = |message: Value, finish: &str| json!({"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
        check(
            choice(
                json!({"role": "assistant", "content": "{}", "refusal": null}),
                "stop",
            ),
            Ok("{}"),
        );
        check(
            choice(
                json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
                "stop",
            ),
            Err(ClassifyFailureKind::Refused {
                text: "I can't help with that.".to_owned(),
            }),
        );
        check(
            choice(json!({"content": "{\"runbook\": \"cl"}), "length"),
            malformed("the answer was cut off at the token limit (finish_reason `length`)"),
        );
        check(
            choice(json!({"content": null}), "content_filter"),
            Err(ClassifyFailureKind::Refused {
                text: "the provider's content filter stopped the answer (finish_reason `content_filter`)".to_owned(),
            }),
        );
        check(
            choice(json!({"content": null, "refusal": null}), "stop"),
            malformed("`choices[0].message.content` is missing or null"),
        );
        check(
            json!({"choices": []}),
            malformed("the body has no `choices[0]`"),
        );
        assert_eq!(
            content("<html>"),
            malformed("the body is not JSON: expected value at line 1 column 1").map(str::to_owned)
        );
    }
}
