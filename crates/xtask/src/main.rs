//! `cargo xtask`: chores too involved for a shell line, in plain Rust.
//!
//! `cargo xtask bench [--quick]` prints every headline figure in one
//! table, each beside its goal, with the same remediation as a Prefect
//! flow for comparison (`bench.rs`).
//!
//! `cargo xtask bench-cluster` measures opsgate scaled out on PostgreSQL:
//! runs per second with 1, 2 and 3 `opsgate serve` processes on one
//! database, and how long after a crashed instance's last heartbeat another
//! instance takes its run over. It starts real processes (the release
//! binary, built first) against local PostgreSQL and a local target, and
//! prints its figures; docs/benchmarks.md records them.
//!
//! `cargo xtask bench-loop` measures one governed remediation end to end
//! on the embedded default: an event posted, a 3-step runbook against a
//! loopback target, until the run is settled, one run after another. Give
//! `--against PATH` (another build of `opsgate`) to measure it in the
//! same session, runs interleaved, so the machine's drift hits both alike.
//!
//! `cargo xtask bench-propose` measures an agent's proposal answered with
//! its decision: over MCP (`tools/call propose` at `/mcp`) beside the same
//! proposal posted to `/v1/proposals`, interleaved, each waited to its
//! settled run (untimed) before the next, so neither measures the other's
//! run.
//!
//! `cargo xtask bench-freeze` measures the kill switch and the caps: what
//! the freeze check and the counted caps cost a run (the same 3-step loop
//! on three instances of this build — a plain one, one with ten freezes in
//! force that do not cover it, one whose runbook has a rate limit, a
//! cooldown and a concurrency cap — runs interleaved), and on PostgreSQL how long after a freeze is issued on one
//! instance another one refuses new events under it (and takes them again
//! after it is lifted).
//!
//! `cargo xtask fuzz [--seconds N]` builds the fuzz targets of `fuzz/` and
//! runs each for its share of N seconds (`fuzz.rs`), as CI does.

mod bench;
mod fuzz;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::Connection;
use test_support::postgres::Database;
use test_support::scripted::{Reply, Scripted};

const RUNBOOK: &str = r#"
id: bench
title: One call per incident
owner: bench
risk: reversible
approval: auto
match: { kind: bench }
targets: { from: "[event.subject]" }
steps:
  - id: check
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/check" }
    idempotent: true
  - id: act
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/act" }
    idempotent: false
"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench-cluster") => {
            let runs = flag(&args, "--runs").unwrap_or(600);
            tokio::runtime::Runtime::new()?.block_on(bench_cluster(runs))
        }
        Some("bench-freeze") => {
            let runs = flag(&args, "--runs").unwrap_or(300);
            tokio::runtime::Runtime::new()?.block_on(bench_freeze(runs))
        }
        Some("bench-propose") => {
            let runs = flag(&args, "--runs").unwrap_or(300);
            tokio::runtime::Runtime::new()?.block_on(bench_propose(runs))
        }
        Some("bench-loop") => {
            let runs = flag(&args, "--runs").unwrap_or(300);
            let against = args
                .iter()
                .position(|arg| arg == "--against")
                .and_then(|index| args.get(index + 1))
                .cloned();
            tokio::runtime::Runtime::new()?.block_on(bench_loop(runs, against))
        }
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => {
            let seconds = flag(&args, "--seconds").map_or(fuzz::DEFAULT_SECONDS, |n| n as u64);
            fuzz::run(seconds)
        }
        _ => bail!(
            "usage: cargo xtask bench [--quick] | bench-cluster [--runs N] | bench-loop [--runs N] [--against PATH] \
             | bench-freeze [--runs N] | bench-propose [--runs N] | fuzz [--seconds N]"
        ),
    }
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
}

/// The runbook of `bench-loop`: look, act, look again, as a remediation
/// does.
const THREE_STEPS: &str = r#"
id: three-steps
title: Three calls per incident
owner: bench
risk: reversible
approval: auto
match: { kind: loop }
targets: { from: "[event.subject]" }
steps:
  - id: look
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/check" }
    idempotent: true
  - id: act
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/act" }
    idempotent: false
  - id: look-again
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/check" }
    idempotent: true
