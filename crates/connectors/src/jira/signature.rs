//! The signature Jira sends with its admin webhooks: `X-Hub-Signature:
//! sha256=<hex HMAC-SHA256 of the raw body>`, keyed with the secret the
//! webhook was registered with (webhooks made on the *WebHooks* page or
//! through `/rest/webhooks/1.0/webhook`; webhooks of Connect and OAuth
//! apps are not signed this way). This is what Atlassian documents for
//! Data Center ("Managing webhooks",
//! confluence.atlassian.com/adminjiraserver/managing-webhooks-938846912.html:
//! "The header X-Hub-Signature is defined and contains the HMAC …
//! `x-hub-signature: sha256=…`") and for Cloud ("Secure admin webhooks",
//! developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks).
//!
//! The signature covers the body only, with no timestamp of its own; the
//! body's `timestamp` (milliseconds, kept in the event's fields) is signed
//! with it, which is what the replay window is checked against.

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::Secret;
use crate::seam::{Signature, SignatureRefused, SignedRequest};

/// The header the signature arrives in.
const HUB_SIGNATURE_HEADER: &str = "x-hub-signature";

/// `X-Hub-Signature` under the webhook's secret.
#[derive(Debug)]
pub(crate) struct HubSignature {
    pub(crate) secret: Secret,
}

/// What the replay window reads of a signed body: its time.
#[derive(Debug, Deserialize)]
struct Signed {
    /// Milliseconds since the epoch.
    #[serde(default)]
    timestamp: Option<i64>,
}

impl Signature for HubSignature {
    fn scheme(&self) -> &'static str {
        HUB_SIGNATURE_HEADER
    }

    /// The signature on the raw body, in constant time, then the body's
    /// `timestamp` within the window. A body whose time cannot be read is
    /// refused: without it, no window can be checked.
    fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: jiff::Timestamp,
        window_seconds: i64,
    ) -> Result<Vec<u8>, SignatureRefused> {
        let presented = verify_signature(
            self.secret.expose_bytes(),
            (request.header)(HUB_SIGNATURE_HEADER),
            request.body,
        )
        .map_err(SignatureRefused::forged)?;
        let signed = serde_json::from_slice::<Signed>(request.body).map_err(|error| {
            SignatureRefused::stale(format!(
                "a webhook of {} is JSON with its `timestamp` (milliseconds): {error}",
                super::NAME
            ))
        })?;
        let window_ms = window_seconds.unsigned_abs().saturating_mul(1000);
        match signed.timestamp {
            Some(millis) if now.as_millisecond().abs_diff(millis) <= window_ms => Ok(presented),
            Some(_) => Err(SignatureRefused::stale(format!(
                "the webhook's timestamp is outside the {window_seconds} s replay window"
            ))),
            None => Err(SignatureRefused::stale(format!(
                "a webhook of {} needs its `timestamp`",
                super::NAME
            ))),
        }
    }
}

/// Checks `X-Hub-Signature` (`header`) on the raw `body` against
/// `secret`, in constant time: the signature's bytes when it holds, the
/// reason when it does not.
fn verify_signature(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
    let signature = header.ok_or_else(|| {
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

    #[test]
    fn a_signature_over_the_raw_body_verifies() {
        assert!(verify_signature(SECRET, Some(SIGNATURE), BODY).is_ok());
    }

    #[test]
    fn signature_refusals() {
        let mut last_digit = SIGNATURE.to_owned();
        last_digit.replace_range(SIGNATURE.len() - 1.., "8");
        let uppercase_hex = SIGNATURE.to_uppercase().replace("SHA256=", "sha256=");
        // (header, body, secret, what the refusal says)
        type Case<'a> = (Option<&'a str>, &'a [u8], &'a [u8], &'a str);
        let cases: &[Case] = &[
            (Some(SIGNATURE), b"Hello, World?", SECRET, "does not match"),
            (Some(SIGNATURE), b"Hello, World! ", SECRET, "does not match"),
            (Some(SIGNATURE), BODY, b"another secret", "does not match"),
            (Some(&last_digit), BODY, SECRET, "does not match"),
            (Some("sha256=757107ea"), BODY, SECRET, "does not match"),
            (Some("sha256="), BODY, SECRET, "does not match"),
            (Some(&SIGNATURE[7..]), BODY, SECRET, "sha256=<hex>"),
            (Some("sha256=not-hex"), BODY, SECRET, "sha256=<hex>"),
            (
                Some("sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"),
                BODY,
                SECRET,
                "signed with `sha1`",
            ),
            (None, BODY, SECRET, "needs the `X-Hub-Signature` header"),
        ];
        for (header, body, secret, expected) in cases {
            let refusal = verify_signature(secret, *header, body).expect_err(expected);
            assert!(refusal.contains(expected), "{expected}: {refusal}");
        }
        // Hex digits in either case are the same signature: the same bytes,
        // which is what the replay rule remembers.
        assert_eq!(
            verify_signature(SECRET, Some(&uppercase_hex), BODY),
            verify_signature(SECRET, Some(SIGNATURE), BODY),
        );
    }

    #[test]
    fn the_bodys_timestamp_must_lie_within_the_window() {
        let secret = b"webhook-secret";
        let check = |body: &str, now_ms: i64| {
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(body.as_bytes());
            let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let lookup = |name: &str| (name == HUB_SIGNATURE_HEADER).then_some(header.as_str());
            HubSignature {
                secret: Secret::new("webhook-secret"),
            }
            .verify(
                &SignedRequest {
                    header: &lookup,
                    body: body.as_bytes(),
                },
                jiff::Timestamp::from_millisecond(now_ms).unwrap(),
                300,
            )
        };
        let sent = 1_700_000_000_000;
        let body = format!(r#"{{"timestamp": {sent}}}"#);
        assert!(check(&body, sent + 300_000).is_ok());
        let stale = check(&body, sent + 300_001).unwrap_err();
        assert!(
            stale.authentic && stale.message.contains("replay window"),
            "{stale:?}"
        );
        let untimed = check("{}", sent).unwrap_err();
        assert!(
            untimed.authentic && untimed.message.contains("`timestamp`"),
            "{untimed:?}"
        );
        // A signed body whose time cannot be read is refused, not left to
        // the source: the window would go unchecked.
        for body in [
            "not json",
            r#"{"timestamp": "soon"}"#,
            r#"{"timestamp": 1.5}"#,
        ] {
            let unread = check(body, sent).unwrap_err();
            assert!(
                unread.authentic && unread.message.contains("`timestamp`"),
                "{body}: {unread:?}"
            );
        }
        // Times at the ends of the range are outside the window, not an
        // overflow.
        for extreme in [i64::MIN, i64::MAX] {
            let body = format!(r#"{{"timestamp": {extreme}}}"#);
            let far = check(&body, sent).unwrap_err();
            assert!(far.message.contains("replay window"), "{extreme}: {far:?}");
        }
    }
}
