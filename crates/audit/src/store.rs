//! The audit tables: written once per batch by the writer, read by verify, prove, tail
//! and export. Every query is written once and runs on both backends ([`with_pool!`]).

use crate::checkpoint::StoredCheckpoint;
use crate::db::Db;
use crate::entry::{Prepared, RawEntry, TailEntry, entry_bytes};
use crate::error::{AuditError, to_i64, to_u64};
use crate::with_pool;
use medicodax_wire::hash::{Digest32, leaf_hash_bytes};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashSet;

/// A call id to consume atomically with an intent record: refused if (`iss`, `jti`) is
/// present and not expired.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplayKey {
    /// The agent (`iss`).
    pub iss: String,
    /// The call's `jti`.
    pub jti: String,
    /// Unix seconds until which the pair stays used (the call's `exp` + leeway).
    pub expires_at: i64,
}

/// One append of a batch, as the leader hands it to the store.
pub(crate) struct BatchItem {
    pub prepared: Prepared,
    pub replay: Option<ReplayKey>,
}

/// What the store did with one item of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ItemResult {
    /// Written at `seq` with this leaf hash.
    Written { seq: u64, leaf: Digest32 },
    /// Refused as a replay; nothing written.
    Replayed,
}

/// Rows per multi-row statement. A batch of up to this many records is one statement
/// per table, so a batch costs BEGIN, one upsert, one insert and COMMIT; each backend
/// then caches at most this many statement shapes per table (see the statement cache
/// capacity in `db.rs`).
pub(crate) const MAX_CHUNK: usize = 64;

fn chunks(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(MAX_CHUNK).map(move |start| start..(start + MAX_CHUNK).min(n))
}

/// `VALUES ($1,..,$cols),(..)` for `rows` rows.
fn values(cols: usize, rows: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

fn insert_entries_sql(rows: usize) -> String {
    format!("INSERT INTO audit_entries (seq, kind, agent, acting_user, jti, time_ms, canonical, leaf_hash) VALUES {}", values(8, rows))
}

fn upsert_replay_sql(rows: usize) -> String {
    format!(
        "INSERT INTO audit_replay (iss, jti, expires_at) VALUES {} ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE audit_replay.expires_at <= ${} RETURNING iss, jti",
        values(3, rows),
        rows * 3 + 1
    )
}

const ENTRY_COLUMNS: &str = "seq, kind, agent, acting_user, jti, time_ms, canonical, leaf_hash";

macro_rules! raw_entry {
    ($row:expr) => {{
        let r = &$row;
        RawEntry {
            seq: r.try_get("seq")?,
            kind: r.try_get("kind")?,
            agent: r.try_get("agent")?,
            user: r.try_get("acting_user")?,
            jti: r.try_get("jti")?,
            time_ms: r.try_get("time_ms")?,
            canonical: r.try_get("canonical")?,
            leaf_hash: r.try_get("leaf_hash")?,
        }
    }};
}

macro_rules! stored_checkpoint {
    ($row:expr) => {{
        let r = &$row;
        RawCheckpoint { id: r.try_get("id")?, size: r.try_get("size")?, root: r.try_get("root")?, time: r.try_get("time")?, kid: r.try_get("kid")?, jws: r.try_get("jws")? }
    }};
}

/// A checkpoint row as read.
pub(crate) struct RawCheckpoint {
    pub id: i64,
    pub size: i64,
    pub root: String,
    pub time: i64,
    pub kid: String,
    pub jws: String,
}

impl RawCheckpoint {
    fn checked(self) -> Result<StoredCheckpoint, AuditError> {
        Ok(StoredCheckpoint { id: self.id, size: to_u64("checkpoint", self.size)?, root: self.root, time: self.time, kid: self.kid, jws: self.jws })
    }
}

/// Whether each item competes for its replay key in the store: the first occurrence of
/// an (`iss`, `jti`) pair in a batch does, a later one is a replay of it (items without
/// a key are always written).
fn first_of_pairs(items: &[BatchItem]) -> Vec<bool> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    items.iter().map(|it| it.replay.as_ref().is_none_or(|k| seen.insert((k.iss.as_str(), k.jti.as_str())))).collect()
}

