//! Fresh PostgreSQL databases for tests and benchmarks.
//!
//! Each [`Database`] is a new database on the server named by
//! `OPSGATE_TEST_POSTGRES_URL` (default: the local server with trust auth),
//! dropped when the value is dropped. Whether an unreachable server means
//! "skip" or "fail" is the caller's decision.

use sqlx::Connection;

/// The maintenance URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("OPSGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own, dropped with this value.
pub struct Database {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Database {
    /// Creates `{prefix}_{unique}`; fails when the server is unreachable.
    pub async fn create(prefix: &str) -> Result<Database, sqlx::Error> {
        let admin_url = admin_url();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        let name = format!("{prefix}_{:016x}", unique());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let server = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(server, _)| server);
        let url = format!("{server}/{name}");
        Ok(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    /// Best effort, on a thread of its own: a destructor cannot await, and
    /// may run inside an async runtime.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Unique enough across processes and calls: time, process and a counter.
fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.finish()
}
