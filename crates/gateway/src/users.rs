//! Dashboard users: argon2id password hashes and role names, kept in the store.
//!
//! A user's roles serve two purposes: the dashboard's own roles (`admin` manages users
//! and sees everything, `auditor` sees the audit trail, `coder` reviews worksheets), and
//! policy roles of the same name in the configuration's `[roles]` (what an agent acting
//! for the user may see). Passwords are stored only as argon2id PHC strings; a login for
//! an unknown name spends the same work as a wrong password.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use medicodax_audit::{Db, MigrationSet, SqlMigration, with_pool};
use serde::Serialize;
use sqlx::Row as _;

/// The gateway's tables: users and coding worksheets reviewed in the dashboard.
pub static GATEWAY_MIGRATIONS: MigrationSet = MigrationSet {
    name: "gateway",
    sqlite: &[SqlMigration {
        version: 1,
        description: "users and worksheets",
        sql: "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, roles TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);
              CREATE TABLE worksheets (encounter TEXT NOT NULL, connection TEXT NOT NULL, patient TEXT NOT NULL, class TEXT NOT NULL, agent TEXT NOT NULL, coded_ms BIGINT NOT NULL, pipeline_ms BIGINT NOT NULL, baseline_min DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, reviewer TEXT, review_ms BIGINT, reviewed_at_ms BIGINT, PRIMARY KEY (connection, encounter));",
    }, SqlMigration {
        version: 2,
        description: "the codes a coder settled on when editing a worksheet",
        sql: "ALTER TABLE worksheets ADD COLUMN final_codes TEXT",
    }],
    postgres: &[SqlMigration {
        version: 1,
        description: "users and worksheets",
        sql: "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, roles TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);
              CREATE TABLE worksheets (encounter TEXT NOT NULL, connection TEXT NOT NULL, patient TEXT NOT NULL, class TEXT NOT NULL, agent TEXT NOT NULL, coded_ms BIGINT NOT NULL, pipeline_ms BIGINT NOT NULL, baseline_min DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, reviewer TEXT, review_ms BIGINT, reviewed_at_ms BIGINT, PRIMARY KEY (connection, encounter));",
    }, SqlMigration {
        version: 2,
        description: "the codes a coder settled on when editing a worksheet",
        sql: "ALTER TABLE worksheets ADD COLUMN final_codes TEXT",
    }],
};

/// The dashboard roles.
pub const DASHBOARD_ROLES: [&str; 3] = ["admin", "coder", "auditor"];

/// Errors of the user store.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Bad user name.
    #[error("a user name is 1-64 characters from A-Z a-z 0-9 - _ . @")]
    BadName,
    /// Bad role name.
    #[error("role {0:?} is not a valid role name (1-64 characters from A-Z a-z 0-9 - _ .)")]
    BadRole(String),
    /// Password too short or too long.
    #[error("a password is 12 to 1024 characters")]
    BadPassword,
    /// The user exists.
    #[error("user {0:?} already exists (names are compared without case); to change its password use the Users page or, with no gateway running, `medicodax users passwd`")]
    Exists(String),
    /// No such user.
    #[error("no user named {0:?}")]
    Missing(String),
    /// Hashing failed.
    #[error("password hashing failed")]
    Hash,
    /// The store failed.
    #[error("user store: {0}")]
    Store(String),
}

/// A user as listed (never the hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Created, Unix ms.
    pub created_ms: i64,
}

impl User {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

fn valid_user(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Hashes a password with argon2id (default parameters) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.chars().count() < 12 || password.len() > 1024 {
        return Err(UserError::BadPassword);
    }
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|_| UserError::Hash)?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| UserError::Hash)
}

/// Checks a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, checked against when the user does not exist, so a
/// login for an unknown name costs the same as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| random_hex().and_then(|p| hash_password(&p)).unwrap_or_default())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], UserError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = [0u8; N];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| UserError::Hash)?;
    Ok(b)
}

fn random_hex() -> Result<String, UserError> {
    Ok(random_bytes::<24>()?.iter().map(|x| format!("{x:02x}")).collect())
}

/// A random password for the first `admin` (printed once, stored only as a hash).
pub fn random_password() -> Result<String, UserError> {
    random_hex()
}

