//! The MCP server: agents discover runbooks and propose actions as tools,
//! over streamable HTTP at `/mcp` (the 2026-07-28 revision, stateless, so
//! any instance answers any request; clients of 2025-11-25 are answered
//! too), with rmcp, the official SDK. `opsgate mcp` relays stdio to it.
//!
//! The route is authenticated like every other (a bearer agent token, by
//! the middleware in `auth.rs`, before rmcp sees the request), and each
//! tool calls the runtime's `Proposals` and `Reads` services — the same
//! ones `/v1/proposals` calls — so a scope, a freeze, separation of duties
//! and a policy that errors (it denies) hold here exactly as there. There
//! is no approving tool: an approval is a person on opsgate's own page,
//! and a proposal waiting for one answers where that page is, never a form.
//!
//! Tool results are built from the runtime's answers field by field: what
//! they carry is what an agent may read through the API, and no secret or
//! token ever passes through a plan (templates never see secrets).

use std::sync::Arc;

use axum::http::request::Parts;
use domain::{Principal, Proposal, RiskClass};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult,
    DetailedTask, GetTaskParams, GetTaskResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Task, TaskPayload, TaskStatus, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use runtime::Runtime;
use serde_json::{Value, json};

use crate::api::{DryRunAnswer, ProposalAnswer, approval_url};

/// The route MCP is served at.
pub(crate) const MCP_ROUTE: &str = "/mcp";

/// The tools, in the order they are listed.
const LIST_RUNBOOKS: &str = "list_runbooks";
const DESCRIBE_RUNBOOK: &str = "describe_runbook";
const DRY_RUN: &str = "dry_run_proposal";
const PROPOSE: &str = "propose";
const RUN_STATUS: &str = "run_status";
const EXPLAIN: &str = "explain_decision";
const WITHDRAW: &str = "withdraw_proposal";

/// The streamable HTTP service `/mcp` is: stateless, answering plain JSON
/// where it can, accepting requests addressed to loopback or to the
/// configured public URL's host (rmcp's defence against DNS rebinding).
pub(crate) fn service(
    runtime: Runtime,
    public_url: Option<String>,
) -> StreamableHttpService<Tools, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = false;
    config.json_response = true;
    if let Some(authority) = public_url.as_deref().and_then(authority_of) {
        config.allowed_hosts.push(authority.to_owned());
    }
    let tools = Tools {
        runtime,
        public_url: public_url.map(Arc::from),
    };
    StreamableHttpService::new(move || Ok(tools.clone()), Default::default(), config)
}

