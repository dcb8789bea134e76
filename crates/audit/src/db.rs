//! The database handle shared by the audit log and the rest of the gateway.
//!
//! [`Db`] is an enum over a SQLite pool and a PostgreSQL pool (sqlx 0.9, runtime queries,
//! `$N` placeholders, which both drivers accept). [`Db::connect`] opens the store named
//! by a URL and brings the audit schema up to date. Another crate puts its own tables on
//! the same database with its own [`MigrationSet`] and [`Db::run_migrations`]; each set
//! records what it applied in its own table (`_medicodax_<name>_migrations`), so sets
//! never see each other's versions:
//!
//! ```no_run
//! # async fn demo() -> Result<(), medicodax_audit::AuditError> {
//! use medicodax_audit::{Db, MigrationSet, SqlMigration};
//! static GATEWAY: MigrationSet = MigrationSet {
//!     name: "gateway",
//!     sqlite: &[SqlMigration { version: 1, description: "users", sql: "CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT NOT NULL)" }],
//!     postgres: &[SqlMigration { version: 1, description: "users", sql: "CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT NOT NULL)" }],
//! };
//! let db = Db::connect("sqlite://medicodax-data/medicodax.db").await?;
//! db.run_migrations(&GATEWAY).await?;
//! // Queries written once for both backends:
//! let n: i64 = medicodax_audit::with_pool!(&db, pool => {
//!     use sqlx::Row;
//!     sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(pool).await.map_err(|e| e.to_string()).and_then(|r| r.try_get("n").map_err(|e| e.to_string()))
//! }).unwrap_or(0);
//! # let _ = n; Ok(()) }
//! ```
//!
//! SQLite is opened in WAL mode with `synchronous=FULL` (a committed transaction has been
//! fsynced, so an acknowledged append survives a crash or power loss), a 5 s
//! `busy_timeout`, and foreign keys on. The audit log writes one batch at a time, and for
//! a database file on a connection of its own (`sqlite_writer.rs`); readers
//! (verify, tail, the dashboard) use the pool's connections, which WAL lets run beside it.
//! PostgreSQL connections force `synchronous_commit=on` for the same guarantee.

use crate::error::AuditError;
use crate::sqlite_writer::SqliteWriter;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlSafeStr as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Runs `$body` with `$pool` bound to the concrete pool of a [`Db`] (`&SqlitePool` or
/// `&PgPool`), so a query written once with `$N` placeholders runs on either backend.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite(store) => {
                let $pool = &store.pool;
                $body
            }
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// The store: SQLite (default) or PostgreSQL.
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite database file (or an in-memory database for tests).
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// A SQLite store: the sqlx pool for reads and ordinary writes, and for a database file
/// the audit writer's own connection (`sqlite_writer.rs`).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The pool every query but the audit batches uses.
    pub pool: SqlitePool,
    writer: Option<Arc<SqliteWriter>>,
}

impl SqliteStore {
    /// The audit writer's connection (`None` for an in-memory database, whose one
    /// connection is the pool's).
    pub(crate) fn writer(&self) -> Option<&SqliteWriter> {
        self.writer.as_deref()
    }

    /// The same, shared.
    pub(crate) fn writer_arc(&self) -> Option<Arc<SqliteWriter>> {
        self.writer.clone()
    }
}

/// Which backend a [`Db`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// One schema migration, as SQL text for one backend.
#[derive(Clone, Copy, Debug)]
pub struct SqlMigration {
    /// Increasing version, from 1.
    pub version: i64,
    /// A short description.
    pub description: &'static str,
    /// The SQL (several statements allowed).
    pub sql: &'static str,
}

/// A crate's migrations for both backends, tracked in `_medicodax_<name>_migrations`.
#[derive(Clone, Copy, Debug)]
pub struct MigrationSet {
    /// The set's name (lowercase letters, digits and `_`), e.g. `audit`, `gateway`.
    pub name: &'static str,
    /// The SQLite migrations.
    pub sqlite: &'static [SqlMigration],
    /// The PostgreSQL migrations.
    pub postgres: &'static [SqlMigration],
}

/// The audit log's own schema.
pub static AUDIT_MIGRATIONS: MigrationSet = MigrationSet {
    name: "audit",
    sqlite: &[SqlMigration { version: 1, description: "audit log", sql: include_str!("../migrations/sqlite/0001_audit_log.sql") }],
    postgres: &[SqlMigration { version: 1, description: "audit log", sql: include_str!("../migrations/postgres/0001_audit_log.sql") }],
};

