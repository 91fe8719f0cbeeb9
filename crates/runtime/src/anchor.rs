//! Writes anchors of the audit chain's head outside the database.
//!
//! The chain inside the database cannot show that its newest records are
//! missing (`store::Anchor` says why); an anchor kept elsewhere can. The
//! loop is woken by the store whenever this process commits audit records
//! and writes an anchor once `every_records` records were appended since
//! the last one, or `every` has passed and the head moved (which also
//! covers what other instances append to a shared database). A graceful
//! shutdown writes a last anchor, so that the final records of a clean stop
//! are anchored too.
//!
//! At start, the newest anchor in a file sink is checked against the
//! chain, and an error logged when the chain no longer holds it.
//!
//! A sink that fails (a webhook that is down, a full disk) is logged and
//! tried again later; opsgate keeps working, since refusing to act for
//! want of an anchor would let an outage of the sink stop every run.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use store::{Anchor, Store};
use tokio::time::Instant;

use crate::Runtime;

/// Where anchors go and how often.
pub struct AnchorConfig {
    pub sink: AnchorSink,
    /// The HMAC key anchors are signed with.
    pub key: domain::Secret,
    /// Anchor at the latest after this many new records...
    pub every_records: u64,
    /// ...or this long after the last anchor, when the head moved.
    pub every: Duration,
}

/// Where anchors are written.
pub enum AnchorSink {
    /// Appended as JSON lines, each synced to disk before the next.
    File(PathBuf),
    /// POSTed as JSON, the body signed (`X-Opsgate-Signature: sha256=…`,
    /// HMAC-SHA256 with the anchor key).
    Webhook {
        url: String,
        client: reqwest::Client,
    },
}

/// The key stays out of logs and panics.
impl std::fmt::Debug for AnchorConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AnchorConfig")
            .field("sink", &self.sink.describe())
            .field("key", &"<redacted>")
            .field("every_records", &self.every_records)
            .field("every", &self.every)
            .finish()
    }
}

/// How long a failed sink is left alone before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long one webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The running anchor loop; [`AnchorLoop::finish`] stops it after a last
/// anchor.
pub struct AnchorLoop {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl AnchorLoop {
    /// Writes a last anchor of the head (when it moved since the last one)
    /// and ends the loop.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(error = %error, "the audit anchor loop failed");
        }
    }
}

impl Runtime {
    /// Starts writing anchors of the audit chain's head to `config.sink`.
    pub fn spawn_anchor_loop(&self, config: AnchorConfig) -> AnchorLoop {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let store = self.store().clone();
        let task = tokio::spawn(anchor_loop(store, config, stopped));
        AnchorLoop { stop, task }
    }
}

async fn anchor_loop(
    store: Store,
    config: AnchorConfig,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut appends = store.audit_appends();
    let mut anchored = match &config.sink {
        AnchorSink::File(path) => {
            check_newest_anchor(&store, config.key.expose_bytes(), path).await
        }
        AnchorSink::Webhook { .. } => None,
    };
    let mut deadline = Instant::now() + config.every;
    let mut not_before = Instant::now();
    loop {
        let stopping = tokio::select! {
            // Never an error: the store held here keeps the sender alive.
            _ = appends.changed() => false,
            () = tokio::time::sleep_until(deadline.max(not_before)) => false,
            _ = &mut stopped => true,
        };
        let head = match store.audit_head().await {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!(error = %error, "reading the audit chain's head failed");
                if stopping {
                    return;
                }
                not_before = Instant::now() + RETRY_AFTER;
                continue;
            }
        };
        let now = Instant::now();
        let anchored_seq = anchored.as_ref().map_or(0, |(seq, _)| *seq);
        let due = stopping
            || (now >= not_before
                && (now >= deadline
                    || head.as_ref().is_some_and(|(seq, _)| {
                        seq.saturating_sub(anchored_seq) as u64 >= config.every_records
                    })));
        if let Some(head) = head.filter(|head| due && Some(head) != anchored.as_ref()) {
            let anchor = Anchor::sign(head.0, &head.1, Timestamp::now(), config.key.expose_bytes());
            match write(&config, &anchor).await {
                Ok(()) => {
                    tracing::debug!(seq = anchor.seq, head_hash = %anchor.head_hash, "audit anchor written");
                    anchored = Some(head);
                    deadline = Instant::now() + config.every;
                }
                Err(error) => {
                    tracing::error!(
                        seq = anchor.seq,
                        sink = %config.sink.describe(),
                        error = %error,
                        "writing an audit anchor failed; trying again later"
                    );
                    not_before = Instant::now() + RETRY_AFTER;
                }
            }
        }
        if Instant::now() >= deadline {
            // Nothing moved since the last anchor: look again a period on.
            deadline = Instant::now() + config.every;
        }
        if stopping {
            if let Some((seq, _)) = &anchored {
                tracing::info!(seq, "audit anchored at shutdown");
            }
            return;
        }
    }
}

