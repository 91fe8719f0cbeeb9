//! Anchors: the audit chain's head, signed, kept outside the database.
//!
//! The hash chain proves that no record was altered, and none removed from
//! between two others. It cannot prove that the newest records are all
//! there: a power loss that dropped the last commits, or a database put
//! back from an older copy, leaves a shorter chain that still verifies.
//! An anchor is a signed statement "the chain's record `seq` had hash
//! `head_hash`", written at `anchored_at` somewhere whoever holds the
//! database cannot rewrite (an append-only file on another disk, another
//! system's webhook). A chain that no longer holds an anchored record with
//! its anchored hash lost or replaced its tail.
//!
//! The signature is HMAC-SHA256, with a key opsgate reads by reference
//! like every secret, over a version label and the canonical JSON of the
//! other fields; without the key nobody can write an anchor that passes.

use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

/// What the MAC covers before the fields: a new format gets a new label.
const MAC_LABEL: &str = "opsgate audit anchor v1\n";

/// One anchor, as one JSON line in a file or one webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// The sequence number of the chain's newest record.
    pub seq: i64,
    /// That record's hash.
    pub head_hash: String,
    /// When the anchor was written (RFC 3339).
    pub anchored_at: String,
    /// HMAC-SHA256 of the other fields, hex.
    pub mac: String,
}

/// What an anchor file holds: its anchors with their line numbers, and
/// the numbers of lines a crash cut short.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorLines {
    pub anchors: Vec<(usize, Anchor)>,
    pub torn: Vec<usize>,
}

impl Anchor {
    /// The anchor of record `seq` with hash `head_hash`, signed with `key`.
    pub fn sign(seq: i64, head_hash: &str, anchored_at: Timestamp, key: &[u8]) -> Anchor {
        let anchored_at = anchored_at.to_string();
        let mac = hex::encode(
            mac(key, seq, head_hash, &anchored_at)
                .finalize()
                .into_bytes(),
        );
        Anchor {
            seq,
            head_hash: head_hash.to_owned(),
            anchored_at,
            mac,
        }
    }

    /// Whether the anchor was signed with `key` and not changed since
    /// (compared in constant time).
    pub fn signed_with(&self, key: &[u8]) -> bool {
        let Ok(presented) = hex::decode(&self.mac) else {
            return false;
        };
        mac(key, self.seq, &self.head_hash, &self.anchored_at)
            .verify_slice(&presented)
            .is_ok()
    }

    /// The anchors in the lines of an anchor file, each with its line
    /// number, or the first line that is not one. A line cut short — the
    /// write a power loss interrupted, whose JSON simply ends early — is
    /// no anchor and no forgery: it is left out, and its number is in the
    /// `torn` list. Any other line that is not an anchor is an error.
    pub fn read_lines(text: &str) -> Result<AnchorLines, String> {
        let mut anchors = Vec::new();
        let mut torn = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Anchor>(line) {
                Ok(anchor) => anchors.push((index + 1, anchor)),
                Err(error) if error.is_eof() => torn.push(index + 1),
                Err(error) => return Err(format!("line {}: not an anchor: {error}", index + 1)),
            }
        }
        Ok(AnchorLines { anchors, torn })
    }

    /// The anchor as one line of JSON, without the newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an anchor serialises")
    }

    /// Checks the anchor against a chain: its signature, then that the
    /// chain holds record `seq` with the anchored hash. `hash_in_chain` is
    /// the chain's hash of record `seq`, if it has one; `head_seq` the
    /// chain's newest record.
    pub fn check(
        &self,
        key: &[u8],
        hash_in_chain: Option<&str>,
        head_seq: i64,
    ) -> Result<(), AnchorBreak> {
        if !self.signed_with(key) {
            return Err(AnchorBreak::NotSigned);
        }
        match hash_in_chain {
            None => Err(AnchorBreak::TailMissing {
                anchored_seq: self.seq,
                head_seq,
            }),
            Some(hash) if hash != self.head_hash => Err(AnchorBreak::Replaced { seq: self.seq }),
            Some(_) => Ok(()),
        }
    }
}

/// Why a chain does not hold up against an anchor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorBreak {
    #[error(
        "the anchor's signature does not hold: it was not written with this key, or was altered"
    )]
    NotSigned,
    #[error(
        "the chain ends at record {head_seq}, but record {anchored_seq} was anchored: \
         its newest records were removed (truncated tail, or an older copy of the database)"
    )]
    TailMissing { anchored_seq: i64, head_seq: i64 },
    #[error("record {seq} does not have the anchored hash: the chain was replaced from there on")]
    Replaced { seq: i64 },
}

/// The signature of a body sent to a webhook (`sha256=` and the hex
/// HMAC-SHA256 of the exact bytes), so the receiver can check who sent it.
pub fn body_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(key: &[u8], seq: i64, head_hash: &str, anchored_at: &str) -> hmac::Hmac<Sha256> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(MAC_LABEL.as_bytes());
    let fields = json!({"seq": seq, "head_hash": head_hash, "anchored_at": anchored_at});
    mac.update(domain::canonical_json(&fields).as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"an anchor key of thirty-two bytes";

    fn anchor() -> Anchor {
        Anchor::sign(
            42,
            &"ab".repeat(32),
            Timestamp::from_second(1_750_000_000).unwrap(),
            KEY,
        )
    }

    #[test]
    fn an_anchor_checks_against_the_chain_it_was_taken_from() {
        let anchor = anchor();
        let head = "ab".repeat(32);
        let check = |key: &[u8], hash: Option<&str>, head_seq| anchor.check(key, hash, head_seq);

        assert_eq!(check(KEY, Some(&head), 42), Ok(()));
        assert_eq!(
            check(KEY, Some(&head), 90),
            Ok(()),
            "a chain that grew since"
        );
        assert_eq!(
            check(KEY, None, 40),
            Err(AnchorBreak::TailMissing {
                anchored_seq: 42,
                head_seq: 40
            })
        );
        assert_eq!(
            check(KEY, Some(&"cd".repeat(32)), 42),
            Err(AnchorBreak::Replaced { seq: 42 })
        );
        assert_eq!(
            check(b"another key entirely, also long", Some(&head), 42),
            Err(AnchorBreak::NotSigned)
        );
    }

    #[test]
    fn every_field_is_signed() {
        let changes: [fn(&mut Anchor); 4] = [
            |anchor| anchor.seq += 1,
            |anchor| anchor.head_hash = "cd".repeat(32),
            |anchor| anchor.anchored_at = "2030-01-01T00:00:00Z".into(),
            |anchor| anchor.mac = "00".repeat(32),
        ];
        assert!(anchor().signed_with(KEY));
        for change in changes {
            let mut changed = anchor();
            change(&mut changed);
            assert!(!changed.signed_with(KEY), "{changed:?} still passes");
        }
    }

    #[test]
    fn an_anchor_reads_back_from_its_line() {
        let anchor = anchor();
        let line = anchor.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Anchor>(&line).unwrap(), anchor);
    }
}
