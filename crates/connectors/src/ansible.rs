//! `ansible.playbook`: a playbook run by the real `ansible-playbook`, judged
//! by its exit code and by what its `json` stdout callback reports.
//!
//! The request is `{playbook, inventory, limit, extra_vars, check, tags}`.
//! Like `command.run`, the program runs without a shell, so no value is ever
//! re-parsed: options are passed as single `--name=value` arguments and the
//! extra vars as a JSON file (`--extra-vars @file`), which also keeps them
//! out of `ps`. The environment is cleared and rebuilt from what ansible
//! needs, with a private `HOME` per attempt, so neither the server's
//! environment nor a previous run leaks into a playbook.
//!
//! `ansible-playbook` forks workers, which fork the modules: the program is
//! started in a process group of its own, and the whole group is killed when
//! the attempt is dropped (the step's timeout), not only the parent.
//!
//! Exit codes, as ansible defines them: 0 every task went well, 2 a task
//! failed, 4 a host was unreachable *or* the playbook could not be parsed
//! (the stats tell them apart), anything else an error before any task ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use domain::{ActionShape, AttemptOutcome, FailureCause, Key, Kind, Literal};
use serde_json::{Map, Value, json};

use crate::failed;
use crate::text::{tail, truncate};

/// What `ansible.playbook` takes in a runbook's `with:`.
pub(crate) const SHAPE: ActionShape = ActionShape {
    name: "ansible.playbook",
    keys: &[
        Key::required("playbook", Kind::Text),
        Key::required("inventory", Kind::Text),
        Key::optional("limit", Kind::Text),
        Key::optional("extra_vars", Kind::Map),
        Key::optional("check", Kind::Boolean),
        Key::optional("tags", Kind::StringList),
    ],
    exclusive: &[],
    default: Some(("check", Literal::Boolean(false))),
    address: None,
};

/// How `ansible.playbook` finds its program and its playbooks.
#[derive(Debug, Clone)]
pub struct AnsibleConfig {
    /// The `ansible-playbook` executable: a name looked up on `PATH`, or a path.
    pub program: PathBuf,
    /// Where a relative `playbook` or inventory path is looked up. Without
    /// it, only absolute paths are accepted.
    pub playbooks_dir: Option<PathBuf>,
}

impl Default for AnsibleConfig {
    fn default() -> Self {
        AnsibleConfig {
            program: PathBuf::from("ansible-playbook"),
            playbooks_dir: None,
        }
    }
}

/// A summary names at most this many hosts, plays and failures; a playbook
/// run over a fleet must not turn into a large audit record.
const LISTED_AT_MOST: usize = 20;
/// How many bytes of a task's message or of stderr are kept.
const MESSAGE_LIMIT: usize = 500;
/// The per-host counters of the `json` callback's `stats` that are kept.
const HOST_COUNTERS: &[&str] = &["ok", "changed", "failures", "unreachable", "skipped"];
/// `ansible-playbook`'s exit codes with a meaning of their own.
const EXIT_TASK_FAILED: i32 = 2;
const EXIT_UNREACHABLE_OR_PARSE_ERROR: i32 = 4;

pub(crate) async fn run(
    request: &Value,
    config: &AnsibleConfig,
    output_limit: usize,
) -> AttemptOutcome {
    let invocation = match Invocation::read(request, config) {
        Ok(invocation) => invocation,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let private = match tempfile::Builder::new()
        .prefix("opsgate-ansible-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(error) => {
            return failed(
                FailureCause::Other,
                format!("could not create a private directory for ansible: {error}"),
            );
        }
    };
    let mut command = match invocation.command(config, private.path()) {
        Ok(command) => command,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let program = config.program.display();
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return failed(
                FailureCause::Other,
                format!(
                    "`{program}` is not installed: it was not found on PATH (Debian's `ansible` package provides it)"
                ),
            );
        }
        Err(error) => {
            return failed(
                FailureCause::Other,
                format!("could not start `{program}`: {error}"),
            );
        }
    };
    let group = child.id().map(ProcessGroup);
    let output = child.wait_with_output().await;
    if let Some(group) = group {
        group.release();
    }
    match output {
        Ok(output) => judge(&output, invocation.check, output_limit),
        Err(error) => failed(FailureCause::Other, format!("`{program}` failed: {error}")),
    }
}

/// The request, checked and with its paths resolved.
struct Invocation {
    playbook: PathBuf,
    inventory: String,
    limit: Option<String>,
    tags: Vec<String>,
    check: bool,
    extra_vars: Map<String, Value>,
}