/// A record of a batch numbered and encoded for its row.
struct NumberedRow {
    seq: i64,
    /// Its index in the batch.
    item: usize,
    bytes: Vec<u8>,
    leaf: Digest32,
}

/// Numbers, from `start_seq`, the items to write: those without a replay key, and those
/// whose key is the first of its pair in the batch and was `accepted` by the store.
fn number(items: &[BatchItem], first: &[bool], accepted: impl Fn(&ReplayKey) -> bool, start_seq: u64) -> Result<(Vec<ItemResult>, Vec<NumberedRow>), AuditError> {
    let mut results = Vec::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    let mut seq = start_seq;
    for (i, (it, first)) in items.iter().zip(first).enumerate() {
        let ok = match &it.replay {
            None => true,
            Some(k) => *first && accepted(k),
        };
        if !ok {
            results.push(ItemResult::Replayed);
            continue;
        }
        if seq > crate::entry::MAX_SEQ {
            return Err(AuditError::OutOfRange { what: "seq", value: seq });
        }
        let bytes = entry_bytes(seq, &it.prepared.record_jcs);
        let leaf = leaf_hash_bytes(&bytes);
        rows.push(NumberedRow { seq: to_i64("seq", seq)?, item: i, bytes, leaf });
        results.push(ItemResult::Written { seq, leaf });
        seq += 1;
    }
    Ok((results, rows))
}

/// The write transaction of one batch on a SQLite file, opened by [`Db::begin_in_place`]:
/// [`InPlaceTxn::commit`] writes and commits the batch on the calling thread, which it
/// blocks until the commit is durable (no await: a batch once taken is answered, whatever
/// happens to the task); dropped without committing, it rolls back.
pub(crate) struct InPlaceTxn {
    writer: std::sync::Arc<crate::sqlite_writer::SqliteWriter>,
    /// Committed or rolled back: nothing left to undo.
    settled: bool,
}

impl InPlaceTxn {
    /// [`Db::commit_batch`] in this transaction.
    pub(crate) fn commit(mut self, start_seq: u64, now_unix: i64, items: &[BatchItem], numbered: impl FnOnce(&[ItemResult])) -> Result<Vec<ItemResult>, AuditError> {
        let result = self.writer.run_blocking(|conn| commit_batch_sqlite(conn, start_seq, now_unix, items, numbered));
        self.settled = true;
        result?
    }
}

impl Drop for InPlaceTxn {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.writer.run_blocking(crate::sqlite_writer::rollback);
        }
    }
}

/// [`Db::commit_batch`] on the audit log's own SQLite connection, inside the write
/// transaction [`Db::begin_in_place`] opened: one statement per row (prepared once per
/// connection), no thread hand-off in between; COMMIT, or ROLLBACK on any error.
fn commit_batch_sqlite(
    conn: &mut rusqlite::Connection,
    start_seq: u64,
    now_unix: i64,
    items: &[BatchItem],
    numbered: impl FnOnce(&[ItemResult]),
) -> Result<Vec<ItemResult>, AuditError> {
    let result = write_rows(conn, start_seq, now_unix, items, numbered).and_then(|results| {
        conn.execute_batch("COMMIT").map_err(crate::sqlite_writer::store_err("committing audit records"))?;
        Ok(results)
    });
    if result.is_err() {
        crate::sqlite_writer::rollback(conn);
    }
    result
}

/// The statements of [`commit_batch_sqlite`], before its COMMIT.
fn write_rows(conn: &rusqlite::Connection, start_seq: u64, now_unix: i64, items: &[BatchItem], numbered: impl FnOnce(&[ItemResult])) -> Result<Vec<ItemResult>, AuditError> {
    use crate::sqlite_writer::store_err;
    use rusqlite::{OptionalExtension, params};
    let first = first_of_pairs(items);
    let tx = conn;
    let mut accepted: HashSet<(&str, &str)> = HashSet::new();
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO audit_replay (iss, jti, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at \
                 WHERE audit_replay.expires_at <= ?4 RETURNING 1",
            )
            .map_err(store_err("recording call ids"))?;
        for (it, f) in items.iter().zip(&first) {
            if let (Some(k), true) = (&it.replay, *f) {
                let won = upsert.query_row(params![k.iss, k.jti, k.expires_at, now_unix], |_| Ok(())).optional().map_err(store_err("recording call ids"))?;
                if won.is_some() {
                    accepted.insert((k.iss.as_str(), k.jti.as_str()));
                }
            }
        }
    }
    let (results, rows) = number(items, &first, |k| accepted.contains(&(k.iss.as_str(), k.jti.as_str())), start_seq)?;
    numbered(&results);
    {
        let mut insert = tx
            .prepare_cached("INSERT INTO audit_entries (seq, kind, agent, acting_user, jti, time_ms, canonical, leaf_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .map_err(store_err("writing audit records"))?;
        for row in &rows {
            let p = &items[row.item].prepared;
            insert
                .execute(params![row.seq, p.kind, p.agent, p.user, p.jti, p.time_ms, row.bytes, row.leaf.as_slice()])
                .map_err(store_err("writing audit records"))?;
        }
    }
    Ok(results)
}

