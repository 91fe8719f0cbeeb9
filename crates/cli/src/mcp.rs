//! `opsgate mcp`: MCP over stdio, for agents that start their tools as a
//! process. It relays each JSON-RPC message it reads on stdin to an opsgate
//! server's `/mcp` (streamable HTTP) with the agent's token, and writes
//! every message the server answers to stdout, one per line.
//!
//! A relay, not a second server: the tools, the scope of the token and
//! every rule live once, in the server, so an agent on stdio meets exactly
//! what an agent over HTTP meets. The token travels only in the
//! `Authorization` header, never in a message. Messages are relayed one at
//! a time, in order; stdout carries nothing but protocol messages (the
//! relay's own words go to stderr).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use std::io::{BufRead, Write};

use crate::client::ServerArgs;

/// A JSON-RPC error code for a request the server refused before MCP saw
/// it (a token that is missing, revoked or not an agent's).
const REFUSED_BY_SERVER: i64 = -32001;

pub async fn run(server: ServerArgs) -> anyhow::Result<ExitCode> {
    let Some(token) = server.token.clone() else {
        eprintln!(
            "error: `opsgate mcp` needs an agent's token: set OPSGATE_TOKEN (see `opsgate token \
             create --role agent`)"
        );
        return Ok(crate::invalid_input());
    };
    connectors::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let relay = Relay {
        http,
        url: format!("{}/mcp", server.server.trim_end_matches('/')),
        token,
        protocol_version: None,
    };
    relay.serve().await?;
    Ok(ExitCode::SUCCESS)
}

struct Relay {
    http: reqwest::Client,
    url: String,
    token: String,
    /// The protocol version the client and server agreed on, sent on
    /// every request after `initialize` (or as each message names it).
    protocol_version: Option<String>,
}

impl Relay {
    async fn serve(mut self) -> anyhow::Result<()> {
        // Standard input is read on a thread of its own: a blocking read
        // holds no worker of the runtime while the agent thinks.
        let (lines_in, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<String>>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if lines_in.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let answers = match serde_json::from_str::<Value>(&line) {
                Ok(message) => self.relay(&message).await,
                Err(error) => vec![error_message(
                    Value::Null,
                    -32700,
                    format!("not JSON: {error}"),
                )],
            };
            let mut stdout = std::io::stdout().lock();
            for answer in answers {
                serde_json::to_writer(&mut stdout, &answer)?;
                stdout.write_all(b"\n")?;
            }
            stdout.flush()?;
        }
        Ok(())
    }

    /// Sends one message; the messages the server answered with.
    async fn relay(&mut self, message: &Value) -> Vec<Value> {
        let id = message.get("id").cloned();
        let method = message["method"].as_str().map(str::to_owned);
        if let Some(version) = message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
            .as_str()
            .or_else(|| {
                (method.as_deref() == Some("initialize"))
                    .then(|| message["params"]["protocolVersion"].as_str())
                    .flatten()
            })
        {
            self.protocol_version = Some(version.to_owned());
        }
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(message);
        if let Some(version) = &self.protocol_version {
            request = request.header("MCP-Protocol-Version", version);
        }
        // The standard headers (SEP-2243): what intermediaries route on.
        if let Some(method) = &method {
            request = request.header("Mcp-Method", method);
            let name = match method.as_str() {
                "tools/call" | "prompts/get" => message["params"]["name"].as_str(),
                "resources/read" => message["params"]["uri"].as_str(),
                "tasks/get" | "tasks/update" | "tasks/cancel" => {
                    message["params"]["taskId"].as_str()
                }
                _ => None,
            };
            if let Some(name) = name.filter(|name| name.bytes().all(|b| b.is_ascii_graphic())) {
                request = request.header("Mcp-Name", name);
            }
        }
        let answered = async {
            let response = request.send().await?;
            let status = response.status();
            let media = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, media, body))
        }
        .await;
        let (status, media, body) = match answered {
            Ok(answered) => answered,
            Err(error) => {
                return id
                    .map(|id| {
                        error_message(
                            id,
                            -32603,
                            format!("opsgate at {} cannot be reached: {error}", self.url),
                        )
                    })
                    .into_iter()
                    .collect();
            }
        };
        let messages: Vec<Value> = if media.starts_with("text/event-stream") {
            events(&body)
        } else {
            match serde_json::from_str::<Value>(&body) {
                Ok(Value::Array(batch)) => batch,
                Ok(message) if message.get("jsonrpc").is_some() => vec![message],
                // Refused before MCP: our API's error body.
                Ok(other) if !status.is_success() => {
                    let said = other["error"]["message"].as_str().unwrap_or("refused");
                    return id
                        .map(|id| {
                            error_message(
                                id,
                                REFUSED_BY_SERVER,
                                format!("opsgate refused the request ({status}): {said}"),
                            )
                        })
                        .into_iter()
                        .collect();
                }
                _ if body.trim().is_empty() => Vec::new(),
                _ => {
                    return id
                        .map(|id| {
                            error_message(
                                id,
                                -32603,
                                format!("opsgate answered {status} with what is not JSON-RPC"),
                            )
                        })
                        .into_iter()
                        .collect();
                }
            }
        };
        for answer in &messages {
            if method.as_deref() == Some("initialize")
                && let Some(version) = answer["result"]["protocolVersion"].as_str()
            {
                self.protocol_version = Some(version.to_owned());
            }
        }
        messages
    }
}

/// The JSON-RPC messages of a `text/event-stream` body: each event's
/// `data` lines, joined.
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            (!data.is_empty())
                .then(|| serde_json::from_str(&data.join("\n")).ok())
                .flatten()
        })
        .collect()
}

fn error_message(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stream_gives_each_events_message() {
        let body = "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n\
                    : keep-alive\n\n\
                    data: {\"jsonrpc\":\"2.0\",\ndata: \"method\":\"notifications/progress\"}\n\n";
        let messages = events(body);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0]["id"], 1);
        assert_eq!(messages[1]["method"], "notifications/progress");
    }
}