/// The user store.
#[derive(Clone, Debug)]
pub struct UserStore {
    db: Db,
    cache: Option<std::sync::Arc<UserCache>>,
}

/// A short-lived cache of user records, so the call path does not read the store for
/// every call. Entries live `ttl` on the injected clock; this process's own changes
/// (add, passwd) invalidate at once, changes made by another process show after `ttl`.
#[derive(Debug)]
struct UserCache {
    ttl: std::time::Duration,
    clock: medicodax_clock::SharedClock,
    map: std::sync::Mutex<std::collections::HashMap<String, (medicodax_clock::Mono, Option<User>)>>,
}

fn store_err(e: impl std::fmt::Display) -> UserError {
    UserError::Store(e.to_string())
}

impl UserStore {
    /// Opens the store on `db`, creating the gateway's tables if needed.
    pub async fn open(db: Db) -> Result<Self, UserError> {
        db.run_migrations(&GATEWAY_MIGRATIONS).await.map_err(store_err)?;
        Ok(UserStore { db, cache: None })
    }

    /// Adds a user.
    pub async fn add(&self, name: &str, password: &str, roles: &[String], now_ms: i64) -> Result<(), UserError> {
        if !valid_user(name) {
            return Err(UserError::BadName);
        }
        for r in roles {
            if !medicodax_wire::tools::valid_connection_name(r) {
                return Err(UserError::BadRole(r.chars().take(64).collect()));
            }
        }
        // Names differing only in case would be look-alike accounts: one of them is enough.
        let existing: Option<String> = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT name FROM users WHERE lower(name) = lower($1)").bind(name).fetch_optional(pool).await
        })
        .map_err(store_err)?;
        if let Some(existing) = existing {
            return Err(UserError::Exists(existing));
        }
        let hash = hash_password(password)?;
        let mut unique: Vec<&str> = Vec::with_capacity(roles.len());
        for r in roles {
            if !unique.contains(&r.as_str()) {
                unique.push(r);
            }
        }
        let roles = unique.join(",");
        let res = with_pool!(&self.db, pool => {
            sqlx::query("INSERT INTO users (name, password_hash, roles, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $4)")
                .bind(name).bind(&hash).bind(&roles).bind(now_ms)
                .execute(pool).await.map(|_| ())
        });
        self.invalidate(name);
        match res {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(UserError::Exists(name.to_owned())),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Changes a user's password.
    pub async fn set_password(&self, name: &str, password: &str, now_ms: i64) -> Result<(), UserError> {
        let hash = hash_password(password)?;
        let n = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE users SET password_hash = $1, updated_ms = $2 WHERE name = $3").bind(&hash).bind(now_ms).bind(name)
                .execute(pool).await.map(|r| r.rows_affected())
        })
        .map_err(store_err)?;
        self.invalidate(name);
        if n == 0 { Err(UserError::Missing(name.to_owned())) } else { Ok(()) }
    }

    /// All users, by name.
    pub async fn list(&self) -> Result<Vec<User>, UserError> {
        let rows = with_pool!(&self.db, pool => {
            sqlx::query("SELECT name, roles, created_ms FROM users ORDER BY name").fetch_all(pool).await.map(|rows| {
                rows.iter().map(|r| (r.try_get::<String, _>("name"), r.try_get::<String, _>("roles"), r.try_get::<i64, _>("created_ms"))).collect::<Vec<_>>()
            })
        })
        .map_err(store_err)?;
        rows.into_iter()
            .map(|(n, r, c)| Ok(User { name: n.map_err(store_err)?, roles: split_roles(&r.map_err(store_err)?), created_ms: c.map_err(store_err)? }))
            .collect()
    }

    /// One user.
    pub async fn get(&self, name: &str) -> Result<Option<User>, UserError> {
        if let Some(c) = &self.cache {
            let now = c.clock.monotonic();
            if let Some((at, u)) = c.map.lock().unwrap_or_else(|p| p.into_inner()).get(name)
                && now.since(*at) < c.ttl
            {
                return Ok(u.clone());
            }
            let u = self.fetch(name).await?.map(|(u, _)| u);
            let mut map = c.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 10_000 {
                map.clear();
            }
            map.insert(name.to_owned(), (now, u.clone()));
            return Ok(u);
        }
        Ok(self.fetch(name).await?.map(|(u, _)| u))
    }

    /// The same store with a cache of user records living `ttl` on `clock`.
    pub fn with_cache(mut self, ttl: std::time::Duration, clock: medicodax_clock::SharedClock) -> Self {
        self.cache = Some(std::sync::Arc::new(UserCache { ttl, clock, map: std::sync::Mutex::new(std::collections::HashMap::new()) }));
        self
    }

    fn invalidate(&self, name: &str) {
        if let Some(c) = &self.cache {
            c.map.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        }
    }

    async fn fetch(&self, name: &str) -> Result<Option<(User, String)>, UserError> {
        let row = with_pool!(&self.db, pool => {
            sqlx::query("SELECT name, roles, created_ms, password_hash FROM users WHERE name = $1").bind(name).fetch_optional(pool).await.map(|o| {
                o.map(|r| (r.try_get::<String, _>("name"), r.try_get::<String, _>("roles"), r.try_get::<i64, _>("created_ms"), r.try_get::<String, _>("password_hash")))
            })
        })
        .map_err(store_err)?;
        match row {
            None => Ok(None),
            Some((n, r, c, h)) => Ok(Some((
                User { name: n.map_err(store_err)?, roles: split_roles(&r.map_err(store_err)?), created_ms: c.map_err(store_err)? },
                h.map_err(store_err)?,
            ))),
        }
    }

    /// Checks a login; returns the user on success. Unknown names cost the same work.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<Option<User>, UserError> {
        if !valid_user(name) || password.len() > 1024 {
            let _ = verify_password(password.get(..1024).unwrap_or(""), dummy_hash());
            return Ok(None);
        }
        match self.fetch(name).await? {
            Some((user, hash)) => {
                let ok = tokio::task::spawn_blocking({
                    let password = password.to_owned();
                    move || verify_password(&password, &hash)
                })
                .await
                .unwrap_or(false);
                Ok(ok.then_some(user))
            }
            None => {
                let password = password.to_owned();
                let _ = tokio::task::spawn_blocking(move || verify_password(&password, dummy_hash())).await;
                Ok(None)
            }
        }
    }

    /// Whether any user exists (first start creates `admin`).
    pub async fn is_empty(&self) -> Result<bool, UserError> {
        Ok(self.list().await?.is_empty())
    }
}

