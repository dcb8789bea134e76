//! The record of upstream requests made for one tool call, for its audit record.

use medicodax_wire::audit::UpstreamRequest;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Collects one [`UpstreamRequest`] per HTTP exchange with the EHR (every attempt,
/// retries and failed attempts included): method, path and query relative to the
/// connection's FHIR base, and status (0 when no answer came). Never a host or a token.
///
/// Cheap to clone; clones share the same list, so concurrent searches of one call can
/// record into one log.
#[derive(Clone, Default)]
pub struct UpstreamLog {
    entries: Arc<Mutex<Vec<UpstreamRequest>>>,
}

impl UpstreamLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn record(&self, method: &str, path: String, status: u16) {
        // A poisoned lock only means a panic elsewhere; the list itself is still whole.
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.push(UpstreamRequest { method: method.to_owned(), path, status });
    }

    /// A copy of what was recorded so far, in order.
    pub fn snapshot(&self) -> Vec<UpstreamRequest> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes what was recorded so far, leaving the log empty.
    pub fn take(&self) -> Vec<UpstreamRequest> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many requests were recorded.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for UpstreamLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths hold search values; only the count is shown.
        write!(f, "UpstreamLog({} requests)", self.len())
    }
}
