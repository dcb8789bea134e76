//! Shared helpers of the audit integration tests: a fresh store per test on either
//! backend, a realistic log, and raw SQL on the stored rows.
#![allow(dead_code)]

use medicodax_audit::{AuditLog, Appended, CheckpointKeys, Db, LogConfig, with_pool};
use medicodax_clock::ManualClock;
use medicodax_jose::{Alg, PrivateKey};
use medicodax_wire::audit::{AuditRecord, IntentRecord, LogEntry, OutcomeRecord, ResourceRef, SystemEvent, UpstreamRequest};
use medicodax_wire::hash::{canonical_json, leaf_hash_bytes};
use medicodax_wire::{CALL_TYP, Decision};
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};
use std::sync::{Arc, OnceLock};

pub const NOW: i64 = 1_767_225_600;
pub const ORIGIN: &str = "http://127.0.0.1:8080";

/// A store for one test: a SQLite file in a temporary folder, or a PostgreSQL schema of
/// its own (so tests run in parallel).
pub struct TestStore {
    pub db: Db,
    pub label: &'static str,
    pub url: String,
    schema: Option<(sqlx::PgPool, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let db = Db::connect(&url).await.expect("open sqlite");
    TestStore { db, label: "sqlite", url, schema: None, _dir: Some(dir) }
}

pub fn pg_url() -> String {
    std::env::var("MEDICODAX_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub async fn postgres() -> TestStore {
    let base = pg_url();
    let admin = match tokio::time::timeout(std::time::Duration::from_secs(10), sqlx::PgPool::connect(&base)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => panic!("PostgreSQL is unreachable at {base}: {e}. Start it with scripts/test-deps.sh, or set MEDICODAX_TEST_PG_URL"),
        Err(_) => panic!("PostgreSQL at {base} did not answer within 10 s. Start it with scripts/test-deps.sh, or set MEDICODAX_TEST_PG_URL"),
    };
    let schema = format!("audit_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    let db = Db::connect(&url).await.expect("open postgres in the test schema");
    TestStore { db, label: "postgres", url, schema: Some((admin, schema)), _dir: None }
}

impl TestStore {
    /// Runs SQL (several statements allowed) directly on the store.
    pub async fn exec(&self, sql: &str) {
        let r = with_pool!(&self.db, pool => sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.map(|_| ()));
        r.unwrap_or_else(|e| panic!("[{}] {sql}: {e}", self.label));
    }

    /// Runs SQL and returns the error, if any.
    pub async fn try_exec(&self, sql: &str) -> Result<(), String> {
        with_pool!(&self.db, pool => sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.map(|_| ()).map_err(|e| e.to_string()))
    }

    /// Drops the append-only triggers, as an attacker with write access to the database would.
    pub async fn drop_guards(&self) {
        match self.label {
            "sqlite" => {
                self.exec(
                    "DROP TRIGGER audit_entries_append_only_update; DROP TRIGGER audit_entries_append_only_delete; \
                     DROP TRIGGER audit_checkpoints_append_only_update; DROP TRIGGER audit_checkpoints_append_only_delete;",
                )
                .await
            }
            _ => {
                self.exec(
                    "DROP TRIGGER audit_entries_append_only ON audit_entries; DROP TRIGGER audit_entries_no_truncate ON audit_entries; \
                     DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints; DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints;",
                )
                .await
            }
        }
    }

    /// The stored canonical bytes of `seq`.
    pub async fn canonical(&self, seq: i64) -> Vec<u8> {
        let r: Result<Vec<u8>, sqlx::Error> = with_pool!(&self.db, pool => async {
            let row = sqlx::query("SELECT canonical FROM audit_entries WHERE seq = $1").bind(seq).fetch_one(pool).await?;
            row.try_get("canonical")
        }.await);
        r.unwrap_or_else(|e| panic!("[{}] read seq {seq}: {e}", self.label))
    }

    /// Overwrites a row's bytes, and its leaf hash when given.
    pub async fn set_bytes(&self, seq: i64, bytes: &[u8], leaf: Option<[u8; 32]>) {
        let r: Result<(), sqlx::Error> = with_pool!(&self.db, pool => async {
            match leaf {
                Some(l) => sqlx::query("UPDATE audit_entries SET canonical = $1, leaf_hash = $2 WHERE seq = $3").bind(bytes).bind(l.as_slice()).bind(seq).execute(pool).await?,
                None => sqlx::query("UPDATE audit_entries SET canonical = $1 WHERE seq = $2").bind(bytes).bind(seq).execute(pool).await?,
            };
            Ok(())
        }.await);
        r.unwrap_or_else(|e| panic!("[{}] update seq {seq}: {e}", self.label));
    }

    /// Overwrites a row's bytes and leaf hash with anything at all.
    pub async fn set_raw(&self, seq: i64, bytes: &[u8], leaf: &[u8]) {
        let r: Result<(), sqlx::Error> = with_pool!(&self.db, pool => async {
            sqlx::query("UPDATE audit_entries SET canonical = $1, leaf_hash = $2 WHERE seq = $3").bind(bytes).bind(leaf).bind(seq).execute(pool).await?;
            Ok(())
        }.await);
        r.unwrap_or_else(|e| panic!("[{}] update seq {seq}: {e}", self.label));
    }

    /// Re-encodes row `seq` as `entry` with a correct leaf hash (a careful forger).
    pub async fn rewrite(&self, seq: i64, entry: &LogEntry) {
        let bytes = canonical_json(entry).unwrap();
        self.set_bytes(seq, &bytes, Some(leaf_hash_bytes(&bytes))).await;
    }

    /// Decodes row `seq`.
    pub async fn entry(&self, seq: i64) -> LogEntry {
        serde_json::from_slice(&self.canonical(seq).await).unwrap()
    }

    /// Inserts a forged row with correct hashes.
    pub async fn insert(&self, entry: &LogEntry) {
        let bytes = canonical_json(entry).unwrap();
        let leaf = leaf_hash_bytes(&bytes);
        let seq = entry.seq as i64;
        let r: Result<(), sqlx::Error> = with_pool!(&self.db, pool => async {
            sqlx::query("INSERT INTO audit_entries (seq, kind, agent, acting_user, jti, time_ms, canonical, leaf_hash) VALUES ($1, 'event', NULL, NULL, NULL, $2, $3, $4)")
                .bind(seq).bind(NOW * 1000).bind(bytes.as_slice()).bind(leaf.as_slice()).execute(pool).await?;
            Ok(())
        }.await);
        r.unwrap_or_else(|e| panic!("[{}] insert seq {seq}: {e}", self.label));
    }

    /// Drops the PostgreSQL schema of this test.
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some((admin, schema)) = &self.schema {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(admin).await;
        }
    }
}

/// The gateway key of the tests (generated once; ES384 keeps keygen fast).
pub fn gateway_key() -> Arc<PrivateKey> {
    static KEY: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(PrivateKey::generate(Alg::ES384).expect("keygen"))).clone()
}

/// The agent key that signs the calls kept in intent records.
pub fn agent_key() -> Arc<PrivateKey> {
    static KEY: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(PrivateKey::generate(Alg::ES384).expect("keygen"))).clone()
}

