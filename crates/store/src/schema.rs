//! The embedded migrations, shared by both backends: each backend module
//! lists its own numbered files (`migrations/<backend>/`, never edited once
//! landed), and the same version numbers mean the same schema on both.

/// A migrator for embedded migrations `(version, description, sql)`.
pub(crate) fn migrator(
    migrations: &'static [(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                let sql = sqlx::SqlSafeStr::into_sql_str(*sql);
                Migration::new(
                    *version,
                    std::borrow::Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql,
                    false,
                )
            })
            .collect(),
    )
}

/// The newest migration in `migrations` (numbered from 1, without gaps).
pub(crate) fn latest_version(migrations: &[(i64, &str, &str)]) -> i64 {
    migrations
        .iter()
        .map(|(version, _, _)| *version)
        .max()
        .unwrap_or(0)
}

/// A database migrated by a newer opsgate may hold data this build would
/// misread or corrupt: refuse it rather than guess. `found` is the
/// database's newest applied migration, if it has any.
pub(crate) fn refuse_newer_than(
    found: Option<i64>,
    migrations: &[(i64, &str, &str)],
) -> crate::Result<()> {
    let known = latest_version(migrations);
    match found {
        Some(found) if found > known => Err(crate::Error::SchemaTooNew { found, known }),
        _ => Ok(()),
    }
}
