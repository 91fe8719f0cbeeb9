//! Starting and stopping the real server, and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_opsgate");

/// A scratch directory with a runbooks folder and a database path.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// A database other than the workspace's own SQLite file.
    pub database: Option<String>,
    /// Short by default, so that a restarted server takes over quickly.
    pub lease_ttl_ms: u64,
    /// A config file (YAML) for `serve`, when set.
    pub config_yaml: Option<String>,
    /// Extra environment variables for `serve`.
    pub env: Vec<(String, String)>,
    /// Writes the server's log (stderr), at debug level, to
    /// [`Workspace::log_path`] instead of the test's own stderr, to be
    /// searched.
    pub capture_log: bool,
    tokens: std::sync::OnceLock<Tokens>,
}

/// API tokens made with `opsgate token create` for the tests' principals.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// `operator` role: posts events, reads runs. The servers' default.
    pub operator: String,
    /// `approver` role, principal `alice`.
    pub alice: String,
    /// `approver` role, principal `bob`.
    pub bob: String,
    /// `source` role, principal `alertmanager`.
    pub alertmanager: String,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("runbooks")).expect("runbooks dir");
        Workspace {
            dir,
            database: None,
            lease_ttl_ms: 1500,
            config_yaml: None,
            env: Vec::new(),
            capture_log: false,
            tokens: std::sync::OnceLock::new(),
        }
    }

    /// The workspace's tokens, created in its database on first use.
    pub fn tokens(&self) -> &Tokens {
        self.tokens.get_or_init(|| Tokens {
            operator: self.create_token("tests-operator", "operator"),
            alice: self.create_token("alice", "approver"),
            bob: self.create_token("bob", "approver"),
            alertmanager: self.create_token("alertmanager", "source"),
        })
    }

    /// `opsgate token create` on this workspace's database.
    pub fn create_token(&self, principal: &str, role: &str) -> String {
        let database = self.database_url();
        let (code, stdout, stderr) = cli(&[
            "token",
            "create",
            "--principal",
            principal,
            "--role",
            role,
            "--database",
            &database,
        ]);
        assert_eq!(code, 0, "token create: {stderr}");
        stdout.trim().to_owned()
    }

    pub fn runbooks(&self) -> PathBuf {
        self.dir.path().join("runbooks")
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("opsgate.db")
    }

    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.database_path().display()),
        }
    }

    /// Where the server's log goes when `capture_log` is set.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    pub fn add_runbook(&self, name: &str, yaml: &str) {
        std::fs::write(self.runbooks().join(name), yaml).expect("write runbook");
    }

    /// Starts `opsgate serve` on this workspace; `vars` become template `env`
    /// (passed as `OPSGATE_VAR_<NAME>`).
    pub fn start(&self, vars: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
            .arg(self.runbooks())
            .args(["--database", &self.database_url(), "--log"])
            .arg(if self.capture_log { "debug" } else { "info" })
            .stdout(Stdio::piped())
            .stderr(if self.capture_log {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path())
                    .expect("open the server log");
                Stdio::from(log)
            } else {
                Stdio::inherit()
            })
            .env("OPSGATE_LEASE_TTL_MS", self.lease_ttl_ms.to_string());
        for (name, value) in vars {
            command.env(format!("OPSGATE_VAR_{name}"), value);
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        if let Some(yaml) = &self.config_yaml {
            let path = self.dir.path().join("serve.yaml");
            std::fs::write(&path, yaml).expect("write the config file");
            command.arg("--config").arg(path);
        }
        let tokens = self.tokens().clone();
        let mut child = command.spawn().expect("start opsgate");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("opsgate exited before printing its address; see its stderr above")
            .expect("read stdout");
        let base = first
            .strip_prefix("opsgate listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        connectors::install_crypto_provider();
        Server {
            child: Some(child),
            base,
            http: client_with_token(&tokens.operator),
            tokens,
        }
    }
}

/// An HTTP client that sends `token` with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a valid header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// Calls as the workspace's operator.
    pub http: reqwest::Client,
    pub tokens: Tokens,
}