pub fn keys() -> CheckpointKeys {
    CheckpointKeys::from_private(&gateway_key()).unwrap()
}

pub fn config(checkpoint_every: u64) -> LogConfig {
    let mut c = LogConfig::new(ORIGIN);
    c.checkpoint_every = checkpoint_every;
    c
}

pub async fn open_log(db: &Db, clock: &ManualClock, checkpoint_every: u64) -> AuditLog {
    AuditLog::open(db.clone(), gateway_key(), clock.shared(), config(checkpoint_every)).await.expect("open log")
}

/// A signed call, as an agent sends it.
pub fn call_jws(jti: &str, tool: &str, args: serde_json::Value) -> String {
    let claims = json!({
        "iss": "coding-agent", "sub": "coder", "aud": ORIGIN, "iat": NOW, "exp": NOW + 120,
        "jti": jti, "tool": tool, "args": args, "purpose": "HOPERAT",
    });
    medicodax_jose::jws::sign(&agent_key(), CALL_TYP, &claims).unwrap()
}

pub fn intent(jti: &str, tool: &str, args: serde_json::Value) -> IntentRecord {
    let jws = call_jws(jti, tool, args.clone());
    IntentRecord {
        time_ms: NOW * 1000 + 10,
        agent: "coding-agent".into(),
        user: "coder".into(),
        jti: jti.into(),
        tool: tool.into(),
        purpose: "HOPERAT".into(),
        connection: args.get("connection").and_then(|c| c.as_str()).map(str::to_owned),
        call_hash: medicodax_wire::hash::sha256_hex(jws.as_bytes()),
        call_jws: jws,
        channel: "http".into(),
    }
}