impl Db {
    /// Writes one batch in one transaction: consumes the replay keys (refusing used,
    /// unexpired ones, and repeats within the batch), numbers the remaining records from
    /// `start_seq` in order, inserts them, and commits (one fsync). On error nothing is
    /// written.
    /// `numbered` is called once the batch's records are numbered and hashed, before they
    /// are written and committed (so callers can prepare what depends on `seq` and the leaf
    /// hash while the commit's fsync runs; nothing may leave before the commit succeeds).
    /// This runs through the pool (PostgreSQL, in-memory SQLite); a SQLite file uses
    /// [`InPlaceTxn::commit`].
    pub(crate) async fn commit_batch(&self, start_seq: u64, now_unix: i64, items: &[BatchItem], numbered: impl FnOnce(&[ItemResult]) + Send) -> Result<Vec<ItemResult>, AuditError> {
        let first = first_of_pairs(items);
        let contenders: Vec<&ReplayKey> = items.iter().zip(&first).filter(|(_, f)| **f).filter_map(|(it, _)| it.replay.as_ref()).collect();
        let begin = self.begin_write();
        with_pool!(self, pool => async {
            let mut tx = pool.begin_with(begin).await.map_err(AuditError::store("beginning a batch"))?;
            let mut accepted = HashSet::new();
            for range in chunks(contenders.len()) {
                let sql = upsert_replay_sql(range.len());
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for k in &contenders[range] {
                    q = q.bind(k.iss.as_str()).bind(k.jti.as_str()).bind(k.expires_at);
                }
                let rows = q.bind(now_unix).fetch_all(&mut *tx).await.map_err(AuditError::store("recording call ids"))?;
                for r in rows {
                    let pair: (String, String) = (r.try_get("iss").map_err(AuditError::store("recording call ids"))?, r.try_get("jti").map_err(AuditError::store("recording call ids"))?);
                    accepted.insert(pair);
                }
            }
            let (results, rows) = number(items, &first, |k| accepted.contains(&(k.iss.clone(), k.jti.clone())), start_seq)?;
            numbered(&results);
            for range in chunks(rows.len()) {
                let sql = insert_entries_sql(range.len());
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for row in &rows[range] {
                    let p = &items[row.item].prepared;
                    q = q
                        .bind(row.seq)
                        .bind(p.kind)
                        .bind(p.agent.as_deref())
                        .bind(p.user.as_deref())
                        .bind(p.jti.as_deref())
                        .bind(p.time_ms)
                        .bind(row.bytes.as_slice())
                        .bind(row.leaf.as_slice());
                }
                q.execute(&mut *tx).await.map_err(AuditError::store("writing audit records"))?;
            }
            tx.commit().await.map_err(AuditError::store("committing audit records"))?;
            Ok(results)
        }.await)
    }

