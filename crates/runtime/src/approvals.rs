//! Who approves: a decision's stages name approvers by reference
//! (`manager_of(requester)`, `group:security`); the directory says who
//! that is now, who stands in for those who are away, and who a stage
//! escalates to when it times out. The engine gets the answer as data.
//!
//! Resolving fails closed: a stage whose references name nobody, or that
//! asks for more people than it can find, would wait forever, so the run is
//! denied at once with the reason instead.

use domain::{ApprovalStage, Decision, StageRule};
use engine::{Escalation, Stage, StandIn};
use jiff::Timestamp;
use policy::{Directory, Person, RelationContext};

/// The group a stage escalates to last when its stage says nothing else.
const ON_CALL_GROUP: &str = "on-call";

/// Who the run is about, for relations: the requesting person (if a person
/// asked) and the CI it acts on.
pub(crate) struct ChainContext<'a> {
    pub requester: Option<&'a str>,
    pub ci: Option<&'a str>,
    pub now: Timestamp,
}

/// The decision's approval chain with its approvers resolved; empty when
/// the decision draws no stages (anyone with the approver role approves).
pub(crate) fn resolve_chain(
    decision: &Decision,
    directory: Option<&Directory>,
    context: &ChainContext,
) -> Result<Vec<Stage>, String> {
    if decision.stages.is_empty() {
        return Ok(Vec::new());
    }
    let Some(directory) = directory else {
        return Err(format!(
            "approval stage `{}` names approvers, but no directory is configured to say who they are (serve --directory)",
            decision.stages[0].name
        ));
    };
    decision
        .stages
        .iter()
        .map(|stage| resolve_stage(stage, directory, context))
        .collect()
}

fn resolve_stage(
    stage: &ApprovalStage,
    directory: &Directory,
    context: &ChainContext,
) -> Result<Stage, String> {
    let relations = RelationContext {
        requester: context.requester,
        ci: context.ci,
    };
    let named = people(directory, &stage.approvers, &relations)
        .map_err(|problem| format!("approval stage `{}`: {problem}", stage.name))?;
    let mut eligible: Vec<String> = Vec::with_capacity(named.len());
    let mut stand_ins = Vec::new();
    for person in named {
        let acting = match directory.available_stand_in(person, context.now) {
            Some(acting) if acting.id != person.id => {
                stand_ins.push(StandIn {
                    absent: actor(person),
                    stand_in: actor(acting),
                    why: format!(
                        "{} is out of office; their backup {} stands in",
                        person.id, acting.id
                    ),
                });
                acting
            }
            Some(acting) => acting,
            None => continue,
        };
        push_unique(&mut eligible, actor(acting));
    }
    if eligible.is_empty() {
        // Everyone named is away, and so are their backups.
        let on_call = available(directory, ON_CALL_GROUP, context.now);
        for person in &on_call {
            stand_ins.push(StandIn {
                absent: stage.approvers.join(", "),
                stand_in: person.clone(),
                why: format!(
                    "everyone in stage `{}` is out of office; on-call stands in",
                    stage.name
                ),
            });
        }
        eligible = on_call;
    }
    let required = match stage.rule {
        StageRule::Any => 1,
        StageRule::All => eligible.len() as u32,
        StageRule::AtLeast(count) => count,
    };
    if eligible.is_empty() || required as usize > eligible.len() {
        return Err(format!(
            "approval stage `{}` needs {} approver(s) but finds {} available ({})",
            stage.name,
            required.max(1),
            eligible.len(),
            stage.approvers.join(", ")
        ));
    }
    let escalations = escalations(stage, directory, &relations, &eligible, context.now)
        .map_err(|problem| format!("approval stage `{}`: {problem}", stage.name))?;
    Ok(Stage {
        name: stage.name.clone(),
        eligible,
        required,
        approved_by: Vec::new(),
        timeout_ms: stage.timeout_ms,
        escalations,
        escalated: 0,
        deadline: None,
        stand_ins,
    })
}

/// Who a stage adds at each timeout: what it says (`escalate_to`, one level
/// per reference), or else the backups of its approvers, then on-call.
/// People already eligible, or away, are left out; so are empty levels.
fn escalations(
    stage: &ApprovalStage,
    directory: &Directory,
    relations: &RelationContext,
    eligible: &[String],
    now: Timestamp,
) -> Result<Vec<Escalation>, String> {
    let mut levels: Vec<(String, Vec<&Person>)> = Vec::new();
    if stage.escalate_to.is_empty() {
        let backups: Vec<&Person> = eligible
            .iter()
            .filter_map(|actor| directory.person(actor.trim_start_matches("user:")))
            .filter_map(|person| directory.person(person.backup.as_deref()?))
            .collect();
        levels.push(("the approvers' backups".to_owned(), backups));
        if let Some(on_call) = directory.group(ON_CALL_GROUP) {
            levels.push((format!("group:{ON_CALL_GROUP}"), on_call));
        }
    } else {
        for reference in &stage.escalate_to {
            let people = people(directory, std::slice::from_ref(reference), relations)?;
            levels.push((reference.clone(), people));
        }
    }
    let mut seen: Vec<String> = eligible.to_vec();
    let mut escalations = Vec::new();
    for (to, people) in levels {
        let mut added = Vec::new();
        for person in people {
            let actor = actor(person);
            if !person.is_out_of_office(now) && !seen.contains(&actor) {
                seen.push(actor.clone());
                added.push(actor);
            }
        }
        if !added.is_empty() {
            escalations.push(Escalation { to, people: added });
        }
    }
    Ok(escalations)
}

/// The people `references` name, each once, in order.
fn people<'d>(
    directory: &'d Directory,
    references: &[String],
    relations: &RelationContext,
) -> Result<Vec<&'d Person>, String> {
    let mut people: Vec<&Person> = Vec::new();
    for reference in references {
        let named = directory
            .resolve(reference, relations)
            .map_err(|error| error.to_string())?;
        for person in named {
            if !people.iter().any(|known| known.id == person.id) {
                people.push(person);
            }
        }
    }
    Ok(people)
}

/// The members of `group` who are not away, as actors.
fn available(directory: &Directory, group: &str, now: Timestamp) -> Vec<String> {
    directory
        .group(group)
        .unwrap_or_default()
        .into_iter()
        .filter(|person| !person.is_out_of_office(now))
        .map(actor)
        .collect()
}

fn actor(person: &Person) -> String {
    format!("user:{}", person.id)
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}