impl Invocation {
    fn read(request: &Value, config: &AnsibleConfig) -> Result<Invocation, String> {
        let playbooks_dir = config.playbooks_dir.as_deref();
        let Some(playbook) = request["playbook"].as_str() else {
            return Err("the request has no `playbook`".to_owned());
        };
        let playbook = resolve(playbook, playbooks_dir, "playbook")?;
        if !playbook.is_file() {
            return Err(format!("playbook `{}` does not exist", playbook.display()));
        }
        let Some(inventory) = request["inventory"].as_str() else {
            return Err("the request has no `inventory`".to_owned());
        };
        // A comma makes a host list (`localhost,`); anything else is a file,
        // and a file that is not there would let ansible run on no host and
        // exit 0, so it is refused here.
        let inventory = if inventory.contains(',') {
            inventory.to_owned()
        } else {
            let path = resolve(inventory, playbooks_dir, "inventory")?;
            if !path.exists() {
                return Err(format!(
                    "inventory `{}` does not exist; a list of hosts needs a comma, as in `{inventory},`",
                    path.display()
                ));
            }
            path.display().to_string()
        };
        let limit = match &request["limit"] {
            Value::Null => None,
            Value::String(limit) => Some(limit.clone()),
            other => return Err(format!("`limit` must be a string, not {other}")),
        };
        let tags = match &request["tags"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|tag| match tag {
                    Value::String(tag) if !tag.contains(',') => Ok(tag.clone()),
                    other => Err(format!("`tags`: `{other}` is not a tag name")),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("`tags` must be a list, not {other}")),
        };
        let check = match &request["check"] {
            Value::Null => false,
            Value::Bool(check) => *check,
            other => return Err(format!("`check` must be true or false, not {other}")),
        };
        let extra_vars = match &request["extra_vars"] {
            Value::Null => Map::new(),
            Value::Object(vars) => vars.clone(),
            other => return Err(format!("`extra_vars` must be a map, not {other}")),
        };
        Ok(Invocation {
            playbook,
            inventory,
            limit,
            tags,
            check,
            extra_vars,
        })
    }