/// The tools, over the runtime's services.
#[derive(Clone)]
pub(crate) struct Tools {
    runtime: Runtime,
    public_url: Option<Arc<str>>,
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        // Tasks (the `io.modelcontextprotocol/tasks` extension): a
        // proposal that waits for a person or runs becomes a task the
        // agent polls, whose id is the run's.
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("opsgate", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "opsgate runs versioned runbooks under policy and approval. List the runbooks, \
                 dry-run a proposal to see its plan and decision, then propose it with your \
                 rationale, evidence and confidence. You never approve: a proposal that needs \
                 approval waits for a person on opsgate's own page.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let agent = agent_of(&context)?;
        // A proposal can destroy what it acts on exactly when a runbook
        // this agent may propose is irreversible; it is idempotent by its
        // key, and it reaches outside systems.
        let runbooks = self.runtime.proposals().runbooks(&agent);
        let destructive = runbooks
            .iter()
            .any(|runbook| runbook.risk == RiskClass::Irreversible);
        let read_only = ToolAnnotations::new()
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false);
        let tools = vec![
            tool(
                LIST_RUNBOOKS,
                "List the runbooks you may propose: id, title, risk, mode, approval, the inputs \
                 they take (a JSON Schema) and their steps.",
                json!({"type": "object", "properties": {}, "additionalProperties": false}),
                read_only.clone(),
            ),
            tool(
                DESCRIBE_RUNBOOK,
                "Describe one runbook: what it does step by step, its risk, its inputs (JSON \
                 Schema), how targets follow from them, and the lowest confidence it takes.",
                json!({
                    "type": "object", "required": ["runbook"], "additionalProperties": false,
                    "properties": {"runbook": {"type": "string", "description": "The runbook's id"}},
                }),
                read_only.clone(),
            ),
            tool(
                DRY_RUN,
                "Plan a proposal without acting: the runbook matched (or named), every request \
                 the run would send, and the policy's decision with its reasons. Nothing is \
                 stored or run.",
                proposal_schema(),
                read_only.clone(),
            ),
            tool(
                PROPOSE,
                "Propose a runbook run. opsgate matches, plans and decides it like any signal: \
                 it runs (auto-approved), waits for a person (the answer says where the \
                 approval page is), or is denied with reasons. The same idempotency_key sent \
                 again answers the same run.",
                proposal_schema(),
                ToolAnnotations::new()
                    .read_only(false)
                    .destructive(destructive)
                    .idempotent(true)
                    .open_world(true),
            ),
            tool(
                RUN_STATUS,
                "A run's state now: its runbook, targets, decision and what it did so far.",
                run_id_schema(),
                read_only.clone(),
            ),
            tool(
                EXPLAIN,
                "Why opsgate decided as it did on a run: the decision, each reason, the policy \
                 version, and what was proposed.",
                run_id_schema(),
                read_only,
            ),
            tool(
                WITHDRAW,
                "Withdraw your own proposal while it waits for approval: the run is cancelled \
                 and never acts.",
                json!({
                    "type": "object", "required": ["run_id"], "additionalProperties": false,
                    "properties": {
                        "run_id": {"type": "string"},
                        "reason": {"type": "string", "maxLength": 500},
                    },
                }),
                ToolAnnotations::new()
                    .read_only(false)
                    .destructive(false)
                    .idempotent(true)
                    .open_world(false),
            ),
        ];
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let agent = agent_of(&context)?;
        let detail = self.own_run(&agent, &request.task_id).await?;
        let task = self.task_of(&detail.run);
        let payload = match task.status {
            TaskStatus::Completed => {
                let status = self.status_of(&detail);
                let result =
                    serde_json::to_value(CallToolResult::structured(status)).map_err(|_| {
                        ErrorData::internal_error("a result that does not serialise", None)
                    })?;
                let Value::Object(result) = result else {
                    unreachable!("a tool result is an object")
                };
                TaskPayload::Completed { result }
            }
            TaskStatus::Cancelled => TaskPayload::Cancelled,
            _ => TaskPayload::Working,
        };
        Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
    }

    /// Cancelling a proposal's task withdraws the proposal, while it waits
    /// for a person; a run that acts already goes on (a person cancels it).
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let agent = agent_of(&context)?;
        self.own_run(&agent, &request.task_id).await?;
        self.runtime
            .proposals()
            .withdraw(
                &request.task_id,
                &agent,
                "the agent cancelled its task".to_owned(),
            )
            .await
            .map_err(|error| ErrorData::invalid_params(Refusal::from(error).message, None))?;
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let agent = agent_of(&context)?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let takes_tasks = context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks());
        if request.name == PROPOSE && takes_tasks {
            return Ok(match self.propose_as_task(&agent, arguments).await {
                Ok(answer) => answer,
                Err(refusal) => CallToolResult::structured_error(refusal.body()).into(),
            });
        }
        let answered = match request.name.as_ref() {
            LIST_RUNBOOKS => Ok(json!({"runbooks": self.runtime.proposals().runbooks(&agent)})),
            DESCRIBE_RUNBOOK => self.describe(&agent, &arguments),
            DRY_RUN => self.dry_run(&agent, arguments).await,
            PROPOSE => self.propose(&agent, arguments).await,
            RUN_STATUS => self.status(&arguments).await,
            EXPLAIN => self.explain(&arguments).await,
            WITHDRAW => self.withdraw(&agent, &arguments).await,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool `{other}`"),
                    None,
                ));
            }
        };
        Ok(match answered {
            Ok(value) => CallToolResult::structured(value),
            Err(refusal) => CallToolResult::structured_error(refusal.body()),
        }
        .into())
    }
}

impl Tools {
    /// `propose` for a client that takes tasks: a run still under way (it
    /// runs, or waits for a person) is answered as a task to poll — its id
    /// the run's —; a decided one (denied, refused) at once.
    async fn propose_as_task(
        &self,
        agent: &Principal,
        arguments: Value,
    ) -> Result<CallToolResponse, Refusal> {
        let answer = self.propose(agent, arguments).await?;
        let under_way = matches!(
            answer["outcome"].as_str(),
            Some("executing" | "awaiting_approval")
        );
        let Some(run_id) = answer["run_id"].as_str().filter(|_| under_way) else {
            return Ok(CallToolResult::structured(answer).into());
        };
        let detail = self.detail(run_id).await?;
        Ok(CreateTaskResult::new(self.task_of(&detail.run)).into())
    }

    /// The task a run is, without its result.
    fn task_of(&self, run: &runtime::RunRow) -> Task {
        let message = match run.state {
            domain::RunState::AwaitingApproval => format!(
                "awaiting approval by a person: approvers get their page at {}",
                approval_url(self.public_url.as_deref(), &run.id)
            ),
            state => match &run.reason {
                Some(reason) => format!("{}: {reason}", state.as_str()),
                None => state.as_str().to_owned(),
            },
        };
        Task::new(
            run.id.clone(),
            task_status(run.state),
            run.created_at.to_string(),
            run.updated_at.to_string(),
        )
        .with_status_message(message)
        .with_poll_interval_ms(2_000)
    }