/// Prepared statements kept per connection: the audit writer's multi-row statements
/// take up to `2 * MAX_CHUNK` shapes, and the gateway's own queries need room too.
const STATEMENT_CACHE: usize = 2 * crate::store::MAX_CHUNK + 128;

/// How long a SQLite writer waits for a lock held by another connection.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Db {
    /// Opens the store named by `url` and brings the audit schema up to date.
    ///
    /// Accepted: `sqlite://PATH` (created if missing), `sqlite::memory:`, and
    /// `postgres://` / `postgresql://` URLs (sqlx syntax, e.g.
    /// `?options[search_path]=myschema`).
    pub async fn connect(url: &str) -> Result<Db, AuditError> {
        let db = Self::connect_only(url).await?;
        db.run_migrations(&AUDIT_MIGRATIONS).await?;
        Ok(db)
    }

    /// Opens the store without running any migration.
    pub async fn connect_only(url: &str) -> Result<Db, AuditError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => {
                let memory = url.contains(":memory:") || url.contains("mode=memory");
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|e| AuditError::Connect { backend: "sqlite", reason: e.to_string() })?
                    .create_if_missing(true)
                    .busy_timeout(BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .synchronous(SqliteSynchronous::Full)
                    .statement_cache_capacity(STATEMENT_CACHE);
                let (opts, pool) = if memory {
                    // Every connection to `:memory:` is its own database: keep exactly one, forever.
                    (opts, SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None))
                } else {
                    // A local file needs no liveness ping before each use (one round trip
                    // less per audit batch).
                    (opts.journal_mode(SqliteJournalMode::Wal), SqlitePoolOptions::new().max_connections(8).test_before_acquire(false))
                };
                let path = opts.get_filename().to_owned();
                let pool = pool.connect_with(opts).await.map_err(|e| AuditError::Connect { backend: "sqlite", reason: e.to_string() })?;
                let writer = if memory { None } else { Some(Arc::new(SqliteWriter::open(&path)?)) };
                Ok(Db::Sqlite(SqliteStore { pool, writer }))
            }
            "postgres" | "postgresql" => {
                let opts = PgConnectOptions::from_str(url)
                    .map_err(|e| AuditError::Connect { backend: "postgres", reason: e.to_string() })?
                    .options([("synchronous_commit", "on")])
                    .statement_cache_capacity(STATEMENT_CACHE);
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(|e| AuditError::Connect { backend: "postgres", reason: e.to_string() })?;
                Ok(Db::Postgres(pool))
            }
            other => Err(AuditError::UnsupportedUrl { scheme: other.chars().take(32).collect() }),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether audit batches run on the calling thread, on the audit log's own SQLite
    /// connection ([`Db::begin_in_place`]), rather than through the pool.
    pub(crate) fn commits_in_place(&self) -> bool {
        matches!(self, Db::Sqlite(s) if s.writer().is_some())
    }

    /// The SQLite pool, when this is SQLite.
    pub fn as_sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Db::Sqlite(s) => Some(&s.pool),
            Db::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when this is PostgreSQL.
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match self {
            Db::Postgres(p) => Some(p),
            Db::Sqlite(_) => None,
        }
    }

    /// Applies the pending migrations of `set` for this backend, checking that those
    /// already applied have not changed.
    pub async fn run_migrations(&self, set: &MigrationSet) -> Result<(), AuditError> {
        if set.name.is_empty() || !set.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(AuditError::Migrate { set: set.name.to_owned(), reason: "a set name is lowercase letters, digits and '_'".into() });
        }
        let steps = match self {
            Db::Sqlite(_) => set.sqlite,
            Db::Postgres(_) => set.postgres,
        };
        let migrations = steps
            .iter()
            .map(|m| Migration::new(m.version, m.description.into(), MigrationType::Simple, m.sql.into_sql_str(), false))
            .collect();
        let mut migrator = Migrator::with_migrations(migrations);
        migrator.dangerous_set_table_name(format!("_medicodax_{}_migrations", set.name));
        let err = |e: sqlx::migrate::MigrateError| AuditError::Migrate { set: set.name.to_owned(), reason: e.to_string() };
        match self {
            Db::Sqlite(s) => migrator.run(&s.pool).await.map_err(err),
            Db::Postgres(p) => migrator.run(p).await.map_err(err),
        }
    }

    /// The statement that opens a write transaction: SQLite takes the write lock at once
    /// (so a batch never fails to upgrade a read lock), PostgreSQL needs nothing special.
    pub(crate) fn begin_write(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }

    /// Closes every connection (after the audit writer has shut down).
    pub async fn close(&self) {
        if let Db::Sqlite(s) = self
            && let Some(w) = s.writer()
        {
            w.close();
        }
        with_pool!(self, p => p.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_are_refused_with_the_fix() {
        let e = Db::connect("mysql://root@localhost/x").await.unwrap_err();
        assert!(matches!(&e, AuditError::UnsupportedUrl { scheme } if scheme == "mysql"), "{e}");
        assert!(e.to_string().contains("postgres://"), "{e}");
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_sets_are_separate() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        db.run_migrations(&AUDIT_MIGRATIONS).await.unwrap();
        static OTHER: MigrationSet = MigrationSet {
            name: "other",
            sqlite: &[SqlMigration { version: 1, description: "t", sql: "CREATE TABLE other_t (x INTEGER)" }],
            postgres: &[],
        };
        db.run_migrations(&OTHER).await.unwrap();
        db.run_migrations(&OTHER).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_medicodax%' ESCAPE '\\' ORDER BY name")
            .fetch_all(db.as_sqlite().unwrap())
            .await
            .unwrap();
        assert_eq!(tables, ["_medicodax_audit_migrations", "_medicodax_other_migrations"]);
        static BAD: MigrationSet = MigrationSet { name: "Bad-Name", sqlite: &[], postgres: &[] };
        assert!(matches!(db.run_migrations(&BAD).await, Err(AuditError::Migrate { .. })));
    }

    #[tokio::test]
    async fn a_file_database_uses_wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let db = Db::connect(&url).await.unwrap();
        let pool = db.as_sqlite().unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(pool).await.unwrap();
        assert_eq!((mode.as_str(), sync, busy), ("wal", 2, 5000));
        // The audit writer's own connection: the same durability, or acknowledged
        // appends could be lost.
        let Db::Sqlite(store) = &db else { unreachable!() };
        let writer = store.writer().expect("a database file has a writer connection");
        let pragmas = writer
            .run_blocking(|c| {
                let text = |name: &str| c.pragma_query_value(None, name, |r| r.get::<_, String>(0)).unwrap();
                let int = |name: &str| c.pragma_query_value(None, name, |r| r.get::<_, i64>(0)).unwrap();
                (text("journal_mode"), int("synchronous"), int("busy_timeout"), int("foreign_keys"))
            })
            .unwrap();
        // busy_timeout 0: lock waits happen between non-blocking attempts (begin_in_place).
        assert_eq!(pragmas, ("wal".to_owned(), 2, 0, 1));
        db.close().await;
        assert!(matches!(writer.run_blocking(|_| ()), Err(AuditError::Closed)), "a closed writer takes no more work");
    }

    #[tokio::test]
    async fn an_in_memory_database_writes_through_its_one_pool_connection() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        let Db::Sqlite(store) = &db else { unreachable!() };
        assert!(store.writer().is_none(), "a second connection to :memory: would be another database");
        assert!(!db.commits_in_place());
        assert!(db.begin_in_place().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_in_place_transaction_dropped_uncommitted_rolls_back_and_frees_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("a.db").display())).await.unwrap();
        assert!(db.commits_in_place());
        let txn = db.begin_in_place().await.unwrap().expect("a database file has its own connection");
        let Db::Sqlite(store) = &db else { unreachable!() };
        let writer = store.writer().unwrap();
        assert!(!writer.run_blocking(|c| c.is_autocommit()).unwrap(), "the write transaction is open");
        writer.run_blocking(|c| c.execute_batch("CREATE TABLE scratch (x INTEGER); INSERT INTO scratch VALUES (1)")).unwrap().unwrap();
        drop(txn);
        assert!(writer.run_blocking(|c| c.is_autocommit()).unwrap(), "rolled back");
        // The lock is free for the pool, and what the dropped transaction did is gone.
        let gone: Option<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'scratch'").fetch_optional(&store.pool).await.unwrap();
        assert_eq!(gone, None);
        sqlx::query("CREATE TABLE other (x INTEGER)").execute(&store.pool).await.unwrap();
        assert!(db.begin_in_place().await.unwrap().is_some(), "the next batch can begin");
    }
}
