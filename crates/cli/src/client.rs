//! A small client for opsgate's own API, used by `runs`, `approve`, `deny`.

use anyhow::Context;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The opsgate server's base URL.
    #[arg(long, env = "OPSGATE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        connectors::install_crypto_provider();
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: args.server.trim_end_matches('/').to_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        answer(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        answer(response).await
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"].as_str().unwrap_or("no message");
    anyhow::bail!("the server answered {status}: {message}")
}
