//! The audit chain: what `chain_hash` covers, and what `verify_audit`
//! reports after someone edits or deletes rows behind the store's back.

use domain::DecisionKind;
use engine::Input;
use serde_json::{Value, json};
use store::{
    Anchor, AnchorBreak, AuditEntry, ChainReport, ChainedRecord, GENESIS_HASH, chain_hash,
};

use crate::{Fixture, assert_chained, at, intake_without_run, plan, succeeded};

/// A store whose audit log holds eleven records: an unmatched event (1-2),
/// an event that starts `run-1` (3-7: received, matched, planned, decided,
/// state), the run beginning (8-9) and its only step succeeding (10-11).
async fn fixture_with_history() -> Fixture {
    let fixture = Fixture::new().await;
    fixture
        .store
        .intake(intake_without_run("event-0", "key-0", at(0)), at(0))
        .await
        .unwrap();
    fixture
        .start_run("run-1", "key-1", &plan(1), DecisionKind::Allow, at(1_000))
        .await;
    fixture.advance("run-1", Input::Begin, at(2_000)).await;
    fixture.advance("run-1", succeeded(), at(3_000)).await;
    assert_eq!(fixture.audit_count().await, 11);
    fixture
}

async fn tamper_and_verify(sql: &str) -> ChainReport {
    let fixture = fixture_with_history().await;
    // Test-authored SQL, never user input.
    let changed = fixture
        .execute(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    assert!(changed > 0, "{sql} changed nothing");
    fixture
        .store
        .verify_audit()
        .await
        .expect("verification runs")
}

async fn an_untouched_chain_verifies() {
    let fixture = fixture_with_history().await;

    let report = fixture.store.verify_audit().await.unwrap();

    let audit = fixture.store.audit(None).await.unwrap();
    assert_chained(&audit);
    assert_eq!(report.first_break, None);
    assert_eq!(report.records, 11);
    assert_eq!(report.head_hash, audit.last().unwrap().hash);
}

async fn an_empty_chain_verifies() {
    let fixture = Fixture::new().await;

    let report = fixture.store.verify_audit().await.unwrap();

    assert_eq!(report.first_break, None);
    assert_eq!(
        (report.records, report.head_hash.as_str()),
        (0, GENESIS_HASH)
    );
}

async fn verification_names_the_altered_record() {
    // Record 4 is `run.matched` of run-1.
    let cases = [
        r#"UPDATE audit SET detail = '{"runbook":"drop-database"}' WHERE seq = 4"#,
        "UPDATE audit SET actor = 'mallory' WHERE seq = 4",
        "UPDATE audit SET kind = 'run.ignored' WHERE seq = 4",
        "UPDATE audit SET recorded_at = '2020-01-01T00:00:00Z' WHERE seq = 4",
        "UPDATE audit SET run_id = NULL WHERE seq = 4",
        "UPDATE audit SET run_id = 'run-2' WHERE seq = 4",
        "UPDATE audit SET event_id = NULL WHERE seq = 4",
        "UPDATE audit SET hash = (SELECT hash FROM audit WHERE seq = 3) WHERE seq = 4",
        "UPDATE audit SET prev_hash = (SELECT prev_hash FROM audit WHERE seq = 3) WHERE seq = 4",
        // A consistent forgery of one record still breaks the next link.
        "UPDATE audit SET actor = 'mallory', hash = (SELECT hash FROM audit WHERE seq = 1) WHERE seq = 4",
    ];
    for sql in cases {
        let report = tamper_and_verify(sql).await;
        let first_break = report
            .first_break
            .unwrap_or_else(|| panic!("{sql}: not detected"));
        assert_eq!(first_break.seq, 4, "{sql}: {}", first_break.reason);
        assert_eq!(report.records, 4, "{sql}: verification stops at the break");
    }
}

async fn reformatting_a_detail_without_changing_it_is_not_a_break() {
    let report =
        tamper_and_verify("UPDATE audit SET detail = ' ' || detail || ' ' WHERE seq = 4").await;

    assert_eq!(report.first_break, None);
}

async fn verification_names_the_record_after_a_deleted_one() {
    // (rows deleted, the record where the chain breaks, the first missing one)
    let cases = [
        ("seq = 6", 7, 6),
        ("seq IN (5, 6)", 7, 5),
        ("seq = 1", 2, 1),
    ];
    for (condition, break_at, missing) in cases {
        let report = tamper_and_verify(&format!("DELETE FROM audit WHERE {condition}")).await;
        let first_break = report
            .first_break
            .unwrap_or_else(|| panic!("{condition}: not detected"));
        assert_eq!(first_break.seq, break_at, "{condition}");
        let names_missing = format!("record {missing} is missing");
        assert!(
            first_break.reason.contains(&names_missing),
            "{condition}: {:?} does not say {names_missing:?}",
            first_break.reason
        );
    }
}

/// An edit that leaves the `detail` column unreadable as JSON is tampering
/// like any other: verification should name the record, not fail outright.
async fn verification_names_a_record_whose_detail_is_not_json() {
    for sql in [
        "UPDATE audit SET detail = 'not json' WHERE seq = 4",
        r#"UPDATE audit SET detail = '{"runbook":' WHERE seq = 4"#,
    ] {
        let fixture = fixture_with_history().await;
        fixture.execute(sql).await.unwrap();

        let report = fixture.store.verify_audit().await;

        let first_break = match report {
            Ok(report) => report.first_break,
            Err(error) => panic!("{sql}: verification failed instead of naming record 4: {error}"),
        };
        assert_eq!(first_break.map(|found| found.seq), Some(4), "{sql}");
    }
}

async fn records_outside_transitions_join_the_same_chain() {
    let fixture = fixture_with_history().await;
    let refusal = AuditEntry::new(
        "run.input_refused",
        "bob",
        json!({"reason": "run in state `succeeded` cannot take an approval"}),
    );

    fixture
        .store
        .append_audit(Some("run-1"), std::slice::from_ref(&refusal), at(9_000))
        .await
        .unwrap();

    let audit = fixture.store.audit(Some("run-1")).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (
            last.seq,
            last.kind.as_str(),
            last.actor.as_str(),
            &last.detail
        ),
        (12, "run.input_refused", "bob", &refusal.detail)
    );
    assert_chained(&fixture.store.audit(None).await.unwrap());
    assert_eq!(
        fixture.store.verify_audit().await.unwrap().first_break,
        None
    );
}

