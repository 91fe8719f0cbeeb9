//! The verifier of requests their sender signs its own way
//! ([`runtime::Verification::Signed`]): Jira's `X-Hub-Signature`, Slack's
//! v0, whatever the next integration brings. The integration checks its
//! scheme on the raw bytes ([`runtime::Signature`]); here, for every
//! scheme alike, the order is: the signature (and its time), then the one
//! replay rule (`auth::SignatureUse`: a signature is used once across
//! instances, and released after an answer of 5xx or a dropped request so
//! the sender's retry is taken in), then the request is handled. A refusal
//! is audited as `api.refused`, like any unauthenticated call: as an
//! anonymous caller's, or as the source's when the signature held but the
//! request was stale or replayed.

use axum::http::{HeaderMap, Method};
use jiff::Timestamp;

use crate::ApiError;
use crate::auth::{HeldSignature, SignatureUse, audit_refusal};
use crate::state::AppState;

/// Verifies a request of sender `name` at `route` with `signature`, and
/// claims the signature: held while the request is handled, settled with
/// the answer's status (see [`HeldSignature::settle`]).
pub(crate) async fn verify(
    state: &AppState,
    route: &str,
    name: &str,
    signature: &dyn runtime::Signature,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HeldSignature, ApiError> {
    let now = Timestamp::now();
    let window = state.auth.replay_window().as_secs() as i64;
    let verified = {
        let header = |header: &str| headers.get(header).and_then(|value| value.to_str().ok());
        let request = runtime::SignedRequest {
            header: &header,
            body,
        };
        signature.verify(&request, now, window)
    };
    let presented = match verified {
        Ok(presented) => presented,
        Err(refused) => {
            let actor = if refused.authentic {
                format!("source:{name}")
            } else {
                "anonymous".to_owned()
            };
            let error = ApiError::Unauthorized {
                message: refused.message,
            };
            return Err(refuse(state, route, &actor, error).await);
        }
    };
    let signature = SignatureUse::new(signature.scheme(), &presented);
    if let Err(error) = signature.claim(state, now).await {
        return Err(refuse(state, route, &format!("source:{name}"), error).await);
    }
    Ok(signature.held(state))
}

/// A refused request, audited as `api.refused`.
async fn refuse(state: &AppState, route: &str, actor: &str, error: ApiError) -> ApiError {
    audit_refusal(state, &Method::POST, route, actor, &error).await;
    error
}