    /// Opens the write transaction of the next batch of a SQLite file, on the audit
    /// log's own connection (`Ok(None)` for a store that commits through its pool:
    /// PostgreSQL, in-memory SQLite). While another connection holds the write lock it
    /// waits between attempts without blocking the thread (so that connection's own task
    /// can finish, even on a current-thread runtime), for at most the busy timeout; then
    /// it fails. Cancelling it leaves no transaction open.
    pub(crate) async fn begin_in_place(&self) -> Result<Option<InPlaceTxn>, AuditError> {
        let Db::Sqlite(store) = self else { return Ok(None) };
        let Some(writer) = store.writer_arc() else { return Ok(None) };
        // About the busy timeout: a few immediate retries, then 1 ms pauses.
        const YIELDS: u32 = 16;
        let max_sleeps = u32::try_from(crate::db::BUSY_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
        for attempt in 0..YIELDS + max_sleeps {
            if writer.try_begin()? {
                return Ok(Some(InPlaceTxn { writer, settled: false }));
            }
            if attempt < YIELDS {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        Err(AuditError::Store {
            op: "beginning a batch",
            reason: format!(
                "another connection held the database's write lock for {} s; check for another program writing the database (a medicodax command on the same data folder, a backup, an sqlite3 shell)",
                crate::db::BUSY_TIMEOUT.as_secs()
            ),
        })
    }

    /// The number of entries: the highest stored `seq` + 1 (0 when empty).
    pub async fn size(&self) -> Result<u64, AuditError> {
        let max: Option<i64> = with_pool!(self, pool => sqlx::query_scalar("SELECT MAX(seq) FROM audit_entries").fetch_one(pool).await)
            .map_err(AuditError::store("reading the log size"))?;
        match max {
            None => Ok(0),
            Some(m) => Ok(to_u64("entry", m)? + 1),
        }
    }

    /// Up to `limit` rows with `seq > after` (all rows from the start when `after` is
    /// `None`), in `seq` order.
    pub(crate) async fn raw_entries(&self, after: Option<i64>, limit: i64) -> Result<Vec<RawEntry>, AuditError> {
        let op = "reading audit records";
        let res: Result<Vec<RawEntry>, sqlx::Error> = with_pool!(self, pool => async {
            let rows = match after {
                None => sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM audit_entries ORDER BY seq LIMIT $1"))).bind(limit).fetch_all(pool).await?,
                Some(a) => sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2")))
                    .bind(a)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
            };
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(raw_entry!(r));
            }
            Ok(out)
        }.await);
        res.map_err(AuditError::store(op))
    }

    /// The last `n` rows, in `seq` order.
    pub(crate) async fn raw_last(&self, n: u64) -> Result<Vec<RawEntry>, AuditError> {
        let n = to_i64("limit", n)?;
        let res: Result<Vec<RawEntry>, sqlx::Error> = with_pool!(self, pool => async {
            let rows = sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM audit_entries ORDER BY seq DESC LIMIT $1"))).bind(n).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows.into_iter().rev() {
                out.push(raw_entry!(r));
            }
            Ok(out)
        }.await);
        res.map_err(AuditError::store("reading the last audit records"))
    }

    /// The entry at `seq`, decoded and checked against its row.
    pub async fn entry(&self, seq: u64) -> Result<Option<TailEntry>, AuditError> {
        let s = to_i64("seq", seq)?;
        let res: Result<Option<RawEntry>, sqlx::Error> = with_pool!(self, pool => async {
            match sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq = $1"))).bind(s).fetch_optional(pool).await? {
                Some(r) => Ok(Some(raw_entry!(r))),
                None => Ok(None),
            }
        }.await);
        res.map_err(AuditError::store("reading an audit record"))?.map(RawEntry::into_tail).transpose()
    }

    /// The stored leaf hashes `[from, to)`, checking that every seq is present once.
    pub(crate) async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Digest32>, AuditError> {
        let (a, b) = (to_i64("seq", from)?, to_i64("seq", to)?);
        let res: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> = with_pool!(self, pool => async {
            let rows = sqlx::query("SELECT seq, leaf_hash FROM audit_entries WHERE seq >= $1 AND seq < $2 ORDER BY seq").bind(a).bind(b).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push((r.try_get("seq")?, r.try_get("leaf_hash")?));
            }
            Ok(out)
        }.await);
        let rows = res.map_err(AuditError::store("reading leaf hashes"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, (seq, h)) in rows.into_iter().enumerate() {
            let want = a + i as i64;
            if seq != want {
                return Err(AuditError::Corrupt { what: "entry", at: want, reason: format!("missing (the next stored seq is {seq})") });
            }
            out.push(<[u8; 32]>::try_from(h.as_slice()).map_err(|_| AuditError::Corrupt { what: "entry", at: seq, reason: "leaf hash is not 32 bytes".into() })?);
        }
        if out.len() as i64 != b - a {
            return Err(AuditError::Corrupt { what: "entry", at: a + out.len() as i64, reason: "missing (the log ends early)".into() });
        }
        Ok(out)
    }