    /// The agent's own run as a task; another's is no task of this agent.
    async fn own_run(
        &self,
        agent: &Principal,
        task_id: &str,
    ) -> Result<runtime::RunDetail, ErrorData> {
        let no_task = || ErrorData::invalid_params(format!("no task `{task_id}`"), None);
        let detail = self
            .runtime
            .reads()
            .run_detail(task_id)
            .await
            .map_err(|error| {
                tracing::error!(error = %error, "reading a task's run");
                ErrorData::internal_error("the task could not be read", None)
            })?
            .ok_or_else(no_task)?;
        let actor = agent.actor();
        let own = detail
            .event
            .as_ref()
            .is_some_and(|event| event.requester.as_deref() == Some(actor.as_str()));
        if own { Ok(detail) } else { Err(no_task()) }
    }
}

/// A run's state as a task's status: a cancelled (or withdrawn) run is a
/// cancelled task, any other settled one completed — its outcome in the
/// result —, and one under way working.
fn task_status(state: domain::RunState) -> TaskStatus {
    match state {
        domain::RunState::Cancelled => TaskStatus::Cancelled,
        state if state.is_terminal() => TaskStatus::Completed,
        _ => TaskStatus::Working,
    }
}

/// Why a tool call was answered with an error result: a stable code and
/// a message that says what to do, as the REST API's errors do.
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<runtime::Error> for Refusal {
    fn from(error: runtime::Error) -> Refusal {
        let error = crate::ApiError::from(error);
        let (_, code) = error.status_and_code();
        // Internal errors say no more than the API does.
        Refusal::new(code, error.to_string())
    }
}

impl Tools {
    fn describe(&self, agent: &Principal, arguments: &Value) -> Result<Value, Refusal> {
        let id = text_argument(arguments, "runbook")?;
        let runbook = self.runtime.proposals().runbook(agent, id).ok_or_else(|| {
            Refusal::new(
                "not_found",
                format!("no runbook `{id}` that you may propose: call list_runbooks"),
            )
        })?;
        Ok(json!({"runbook": runbook}))
    }

    async fn dry_run(&self, agent: &Principal, arguments: Value) -> Result<Value, Refusal> {
        let proposal = proposal_of(arguments)?;
        let dry_run = self.runtime.proposals().dry_run(proposal, agent).await?;
        let answer = DryRunAnswer::from(dry_run);
        Ok(json!({
            "runbook": answer.matched,
            "runbook_version": answer.runbook_version,
            "also_matching": answer.also_matching,
            "decision": answer.decision,
            "message": answer.message,
            "plan": answer.plan.map(|plan| json!({
                "targets": plan.targets,
                "inputs": plan.inputs,
                "plan_hash": plan.plan_hash,
                "steps": plan.steps.iter().map(|step| json!({
                    "id": step.id, "action": step.call.action,
                    "request": step.call.request,
                    "requires_approval": step.requires_approval,
                })).collect::<Vec<_>>(),
                "verified": plan.verify.is_some(),
            })),
        }))
    }

    async fn propose(&self, agent: &Principal, arguments: Value) -> Result<Value, Refusal> {
        let proposal = proposal_of(arguments)?;
        let report = self.runtime.proposals().propose(proposal, agent).await?;
        let answer = ProposalAnswer::new(report, self.public_url.as_deref());
        Ok(json!({
            "run_id": answer.intake.run_id,
            "outcome": answer.outcome,
            "replayed": answer.replayed,
            "runbook": answer.intake.runbook,
            "state": answer.intake.state,
            "decision": answer.intake.decision,
            "approval_url": answer.approval_url,
            "message": answer.intake.message,
        }))
    }

    async fn status(&self, arguments: &Value) -> Result<Value, Refusal> {
        let detail = self.detail(text_argument(arguments, "run_id")?).await?;
        Ok(self.status_of(&detail))
    }

    /// A run's state, as `run_status` and a finished task tell it.
    fn status_of(&self, detail: &runtime::RunDetail) -> Value {
        let run = &detail.run;
        json!({
            "run_id": run.id,
            "state": run.state,
            "reason": run.reason,
            "runbook": run.plan.runbook_id,
            "targets": run.plan.targets,
            "decision": run.decision.kind,
            "attempts": detail.attempts.iter().map(|attempt| json!({
                "step": attempt.step_id, "phase": attempt.phase, "attempt": attempt.attempt,
                "outcome": attempt.outcome.as_ref().and_then(|outcome| outcome.get("kind")).cloned(),
            })).collect::<Vec<_>>(),
            "updated_at": run.updated_at,
        })
    }