/// The arguments of `chain_hash`, owned so that cases can change one.
#[derive(Clone)]
struct Fields {
    prev_hash: String,
    seq: i64,
    recorded_at: String,
    run_id: Option<String>,
    event_id: Option<String>,
    kind: String,
    actor: String,
    detail: Value,
}

impl Fields {
    fn hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            &ChainedRecord {
                seq: self.seq,
                recorded_at: &self.recorded_at,
                run_id: self.run_id.as_deref(),
                event_id: self.event_id.as_deref(),
                kind: &self.kind,
                actor: &self.actor,
                detail: &self.detail,
            },
        )
    }
}

#[test]
fn chain_hash_covers_every_field() {
    let base = Fields {
        prev_hash: "ab".repeat(32),
        seq: 7,
        recorded_at: "2025-06-15T12:00:00Z".into(),
        run_id: Some("run-1".into()),
        event_id: Some("event-1".into()),
        kind: "attempt.started".into(),
        actor: "opsgate".into(),
        detail: json!({"step": "restart", "attempt": 1, "request": {"device": "edge-1"}}),
    };
    let check = |case: &str, change: fn(&mut Fields), expect_same: bool| {
        let mut changed = base.clone();
        change(&mut changed);
        let same = changed.hash() == base.hash();
        assert_eq!(same, expect_same, "{case}");
    };

    check("nothing changed", |_| {}, true);
    check("prev_hash", |f| f.prev_hash = "cd".repeat(32), false);
    check(
        "prev_hash genesis",
        |f| f.prev_hash = GENESIS_HASH.into(),
        false,
    );
    check("seq", |f| f.seq = 8, false);
    check(
        "recorded_at",
        |f| f.recorded_at = "2025-06-15T12:00:01Z".into(),
        false,
    );
    check("run_id other", |f| f.run_id = Some("run-2".into()), false);
    check("run_id absent", |f| f.run_id = None, false);
    check("run_id empty", |f| f.run_id = Some(String::new()), false);
    check("event_id absent", |f| f.event_id = None, false);
    check(
        "run_id and event_id swapped",
        |f| std::mem::swap(&mut f.run_id, &mut f.event_id),
        false,
    );
    check("kind", |f| f.kind = "attempt.finished".into(), false);
    check("actor", |f| f.actor = "mallory".into(), false);
    check("detail value", |f| f.detail["attempt"] = json!(2), false);
    check("detail type", |f| f.detail["attempt"] = json!("1"), false);
    check(
        "detail nested",
        |f| f.detail["request"]["device"] = json!("edge-2"),
        false,
    );
    check(
        "detail key added",
        |f| f.detail["extra"] = Value::Null,
        false,
    );
    check("detail empty", |f| f.detail = json!({}), false);
    check(
        "detail with keys in another order",
        |f| {
            f.detail = serde_json::from_str(
                r#"{"request": {"device": "edge-1"}, "attempt": 1, "step": "restart"}"#,
            )
            .unwrap()
        },
        true,
    );
}

#[test]
fn chain_hash_is_lower_case_sha256_hex() {
    let detail = json!(null);
    let record = ChainedRecord {
        seq: 1,
        recorded_at: "t",
        run_id: None,
        event_id: None,
        kind: "k",
        actor: "a",
        detail: &detail,
    };
    let hash = chain_hash(GENESIS_HASH, &record);

    assert_eq!(hash.len(), 64);
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
}

