//! Signed approval links and the small page they open.
//!
//! A link is the approver's credential for one decision: it names the run,
//! the approver, who caused it to be issued and the plan hash it was issued
//! for, expires, and carries a nonce that is recorded when the link is
//! used, so it works once. Because whoever holds a link decides as its
//! approver, a link is made only for a person who may approve the stage
//! (who holds the approver role now) and reaches only that person: on the
//! chat channel's approval card, or answered to the approver themselves
//! when they ask for their own with their token — never to another
//! principal. Its
//! token is `<hex of the link's JSON>.<hex HMAC-SHA256 of that hex>` under a
//! key only the servers know; nothing in it is secret, everything in it is
//! bound. The page is rendered here, without JavaScript: what will run, on
//! which targets, why the gate asked for approval, and a form to approve
//! or deny with a comment. Every attempt through a link, accepted or
//! refused, is an audit record with its reason.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use domain::{Principal, Role};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::ApiError;
use crate::body::{FormBody, JsonBody, parse_body};
use crate::signed_links::{ApprovalLink, MAX_TTL_SECONDS, open_link, sign_link};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    /// Who the link is for: only ever the caller. Naming anyone else is
    /// refused, so a request that names someone says what it meant.
    approver: Option<String>,
    /// Seconds until it expires (default: the configured lifetime), up to
    /// a week.
    #[schema(minimum = 1, maximum = 604800)]
    expires_in_seconds: Option<i64>,
}

/// `POST /v1/runs/{id}/approval-links`: an approver's own link to decide
/// one run awaiting approval on its page. A link is a credential for one
/// person, so it is answered only to that person: an approver asks for
/// their own, and everyone else's reaches them on the chat channel's
/// approval card. Refusals are audited as `approval.link_refused`.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/approval-links",
    tag = "approvals",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = IssueBody, description = "Optional: an empty body asks for the caller's own link"),
    responses(
        (status = 200, description = "The caller's own signed approval page", body = crate::api::IssuedLink),
        crate::error::Refusals,
    ),
)]
pub(crate) async fn issue(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(run_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<crate::api::IssuedLink>, ApiError> {
    let request: IssueBody = if body.iter().all(u8::is_ascii_whitespace) {
        IssueBody::default()
    } else {
        parse_body(&body)?
    };
    let config = &state.links;
    let ttl = request
        .expires_in_seconds
        .unwrap_or(config.default_ttl_seconds);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "`expires_in_seconds` must be between 1 and 604800 (a week)",
        ));
    }
    let run = state
        .runtime
        .reads()
        .run(&run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "run",
            id: run_id.clone(),
        })?;
    let refusal = match request.approver.as_deref() {
        Some(named) if !domain::same_person(named, &caller.name) => Some(format!(
            "{} may ask only for their own approval link, not for `{named}`: a link is a credential \
             for one person. {named} finds theirs on the chat channel's approval card, or asks for it \
             with their own approver token",
            caller.actor()
        )),
        _ if run.state != domain::RunState::AwaitingApproval => {
            return Err(ApiError::Conflict {
                message: format!("run `{run_id}` is {}, not awaiting approval", run.state),
            });
        }
        _ => {
            state
                .runtime
                .decisions()
                .approval_refusal(&run, &caller)
                .await?
        }
    };
    if let Some(reason) = refusal {
        let actor = caller.actor();
        let refusal = crate::auth::Refused {
            record: domain::RecordKind::ApprovalLinkRefused,
            run_id: Some(&run_id),
            method: &axum::http::Method::POST,
            route: "/v1/runs/{id}/approval-links",
            status: StatusCode::FORBIDDEN.as_u16(),
            actor: &actor,
        };
        crate::auth::note_refusal(&state, refusal, &reason).await;
        return Err(ApiError::Forbidden { message: reason });
    }
    let link = ApprovalLink {
        run_id: run_id.clone(),
        approver: caller.name.clone(),
        stage: runtime::open_stage(&run),
        issued_by: caller.actor(),
        plan_hash: run.plan.plan_hash.clone(),
        expires_at: Timestamp::now().as_second() + ttl,
        nonce: hex::encode(rand::random::<[u8; 16]>()),
    };
    let path = format!("/approve/{}", sign_link(&config.key, &link));
    let issued = runtime::AuditEntry::new(
        domain::RecordKind::ApprovalLinkIssued,
        caller.actor(),
        json!({"approver": link.approver, "stage": link.stage, "plan_hash": link.plan_hash, "expires_at": link.expires_at}),
    );
    state
        .runtime
        .audit_log()
        .append(Some(&run_id), &[issued])
        .await?;
    let base = config
        .public_url
        .as_deref()
        .map_or("", |url| url.trim_end_matches('/'));
    Ok(Json(crate::api::IssuedLink {
        url: format!("{base}{path}"),
        approver: link.approver,
        stage: link.stage,
        expires_at: link.expires_at,
    }))
}