pub fn outcome(i: &IntentRecord, intent_seq: u64, decision: Decision) -> OutcomeRecord {
    let allowed = decision == Decision::Allowed;
    OutcomeRecord {
        time_ms: i.time_ms + 42,
        agent: i.agent.clone(),
        user: i.user.clone(),
        jti: i.jti.clone(),
        intent_seq,
        decision,
        code: match decision {
            Decision::Allowed => None,
            Decision::Denied => Some("forbidden".into()),
            Decision::Failed => Some("upstream_unavailable".into()),
        },
        reason: match decision {
            Decision::Allowed => None,
            Decision::Denied => Some("scope system/Observation.rs not granted".into()),
            Decision::Failed => Some("EHR answered 503".into()),
        },
        connection: i.connection.clone(),
        granted_scopes: vec!["system/Patient.rs".into(), "system/Condition.rs".into()],
        upstream: match decision {
            Decision::Denied => vec![],
            Decision::Allowed => vec![UpstreamRequest { method: "GET".into(), path: "Condition?patient=pt-1001".into(), status: 200 }],
            Decision::Failed => vec![UpstreamRequest { method: "GET".into(), path: "Condition?patient=pt-1001".into(), status: 503 }],
        },
        resources: if allowed {
            vec![
                ResourceRef { resource_type: "Condition".into(), id: "cond-1".into(), version: Some("2".into()) },
                ResourceRef { resource_type: "Condition".into(), id: "cond-2".into(), version: None },
            ]
        } else {
            vec![]
        },
        patients: if decision == Decision::Denied { vec![] } else { vec!["pt-1001".into()] },
        warnings: vec![],
        result_hash: medicodax_wire::hash::sha256_hex(b"result"),
        latency_ms: 42,
    }
}

pub fn event(name: &str, subject: &str) -> SystemEvent {
    SystemEvent { time_ms: NOW * 1000, event: name.into(), subject: subject.into(), detail: json!({"note": "test"}) }
}

/// Writes the standard 30-record log: an event at 0, fourteen calls (intent, outcome)
/// at 1..=28 with decisions cycling allowed/denied/failed, and an event at 29.
pub async fn populate(log: &AuditLog) -> Vec<Appended> {
    let mut out = vec![log.append_event(event("gateway.start", "gateway")).await.unwrap()];
    let decisions = [Decision::Allowed, Decision::Denied, Decision::Failed];
    for c in 0..14u64 {
        let i = intent(&format!("jti-{c}"), "fhir.search", json!({"connection": "epic-sandbox", "type": "Condition", "params": [["patient", "pt-1001"]]}));
        let a = log.append_intent(i.clone(), None).await.unwrap();
        out.push(a);
        out.push(log.append_outcome(outcome(&i, a.seq, decisions[(c % 3) as usize])).await.unwrap());
    }
    out.push(log.append_event(event("key.rotation.started", "gateway")).await.unwrap());
    out
}

/// A record for forging.
pub fn forged(seq: u64) -> LogEntry {
    LogEntry { seq, record: AuditRecord::Event(event("forged", "nobody")) }
}