const ANCHOR_KEY: &[u8] = b"the anchor key, kept off the database host";

/// The anchor of the chain's head as it is now.
async fn anchor_of_head(fixture: &Fixture) -> Anchor {
    let (seq, hash) = fixture.store.audit_head().await.unwrap().expect("a head");
    Anchor::sign(seq, &hash, at(10_000), ANCHOR_KEY)
}

/// The chain checked against an anchor, as `audit verify --anchor` does.
async fn check_against(fixture: &Fixture, anchor: &Anchor) -> Result<(), AnchorBreak> {
    let report = fixture.store.verify_audit().await.unwrap();
    assert_eq!(report.first_break, None, "the chain itself still holds");
    let hash = fixture.store.audit_hash(anchor.seq).await.unwrap();
    anchor.check(ANCHOR_KEY, hash.as_deref(), report.head_seq)
}

async fn an_anchor_holds_while_the_chain_grows() {
    let fixture = fixture_with_history().await;
    let anchor = anchor_of_head(&fixture).await;
    assert_eq!(anchor.seq, 11);

    fixture
        .store
        .append_audit(
            None,
            &[AuditEntry::new("operator.note", "alice", json!({}))],
            at(5_000),
        )
        .await
        .unwrap();

    assert!(fixture.audit_count().await > 11);
    assert_eq!(check_against(&fixture, &anchor).await, Ok(()));
}

/// What a power loss leaves behind: the newest commits gone, a shorter
/// chain that verifies on its own.
async fn an_anchor_catches_a_truncated_tail() {
    let fixture = fixture_with_history().await;
    let anchor = anchor_of_head(&fixture).await;

    fixture
        .execute("DELETE FROM audit WHERE seq >= 10")
        .await
        .unwrap();

    assert_eq!(
        check_against(&fixture, &anchor).await,
        Err(AnchorBreak::TailMissing {
            anchored_seq: 11,
            head_seq: 9
        })
    );
}

/// The tail removed, then written again: the sequence numbers are back,
/// their hashes are not the anchored ones.
async fn an_anchor_catches_a_replaced_tail() {
    let fixture = fixture_with_history().await;
    let anchor = anchor_of_head(&fixture).await;

    fixture
        .execute("DELETE FROM audit WHERE seq >= 10")
        .await
        .unwrap();
    let entries = [
        AuditEntry::new("attempt.finished", "opsgate", json!({"outcome": "failed"})),
        AuditEntry::new("run.state", "opsgate", json!({"to": "failed"})),
    ];
    fixture
        .store
        .append_audit(Some("run-1"), &entries, at(3_000))
        .await
        .unwrap();

    assert_eq!(
        check_against(&fixture, &anchor).await,
        Err(AnchorBreak::Replaced { seq: 11 })
    );
}

/// Records appended together, whose text holds what an encoder must
/// escape, come back exactly as they were given and verify.
async fn awkward_text_is_stored_exactly_and_verifies() {
    let fixture = Fixture::new().await;
    let awkward = "quote \" backslash \\ newline \n tab \t nul-escape \\u0000 é 漢字 🙂 \u{7f}";
    let entries = [
        AuditEntry::new(
            format!("kind {awkward}"),
            format!("actor {awkward}"),
            json!({"text": awkward, "nested": [awkward, {"k": awkward}], "n": 1.5}),
        ),
        AuditEntry::new("second", "opsgate", json!("just a string")),
        AuditEntry::new("third", "opsgate", json!(null)),
    ];

    fixture
        .store
        .append_audit(Some("run-x"), &entries, at(1_000))
        .await
        .unwrap();

    let audit = fixture.store.audit(None).await.unwrap();
    assert_chained(&audit);
    let stored: Vec<(&str, &str, &Value)> = audit
        .iter()
        .map(|row| (row.kind.as_str(), row.actor.as_str(), &row.detail))
        .collect();
    let given: Vec<(&str, &str, &Value)> = entries
        .iter()
        .map(|entry| (entry.kind.as_str(), entry.actor.as_str(), &entry.detail))
        .collect();
    assert_eq!(stored, given);
    assert_eq!(
        audit.iter().map(|row| row.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let report = fixture.store.verify_audit().await.unwrap();
    assert_eq!((report.first_break, report.records), (None, 3));
}

crate::on_both_backends!(
    awkward_text_is_stored_exactly_and_verifies,
    an_anchor_holds_while_the_chain_grows,
    an_anchor_catches_a_truncated_tail,
    an_anchor_catches_a_replaced_tail,
    an_untouched_chain_verifies,
    an_empty_chain_verifies,
    verification_names_the_altered_record,
    reformatting_a_detail_without_changing_it_is_not_a_break,
    verification_names_the_record_after_a_deleted_one,
    verification_names_a_record_whose_detail_is_not_json,
    records_outside_transitions_join_the_same_chain,
);