/// A link that may be used now, and its run.
struct Usable {
    link: ApprovalLink,
    run: runtime::RunRow,
}

/// Why a link cannot be used, as the page says it, and what is known of it
/// for the audit record.
struct Unusable {
    status: StatusCode,
    reason: String,
    actor: String,
    run_id: Option<String>,
}

/// Checks `token` — signature (constant time), expiry, run, plan hash —
/// once per request.
async fn open(state: &AppState, token: &str) -> Result<Result<Usable, Unusable>, ApiError> {
    let Some(link) = open_link(&state.links.key, token) else {
        return Ok(Err(Unusable {
            status: StatusCode::FORBIDDEN,
            reason: "this link is not genuine (its signature does not match)".to_owned(),
            actor: crate::auth::ANONYMOUS.to_owned(),
            run_id: None,
        }));
    };
    let unusable = |status, reason: String, run_id: Option<String>| Unusable {
        status,
        reason,
        actor: format!("user:{}", link.approver),
        run_id,
    };
    if Timestamp::now().as_second() > link.expires_at {
        let run_id = Some(link.run_id.clone());
        return Ok(Err(unusable(
            StatusCode::GONE,
            "this link has expired".to_owned(),
            run_id,
        )));
    }
    let Some(run) = state.runtime.reads().run(&link.run_id).await? else {
        let reason = format!("run `{}` does not exist", link.run_id);
        return Ok(Err(unusable(StatusCode::NOT_FOUND, reason, None)));
    };
    if run.plan.plan_hash != link.plan_hash {
        let reason = "the plan changed since this link was issued: it needs a new approval";
        return Ok(Err(unusable(
            StatusCode::CONFLICT,
            reason.to_owned(),
            Some(run.id),
        )));
    }
    // A link is honoured only while its approver could decide with their
    // own token, and never when the run's requester caused it.
    if !state
        .runtime
        .decisions()
        .holds_approver_role(&link.approver)
        .await?
    {
        let reason = format!(
            "{} no longer holds the approver role: this link cannot decide",
            link.approver
        );
        return Ok(Err(unusable(StatusCode::FORBIDDEN, reason, Some(run.id))));
    }
    if state
        .runtime
        .decisions()
        .is_requester(&run, &link.issued_by)
        .await?
    {
        let reason = format!(
            "this link was issued at the request of {}, who asked for this run (separation of duties)",
            link.issued_by
        );
        return Ok(Err(unusable(StatusCode::FORBIDDEN, reason, Some(run.id))));
    }
    let now_open = runtime::open_stage(&run);
    if run.state == domain::RunState::AwaitingApproval && now_open != link.stage {
        let reason = format!(
            "this link was for approval stage `{}`; the run is now at stage `{now_open}`: it needs a new link",
            link.stage
        );
        return Ok(Err(unusable(StatusCode::CONFLICT, reason, Some(run.id))));
    }
    Ok(Ok(Usable { link, run }))
}

