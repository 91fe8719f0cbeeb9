//! `/approve/{token}`: a signed approval link's token, opened as the page
//! opens it (`server::open_link`).
//!
//! The bytes are tried as a token: one that opens is a link the key
//! signed, spelled as it was signed but for the letter case of its
//! signature's hex. Read as a link's JSON, they are signed and opened
//! again — the same link — and with any one bit of the token flipped it
//! no longer opens.

#![no_main]

use domain::Secret;
use libfuzzer_sys::fuzz_target;
use server::{ApprovalLink, open_link, sign_link};

fuzz_target!(|data: &[u8]| {
    let key = Secret::new(opsgate_fuzz::SECRET.to_owned());
    let token = String::from_utf8_lossy(data);
    if let Some(link) = open_link(&key, &token) {
        assert!(
            token.eq_ignore_ascii_case(&sign_link(&key, &link)),
            "a token the key did not sign opened: {token:?} as {link:?}"
        );
    }

    let Ok(link) = serde_json::from_slice::<ApprovalLink>(data) else {
        return;
    };
    let token = sign_link(&key, &link);
    assert_eq!(open_link(&key, &token).as_ref(), Some(&link));
    let mut flipped = token.into_bytes();
    let at = data.len() % flipped.len();
    flipped[at] ^= 1;
    let flipped = String::from_utf8(flipped).expect("a flipped bit of ASCII is ASCII");
    assert_eq!(
        open_link(&key, &flipped),
        None,
        "a changed token opened: {flipped}"
    );
});
