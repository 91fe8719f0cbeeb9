//! API tokens: who holds a role now, as one query answers it.

use domain::Role;

use crate::{Fixture, at};

fn token(id: &str, principal: &str, role: Role) -> store::TokenRow {
    store::TokenRow {
        id: id.to_owned(),
        principal: principal.to_owned(),
        role,
        secret_sha256: "0".repeat(64),
        created_at: at(0),
        revoked_at: None,
        scope: None,
    }
}

async fn a_role_is_held_while_an_unrevoked_token_grants_it() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    store
        .create_token(&token("t1", "alice", Role::Approver))
        .await
        .unwrap();
    store
        .create_token(&token("t2", "alice", Role::Approver))
        .await
        .unwrap();
    store
        .create_token(&token("t3", "bob", Role::Operator))
        .await
        .unwrap();
    for (principal, role, held) in [
        ("alice", Role::Approver, true),
        ("alice", Role::Operator, false),
        ("bob", Role::Approver, false),
        ("bob", Role::Operator, true),
        ("carol", Role::Approver, false),
    ] {
        assert_eq!(
            store.holds_role(principal, role).await.unwrap(),
            held,
            "{principal} as {role}"
        );
    }
    // One of alice's two tokens revoked: she still holds the role; both: no more.
    assert!(store.revoke_token("t1", at(1)).await.unwrap());
    assert!(store.holds_role("alice", Role::Approver).await.unwrap());
    assert!(store.revoke_token("t2", at(2)).await.unwrap());
    assert!(!store.holds_role("alice", Role::Approver).await.unwrap());
}

crate::on_both_backends!(a_role_is_held_while_an_unrevoked_token_grants_it);

async fn an_agents_scope_is_kept_with_its_token() {
    let fixture = Fixture::new().await;
    let store = &fixture.store;
    let scope = domain::Scope {
        runbooks: vec!["restart-*".into()],
        targets: vec!["LT-*".into(), "WEB-??".into()],
        max_risk: Some(domain::RiskClass::Reversible),
    };
    let scoped = store::TokenRow {
        scope: Some(scope.clone()),
        ..token("t1", "triage-bot", Role::Agent)
    };
    store.create_token(&scoped).await.unwrap();
    store
        .create_token(&token("t2", "open-bot", Role::Agent))
        .await
        .unwrap();
    assert_eq!(store.token("t1").await.unwrap().unwrap().scope, Some(scope));
    assert_eq!(store.token("t2").await.unwrap().unwrap().scope, None);
    let listed = store.tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
}

crate::on_both_backends!(an_agents_scope_is_kept_with_its_token);
