//! Signed approval links: their settings and key, what a link says, and
//! how it is signed and opened (`<hex of the link's JSON>.<hex
//! HMAC-SHA256 of that hex>`, under a key only the servers know). The
//! handlers and the page that use them are in `links.rs`; the shared
//! state holds the settings, so this module needs neither.

use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use domain::Secret;

/// Settings of approval links.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The key links are signed with; the same on every instance.
    pub key: Secret,
    /// How people reach this server (`https://opsgate.example`); links are
    /// built on it, never on a request's `Host` header (which the caller
    /// chooses). `opsgate serve` sets it to the address it listens on when
    /// none is configured; `None`: links are answered as paths.
    pub public_url: Option<String>,
    /// How long a link stays valid unless its issuer says otherwise.
    pub default_ttl_seconds: i64,
}

impl LinkConfig {
    /// A key made up for this process only: links die with it. For a single
    /// instance and the demo; clusters configure a shared key.
    pub fn ephemeral() -> LinkConfig {
        LinkConfig {
            // 32 random bytes, hex-encoded: a key of 256 bits.
            key: Secret::new(hex::encode(rand::random::<[u8; 32]>())),
            public_url: None,
            default_ttl_seconds: 3600,
        }
    }
}

/// The issuer of the links on chat cards: opsgate itself, when a stage opens.
const ISSUED_BY_OPSGATE: &str = "opsgate";

/// The longest a link may live: a week, whoever issues it.
pub(crate) const MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// What a link binds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalLink {
    pub run_id: String,
    /// The approver's principal name (their directory id).
    pub approver: String,
    /// The approval stage the link decides (the one open when it was issued).
    pub stage: String,
    /// Who caused the link to be issued, as an actor: the approver asking
    /// for their own (`user:alice`), or opsgate itself for a chat card
    /// (`opsgate`). A run's requester never can: such a link is refused.
    pub issued_by: String,
    pub plan_hash: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub nonce: String,
}

fn mac(key: &Secret) -> hmac::Hmac<Sha256> {
    hmac::Hmac::<Sha256>::new_from_slice(key.expose_bytes()).expect("HMAC takes any key length")
}

/// Signed approval pages for chat messages: one page per approver, on the
/// public URL (or the address the server listens on).
pub struct SignedPages {
    links: LinkConfig,
    base: String,
}

impl SignedPages {
    pub fn new(links: LinkConfig, base: String) -> SignedPages {
        let base = base.trim_end_matches('/').to_owned();
        SignedPages { links, base }
    }
}

impl runtime::ApprovalPages for SignedPages {
    fn page(
        &self,
        run_id: &str,
        stage: &str,
        approver: &str,
        plan_hash: &str,
        expires_at: Option<Timestamp>,
    ) -> runtime::ApprovalPage {
        let now = Timestamp::now().as_second();
        let lifetime = expires_at
            .map_or(self.links.default_ttl_seconds, |at| at.as_second() - now)
            .clamp(0, MAX_TTL_SECONDS);
        let link = ApprovalLink {
            run_id: run_id.to_owned(),
            approver: approver.to_owned(),
            stage: stage.to_owned(),
            issued_by: ISSUED_BY_OPSGATE.to_owned(),
            plan_hash: plan_hash.to_owned(),
            expires_at: now + lifetime,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
        };
        runtime::ApprovalPage {
            url: format!(
                "{}/approve/{}",
                self.base,
                sign_link(&self.links.key, &link)
            ),
            expires_at: Timestamp::from_second(link.expires_at)
                .expect("now plus at most a week is a timestamp"),
        }
    }
}

/// The token of `link` under `key`.
pub fn sign_link(key: &Secret, link: &ApprovalLink) -> String {
    let payload = hex::encode(serde_json::to_vec(link).expect("a link serialises"));
    let mut mac = mac(key);
    mac.update(payload.as_bytes());
    format!("{payload}.{}", hex::encode(mac.finalize().into_bytes()))
}

/// The link a token stands for, if `key` signed it (checked in constant time).
pub fn open_link(key: &Secret, token: &str) -> Option<ApprovalLink> {
    let (payload, signature) = token.split_once('.')?;
    let signature = hex::decode(signature).ok()?;
    let mut mac = mac(key);
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature).ok()?;
    serde_json::from_slice(&hex::decode(payload).ok()?).ok()
}
