//! A ticket system and a chat channel that remember what they were told,
//! and a runtime to plug them into.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectors::seam::BoxFuture;
use connectors::{
    ApprovalRequest, ChatChannel, Integrations, Progress, TicketState, TicketSystem, TicketUpdate,
    WriteError,
};

/// A service desk that owns the events of source `desk` naming
/// `fields.ticket`, and keeps every update it is given, by ticket.
#[derive(Default)]
pub struct FakeDesk {
    pub updates: Mutex<Vec<(String, TicketUpdate)>>,
    /// How many writes still fail, before writes succeed again.
    pub failing: Mutex<u32>,
    /// While set, every write fails as a system that is down does: a 503
    /// without a `Retry-After`.
    pub down: std::sync::atomic::AtomicBool,
    /// Every write asked of it, written or not.
    pub writes_asked: std::sync::atomic::AtomicUsize,
}

impl TicketSystem for FakeDesk {
    fn name(&self) -> &'static str {
        "desk"
    }

    fn ticket_of(&self, event: &domain::Event) -> Option<String> {
        connectors::seam::own_ticket(event, "desk")
    }

    fn write<'a>(
        &'a self,
        ticket: &'a str,
        update: TicketUpdate,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            self.writes_asked.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(WriteError::Retryable {
                    message: "the desk answered 503".into(),
                    retry_after: None,
                });
            }
            {
                let mut failing = self.failing.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return Err(WriteError::Retryable {
                        message: "the desk is down".into(),
                        retry_after: Some(Duration::from_millis(10)),
                    });
                }
            }
            self.updates
                .lock()
                .unwrap()
                .push((ticket.to_owned(), update));
            Ok(())
        })
    }

    fn state_of<'a>(&'a self, _ticket: &'a str) -> BoxFuture<'a, Result<TicketState, WriteError>> {
        Box::pin(async { Ok(TicketState::Open) })
    }
}

impl FakeDesk {
    pub fn updates(&self) -> Vec<(String, TicketUpdate)> {
        self.updates.lock().unwrap().clone()
    }
}

/// A chat channel that keeps every approval request and progress message.
pub struct FakeChat {
    pub links_approvers: bool,
    pub requests: Mutex<Vec<ApprovalRequest>>,
    pub progress: Mutex<Vec<Progress>>,
}

impl FakeChat {
    pub fn new(links_approvers: bool) -> FakeChat {
        FakeChat {
            links_approvers,
            requests: Mutex::default(),
            progress: Mutex::default(),
        }
    }

    pub fn requests(&self) -> Vec<ApprovalRequest> {
        self.requests.lock().unwrap().clone()
    }

    pub fn progress(&self) -> Vec<Progress> {
        self.progress.lock().unwrap().clone()
    }
}

impl ChatChannel for FakeChat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn destination(&self) -> String {
        "room-1".to_owned()
    }

    fn links_approvers(&self) -> bool {
        self.links_approvers
    }

    fn ask_approval<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        self.requests.lock().unwrap().push(request.clone());
        Box::pin(async { Ok(()) })
    }

    fn tell_progress<'a>(
        &'a self,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        self.progress.lock().unwrap().push(progress.clone());
        Box::pin(async { Ok(()) })
    }
}

/// A runtime over a fresh store, with `runbooks`, the fakes plugged in,
/// and `TARGET` pointing at `target`.
pub struct Harness {
    pub runtime: runtime::Runtime,
    pub desk: Arc<FakeDesk>,
    pub chat: Arc<FakeChat>,
    _dir: tempfile::TempDir,
}

pub async fn harness(runbooks: &[&str], target: &str, chat_links: bool) -> Harness {
    let harness = harness_on(runbooks, target, chat_links, runtime::Clock::system()).await;
    harness.runtime.spawn_writeback_loop();
    harness
}

/// A runtime as [`harness`] makes it, reading `clock`, with no write-back
/// loop: the test writes back when it wants to (`write_back_due`).
pub async fn harness_on(
    runbooks: &[&str],
    target: &str,
    chat_links: bool,
    clock: runtime::Clock,
) -> Harness {
    connectors::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = store::Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let runbooks = runbooks
        .iter()
        .enumerate()
        .map(|(index, text)| {
            runbook::parse_runbook(
                std::path::Path::new(&format!("r{index}.yaml")),
                text,
                connectors::STEP_ACTIONS,
            )
            .unwrap_or_else(|problems| panic!("{problems:?}"))
        })
        .collect();
    let desk = Arc::new(FakeDesk::default());
    let chat = Arc::new(FakeChat::new(chat_links));
    let integrations = Integrations {
        tickets: vec![desk.clone()],
        chats: vec![chat.clone()],
        ..Integrations::default()
    };
    let mut template_env = runbook::TemplateEnv::default();
    template_env.vars.insert("TARGET".into(), target.to_owned());
    let runtime = runtime::Runtime::new(
        store,
        runtime::Config {
            catalog: runbook::Catalog::new(runbooks),
            template_env,
            connectors: connectors::Connectors::new(connectors::Config::default()).unwrap(),
            lease_ttl_ms: runtime::Config::DEFAULT_LEASE_TTL_MS,
            global_rate_limit: None,
            shadow_principals: Vec::new(),
            directory: None,
            policies: None,
            integrations,
            approval_pages: None,
            max_intake_in_flight: runtime::Config::DEFAULT_MAX_INTAKE_IN_FLIGHT,
            clock,
        },
    );
    Harness {
        runtime,
        desk,
        chat,
        _dir: dir,
    }
}

/// Waits up to 10 s for `check`, looking every 10 ms.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