impl Server {
    /// Approves (`verb` = `approve`) or denies a run as `token`'s principal.
    pub async fn decide_as(&self, token: &str, run_id: &str, verb: &str) -> (u16, Value) {
        let response = client_with_token(token)
            .post(format!("{}/v1/runs/{run_id}/{verb}", self.base))
            .json(&serde_json::json!({"comment": "from the tests"}))
            .send()
            .await
            .expect("reach opsgate");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Approves a run as alice (an approver).
    pub async fn approve(&self, run_id: &str) -> (u16, Value) {
        self.decide_as(&self.tokens.alice.clone(), run_id, "approve")
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_raw_as(&self.tokens.operator.clone(), path, body)
            .await
    }

    /// Posts `body` with `token` (any token, or a made-up one).
    pub async fn post_raw_as(&self, token: &str, path: &str, body: &str) -> (u16, Value) {
        let response = client_with_token(token)
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("reach opsgate");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/runs/{run_id}/approval-links` as `token` (an approver
    /// asking for their own link), with `body`.
    pub async fn ask_for_link(&self, token: &str, run_id: &str, body: &Value) -> (u16, Value) {
        self.post_raw_as(
            token,
            &format!("/v1/runs/{run_id}/approval-links"),
            &body.to_string(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("reach opsgate");
        assert!(
            response.status().is_success(),
            "GET {path} answered {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    /// Waits (long-poll) until the run is finished or awaits approval.
    pub async fn wait(&self, run_id: &str) -> Value {
        self.get(&format!("/v1/runs/{run_id}/wait?timeout_ms=30000"))
            .await
    }

    /// Posts an event and returns the intake report.
    pub async fn event(&self, event: &Value) -> Value {
        let (status, report) = self.post("/v1/events", event).await;
        assert_eq!(status, 202, "intake answered {status}: {report}");
        report
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Sends a signal (`STOP`, `CONT`) to the server process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGTERM, then waits for the process to exit: a graceful shutdown,
    /// which lets the calls in flight finish and audits the refusals still
    /// being counted.
    pub async fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM");
        let status = self.wait_for_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "opsgate stopped with {status}");
    }

    /// Waits for the process to exit on its own (after a signal); kills it
    /// and fails the test when it has not within `within`. It waits without
    /// blocking the test's runtime, which may be serving the fakes the
    /// server's calls in flight are waiting for.
    pub async fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                child.kill().expect("kill -9");
                child.wait().expect("reap");
                panic!("opsgate did not stop within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush beyond what was committed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes. For waiting
/// on *other* processes (a target receiving a call), where no notification
/// reaches the test.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Runs the CLI with `args` and returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    cli_with_env(args, &[])
}

/// [`cli`] with extra environment variables (`OPSGATE_TOKEN`, ...).
pub fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run opsgate");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A runbook with one HTTP step per `(id, method, path, extra)`, matched on
/// `kind`; `extra` is YAML spliced into the step (retry, rollback, ...).
pub fn http_runbook(
    id: &str,
    kind: &str,
    steps: &[(&str, &str, &str, &str)],
    tail: &str,
) -> String {
    let mut yaml = format!(
        "id: {id}\ntitle: Test runbook {id}\nowner: tests\nrisk: reversible\napproval: auto\n\
         match:\n  kind: {kind}\ntargets:\n  from: \"[event.subject]\"\n  max_targets: 1\nsteps:\n"
    );
    for (step_id, method, path, extra) in steps {
        yaml.push_str(&format!(
            "  - id: {step_id}\n    action: http.request\n    with:\n      method: {method}\n      url: \"{{{{ env.TARGET }}}}{path}\"\n"
        ));
        for line in extra.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(tail);
    yaml
}

pub fn event(kind: &str, dedup_key: &str) -> Value {
    serde_json::json!({
        "source": "tests", "kind": kind, "dedup_key": dedup_key,
        "subject": "HOST-1", "status": "firing", "fields": {}
    })
}

/// Whether tests that need an outside program must fail instead of skip.
pub fn skips_are_failures() -> bool {
    std::env::var("OPSGATE_REQUIRE_EXTERNAL").is_ok_and(|value| value == "1")
}

pub fn skip(test: &str, why: &str) {
    assert!(
        !skips_are_failures(),
        "{test}: {why}, and OPSGATE_REQUIRE_EXTERNAL=1 forbids skipping"
    );
    eprintln!("SKIPPED {test}: {why} (set OPSGATE_REQUIRE_EXTERNAL=1 to make this a failure)");
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| Path::new(candidate).is_file())
    })
}

/// Every audit record in the database, as `opsgate audit export` gives them.
pub fn audit_records(database_url: &str) -> Vec<Value> {
    let (code, stdout, stderr) = cli(&["audit", "export", "--database", database_url]);
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// How many refused requests `records` account for: one per `api.refused`
/// record, `count` per `api.refused.repeated` one (written as a refusal
/// window closes, or when the server stops: see [`Server::stop`]).
pub fn refused_total(records: &[Value]) -> u64 {
    records
        .iter()
        .map(|record| match record["kind"].as_str() {
            Some("api.refused") => 1,
            Some("api.refused.repeated") => record["detail"]["count"].as_u64().expect("a count"),
            _ => 0,
        })
        .sum()
}

/// The `api.refused` and `api.refused.repeated` records in the database.
pub fn refusal_records(database_url: &str) -> Vec<Value> {
    audit_records(database_url)
        .into_iter()
        .filter(|record| {
            record["kind"] == "api.refused" || record["kind"] == "api.refused.repeated"
        })
        .collect()
}

/// A run's timeline (from `GET /v1/runs/{id}`) as (kind, actor, detail).
pub fn timeline(run: &Value) -> Vec<(String, String, Value)> {
    run["timeline"]
        .as_array()
        .expect("a run with its timeline")
        .iter()
        .map(|record| {
            (
                record["kind"].as_str().unwrap_or_default().to_owned(),
                record["actor"].as_str().unwrap_or_default().to_owned(),
                record["detail"].clone(),
            )
        })
        .collect()
}

/// How many records of `kind` a run's timeline holds.
pub fn count_of(run: &Value, kind: &str) -> usize {
    timeline(run)
        .iter()
        .filter(|(found, _, _)| found == kind)
        .count()
}
