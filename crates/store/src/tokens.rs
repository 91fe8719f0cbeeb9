//! Credentials the API checks: API tokens (their secrets only as SHA-256),
//! the nonces of approval links already used, and webhook signatures
//! already seen. Each "first use" is an insert that does nothing on
//! conflict, so the database, not a check-then-act in code, tells the first
//! use from a replay, across instances.

use jiff::Timestamp;
use serde::Serialize;

use crate::backend::Row;
use crate::{Result, Store};

/// An API token as stored: its secret only as a SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRow {
    pub id: String,
    pub principal: String,
    pub role: domain::Role,
    #[serde(skip)]
    pub secret_sha256: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<String>,
    /// What an agent's token lets it propose; `None` limits nothing.
    pub scope: Option<domain::Scope>,
}

impl TokenRow {
    fn from_row(row: &Row) -> Result<TokenRow> {
        Ok(TokenRow {
            id: row.get("id")?,
            principal: row.get("principal")?,
            role: domain::Role::parse(&row.get::<String, _>("role")?)?,
            secret_sha256: row.get("secret_sha256")?,
            created_at: row.timestamp("created_at")?,
            revoked_at: row.get("revoked_at")?,
            scope: row
                .get::<Option<String>, _>("scope")?
                .map(|scope| serde_json::from_str(&scope))
                .transpose()?,
        })
    }
}

impl Store {
    /// Stores a new API token (its secret only as a SHA-256).
    pub async fn create_token(&self, token: &TokenRow) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.query(
            "INSERT INTO api_tokens (id, principal, role, secret_sha256, created_at, scope) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.principal)
        .bind(token.role.as_str())
        .bind(&token.secret_sha256)
        .bind(token.created_at.to_string())
        .bind(
            token
                .scope
                .as_ref()
                .map(|scope| serde_json::to_string(scope).expect("a scope serialises")),
        )
        .execute()
        .await?;
        tx.commit().await
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(
                "SELECT id, principal, role, secret_sha256, created_at, revoked_at, scope \
                 FROM api_tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_optional()
            .await?;
        row.as_ref().map(TokenRow::from_row).transpose()
    }

    /// All tokens, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT id, principal, role, secret_sha256, created_at, revoked_at, scope \
                 FROM api_tokens ORDER BY created_at, id",
            )
            .fetch_all()
            .await?;
        rows.iter().map(TokenRow::from_row).collect()
    }

    /// Whether `principal` holds an unrevoked token with `role` (a person
    /// approves through a link or a chat button only while they could with
    /// their own token): one query, whatever the number of tokens.
    pub async fn holds_role(&self, principal: &str, role: domain::Role) -> Result<bool> {
        let mut reader = self.read().await?;
        let row = reader
            .query(
                "SELECT 1 FROM api_tokens \
                 WHERE principal = $1 AND role = $2 AND revoked_at IS NULL LIMIT 1",
            )
            .bind(principal)
            .bind(role.as_str())
            .fetch_optional()
            .await?;
        Ok(row.is_some())
    }

    /// Revokes a token; `false` when there is no such unrevoked token.
    pub async fn revoke_token(&self, id: &str, now: Timestamp) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let revoked = tx
            .query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now.to_string())
            .bind(id)
            .execute()
            .await?;
        tx.commit().await?;
        Ok(revoked == 1)
    }

    /// Records the use of an approval link's `nonce`: `true` the first
    /// time, `false` ever after (the link was used already).
    pub async fn use_approval_link(
        &self,
        nonce: &str,
        run_id: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = tx
            .query(
                "INSERT INTO approval_links_used (nonce, run_id, used_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (nonce) DO NOTHING",
            )
            .bind(nonce)
            .bind(run_id)
            .bind(now.to_string())
            .execute()
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Records the first use of a webhook signature (`signature` names the
    /// verifier and the signature's bytes), remembered until `expires_at`:
    /// `true` the first time, `false` while it is remembered (a replay).
    /// The insert decides, so two instances racing with the same signature
    /// get one `true`. Rows already expired are deleted first, through the
    /// expiry index: the table holds only signatures still in their window.
    pub async fn use_signature(
        &self,
        signature: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        tx.query("DELETE FROM used_signatures WHERE expires_at <= $1")
            .bind(now.as_second())
            .execute()
            .await?;
        let inserted = tx
            .query(
                "INSERT INTO used_signatures (signature, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (signature) DO NOTHING",
            )
            .bind(signature)
            .bind(expires_at.as_second())
            .execute()
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Forgets a used signature, so that the same request is accepted
    /// again (its sender retries after opsgate failed to handle it).
    pub async fn release_signature(&self, signature: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.query("DELETE FROM used_signatures WHERE signature = $1")
            .bind(signature)
            .execute()
            .await?;
        tx.commit().await
    }
}