"#;

/// A token for `principal` in `role` on `database`, made by `opsgate`.
fn token(opsgate: &str, database: &str, principal: &str, role: &str) -> anyhow::Result<String> {
    let output = Command::new(opsgate)
        .args([
            "token",
            "create",
            "--principal",
            principal,
            "--role",
            role,
            "--database",
            database,
        ])
        .output()
        .with_context(|| format!("starting {opsgate}"))?;
    if !output.status.success() {
        bail!(
            "opsgate token create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// An HTTP client that presents `token`.
fn client_as(token: &str) -> anyhow::Result<reqwest::Client> {
    let headers = [(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    )]
    .into_iter()
    .collect();
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// Builds the release binary and says where it is.
fn release_build() -> anyhow::Result<String> {
    let mut build = Command::new(cargo());
    build.args(["build", "--release", "-p", "cli"]);
    // What cargo set for running this xtask (`CARGO_PKG_NAME`, …) would
    // reach the build scripts that watch those variables (ring's), which
    // would then build again here, and again in the next plain build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE"
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build.status()?;
    if !status.success() {
        bail!("building opsgate failed");
    }
    let opsgate = target_dir()?.join("release/opsgate");
    Ok(opsgate
        .to_str()
        .context("a target dir that is UTF-8")?
        .to_owned())
}

/// The cargo that runs this xtask, so that builds use its toolchain.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace's target directory as cargo sees it: `CARGO_TARGET_DIR`
/// or the configuration's `build.target-dir` when set.
fn target_dir() -> anyhow::Result<PathBuf> {
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    if !output.status.success() {
        bail!(
            "cargo metadata: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .context("cargo metadata names no target directory")?,
    ))
}

/// An event of `kind` with dedup key `key`, about a subject of its own
/// (runs on one target wait for each other).
fn event(kind: &str, key: &str) -> serde_json::Value {
    json!({"source": "bench", "kind": kind, "dedup_key": key,
        "subject": format!("HOST-{key}"), "status": "firing", "fields": {}})
}

/// Posts `event(kind, key)` to the instance at `base` and waits for its run to settle: how
/// long that took, in ms. A run that does not succeed ends the benchmark.
async fn settle_one(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    key: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let answer: serde_json::Value = http
        .post(format!("{base}/v1/events"))
        .json(&event(kind, key))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run_id = answer["run_id"].as_str().context("no run started")?;
    let settled = wait_settled(http, base, run_id).await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    settled?;
    Ok(elapsed)
}

/// Waits for run `run_id` at `base` to settle; a run that does not
/// succeed ends the benchmark.
async fn wait_settled(http: &reqwest::Client, base: &str, run_id: &str) -> anyhow::Result<()> {
    let run: serde_json::Value = http
        .get(format!("{base}/v1/runs/{run_id}/wait"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if run["state"] != "succeeded" {
        bail!("run {run_id} ended {}", run["state"]);
    }
    Ok(())
}

async fn bench_loop(runs: usize, against: Option<String>) -> anyhow::Result<()> {
    connectors::install_crypto_provider();
    let ours = release_build()?;
    let mut binaries = vec![("this build".to_owned(), ours)];
    if let Some(path) = against {
        binaries.push((path.clone(), path));
    }
    let scratch = std::env::temp_dir().join(format!("opsgate-loop-{}", std::process::id()));
    let runbooks = scratch.join("runbooks");
    std::fs::create_dir_all(&runbooks)?;
    std::fs::write(runbooks.join("three-steps.yaml"), THREE_STEPS)?;
    let target = Scripted::default();
    target.on("GET /check", vec![Reply::json(200, json!({"ok": true}))]);
    target.on("POST /act", vec![Reply::json(200, json!({"done": true}))]);
    let target_server = target.start().await?;
    let mut servers = Vec::new();
    for (index, (_, opsgate)) in binaries.iter().enumerate() {
        let database = format!(
            "sqlite://{}",
            scratch.join(format!("loop-{index}.db")).display()
        );
        let http = client_as(&token(opsgate, &database, "bench", "operator")?)?;
        let server = start(opsgate, &runbooks, &database, &target_server.url, 15_000)?;
        servers.push((server, http));
    }
    let mut took: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); servers.len()];
    // A few runs first, so that connections and caches are warm.
    for index in 0..runs + 20 {
        for (which, (server, http)) in servers.iter().enumerate() {
            let elapsed = settle_one(http, &server.1, "loop", &format!("L{index}")).await?;
            if index >= 20 {
                took[which].push(elapsed);
            }
        }
    }
    println!(
        "{runs} runs of 3 steps each (loopback target, SQLite), one after another: event posted → run settled, ms"
    );
    println!("{:>40} {:>8} {:>8} {:>8}", "binary", "p50", "p90", "p99");
    for ((name, _), took) in binaries.iter().zip(&mut took) {
        took.sort_by(f64::total_cmp);
        let at = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{name:>40} {:>8.2} {:>8.2} {:>8.2}",
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The runbook an agent proposes in `bench-propose`: one look at the
/// host it names.
const PROPOSED: &str = r#"
id: look-at-host
title: Look at a host
owner: bench
risk: read_only
approval: auto
match: { kind: never }
inputs:
  type: object
  required: [host]
  additionalProperties: false
  properties:
    host: { type: string, pattern: "^HOST-[0-9]+$" }
targets: { from: "[inputs.host]" }
steps:
  - id: look
    action: http.request
    with: { method: GET, url: "{{ env.TARGET }}/check" }
    idempotent: true
"#;

async fn bench_propose(runs: usize) -> anyhow::Result<()> {
    connectors::install_crypto_provider();
    let opsgate = &release_build()?;
    let scratch = std::env::temp_dir().join(format!("opsgate-propose-{}", std::process::id()));
    let runbooks = scratch.join("runbooks");
    std::fs::create_dir_all(&runbooks)?;
    std::fs::write(runbooks.join("look-at-host.yaml"), PROPOSED)?;
    let target = Scripted::default();
    target.on("GET /check", vec![Reply::json(200, json!({"ok": true}))]);
    let target_server = target.start().await?;
    let database = format!("sqlite://{}", scratch.join("propose.db").display());
    let http = client_as(&token(opsgate, &database, "bench-agent", "agent")?)?;
    let server = start(opsgate, &runbooks, &database, &target_server.url, 15_000)?;
    let base = &server.1;
    let proposal = |key: String, index: usize| {
        json!({
            "runbook": "look-at-host", "inputs": {"host": format!("HOST-{index}")},
            "rationale": "benchmark", "confidence": 0.9, "idempotency_key": key,
        })
    };
    let (mut rest, mut mcp) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for index in 0..runs + 20 {
        let started = Instant::now();
        let answer: serde_json::Value = http
            .post(format!("{base}/v1/proposals"))
            .json(&proposal(format!("rest-{index}"), index))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let took_rest = started.elapsed().as_secs_f64() * 1000.0;
        if answer["outcome"] != "executing" {
            bail!("the proposal was answered {answer}");
        }
        wait_settled(&http, base, answer["run_id"].as_str().context("a run")?).await?;

        // The 2026-07-28 revision: one stateless POST per call.
        let call = json!({
            "jsonrpc": "2.0", "id": index, "method": "tools/call",
            "params": {
                "name": "propose", "arguments": proposal(format!("mcp-{index}"), index),
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        });
        let started = Instant::now();
        let answer: serde_json::Value = http
            .post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "propose")
            .json(&call)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let took_mcp = started.elapsed().as_secs_f64() * 1000.0;
        let result = &answer["result"]["structuredContent"];
        if result["outcome"] != "executing" {
            bail!("the MCP proposal was answered {answer}");
        }
        wait_settled(&http, base, result["run_id"].as_str().context("a run")?).await?;
        if index >= 20 {
            rest.push(took_rest);
            mcp.push(took_mcp);
        }
    }
    println!(
        "{runs} proposals each way (SQLite, loopback), one after another: sent → answered with the decision, ms"
    );
    println!(
        "{:>24} {:>8} {:>8} {:>8} {:>8}",
        "", "p50", "p90", "p99", "max"
    );
    for (name, took) in [
        ("POST /v1/proposals", &mut rest),
        ("MCP tools/call propose", &mut mcp),
    ] {
        let [p50, p90, p99, max] = percentiles(took);
        println!("{name:>24} {p50:>8.2} {p90:>8.2} {p99:>8.2} {max:>8.2}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

struct Instance(Child, String);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    opsgate: &str,
    runbooks: &std::path::Path,
    database: &str,
    target: &str,
    lease_ttl_ms: u64,
) -> anyhow::Result<Instance> {
    let mut child = Command::new(opsgate)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--runbooks",
        ])
        .arg(runbooks)
        .args([
            "--database",
            database,
            "--lease-ttl-ms",
            &lease_ttl_ms.to_string(),
        ])
        .env("OPSGATE_VAR_TARGET", target)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {opsgate}"))?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut first)?;
    let base = first
        .trim()
        .strip_prefix("opsgate listening on ")
        .context("opsgate did not start")?
        .to_owned();
    Ok(Instance(child, base))
}

async fn bench_cluster(runs: usize) -> anyhow::Result<()> {
    connectors::install_crypto_provider();
    let opsgate = &release_build()?;
    let scratch = std::env::temp_dir().join(format!("opsgate-bench-{}", std::process::id()));
    let runbooks = scratch.join("runbooks");
    std::fs::create_dir_all(&runbooks)?;
    std::fs::write(runbooks.join("bench.yaml"), RUNBOOK)?;
    let target = Scripted::default();
    target.on("GET /check", vec![Reply::json(200, json!({"ok": true}))]);
    target.on("POST /act", vec![Reply::json(200, json!({"done": true}))]);
    let target_server = target.start().await?;
    println!("opsgate on PostgreSQL: {runs} runs of 2 steps each, posted by 32 concurrent senders");
    println!("{:>9} {:>10} {:>10}", "instances", "seconds", "runs/s");
    for instances in 1..=3 {
        let database = Database::create(&format!("opsgate_bench_n{instances}"))
            .await
            .context("creating a database on PostgreSQL")?;
        let http = client_as(&token(opsgate, &database.url, "bench", "operator")?)?;
        let servers = (0..instances)
            .map(|_| {
                start(
                    opsgate,
                    &runbooks,
                    &database.url,
                    &target_server.url,
                    15_000,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bases: Vec<String> = servers.iter().map(|server| server.1.clone()).collect();
        let started = Instant::now();
        let senders: Vec<_> = (0..32)
            .map(|sender| {
                let (http, bases) = (http.clone(), bases.clone());
                tokio::spawn(async move {
                    for index in (sender..runs).step_by(32) {
                        let incident = json!({"source": "bench", "kind": "bench", "dedup_key": format!("B{index}"),
                            "subject": format!("HOST-{index}"), "status": "firing", "fields": {}});
                        http.post(format!("{}/v1/events", bases[index % bases.len()])).json(&incident).send().await?.error_for_status()?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for sender in senders {
            sender.await??;
        }
        let mut connection = sqlx::PgConnection::connect(&database.url).await?;
        loop {
            let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE is_open")
                .fetch_one(&mut connection)
                .await?;
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let succeeded: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'")
                .fetch_one(&mut connection)
                .await?;
        if succeeded != runs as i64 {
            bail!("{succeeded} of {runs} runs succeeded");
        }
        println!(
            "{instances:>9} {seconds:>10.2} {:>10.0}",
            runs as f64 / seconds
        );
        drop(servers);
        drop(connection);
        drop(database);
    }

    println!(
        "\ntakeover after kill -9 (2 instances); time from the dead instance's last heartbeat to the other's first write"
    );
    println!("{:>12} {:>14}", "lease ttl ms", "takeover ms");
    let slow = Scripted::default();
    slow.on(
        "GET /check",
        vec![Reply::json(200, json!({"ok": true})).delayed(Duration::from_secs(120))],
    );
    let slow_server = slow.start().await?;
    for lease_ttl_ms in [3_000, 15_000] {
        let database = Database::create("opsgate_bench_takeover")
            .await
            .context("creating a database on PostgreSQL")?;
        let http = client_as(&token(opsgate, &database.url, "bench", "operator")?)?;
        let mut first = start(
            opsgate,
            &runbooks,
            &database.url,
            &slow_server.url,
            lease_ttl_ms,
        )?;
        let _second = start(
            opsgate,
            &runbooks,
            &database.url,
            &slow_server.url,
            lease_ttl_ms,
        )?;
        let incident = json!({"source": "bench", "kind": "bench", "dedup_key": "T1", "subject": "HOST-T", "status": "firing", "fields": {}});
        http.post(format!("{}/v1/events", first.1))
            .json(&incident)
            .send()
            .await?
            .error_for_status()?;
        while slow.calls("GET /check") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut connection = sqlx::PgConnection::connect(&database.url).await?;
        // Let a heartbeat or two happen, then kill the instance right after one.
        tokio::time::sleep(Duration::from_millis(lease_ttl_ms)).await;
        let before: i64 = sqlx::query_scalar("SELECT lease_expires_ms FROM runs")
            .fetch_one(&mut connection)
            .await?;
        loop {
            let now: i64 = sqlx::query_scalar("SELECT lease_expires_ms FROM runs")
                .fetch_one(&mut connection)
                .await?;
            if now != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = first.0.kill();
        let _ = first.0.wait();
        let last_heartbeat_ms: i64 = sqlx::query_scalar("SELECT lease_expires_ms FROM runs")
            .fetch_one(&mut connection)
            .await?;
        let last_heartbeat_ms = last_heartbeat_ms - lease_ttl_ms as i64;
        let taken_over_ms = loop {
            let recovered: Option<String> =
                sqlx::query_scalar("SELECT recorded_at FROM audit WHERE kind = 'run.recovered'")
                    .fetch_optional(&mut connection)
                    .await?;
            if let Some(at) = recovered {
                break at.parse::<jiff::Timestamp>()?.as_millisecond();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "{lease_ttl_ms:>12} {:>14}",
            taken_over_ms - last_heartbeat_ms
        );
        drop(connection);
        drop(first);
        drop(database);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Percentiles of `took` (sorted here): p50, p90, p99 and the largest.
fn percentiles(took: &mut [f64]) -> [f64; 4] {
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize];
    [at(0.5), at(0.9), at(0.99), at(1.0)]
}

async fn bench_freeze(runs: usize) -> anyhow::Result<()> {
    connectors::install_crypto_provider();
    let opsgate = &release_build()?;
    let scratch = std::env::temp_dir().join(format!("opsgate-freeze-{}", std::process::id()));
    let runbooks = scratch.join("runbooks");
    std::fs::create_dir_all(&runbooks)?;
    std::fs::write(runbooks.join("three-steps.yaml"), THREE_STEPS)?;
    // The same runbook with every cap: decided on counts read under the
    // admission lock in the intake's transaction, and again before it
    // starts. Limits far above what the bench reaches, so every run runs.
    let capped = scratch.join("runbooks-capped");
    std::fs::create_dir_all(&capped)?;
    std::fs::write(
        capped.join("three-steps.yaml"),
        format!(
            "{THREE_STEPS}guardrails:\n  rate_limit: {{ runs: 100000, window: 1h }}\n  \
             cooldown: {{ per: target, runs: 1000, window: 1h }}\n  max_concurrent: 1000\n"
        ),
    )?;
    std::fs::write(
        runbooks.join("gated.yaml"),
        RUNBOOK
            .replace("id: bench", "id: gated")
            .replace("approval: auto", "approval: required")
            .replace("kind: bench", "kind: gated"),
    )?;
    let target = Scripted::default();
    target.on("GET /check", vec![Reply::json(200, json!({"ok": true}))]);
    target.on("POST /act", vec![Reply::json(200, json!({"done": true}))]);
    let target_server = target.start().await?;

    // 1. The check at every step boundary — ten freezes in force that do
    // not cover the run (five of targets, five of principals, which make
    // the driver read who posted the run's event) — and the counted caps,
    // against neither.
    let mut servers = Vec::new();
    for (name, runbooks) in [
        ("no freeze, no cap", &runbooks),
        ("10 freezes, none covering", &runbooks),
        ("rate limit, cooldown, max", &capped),
    ] {
        let database = format!(
            "sqlite://{}",
            scratch.join(format!("{}.db", servers.len())).display()
        );
        let http = client_as(&token(opsgate, &database, "bench", "operator")?)?;
        let server = start(opsgate, runbooks, &database, &target_server.url, 15_000)?;
        if servers.len() == 1 {
            for index in 0..5 {
                for scope in [
                    json!({"targets": format!("never-{index}-*")}),
                    json!({"principal": format!("agent:nobody-{index}")}),
                ] {
                    let mut order = scope;
                    order["reason"] = json!("bench");
                    http.post(format!("{}/v1/freezes", server.1))
                        .json(&order)
                        .send()
                        .await?
                        .error_for_status()?;
                }
            }
        }
        servers.push((name, server, http));
    }
    let mut took: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); servers.len()];
    for index in 0..runs + 20 {
        for (which, (_, server, http)) in servers.iter().enumerate() {
            let elapsed = settle_one(http, &server.1, "loop", &format!("L{index}")).await?;
            if index >= 20 {
                took[which].push(elapsed);
            }
        }
    }
    println!(
        "{runs} runs of 3 steps each (4 step boundaries checked), SQLite, interleaved: event posted → run settled, ms"
    );
    println!("{:>28} {:>8} {:>8} {:>8}", "instance", "p50", "p90", "p99");
    for ((name, _, _), took) in servers.iter().zip(&mut took) {
        let [p50, p90, p99, _] = percentiles(took);
        println!("{name:>28} {p50:>8.2} {p90:>8.2} {p99:>8.2}");
    }
    drop(servers);

    // 2. A freeze issued on one PostgreSQL instance, heard by another:
    // from the issuing call's answer (committed) until the other instance
    // stores an event under it as `frozen`; and from the lift's answer
    // until it starts runs again. Events go to a runbook that waits for
    // approval, so nothing is executed meanwhile.
    let database = Database::create("opsgate_bench_freeze")
        .await
        .context("creating a database on PostgreSQL")?;
    let http = client_as(&token(opsgate, &database.url, "bench", "operator")?)?;
    let issuer = start(
        opsgate,
        &runbooks,
        &database.url,
        &target_server.url,
        15_000,
    )?;
    let other = start(
        opsgate,
        &runbooks,
        &database.url,
        &target_server.url,
        15_000,
    )?;
    let mut sequence = 0;
    let mut post_until = |disposition: &'static str| {
        let (http, base) = (http.clone(), other.1.clone());
        sequence += 1_000;
        let first = sequence;
        async move {
            let started = Instant::now();
            for index in first.. {
                let event = json!({"source": "bench", "kind": "gated", "dedup_key": format!("G{index}"),
                    "subject": format!("HOST-{index}"), "status": "firing", "fields": {}});
                let answer: serde_json::Value = http
                    .post(format!("{base}/v1/events"))
                    .json(&event)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                if answer["disposition"] == disposition {
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("the other instance never answered `{disposition}`");
                }
            }
            anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let trials = 20;
    let (mut frozen_after, mut live_after) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let freeze: serde_json::Value = http
            .post(format!("{}/v1/freezes", issuer.1))
            .json(&json!({"reason": "bench"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        frozen_after.push(post_until("frozen").await?);
        let id = freeze["id"].as_str().context("a freeze id")?;
        http.post(format!("{}/v1/freezes/{id}/lift", issuer.1))
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        live_after.push(post_until("started_run").await?);
    }
    println!(
        "\na freeze issued on one PostgreSQL instance, heard by another ({trials} times): ms until the other refuses (or takes again) a new event"
    );
    println!("{:>28} {:>8} {:>8} {:>8}", "", "p50", "p90", "max");
    for (name, took) in [
        ("issued → frozen there", &mut frozen_after),
        ("lifted → live there", &mut live_after),
    ] {
        let [p50, p90, _, max] = percentiles(took);
        println!("{name:>28} {p50:>8.2} {p90:>8.2} {max:>8.2}");
    }
    drop(issuer);
    drop(other);
    drop(database);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
