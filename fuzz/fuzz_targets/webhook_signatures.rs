//! The signatures senders sign their own way, checked on the raw request
//! before anything reads it: Jira's `X-Hub-Signature` and Slack's v0
//! (`X-Slack-Signature` over `X-Slack-Request-Timestamp` and the body).
//!
//! The input is two header lines and a body. As sent, any headers and
//! body are refused or accepted without a panic. Then the body is signed
//! as its sender would sign it now: that signature is never taken for a
//! forgery, and with one bit of the body or the signature flipped (where
//! the input's first bytes say) it is always refused as one.

#![no_main]

use connectors::{Signature, SignatureRefused, SignedRequest, Verification};
use hmac::{KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use opsgate_fuzz::{SECRET, integrations};

/// The replay window the server checks signatures with.
const WINDOW_SECONDS: i64 = 300;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |byte| *byte == b'\n');
    let first = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let second = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();
    let now = jiff::Timestamp::from_second(1_780_000_000).expect("a time");
    let flip_at = usize::from(u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]));

    let jira = jira_signature();
    let _ = verify(&jira, &[("x-hub-signature", first.as_str())], body, now);
    let signed = format!("sha256={}", hex::encode(hmac_sha256(body)));
    check_signed(&jira, "x-hub-signature", &[], &signed, body, now, flip_at);

    let slack = integrations()
        .buttons("slack")
        .expect("the config plugs in Slack's buttons")
        .signature();
    let sent = [
        ("x-slack-request-timestamp", first.as_str()),
        ("x-slack-signature", second.as_str()),
    ];
    let _ = verify(&slack, &sent, body, now);
    let timestamp = now.as_second().to_string();
    let signed = connectors::slack::slack_signature(SECRET.as_bytes(), &timestamp, body);
    let timestamp = [("x-slack-request-timestamp", timestamp.as_str())];
    let held = verify(
        &slack,
        &[timestamp[0], ("x-slack-signature", signed.as_str())],
        body,
        now,
    );
    assert!(held.is_ok(), "Slack's own signature refused: {held:?}");
    check_signed(
        &slack,
        "x-slack-signature",
        &timestamp,
        &signed,
        body,
        now,
        flip_at,
    );
});

fn jira_signature() -> std::sync::Arc<dyn Signature> {
    let source = integrations()
        .source("jira")
        .expect("the config plugs in Jira's source");
    match source.verification() {
        Verification::Signed(signature) => signature,
        Verification::Sender => panic!("Jira signs its own way"),
    }
}

/// `signed` (the header `header`, beside `others`) is the sender's
/// signature of `body`: it is not a forgery, and one bit of the body or of
/// the signature flipped at `flip_at` makes it one.
fn check_signed(
    signature: &std::sync::Arc<dyn Signature>,
    header: &str,
    others: &[(&str, &str)],
    signed: &str,
    body: &[u8],
    now: jiff::Timestamp,
    flip_at: usize,
) {
    let mut headers = others.to_vec();
    headers.push((header, signed));
    if let Err(refused) = verify(signature, &headers, body, now) {
        assert!(
            refused.authentic,
            "{header}: the sender's signature refused: {refused:?}"
        );
    }
    let mut body = body.to_vec();
    let mut signed = signed.as_bytes().to_vec();
    let at = flip_at % (body.len() + signed.len());
    match at.checked_sub(body.len()) {
        None => body[at] ^= 1,
        Some(at) => signed[at] ^= 1,
    }
    let signed = String::from_utf8(signed).expect("a flipped bit of ASCII is ASCII");
    headers.pop();
    headers.push((header, signed.as_str()));
    match verify(signature, &headers, &body, now) {
        Err(refused) if !refused.authentic => {}
        outcome => panic!("{header}: a changed request was taken as signed: {outcome:?}"),
    }
}

fn verify(
    signature: &std::sync::Arc<dyn Signature>,
    headers: &[(&str, &str)],
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<Vec<u8>, SignatureRefused> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    };
    let request = SignedRequest {
        header: &header,
        body,
    };
    signature.verify(&request, now, WINDOW_SECONDS)
}

/// Jira's signature of `body`: its HMAC-SHA256 under the webhook's secret.
fn hmac_sha256(body: &[u8]) -> Vec<u8> {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}
