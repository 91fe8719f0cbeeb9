//! `rollout:` — a run acting on many targets, a batch at a time:
//! `{ canary: 1, batch: 5 | "20%", pause: 30s, stop_when: { failures: 2,
//! failure_rate: "20%", verify_failed: true }, rollback: failed_batch |
//! all_done, approve_after_canary: true }`.
//!
//! Only the shape is read here; how targets are split into batches is
//! `Rollout::batches`, at plan time, when the targets are known.

use domain::{HaltRollback, StopWhen};

use super::Validator;
use crate::model::{BatchSize, Rollout};
use crate::yaml::{Node, Yaml};

const ROLLOUT_KEYS: &[&str] = &[
    "canary",
    "batch",
    "pause",
    "stop_when",
    "rollback",
    "approve_after_canary",
];

const STOP_WHEN_KEYS: &[&str] = &["failures", "failure_rate", "verify_failed"];

impl Validator<'_> {
    pub(super) fn rollout(&mut self, node: &Yaml) -> Option<Rollout> {
        let fields = self.d.fields(node, "`rollout`", ROLLOUT_KEYS)?;
        let canary = fields.get("canary").map_or(Some(0), |node| {
            self.d
                .integer(node, &fields.what("canary"), 0, u32::MAX.into())
        });
        let batch = self
            .d
            .required(&fields, "batch")
            .and_then(|node| self.batch_size(node, &fields.what("batch")));
        let pause_ms = fields
            .get("pause")
            .map_or(Some(0), |node| self.d.duration(node, &fields.what("pause")));
        // Without `stop_when`, the first failure halts: a rollout goes on
        // past a failure only when its author said how far.
        let stop_when = match fields.get("stop_when") {
            None => Some(StopWhen {
                failures: Some(1),
                failure_rate_percent: None,
                verify_failed: true,
            }),
            Some(node) => self.stop_when(node),
        };
        let rollback = fields
            .get("rollback")
            .map_or(Some(HaltRollback::default()), |node| {
                self.d
                    .choice(
                        node,
                        &fields.what("rollback"),
                        &[
                            HaltRollback::FailedBatch.as_str(),
                            HaltRollback::AllDone.as_str(),
                        ],
                    )
                    .map(|choice| match choice.as_str() {
                        "all_done" => HaltRollback::AllDone,
                        _ => HaltRollback::FailedBatch,
                    })
            });
        let approve_after_canary = fields
            .get("approve_after_canary")
            .map_or(Some(false), |node| {
                self.d.boolean(node, &fields.what("approve_after_canary"))
            });
        if let (Some(true), Some(0)) = (approve_after_canary, canary) {
            self.d.report(
                fields.key("approve_after_canary").unwrap_or(node),
                "`approve_after_canary` needs a canary batch in `rollout`",
                Some("add `canary: 1` (or more): the approval is asked for once it is done".into()),
            );
            return None;
        }
        Some(Rollout {
            canary: canary? as u32,
            batch: batch?,
            pause_ms: pause_ms?,
            stop_when: stop_when?,
            rollback: rollback?,
            approve_after_canary: approve_after_canary?,
        })
    }

    /// A count of targets (`5`) or a share of them (`"20%"`).
    fn batch_size(&mut self, node: &Yaml, what: &str) -> Option<BatchSize> {
        match &node.value {
            Node::Str(_) => self.percent(node, what).map(BatchSize::Percent),
            _ => self
                .d
                .integer(node, what, 1, u32::MAX.into())
                .map(|count| BatchSize::Count(count as u32)),
        }
    }

    /// `"20%"`: a whole percentage from 1 to 100.
    fn percent(&mut self, node: &Yaml, what: &str) -> Option<u32> {
        let text = self.d.string(node, what)?;
        let percent = text
            .trim()
            .strip_suffix('%')
            .and_then(|number| number.trim().parse::<u32>().ok())
            .filter(|percent| (1..=100).contains(percent));
        if percent.is_none() {
            self.d.report(
                node,
                format!("{what}: `{text}` is not a percentage"),
                Some("write a whole number from 1 to 100 and `%`, in quotes: `\"20%\"`".into()),
            );
        }
        percent
    }

    fn stop_when(&mut self, node: &Yaml) -> Option<StopWhen> {
        let fields = self.d.fields(node, "`rollout.stop_when`", STOP_WHEN_KEYS)?;
        let failures = fields.get("failures").map_or(Some(None), |node| {
            self.d
                .integer(node, &fields.what("failures"), 1, u32::MAX.into())
                .map(|count| Some(count as u32))
        });
        let failure_rate_percent = fields.get("failure_rate").map_or(Some(None), |node| {
            self.percent(node, &fields.what("failure_rate")).map(Some)
        });
        let verify_failed = fields.get("verify_failed").map_or(Some(false), |node| {
            self.d.boolean(node, &fields.what("verify_failed"))
        });
        if fields.get("failures").is_none()
            && fields.get("failure_rate").is_none()
            && verify_failed == Some(false)
        {
            self.d.report(
                node,
                "`rollout.stop_when` names no condition, so nothing would halt the rollout",
                Some("give `failures`, `failure_rate` or `verify_failed: true`; leave `stop_when` out to halt at the first failure".into()),
            );
            return None;
        }
        Some(StopWhen {
            failures: failures?,
            failure_rate_percent: failure_rate_percent?,
            verify_failed: verify_failed?,
        })
    }
}