/// Checks the chain against the newest anchor in the file at start, and
/// says loudly when it does not hold: after a power loss that took the
/// chain's tail, this is the moment to notice, before new records take the
/// lost ones' sequence numbers. The server starts anyway (the operator
/// decides what to do; `audit verify --anchor` tells the whole story).
/// Returns the anchored head when it is still the chain's head, so that it
/// is not anchored twice.
async fn check_newest_anchor(
    store: &Store,
    key: &[u8],
    path: &std::path::Path,
) -> Option<(i64, String)> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::error!(anchors = %path.display(), error = %error, "reading the audit anchors failed");
            return None;
        }
    };
    let anchor = match Anchor::read_lines(&text) {
        Ok(store::AnchorLines { anchors, torn }) => {
            if !torn.is_empty() {
                tracing::warn!(anchors = %path.display(), lines = ?torn, "audit anchors cut short by a crash are left out");
            }
            anchors.into_iter().last()?.1
        }
        Err(problem) => {
            tracing::error!(anchors = %path.display(), problem = %problem, "the audit anchors cannot be read");
            return None;
        }
    };
    let (hash, head) = match (store.audit_hash(anchor.seq).await, store.audit_head().await) {
        (Ok(hash), Ok(head)) => (hash, head),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(error = %error, "checking the audit chain against its newest anchor failed");
            return None;
        }
    };
    let head_seq = head.as_ref().map_or(0, |(seq, _)| *seq);
    match anchor.check(key, hash.as_deref(), head_seq) {
        Ok(()) => {
            tracing::info!(
                seq = anchor.seq,
                head_seq,
                "the audit chain holds its newest anchor"
            );
            head.filter(|(seq, _)| *seq == anchor.seq)
        }
        Err(broken) => {
            tracing::error!(
                anchors = %path.display(),
                seq = anchor.seq,
                anchored_at = %anchor.anchored_at,
                problem = %broken,
                "the audit chain does not hold its newest anchor: records it held are gone \
                 (run `opsgate audit verify --anchor`)"
            );
            None
        }
    }
}

impl AnchorSink {
    /// The sink as the logs name it (never a secret: a webhook URL's query
    /// may carry one, so only its origin is shown).
    fn describe(&self) -> String {
        match self {
            AnchorSink::File(path) => format!("file:{}", path.display()),
            AnchorSink::Webhook { url, .. } => match reqwest::Url::parse(url) {
                Ok(url) => url.origin().ascii_serialization(),
                Err(_) => "webhook".to_owned(),
            },
        }
    }
}

async fn write(config: &AnchorConfig, anchor: &Anchor) -> Result<(), String> {
    let line = anchor.to_json_line();
    match &config.sink {
        AnchorSink::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || append_synced(&path, &line))
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| error.to_string())
        }
        AnchorSink::Webhook { url, client } => {
            let signature = store::body_signature(config.key.expose_bytes(), line.as_bytes());
            let response = client
                .post(url)
                .timeout(WEBHOOK_TIMEOUT)
                .header("content-type", "application/json")
                .header("x-opsgate-signature", signature)
                .body(line)
                .send()
                .await
                .map_err(|error| error.without_url().to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("the webhook answered {}", response.status()))
            }
        }
    }
}

/// Appends one line to the file and syncs it; a file created here also
/// has its directory synced, so that the file itself survives a crash.
fn append_synced(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::io::{Read, Seek};
    let existed = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    // A line a crash cut short ends without its newline: the next anchor
    // starts a line of its own, so the torn one stays the only casualty.
    let mut last = [b'\n'];
    if file.metadata()?.len() > 0 {
        file.seek(std::io::SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
    }
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()?;
    if !existed && let Some(directory) = path.parent() {
        let directory = if directory.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            directory
        };
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}