    /// Feeds the stored leaf hashes `[from, to)` to `f` in order, a page at a time, so a
    /// large log is never held in memory; fails on a missing or malformed row.
    pub(crate) async fn each_leaf_hash(&self, from: u64, to: u64, mut f: impl FnMut(Digest32)) -> Result<(), AuditError> {
        const PAGE: u64 = 65_536;
        let mut a = from;
        while a < to {
            let b = to.min(a.saturating_add(PAGE));
            for l in self.leaf_hashes(a, b).await? {
                f(l);
            }
            a = b;
        }
        Ok(())
    }

    /// Stores a signed checkpoint.
    pub(crate) async fn insert_checkpoint(&self, size: u64, root: &str, time: i64, kid: &str, jws: &str) -> Result<i64, AuditError> {
        let size = to_i64("size", size)?;
        with_pool!(self, pool => sqlx::query_scalar("INSERT INTO audit_checkpoints (size, root, time, kid, jws) VALUES ($1, $2, $3, $4, $5) RETURNING id")
            .bind(size).bind(root).bind(time).bind(kid).bind(jws).fetch_one(pool).await)
        .map_err(AuditError::store("storing a checkpoint"))
    }

    /// Every stored checkpoint, oldest first, as stored (not verified).
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, AuditError> {
        self.raw_checkpoints().await?.into_iter().map(RawCheckpoint::checked).collect()
    }

    pub(crate) async fn raw_checkpoints(&self) -> Result<Vec<RawCheckpoint>, AuditError> {
        let res: Result<Vec<RawCheckpoint>, sqlx::Error> = with_pool!(self, pool => async {
            let rows = sqlx::query("SELECT id, size, root, time, kid, jws FROM audit_checkpoints ORDER BY id").fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(stored_checkpoint!(r));
            }
            Ok(out)
        }.await);
        res.map_err(AuditError::store("reading checkpoints"))
    }

    /// The log's name: the `origin` of its first stored checkpoint (read, not verified;
    /// `verify` checks every checkpoint's signature). `None` for a log never checkpointed.
    /// The gateway keeps naming its checkpoints with it even if its audience changes, so
    /// one log keeps one name.
    pub async fn log_origin(&self) -> Result<Option<String>, AuditError> {
        let first = self.checkpoints().await?.into_iter().min_by_key(|c| c.id);
        Ok(first.and_then(|c| crate::checkpoint::origin_of(&c.jws)))
    }

    /// The most recent checkpoint (the largest size; the latest of those), as stored.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let res: Result<Option<RawCheckpoint>, sqlx::Error> = with_pool!(self, pool => async {
            match sqlx::query("SELECT id, size, root, time, kid, jws FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1").fetch_optional(pool).await? {
                Some(r) => Ok(Some(stored_checkpoint!(r))),
                None => Ok(None),
            }
        }.await);
        res.map_err(AuditError::store("reading the latest checkpoint"))?.map(RawCheckpoint::checked).transpose()
    }

    /// Deletes used call ids that expired at or before `now_unix`; returns how many.
    pub async fn purge_expired_replays(&self, now_unix: i64) -> Result<u64, AuditError> {
        with_pool!(self, pool => sqlx::query("DELETE FROM audit_replay WHERE expires_at <= $1").bind(now_unix).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(AuditError::store("purging expired call ids"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_in_at_most_max_chunk_rows() {
        for n in 0..300usize {
            let v: Vec<_> = chunks(n).collect();
            assert_eq!(v.iter().map(|r| r.len()).sum::<usize>(), n);
            assert!(v.iter().all(|r| !r.is_empty() && r.len() <= MAX_CHUNK));
            assert!(v.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(v.len(), n.div_ceil(MAX_CHUNK));
        }
        assert_eq!(chunks(7).map(|r| r.len()).collect::<Vec<_>>(), [7]);
        assert_eq!(chunks(130).map(|r| r.len()).collect::<Vec<_>>(), [64, 64, 2]);
    }

    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(values(3, 2), "($1,$2,$3),($4,$5,$6)");
        assert!(upsert_replay_sql(2).contains("<= $7 RETURNING"));
    }
}
