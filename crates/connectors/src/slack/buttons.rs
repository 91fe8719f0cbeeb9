//! The clicks on Approve and Deny: Slack posts them to the app's
//! interactivity URL, `/v1/hooks/slack/interactions`, signed with the
//! app's signing secret (Slack's "Verifying requests from Slack", v0):
//! `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<X-Slack-Request-Timestamp>:<body>">`, the timestamp within the
//! replay window (Slack's five minutes). The server checks it on the raw
//! bytes through [`Signature`], then hands the body to [`ButtonSource`].
//!
//! Slack wants an answer within three seconds, and for message buttons it
//! does not display that answer's body: what became of a click is also
//! posted to the payload's `response_url`, by the [`Responder`], which
//! posts only under its configured base.

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Interaction, Responder, ResponseKind, interaction_response, read_interaction};
use crate::seam::{
    BoxFuture, ButtonSource, Pressed, Reply, Signature, SignatureRefused, SignedRequest,
};
use crate::{Secret, WriteError};

const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
const SLACK_SIGNATURE_HEADER: &str = "x-slack-signature";

/// The buttons of the approval messages posted to Slack.
pub(crate) struct Buttons {
    pub(crate) signing_secret: Secret,
    pub(crate) responder: Responder,
}

impl ButtonSource for Buttons {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn signature(&self) -> std::sync::Arc<dyn Signature> {
        std::sync::Arc::new(V0Signature {
            signing_secret: self.signing_secret.clone(),
        })
    }

    fn read(&self, body: &[u8]) -> Result<Pressed, String> {
        Ok(match read_interaction(body)? {
            Interaction::NotAButton => Pressed::NotOurs,
            Interaction::OtherButton => Pressed::Nothing,
            Interaction::Decision {
                button,
                approving,
                user_id,
                response_url,
            } => Pressed::Decision {
                run: button.run,
                stage: button.stage,
                approving,
                user_id,
                reply_to: response_url,
            },
        })
    }

    fn answer(&self, reply: Reply, text: &str) -> Value {
        interaction_response(kind(reply), text)
    }

    fn follow_up<'a>(
        &'a self,
        reply_to: &'a str,
        reply: Reply,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            self.responder
                .respond(reply_to, &interaction_response(kind(reply), text))
                .await
        })
    }
}

fn kind(reply: Reply) -> ResponseKind {
    match reply {
        Reply::ToThePerson => ResponseKind::Ephemeral,
        Reply::InChannel => ResponseKind::InChannel,
        Reply::ReplaceMessage => ResponseKind::ReplaceOriginal,
    }
}

/// Slack's v0 request signature, under the app's signing secret.
#[derive(Debug)]
pub(crate) struct V0Signature {
    pub(crate) signing_secret: Secret,
}

impl Signature for V0Signature {
    fn scheme(&self) -> &'static str {
        "slack-v0"
    }

    fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: jiff::Timestamp,
        window_seconds: i64,
    ) -> Result<Vec<u8>, SignatureRefused> {
        verify(
            self.signing_secret.expose_bytes(),
            request.header,
            request.body,
            now,
            window_seconds,
        )
        .map_err(SignatureRefused::forged)
    }
}

