//! Several searches at once, with bounded concurrency and a result per search: the
//! building block of `encounter.bundle`, where a 403 on one type withholds that type
//! and does not fail the job (pitfall 21).

use crate::client::FhirClient;
use crate::error::FhirError;
use crate::log::UpstreamLog;
use crate::pager::SearchOutcome;
use crate::search::Search;
use futures::StreamExt;
use medicodax_wire::ResourceType;

/// The result of one search of a multi-search job.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeResult {
    /// The searched type.
    pub resource_type: ResourceType,
    /// Its outcome, or why it failed.
    pub result: Result<SearchOutcome, FhirError>,
}

impl TypeResult {
    /// True when the EHR refused access to this type (403): the gateway lists it as
    /// withheld rather than failing the job.
    pub fn withheld(&self) -> bool {
        matches!(&self.result, Err(e) if e.is_access_denied())
    }
}

impl FhirClient {
    /// Runs `searches` with at most `concurrency` in flight (at least 1), each walked to
    /// its end, and returns one result per search in the order given. A failure of one
    /// search never stops the others.
    pub async fn search_all(&self, searches: &[Search], concurrency: usize, log: &UpstreamLog) -> Vec<TypeResult> {
        futures::stream::iter(searches.iter().map(|s| async move {
            TypeResult { resource_type: s.resource_type(), result: self.search(s, log).await }
        }))
        .buffered(concurrency.max(1))
        .collect()
        .await
    }
}