    async fn explain(&self, arguments: &Value) -> Result<Value, Refusal> {
        let detail = self.detail(text_argument(arguments, "run_id")?).await?;
        let run = &detail.run;
        let proposed = detail
            .timeline
            .iter()
            .find(|record| record.kind == domain::RecordKind::RunProposed.as_str())
            .map(|record| record.detail.clone());
        Ok(json!({
            "run_id": run.id,
            "runbook": run.plan.runbook_id,
            "decision": run.decision.kind,
            "reasons": run.decision.reasons,
            "policy_version": run.decision.policy_version,
            "plan_hash": run.plan.plan_hash,
            "state": run.state,
            "proposed": proposed,
        }))
    }

    async fn withdraw(&self, agent: &Principal, arguments: &Value) -> Result<Value, Refusal> {
        let run_id = text_argument(arguments, "run_id")?;
        let reason = arguments["reason"].as_str().unwrap_or_default();
        if reason.len() > 500 {
            return Err(Refusal::new(
                "invalid_body",
                "`reason` is longer than 500 bytes",
            ));
        }
        let state = self
            .runtime
            .proposals()
            .withdraw(run_id, agent, reason.to_owned())
            .await?;
        Ok(json!({"run_id": run_id, "state": state}))
    }

    async fn detail(&self, run_id: &str) -> Result<runtime::RunDetail, Refusal> {
        self.runtime
            .reads()
            .run_detail(run_id)
            .await?
            .ok_or_else(|| Refusal::new("not_found", format!("run `{run_id}` not found")))
    }
}

/// The agent calling: the authentication middleware put it on the HTTP
/// request, which rmcp hands every call.
fn agent_of(context: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
    context
        .extensions
        .get::<Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the caller is not known", None))
}

/// `host[:port]` of a URL (`https://opsgate.example:8443/x` →
/// `opsgate.example:8443`).
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then_some(authority)
}

fn text_argument<'a>(arguments: &'a Value, name: &str) -> Result<&'a str, Refusal> {
    arguments[name]
        .as_str()
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| Refusal::new("invalid_body", format!("`{name}` is required: a string")))
}

fn proposal_of(arguments: Value) -> Result<Proposal, Refusal> {
    serde_json::from_value(arguments).map_err(|error| {
        Refusal::new(
            "invalid_proposal",
            format!("the proposal is malformed: {error}"),
        )
    })
}

fn tool(
    name: &'static str,
    description: &'static str,
    schema: Value,
    annotations: ToolAnnotations,
) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("every tool's schema is an object")
    };
    Tool::new(name, description, Arc::new(schema)).with_annotations(annotations)
}

fn run_id_schema() -> Value {
    json!({
        "type": "object", "required": ["run_id"], "additionalProperties": false,
        "properties": {"run_id": {"type": "string", "description": "The run's id (run_…)"}},
    })
}

/// A proposal, as `POST /v1/proposals` takes it.
fn proposal_schema() -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    json!({
        "type": "object",
        "required": ["rationale", "confidence", "idempotency_key"],
        "additionalProperties": false,
        "properties": {
            "runbook": text("The runbook proposed; leave out to let opsgate match one from `fields`"),
            "inputs": {"type": "object", "description": "The runbook's inputs (see describe_runbook)"},
            "targets": {"type": "array", "items": {"type": "string"}, "description": "The targets you expect the plan to act on; must be the plan's own"},
            "ticket": text("The ticket it concerns (INC0012345): the run's notes go there"),
            "subject": text("What it is about (a device, a user)"),
            "fields": {"type": "object", "description": "What you read (a ticket's fields), matched by runbooks"},
            "rationale": {"type": "string", "maxLength": domain::proposal_limits::MAX_RATIONALE, "description": "Why you propose this"},
            "evidence": {
                "type": "array", "maxItems": domain::proposal_limits::MAX_EVIDENCE_ITEMS,
                "items": {
                    "type": "object", "required": ["kind"], "additionalProperties": false,
                    "properties": {
                        "kind": text("link, log, metric, note, …"),
                        "url": text("An http(s) link"),
                        "text": {"type": "string", "maxLength": domain::proposal_limits::MAX_EVIDENCE_TEXT},
                    },
                },
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "model": {
                "type": "object", "required": ["name"], "additionalProperties": false,
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "prompt_version": {"type": "string"},
            "idempotency_key": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$", "description": "The same key sent again answers the same run"},
        },
    })
}
