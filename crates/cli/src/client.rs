//! A small client for opsgate's own API, used by `runs`, `approve`, `deny`.

use anyhow::Context;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The opsgate server's base URL.
    #[arg(long, env = "OPSGATE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The API token to call it with (`opsgate token create`). Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(long, env = "OPSGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        connectors::install_crypto_provider();
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: args.server.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .headers(self.authorization())
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        answer(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.authorization())
            .json(body)
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        answer(response).await
    }
}

impl Client {
    fn authorization(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token
            && let Ok(mut value) = format!("Bearer {token}").parse::<reqwest::header::HeaderValue>()
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers
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
