//! `audit tail`: the last entries, and following new ones as they are committed.
//!
//! Following polls the store (the CLI runs in another process than the gateway), with
//! the poll interval slept on the injected clock.

use crate::db::Db;
use crate::entry::{RawEntry, TailEntry};
use crate::error::{AuditError, to_i64};
use futures::Stream;
use medicodax_clock::SharedClock;
use std::collections::VecDeque;
use std::time::Duration;

/// The last `n` entries, oldest first.
pub async fn tail(db: &Db, n: u64) -> Result<Vec<TailEntry>, AuditError> {
    db.raw_last(n).await?.into_iter().map(RawEntry::into_tail).collect()
}

/// Entries from `from_seq` on, in order, forever: what is stored now, then each new entry
/// as it appears (checked every `poll`). A store error is yielded and following goes on
/// at the next poll.
pub fn follow(db: Db, from_seq: u64, poll: Duration, clock: SharedClock) -> impl Stream<Item = Result<TailEntry, AuditError>> + Send + 'static {
    struct State {
        db: Db,
        /// The seq of the last row read (None: read from the start).
        after: Result<Option<i64>, Option<AuditError>>,
        buf: VecDeque<RawEntry>,
        clock: SharedClock,
        poll: Duration,
        read_now: bool,
    }
    let after = from_seq.checked_sub(1).map(|a| to_i64("seq", a)).transpose().map_err(Some);
    let state = State { db, after, buf: VecDeque::new(), clock, poll, read_now: true };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(raw) = s.buf.pop_front() {
                return Some((raw.into_tail(), s));
            }
            let after = match &mut s.after {
                Ok(a) => *a,
                // A start seq out of range: say so once, then end.
                Err(e) => return e.take().map(|e| (Err(e), s)),
            };
            if !s.read_now {
                s.clock.sleep(s.poll).await;
            }
            match s.db.raw_entries(after, 500).await {
                Ok(rows) => {
                    s.read_now = !rows.is_empty(); // more may be waiting: read again at once
                    if let Some(last) = rows.last() {
                        s.after = Ok(Some(last.seq));
                    }
                    s.buf.extend(rows);
                }
                Err(e) => {
                    s.read_now = false;
                    return Some((Err(e), s));
                }
            }
        }
    })
}