/// The signature Slack sends for `body` at `timestamp` (unix seconds, as
/// the header text): `v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`.
pub fn slack_signature(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mac = signature_mac(signing_secret, timestamp, body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn signature_mac(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> hmac::Hmac<Sha256> {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(signing_secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Whether the headers' signature is Slack's for `body`, made within
/// `window_seconds` of `now`: the signature's bytes when it is, the reason
/// when it is not.
fn verify<'a>(
    signing_secret: &[u8],
    header: &'a dyn Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: jiff::Timestamp,
    window_seconds: i64,
) -> Result<Vec<u8>, String> {
    let header = |name: &str| {
        header(name).ok_or_else(|| format!("a Slack request needs the `{name}` header"))
    };
    let timestamp_text = header(SLACK_TIMESTAMP_HEADER)?;
    let signature_text = header(SLACK_SIGNATURE_HEADER)?;
    let timestamp: i64 = timestamp_text.parse().map_err(|_| {
        format!("`{SLACK_TIMESTAMP_HEADER}` must be unix seconds, found `{timestamp_text}`")
    })?;
    if now.as_second().abs_diff(timestamp) > window_seconds.unsigned_abs() {
        return Err(format!(
            "the request's timestamp is more than {window_seconds} s from now"
        ));
    }
    let presented = signature_text
        .strip_prefix("v0=")
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or_else(|| format!("`{SLACK_SIGNATURE_HEADER}` must be v0=<hex>"))?;
    let expected = signature_mac(signing_secret, timestamp_text, body)
        .finalize()
        .into_bytes();
    if !signatures_match(&expected, &presented) {
        return Err("the signature does not match the body".to_owned());
    }
    Ok(presented)
}

/// Compares in constant time, so the answer's timing tells nothing about
/// how much of a forged signature was right.
fn signatures_match(expected: &[u8], presented: &[u8]) -> bool {
    bool::from(expected.ct_eq(presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's worked example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(headers: &[(&str, &str)], body: &str, now: i64) -> Result<(), String> {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| *value)
        };
        verify(
            SECRET.as_bytes(),
            &lookup,
            body.as_bytes(),
            jiff::Timestamp::from_second(now).unwrap(),
            300,
        )
        .map(drop)
    }

    fn headers<'a>(timestamp: &'a str, signature: &'a str) -> [(&'static str, &'a str); 2] {
        [
            (SLACK_TIMESTAMP_HEADER, timestamp),
            (SLACK_SIGNATURE_HEADER, signature),
        ]
    }

    #[test]
    fn slacks_published_example_signs_and_verifies() {
        assert_eq!(
            slack_signature(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes()),
            SIGNATURE
        );
        assert_eq!(
            check(&headers(TIMESTAMP, SIGNATURE), BODY, 1531420618),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let sent = 1531420618;
        let tampered = BODY.replace("roadrunner", "coyote");
        let mut last_digit = SIGNATURE.to_owned();
        last_digit.replace_range(SIGNATURE.len() - 1.., "4");
        // (headers, body, now, what the refusal says)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, i64, &'a str);
        let cases: &[Case] = &[
            (
                &headers(TIMESTAMP, SIGNATURE),
                &tampered,
                sent,
                "does not match",
            ),
            (
                &headers(TIMESTAMP, &last_digit),
                BODY,
                sent,
                "does not match",
            ),
            (
                &headers(TIMESTAMP, "v0=a2114d57"),
                BODY,
                sent,
                "does not match",
            ),
            (&headers(TIMESTAMP, &SIGNATURE[3..]), BODY, sent, "v0=<hex>"),
            (&headers(TIMESTAMP, "v0=not-hex"), BODY, sent, "v0=<hex>"),
            (
                &headers("1531420619", SIGNATURE),
                BODY,
                sent,
                "does not match",
            ),
            (
                &headers(TIMESTAMP, SIGNATURE),
                BODY,
                sent + 301,
                "more than 300 s",
            ),
            (
                &headers(TIMESTAMP, SIGNATURE),
                BODY,
                sent - 301,
                "more than 300 s",
            ),
            (&headers("yesterday", SIGNATURE), BODY, sent, "unix seconds"),
            // The ends of the range are outside the window, not an overflow.
            (
                &headers("-9223372036854775808", SIGNATURE),
                BODY,
                sent,
                "more than 300 s",
            ),
            (
                &headers("9223372036854775807", SIGNATURE),
                BODY,
                sent,
                "more than 300 s",
            ),
            (&[], BODY, sent, "x-slack-request-timestamp"),
        ];
        for (headers, body, now, expected) in cases {
            let refusal = check(headers, body, *now).expect_err(expected);
            assert!(refusal.contains(expected), "{expected}: {refusal}");
        }
        // At the edge of the window it still passes.
        assert_eq!(
            check(&headers(TIMESTAMP, SIGNATURE), BODY, sent + 300),
            Ok(())
        );
    }

    #[test]
    fn the_comparison_is_subtles_constant_time_equality() {
        let expected = [7u8; 32];
        let mut first = expected;
        first[0] ^= 1;
        let mut last = expected;
        last[31] ^= 1;
        assert!(signatures_match(&expected, &expected));
        for presented in [&first[..], &last[..], &expected[..31], &[][..]] {
            assert!(!signatures_match(&expected, presented));
        }
    }
}