    /// The command line and environment; `private` is the attempt's own
    /// directory (its `HOME`, ansible's local temp, the extra vars file).
    fn command(
        &self,
        config: &AnsibleConfig,
        private: &Path,
    ) -> Result<tokio::process::Command, String> {
        let mut command = tokio::process::Command::new(&config.program);
        command
            .env_clear()
            .env("HOME", private)
            .env("ANSIBLE_LOCAL_TEMP", private.join("tmp"))
            .env("ANSIBLE_STDOUT_CALLBACK", "json")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("LANG", "C.UTF-8");
        // Modules find programs (`systemctl`, `ssh`) on PATH; an ssh agent is
        // how keys reach remote hosts. Neither is a secret of opsgate's.
        for inherited in ["PATH", "SSH_AUTH_SOCK"] {
            if let Some(value) = std::env::var_os(inherited) {
                command.env(inherited, value);
            }
        }
        command.arg(format!("--inventory={}", self.inventory));
        if let Some(limit) = &self.limit {
            command.arg(format!("--limit={limit}"));
        }
        if !self.tags.is_empty() {
            command.arg(format!("--tags={}", self.tags.join(",")));
        }
        if self.check {
            command.arg("--check");
        }
        if !self.extra_vars.is_empty() {
            let file = private.join("extra_vars.json");
            let text = Value::Object(self.extra_vars.clone()).to_string();
            std::fs::write(&file, text)
                .map_err(|error| format!("could not write the extra vars: {error}"))?;
            command.arg(format!("--extra-vars=@{}", file.display()));
        }
        command.arg(&self.playbook);
        // An `ansible.cfg` next to the playbook applies, as it would by hand.
        if let Some(dir) = self.playbook.parent() {
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }
}

/// `path` if absolute, else `path` within the playbooks directory.
fn resolve(path: &str, playbooks_dir: Option<&Path>, what: &str) -> Result<PathBuf, String> {
    let path = Path::new(path);
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    match playbooks_dir {
        Some(dir) => Ok(dir.join(path)),
        None => Err(format!(
            "{what} `{}` is a relative path, and no playbooks directory is configured; give an absolute path",
            path.display()
        )),
    }
}

/// The process group of a running `ansible-playbook`, killed when dropped.
struct ProcessGroup(u32);

impl ProcessGroup {
    /// For a program that has ended: what it started on purpose (a daemon a
    /// task launched) keeps running.
    fn release(self) {
        std::mem::forget(self);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Ok(group) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: killpg only sends a signal. The group exists: it is led by
        // our child, which has not been waited for when this runs.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
}

/// Classifies a finished `ansible-playbook` from its exit code and report.
fn judge(output: &Output, check: bool, output_limit: usize) -> AttemptOutcome {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let Some(code) = output.status.code() else {
        return AttemptOutcome::Failed {
            cause: FailureCause::Other,
            error: "`ansible-playbook` was killed by a signal".to_owned(),
            response: Some(json!({"stderr": tail(&stderr, output_limit)})),
            retry_after_ms: None,
        };
    };
    let report = serde_json::from_slice::<Value>(&output.stdout).ok();
    let mut summary = json!({"exit_code": code, "check": check});
    if let Some(report) = &report {
        summarise(report, &mut summary);
    }
    let failed_with = |cause: FailureCause, error: String, mut summary: Value| {
        if summary.get("failed_tasks").is_none() && summary.get("unreachable_hosts").is_none() {
            summary["stderr"] = json!(tail(&stderr, output_limit));
        }
        AttemptOutcome::Failed {
            cause,
            error,
            response: Some(summary),
            retry_after_ms: None,
        }
    };
    let failures = report.as_ref().map(failures).unwrap_or_default();
    let unreachable: Vec<&Failure> = failures.iter().filter(|f| f.unreachable).collect();
    let failed_tasks: Vec<&Failure> = failures.iter().filter(|f| !f.unreachable).collect();
    if !unreachable.is_empty() {
        summary["unreachable_hosts"] = listed(&unreachable);
    }
    if !failed_tasks.is_empty() {
        summary["failed_tasks"] = listed(&failed_tasks);
    }
    match code {
        0 if report.is_none() => failed_with(
            FailureCause::Other,
            "`ansible-playbook` exited with 0, but its report is not the `json` callback's; the outcome cannot be read".to_owned(),
            summary,
        ),
        0 if summary["hosts"].as_object().is_none_or(Map::is_empty) => failed_with(
            FailureCause::Other,
            "the playbook ran on no host: no play's `hosts` matched the inventory".to_owned(),
            summary,
        ),
        0 => AttemptOutcome::Succeeded { response: summary },
        EXIT_UNREACHABLE_OR_PARSE_ERROR if !unreachable.is_empty() => {
            let first = unreachable[0];
            failed_with(
                FailureCause::Connect,
                format!(
                    "host `{}` is unreachable: {}{}",
                    first.host,
                    first.message,
                    and_more(unreachable.len())
                ),
                summary,
            )
        }
        EXIT_TASK_FAILED if !failed_tasks.is_empty() => {
            let first = failed_tasks[0];
            failed_with(
                FailureCause::ExitCode(code),
                format!(
                    "task `{}` failed on `{}`: {}{}",
                    first.task,
                    first.host,
                    first.message,
                    and_more(failed_tasks.len())
                ),
                summary,
            )
        }
        _ => failed_with(
            FailureCause::ExitCode(code),
            format!(
                "`ansible-playbook` exited with {code}: {}",
                tail(stderr.trim(), MESSAGE_LIMIT)
            ),
            summary,
        ),
    }
}

/// Adds the play names and the per-host counters of `report` to `summary`.
fn summarise(report: &Value, summary: &mut Value) {
    let plays: Vec<&Value> = report["plays"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|play| &play["play"]["name"])
        .take(LISTED_AT_MOST)
        .collect();
    summary["plays"] = json!(plays);
    let no_stats = Map::new();
    let stats = report["stats"].as_object().unwrap_or(&no_stats);
    let hosts: Map<String, Value> = stats
        .iter()
        .take(LISTED_AT_MOST)
        .map(|(host, counters)| {
            let kept: Map<String, Value> = HOST_COUNTERS
                .iter()
                .map(|name| ((*name).to_owned(), counters[*name].clone()))
                .collect();
            (host.clone(), Value::Object(kept))
        })
        .collect();
    summary["hosts"] = Value::Object(hosts);
    if stats.len() > LISTED_AT_MOST {
        summary["hosts_not_listed"] = json!(stats.len() - LISTED_AT_MOST);
    }
}

/// What stopped one host.
struct Failure {
    host: String,
    task: String,
    message: String,
    unreachable: bool,
}

/// For each host that the stats count as failed or unreachable, the last
/// task result that says so: earlier ones may have been ignored or rescued,
/// the last one is what stopped the host.
fn failures(report: &Value) -> Vec<Failure> {
    let mut last: BTreeMap<(String, bool), Failure> = BTreeMap::new();
    let tasks = report["plays"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|play| play["tasks"].as_array().into_iter().flatten());
    for task in tasks {
        let Some(hosts) = task["hosts"].as_object() else {
            continue;
        };
        for (host, result) in hosts {
            let unreachable = result["unreachable"] == true;
            if !unreachable && result["failed"] != true {
                continue;
            }
            let message = ["msg", "stderr", "module_stderr"]
                .iter()
                .find_map(|key| result[*key].as_str().filter(|text| !text.trim().is_empty()))
                .unwrap_or("no message");
            last.insert(
                (host.clone(), unreachable),
                Failure {
                    host: host.clone(),
                    task: task["task"]["name"]
                        .as_str()
                        .unwrap_or("unnamed")
                        .to_owned(),
                    message: truncate(message.trim(), MESSAGE_LIMIT),
                    unreachable,
                },
            );
        }
    }
    last.into_values()
        .filter(|failure| {
            let counter = if failure.unreachable {
                "unreachable"
            } else {
                "failures"
            };
            report["stats"][&failure.host][counter]
                .as_u64()
                .is_some_and(|count| count > 0)
        })
        .collect()
}

fn listed(failures: &[&Failure]) -> Value {
    failures
        .iter()
        .take(LISTED_AT_MOST)
        .map(|failure| {
            if failure.unreachable {
                json!({"host": failure.host, "message": failure.message})
            } else {
                json!({"host": failure.host, "task": failure.task, "message": failure.message})
            }
        })
        .collect()
}

fn and_more(count: usize) -> String {
    match count {
        0 | 1 => String::new(),
        2 => " (and 1 more host)".to_owned(),
        _ => format!(" (and {} more hosts)", count - 1),
    }
}