fn split_roles(s: &str) -> Vec<String> {
    s.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert!(matches!(hash_password("short"), Err(UserError::BadPassword)));
    }

    #[tokio::test]
    async fn store_round_trip_on_sqlite() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        let users = UserStore::open(db).await.unwrap();
        assert!(users.is_empty().await.unwrap());
        users.add("coder", "a long enough password", &["coder".into()], 5).await.unwrap();
        assert!(matches!(users.add("coder", "a long enough password", &[], 6).await, Err(UserError::Exists(_))));
        assert!(matches!(users.add("bad name", "a long enough password", &[], 6).await, Err(UserError::BadName)));
        // No look-alike account differing only in case; repeated roles stored once.
        assert!(matches!(users.add("CODER", "a long enough password", &[], 6).await, Err(UserError::Exists(n)) if n == "coder"));
        users.add("dup", "a long enough password", &["coder".into(), "auditor".into(), "coder".into()], 6).await.unwrap();
        assert_eq!(users.get("dup").await.unwrap().unwrap().roles, ["coder", "auditor"]);
        let u = users.authenticate("coder", "a long enough password").await.unwrap().unwrap();
        assert_eq!(u.roles, vec!["coder"]);
        assert!(users.authenticate("coder", "wrong password!!").await.unwrap().is_none());
        assert!(users.authenticate("nobody", "a long enough password").await.unwrap().is_none());
        users.set_password("coder", "another long password", 7).await.unwrap();
        assert!(users.authenticate("coder", "another long password").await.unwrap().is_some());
        assert!(matches!(users.set_password("nobody", "another long password", 7).await, Err(UserError::Missing(_))));
        assert_eq!(users.list().await.unwrap().len(), 2);
    }
}
