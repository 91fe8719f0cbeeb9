//! The verifier of `X-Hub-Signature`, for an event source whose sender
//! signs that way (`connectors::Verification::HubSignature`): Jira's issue
//! webhook at `/v1/hooks/jira`. The signature, then the body's timestamp
//! within the replay window, then the one replay rule, before the source
//! reads the body.
//!
//! Jira signs a webhook registered with a secret (admin webhooks, made on
//! the *WebHooks* page or through `/rest/webhooks/1.0/webhook`; webhooks of
//! Connect and OAuth apps are not signed this way): `X-Hub-Signature:
//! sha256=<hex HMAC-SHA256 of the raw body>`, keyed with the secret. This
//! is what Atlassian documents for Data Center ("Managing webhooks",
//! confluence.atlassian.com/adminjiraserver/managing-webhooks-938846912.html:
//! "The header X-Hub-Signature is defined and contains the HMAC …
//! `x-hub-signature: sha256=…`") and for Cloud ("Secure admin webhooks",
//! developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks).
//! The signature covers the body only, with no timestamp of its own; the
//! body's `timestamp` (kept in the event's fields) is signed with it, which
//! is what a replay window can be checked against.

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// The header the signature arrives in.
pub(crate) const HUB_SIGNATURE_HEADER: &str = "x-hub-signature";

/// What the replay window reads of a signed body: its time.
#[derive(Debug, Deserialize)]
struct Signed {
    /// Milliseconds since the epoch.
    #[serde(default)]
    timestamp: Option<i64>,
}

/// Checks Jira's `X-Hub-Signature` on the raw `body` against the
/// webhook's `secret`, in constant time: the signature's bytes when it
/// holds, the reason when it does not.
pub(crate) fn verify_signature(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let signature = headers
        .get(HUB_SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            "a Jira webhook needs the `X-Hub-Signature` header: register the webhook with a secret"
                .to_owned()
        })?;
    let (algorithm, hex_text) = signature
        .split_once('=')
        .ok_or("`X-Hub-Signature` must be sha256=<hex>")?;
    if algorithm != "sha256" {
        return Err(format!(
            "`X-Hub-Signature` is signed with `{algorithm}`: opsgate accepts sha256 only"
        ));
    }
    let presented =
        hex::decode(hex_text).map_err(|_| "`X-Hub-Signature` must be sha256=<hex>".to_owned())?;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&presented)
        .map_err(|_| "the signature does not match the body".to_owned())?;
    Ok(presented)
}

/// The route Jira posts its webhooks to.
/// A request of `source`, signed with `X-Hub-Signature` under `secret`:
/// checked here, first, on the raw bytes — the signature, then the body's
/// `timestamp` within the replay window, then once only, by the replay
/// rule every verifier shares (`auth::SignatureUse`): a signature is used
/// once its request has been handled, and released when opsgate answered
/// 5xx, so that the sender's retry after a failure of ours is taken in.
pub(crate) async fn receive(
    state: &crate::state::AppState,
    source: &dyn connectors::EventSource,
    secret: &domain::Secret,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(axum::http::StatusCode, axum::Json<Value>), crate::ApiError> {
    use crate::ApiError;
    let name = source.name();
    let route = format!("/v1/hooks/{name}");
    let presented = match verify_signature(secret.expose_bytes(), headers, body) {
        Ok(presented) => presented,
        Err(message) => {
            let error = ApiError::Unauthorized { message };
            return Err(refuse(state, &route, "anonymous", error).await);
        }
    };
    // Signed by the sender: a body that does not parse is its mistake (400).
    let signed: Signed = crate::body::parse_body(body)?;
    let now = jiff::Timestamp::now();
    let window = state.auth.replay_window().as_secs() as i64;
    let actor = format!("source:{name}");
    match signed.timestamp {
        Some(millis) if (now.as_millisecond() - millis).abs() <= window * 1000 => {}
        Some(_) => {
            let message =
                format!("the webhook's timestamp is outside the {window} s replay window");
            return Err(refuse(state, &route, &actor, ApiError::Unauthorized { message }).await);
        }
        None => {
            let message = format!("a webhook of {name} needs its `timestamp`");
            return Err(refuse(state, &route, &actor, ApiError::Unauthorized { message }).await);
        }
    }
    let signature = crate::auth::SignatureUse::new(name, &presented);
    if let Err(error) = signature.claim(state, now).await {
        return Err(refuse(state, &route, &actor, error).await);
    }
    let held = signature.held(state);
    let caller = domain::Principal {
        name: name.to_owned(),
        role: domain::Role::Source,
    };
    let answer = crate::routes::take_in(&state.runtime, source, &caller, body).await;
    let status = match &answer {
        Ok((status, _)) => *status,
        Err(error) => error.status_and_code().0,
    };
    held.settle(status).await;
    answer
}

/// A refused webhook, audited as `api.refused`.
async fn refuse(
    state: &crate::state::AppState,
    route: &str,
    actor: &str,
    error: crate::ApiError,
) -> crate::ApiError {
    crate::auth::audit_refusal(state, &axum::http::Method::POST, route, actor, &error).await;
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WebSub-style example GitHub publishes for the same scheme
    /// (HMAC-SHA256 of the raw body, as `sha256=<hex>`), checked with
    /// `openssl dgst -sha256 -hmac`.
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn signed(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HUB_SIGNATURE_HEADER, signature.parse().unwrap());
        headers
    }

    #[test]
    fn a_signature_over_the_raw_body_verifies() {
        assert!(verify_signature(SECRET, &signed(SIGNATURE), BODY).is_ok());
        // The header's name is matched ignoring case, as HTTP wants.
        let mut headers = HeaderMap::new();
        headers.insert("X-Hub-Signature", SIGNATURE.parse().unwrap());
        assert!(verify_signature(SECRET, &headers, BODY).is_ok());
    }

    #[test]
    fn signature_refusals() {
        let mut last_digit = SIGNATURE.to_owned();
        last_digit.replace_range(SIGNATURE.len() - 1.., "8");
        let uppercase_hex = SIGNATURE.to_uppercase().replace("SHA256=", "sha256=");
        let cases: &[(HeaderMap, &[u8], &[u8], &str)] = &[
            (
                signed(SIGNATURE),
                b"Hello, World?",
                SECRET,
                "does not match",
            ),
            (
                signed(SIGNATURE),
                b"Hello, World! ",
                SECRET,
                "does not match",
            ),
            (signed(SIGNATURE), BODY, b"another secret", "does not match"),
            (signed(&last_digit), BODY, SECRET, "does not match"),
            (signed("sha256=757107ea"), BODY, SECRET, "does not match"),
            (signed("sha256="), BODY, SECRET, "does not match"),
            (signed(&SIGNATURE[7..]), BODY, SECRET, "sha256=<hex>"),
            (signed("sha256=not-hex"), BODY, SECRET, "sha256=<hex>"),
            (
                signed("sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"),
                BODY,
                SECRET,
                "signed with `sha1`",
            ),
            (
                HeaderMap::new(),
                BODY,
                SECRET,
                "needs the `X-Hub-Signature` header",
            ),
        ];
        for (headers, body, secret, expected) in cases {
            let refusal = verify_signature(secret, headers, body).expect_err(expected);
            assert!(refusal.contains(expected), "{expected}: {refusal}");
        }
        // Hex digits in either case are the same signature: the same bytes,
        // which is what the replay rule remembers.
        assert_eq!(
            verify_signature(SECRET, &signed(&uppercase_hex), BODY),
            verify_signature(SECRET, &signed(SIGNATURE), BODY),
        );
    }
}