/// `GET /approve/{token}`: the approval page.
#[utoipa::path(
    get,
    path = "/approve/{token}",
    tag = "approvals",
    params(("token" = String, Path, description = "The signed link: the approver's credential")),
    security(()),
    responses(
        (status = 200, description = "The page: what will run, where, and why; approve or deny", body = String, content_type = "text/html"),
        (status = "4XX", description = "Refused: a page saying why (a link that is not genuine, expired, used or no longer fits the run)", content(
            (String = "text/html"),
            (crate::error::ErrorBody = "application/json"),
        )),
        (status = "5XX", description = "A failure here", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    Ok(match open(&state, &token).await? {
        Ok(Usable { link, run }) => {
            // An agent's proposal is shown whole: the reviewer reads why
            // it proposed this beside why opsgate asks them.
            let event = state.runtime.reads().event(&run.event_id).await?;
            let proposal = event
                .as_ref()
                .filter(|event| {
                    event.event.source == domain::PROPOSAL_SOURCE
                        && event.event.kind == domain::PROPOSAL_KIND
                })
                .map(|event| &event.event.fields["proposal"]);
            Html(approval_page(&run, &link, proposal)).into_response()
        }
        Err(unusable) => (
            unusable.status,
            Html(message_page("Cannot approve", &unusable.reason)),
        )
            .into_response(),
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct DecisionForm {
    decision: String,
    #[serde(default)]
    comment: String,
}

/// Audits a refused attempt (through the refusal ledger, so a flood of
/// them is counted, not written one by one) and answers it. What was
/// posted as the decision is not kept: it is the sender's text.
async fn refuse(state: &AppState, unusable: Unusable) -> Result<Response, ApiError> {
    let refusal = crate::auth::Refused {
        record: domain::RecordKind::ApprovalLinkRefused,
        run_id: unusable.run_id.as_deref(),
        method: &axum::http::Method::POST,
        route: "/approve/{token}",
        status: unusable.status.as_u16(),
        actor: &unusable.actor,
    };
    crate::auth::note_refusal(state, refusal, &unusable.reason).await;
    Ok((
        unusable.status,
        Html(message_page("Not recorded", &unusable.reason)),
    )
        .into_response())
}

/// `POST /approve/{token}`: the approver's decision.
#[utoipa::path(
    post,
    path = "/approve/{token}",
    tag = "approvals",
    params(("token" = String, Path, description = "The signed link: the approver's credential")),
    request_body(content = DecisionForm, content_type = "application/x-www-form-urlencoded"),
    security(()),
    responses(
        (status = 200, description = "Recorded, or why not", body = String, content_type = "text/html"),
        (status = "4XX", description = "Not recorded: a page saying why, or a body that is not the form", content(
            (String = "text/html"),
            (crate::error::ErrorBody = "application/json"),
        )),
        (status = "5XX", description = "A failure here", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn decide(
    State(state): State<AppState>,
    Path(token): Path<String>,
    FormBody(body): FormBody,
) -> Result<Response, ApiError> {
    // Read like every body: a wrong media type is the API's 415, a form
    // that is not this one a 400 saying what.
    let form: DecisionForm = serde_urlencoded::from_bytes(&body).map_err(|error| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected the approval form: {error}"),
        )
    })?;
    let Usable { link, run } = match open(&state, &token).await? {
        Ok(usable) => usable,
        Err(unusable) => return refuse(&state, unusable).await,
    };
    let approving = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            let unusable = Unusable {
                status: StatusCode::BAD_REQUEST,
                reason: "the decision must be `approve` or `deny`".to_owned(),
                actor: format!("user:{}", link.approver),
                run_id: Some(run.id),
            };
            return refuse(&state, unusable).await;
        }
    };
    if !state
        .runtime
        .tokens()
        .use_approval_link(&link.nonce, &link.run_id)
        .await?
    {
        let unusable = Unusable {
            status: StatusCode::GONE,
            reason: "this link was already used".to_owned(),
            actor: format!("user:{}", link.approver),
            run_id: Some(run.id),
        };
        return refuse(&state, unusable).await;
    }
    let approver = Principal::new(link.approver.clone(), Role::Approver);
    let used = runtime::AuditEntry::new(
        domain::RecordKind::ApprovalLinkUsed,
        approver.actor(),
        json!({"decision": form.decision, "plan_hash": link.plan_hash, "issued_by": link.issued_by}),
    );
    state
        .runtime
        .audit_log()
        .append(Some(&run.id), &[used])
        .await?;
    let comment = Some(form.comment.trim().to_owned()).filter(|comment| !comment.is_empty());
    let outcome = if approving {
        state
            .runtime
            .decisions()
            .approve(&run.id, &approver, comment)
            .await
    } else {
        state
            .runtime
            .decisions()
            .deny(&run.id, &approver, comment)
            .await
    };
    // Refusals past this point (separation of duties, a run no longer
    // waiting) are audited by the runtime itself.
    match outcome {
        Ok(run_state) => Ok(Html(message_page(
            "Recorded",
            &format!(
                "You {} run {}; it is now {run_state}.",
                if approving { "approved" } else { "denied" },
                run.id
            ),
        ))
        .into_response()),
        Err(error) => {
            let error = ApiError::from(error);
            let (status, _) = error.status_and_code();
            Ok((
                status,
                Html(message_page("Not recorded", &error.to_string())),
            )
                .into_response())
        }
    }
}

/// Text made safe to place in HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}\
code{background:#f2f2f2;padding:0 .2rem}li{margin:.2rem 0}textarea{width:100%;min-height:4rem}\
button{font-size:1rem;padding:.4rem 1.2rem;margin-right:.6rem}";

fn message_page(title: &str, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>opsgate: {title}</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1><p>{}</p></body></html>",
        escape(message),
        title = escape(title),
    )
}

/// What an agent said when it proposed the run: who, how sure, with which
/// model, why, and its evidence — links shown as text, never followed.
fn proposal_section(proposal: &serde_json::Value) -> String {
    let text = |value: &serde_json::Value| escape(value.as_str().unwrap_or("-"));
    let model = match proposal["model"]["name"].as_str() {
        Some(name) => format!(
            ", model <code>{}</code>{}",
            escape(name),
            proposal["model"]["version"]
                .as_str()
                .map(|version| format!(" <code>{}</code>", escape(version)))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    let prompt = proposal["prompt_version"]
        .as_str()
        .map(|prompt| format!(", prompt <code>{}</code>", escape(prompt)))
        .unwrap_or_default();
    let evidence: String = proposal["evidence"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let what = item["url"].as_str().or(item["text"].as_str()).unwrap_or("");
            format!(
                "<li>{}: <code>{}</code></li>",
                text(&item["kind"]),
                escape(what)
            )
        })
        .collect();
    let evidence = if evidence.is_empty() {
        String::new()
    } else {
        format!("<p>Its evidence:</p><ul>{evidence}</ul>")
    };
    format!(
        "<h2>Proposed by {agent}</h2>\
         <p>Confidence {confidence}{model}{prompt}. In its words:</p>\
         <blockquote>{rationale}</blockquote>{evidence}",
        agent = text(&proposal["agent"]),
        confidence = escape(&proposal["confidence"].to_string()),
        rationale = text(&proposal["rationale"]),
    )
}

fn approval_page(
    run: &runtime::RunRow,
    link: &ApprovalLink,
    proposal: Option<&serde_json::Value>,
) -> String {
    let plan = &run.plan;
    let proposed = proposal.map(proposal_section).unwrap_or_default();
    let list = |items: Vec<String>| -> String {
        items
            .iter()
            .map(|item| format!("<li>{item}</li>"))
            .collect::<String>()
    };
    let targets = list(
        plan.targets
            .iter()
            .map(|target| format!("<code>{}</code>", escape(target)))
            .collect(),
    );
    let steps = list(
        plan.steps
            .iter()
            .map(|step| {
                format!(
                    "<code>{}</code>: {} <code>{}</code>{}",
                    escape(&step.id),
                    escape(&step.call.action),
                    escape(&step.call.describe()),
                    match (step.rollback.is_some(), step.if_unverified) {
                        (true, true) => " (has a rollback; second remedy: only where the steps before it did not verify)",
                        (false, true) => " (second remedy: only where the steps before it did not verify)",
                        (true, false) => " (has a rollback)",
                        (false, false) => "",
                    },
                )
            })
            .collect(),
    );
    let reasons = list(
        run.decision
            .reasons
            .iter()
            .map(|reason| escape(reason))
            .collect(),
    );
    let verification = match &plan.verify {
        Some(verify) => format!(
            "<p>Afterwards it verifies with <code>{}</code> until <code>{}</code> holds.</p>",
            escape(&verify.probe.describe()),
            escape(&verify.expect),
        ),
        None => String::new(),
    };
    // A rollout's every target has its own calls; the steps listed are
    // the first target's, and the page says how the rest follow.
    let rollout = match &plan.rollout {
        Some(rollout) => format!(
            "<p>A rollout: the steps run on one target after another, in batches of {} target(s){}; what is listed is the first target's, each target gets its own. {}</p>",
            escape(
                &rollout
                    .batches
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            if rollout.approve_after_canary {
                ", with an approval after the first"
            } else {
                ""
            },
            if rollout.pause_ms > 0 {
                format!(
                    "Between batches it waits {:#}.",
                    jiff::SignedDuration::from_millis(
                        i64::try_from(rollout.pause_ms).unwrap_or(i64::MAX)
                    )
                )
            } else {
                String::new()
            },
        ),
        None => String::new(),
    };
    let term = match plan.ends_at {
        Some(ends_at) => format!(
            "<p>The change is time-bound: it holds until <strong>{ends_at}</strong>, when opsgate undoes it (each step's rollback).</p>"
        ),
        None => String::new(),
    };
    let expires = Timestamp::from_second(link.expires_at)
        .map(|at| at.to_string())
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>opsgate: approve {title}</title>\
         <style>{STYLE}</style></head><body>\
         <h1>{title}</h1>\
         <p>Run <code>{run_id}</code> of runbook <code>{runbook}</code> (risk: {risk}) waits for your approval, {approver}, in stage <code>{stage}</code>.</p>\
         {gate}{proposed}\
         <h2>Targets</h2><ul>{targets}</ul>\
         <h2>What will run</h2><ol>{steps}</ol>{rollout}{verification}{term}\
         <h2>Why approval is needed</h2><ul>{reasons}</ul>\
         <p>Plan hash <code>{plan_hash}</code>. This link works once, until {expires}.</p>\
         <form method=\"post\"><label for=\"comment\">Comment</label>\
         <textarea id=\"comment\" name=\"comment\"></textarea><p>\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></p></form>\
         </body></html>",
        title = escape(&plan.title),
        run_id = escape(&run.id),
        runbook = escape(&format!(
            "{}@{}",
            plan.runbook_id,
            &plan.runbook_version[..12.min(plan.runbook_version.len())]
        )),
        risk = escape(&format!("{:?}", plan.risk).to_lowercase()),
        approver = escape(&link.approver),
        stage = escape(&link.stage),
        gate = match run.machine.progress.gate {
            Some(index) => format!(
                "<p>The run is paused before step <code>{}</code>, which needs its own approval; the steps before it ran.</p>",
                escape(&plan.steps[index].id)
            ),
            None => String::new(),
        },
        plan_hash = escape(&plan.plan_hash),
    )
}
