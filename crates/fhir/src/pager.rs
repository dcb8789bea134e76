//! Walking a search page by page, and collecting a walk into one result.
//!
//! [`Pager`] fetches one page per call (or as a `Stream`), so a walk over 100,000
//! resources holds one page at a time. It follows `next` links verbatim (see
//! [`crate::link`]), stops on a loop, an invalid link, a failed page or the result
//! limit, and says so: a walk never ends silently short.
//!
//! For a search the profile splits per category, the pager walks each category in
//! turn, drops resources already delivered under an earlier category (by type and
//! id), and reports a failed category as an error item before going on with the next.

use crate::bundle::{self, BundleProblem};
use crate::client::{FhirClient, Purpose, strip_bom};
use crate::error::FhirError;
use crate::log::UpstreamLog;
use crate::search::{PlannedQuery, Search};
use futures::Stream;
use medicodax_wire::ResourceType;
use medicodax_wire::tools::{SearchResult, Warning};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};
use url::Url;

/// One page of a walk.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The page number within its walk, from 1.
    pub number: u32,
    /// The category this page belongs to, for a search split per category.
    pub category: Option<String>,
    /// Matching resources (for split searches, without ones already delivered).
    pub resources: Vec<Value>,
    /// Included resources, kept apart.
    pub included: Vec<Value>,
    /// `Bundle.total` as this page gave it.
    pub total: Option<u64>,
    /// Non-data notices from this page (OperationOutcome warnings and the like).
    pub warnings: Vec<Warning>,
    /// Parameters this page's outcome entries say were ignored.
    pub ignored_parameters: Vec<String>,
    /// True when the walk stopped after this page because the result limit was reached
    /// while the server may have had more.
    pub limit_reached: bool,
}

/// A walk in progress over one query.
struct Walk {
    category: Option<String>,
    next: Option<Url>,
    page: u32,
    seen: HashSet<[u8; 32]>,
    pending: Option<FhirError>,
}

/// Fetches a search one page at a time. Made by [`FhirClient::pages`].
pub struct Pager {
    client: FhirClient,
    log: UpstreamLog,
    resource_type: ResourceType,
    queue: VecDeque<PlannedQuery>,
    current: Option<Walk>,
    split: bool,
    delivered_ids: HashSet<String>,
    max_results: Option<usize>,
    delivered: usize,
    done: bool,
}

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager").field("type", &self.resource_type).field("delivered", &self.delivered).field("done", &self.done).finish()
    }
}

fn digest(u: &Url) -> [u8; 32] {
    Sha256::digest(u.as_str().as_bytes()).into()
}

impl Pager {
    pub(crate) fn new(client: FhirClient, search: &Search, log: UpstreamLog) -> Self {
        let plan = search.plan(&client.config().profile);
        let split = plan.iter().any(|q| q.category.is_some());
        Self {
            client,
            log,
            resource_type: search.resource_type(),
            queue: plan.into(),
            current: None,
            split,
            delivered_ids: HashSet::new(),
            max_results: search.max_results(),
            delivered: 0,
            done: false,
        }
    }

    /// True when the search was split per category.
    pub fn is_split(&self) -> bool {
        self.split
    }

    /// The next page, an error, or `None` when the walk is over.
    ///
    /// An error ends the current walk: for an ordinary search that is the end (`None`
    /// follows); for a split search the next category's walk starts on the next call.
    /// Errors after the first page come as [`FhirError::PageFetchFailed`],
    /// [`FhirError::InvalidNextLink`], [`FhirError::PagingLoop`] or
    /// [`FhirError::TooManyPages`]; for a split search they are wrapped in
    /// [`FhirError::CategoryFailed`].
    pub async fn next_page(&mut self) -> Option<Result<Page, FhirError>> {
        loop {
            if self.done {
                return None;
            }
            let walk = match self.current.as_mut() {
                Some(w) => w,
                None => {
                    let Some(q) = self.queue.pop_front() else {
                        self.done = true;
                        return None;
                    };
                    let next = match self.client.base().join_str(&q.relative()) {
                        Ok(u) => Some(u),
                        Err(e) => {
                            let err = FhirError::InvalidBody { status: 0, detail: format!("cannot form the search URL: {e}") };
                            return Some(Err(self.wrap(q.category.clone(), err)));
                        }
                    };
                    self.current.insert(Walk { category: q.category, next, page: 0, seen: HashSet::new(), pending: None })
                }
            };
            if let Some(err) = walk.pending.take() {
                let category = walk.category.clone();
                self.current = None;
                return Some(Err(self.wrap(category, err)));
            }
            let Some(url) = walk.next.take() else {
                self.current = None;
                continue;
            };
            let number = walk.page + 1;
            let category = walk.category.clone();
            if number > self.client.config().max_pages {
                self.current = None;
                let limit = self.client.config().max_pages;
                return Some(Err(self.wrap(category, FhirError::TooManyPages { limit })));
            }
            walk.seen.insert(digest(&url));
            let fetched = self.fetch(&url).await;
            let content = match fetched {
                Ok(c) => c,
                Err((status, err)) => {
                    self.current = None;
                    let err = if number == 1 { err } else { FhirError::PageFetchFailed { page: number, status, cause: Box::new(err) } };
                    return Some(Err(self.wrap(category, err)));
                }
            };
            let walk = self.current.as_mut()?;
            walk.page = number;
            let has_next = match content.next.as_deref() {
                None => false,
                Some(link) => match self.client.base().resolve_next(&url, link) {
                    Ok(next) if walk.seen.contains(&digest(&next)) => {
                        walk.pending = Some(FhirError::PagingLoop { page: number });
                        true
                    }
                    Ok(next) => {
                        walk.next = Some(next);
                        true
                    }
                    Err(problem) => {
                        walk.pending = Some(FhirError::InvalidNextLink { page: number, problem });
                        true
                    }
                },
            };
            let mut resources = content.matches;
            if self.split {
                resources.retain(|r| match resource_key(r) {
                    Some(k) => self.delivered_ids.insert(k),
                    None => true,
                });
            }
            let mut limit_reached = false;
            if let Some(max) = self.max_results {
                let room = max.saturating_sub(self.delivered);
                let more_after = has_next || !self.queue.is_empty();
                if resources.len() > room || (resources.len() == room && more_after) {
                    resources.truncate(room);
                    limit_reached = true;
                    self.done = true;
                    self.current = None;
                }
            }
            self.delivered += resources.len();
            return Some(Ok(Page {
                number,
                category,
                resources,
                included: content.included,
                total: content.total,
                warnings: content.warnings,
                ignored_parameters: content.ignored_parameters,
                limit_reached,
            }));
        }
    }

    /// The pager as a `Stream` of pages (same items as [`Pager::next_page`]).
    pub fn into_stream(self) -> impl Stream<Item = Result<Page, FhirError>> + Send {
        futures::stream::unfold(self, |mut p| async move { p.next_page().await.map(|item| (item, p)) })
    }

    /// Fetches and parses one page; on failure, the HTTP status (0 if none) and the error.
    async fn fetch(&self, url: &Url) -> Result<bundle::PageContent, (u16, FhirError)> {
        let purpose = Purpose { resource_type: self.resource_type, read_id: None };
        let answer = self.client.get(url, &self.log, purpose).await.map_err(|e| (e.upstream_status().unwrap_or(0), e))?;
        let status = answer.status;
        let content = bundle::parse_page(strip_bom(&answer.body), self.resource_type).map_err(|p| {
            let err = match p {
                BundleProblem::NotJson(detail) => FhirError::InvalidBody { status, detail },
                BundleProblem::NotABundle(rt) if rt == "OperationOutcome" => {
                    // A bare OperationOutcome where a searchset was expected: say what it says.
                    let v: Value = serde_json::from_slice(strip_bom(&answer.body)).unwrap_or(Value::Null);
                    let issues = crate::outcome::Outcome::from_resource(&v).map(|o| o.issues).unwrap_or_default();
                    FhirError::Rejected { status, issues }
                }
                BundleProblem::NotABundle(rt) => FhirError::InvalidBody { status, detail: format!("expected a searchset Bundle, got {rt:?}") },
            };
            (status, err)
        })?;
        if !content.failures.is_empty() {
            return Err((status, FhirError::OutcomeFailure { issues: content.failures }));
        }
        Ok(content)
    }

    fn wrap(&self, category: Option<String>, err: FhirError) -> FhirError {
        match category {
            Some(category) => FhirError::CategoryFailed { category, cause: Box::new(err) },
            None => err,
        }
    }
}

/// `Type/id` of a resource, when it has both.
fn resource_key(r: &Value) -> Option<String> {
    let t = r.get("resourceType")?.as_str()?;
    let id = r.get("id")?.as_str()?;
    Some(format!("{t}/{id}"))
}

/// A search walked to its end (or as far as it could go).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOutcome {
    /// The searched type.
    pub resource_type: ResourceType,
    /// The matching resources, in server order (for a split search, merged without
    /// duplicates).
    pub resources: Vec<Value>,
    /// Included resources, kept apart from the matches.
    pub included: Vec<Value>,
    /// `Bundle.total` from the first page (`None` for a split search: the categories'
    /// totals overlap).
    pub total: Option<u64>,
    /// True when the walk did not reach the server's last page (an error, or the limit).
    pub incomplete: bool,
    /// Why the walk is incomplete, when an error stopped it (one per failed category for
    /// a split search).
    pub errors: Vec<FhirError>,
    /// True when the result limit stopped the walk.
    pub limit_reached: bool,
    /// Non-data notices, without duplicates.
    pub warnings: Vec<Warning>,
    /// Parameter names the server said it ignored, for the gateway's fail-closed rule.
    pub ignored_parameters: Vec<String>,
    /// Pages fetched successfully.
    pub pages: u32,
}

impl SearchOutcome {
    fn empty(resource_type: ResourceType) -> Self {
        Self {
            resource_type,
            resources: Vec::new(),
            included: Vec::new(),
            total: None,
            incomplete: false,
            errors: Vec::new(),
            limit_reached: false,
            warnings: Vec::new(),
            ignored_parameters: Vec::new(),
            pages: 0,
        }
    }

    /// Walks `pager` to its end. An error before any page arrived is returned as the
    /// error; later errors mark the result incomplete and are kept in `errors`.
    pub async fn collect(mut pager: Pager) -> Result<SearchOutcome, FhirError> {
        let mut out = SearchOutcome::empty(pager.resource_type);
        let split = pager.is_split();
        while let Some(item) = pager.next_page().await {
            match item {
                Ok(page) => out.absorb(page, split),
                Err(e) => {
                    out.incomplete = true;
                    out.errors.push(e);
                }
            }
        }
        if out.pages == 0
            && let Some(first) = out.errors.first()
        {
            return Err(first.clone());
        }
        Ok(out)
    }

    fn absorb(&mut self, page: Page, split: bool) {
        if self.pages == 0 && !split {
            self.total = page.total;
        }
        self.pages += 1;
        self.resources.extend(page.resources);
        self.included.extend(page.included);
        for w in page.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        for p in page.ignored_parameters {
            if !self.ignored_parameters.contains(&p) {
                self.ignored_parameters.push(p);
            }
        }
        if page.limit_reached {
            self.limit_reached = true;
            self.incomplete = true;
        }
    }

    /// The wire result for `fhir.search`: errors and the limit become warnings
    /// (`page-failed`, `invalid-next-link`, `category-failed`, `max-results`, …).
    pub fn into_search_result(self) -> SearchResult {
        let mut warnings = self.warnings;
        for e in &self.errors {
            warnings.push(Warning { code: e.code().to_owned(), detail: e.to_string() });
        }
        if self.limit_reached {
            warnings.push(Warning {
                code: "max-results".to_owned(),
                detail: format!("stopped at {} results, the limit asked for; the EHR may have more", self.resources.len()),
            });
        }
        SearchResult { resources: self.resources, total: self.total, incomplete: self.incomplete, warnings }
    }
}

impl FhirClient {
    /// A page-at-a-time walk of `search`, recording requests in `log`.
    pub fn pages(&self, search: &Search, log: &UpstreamLog) -> Result<Pager, FhirError> {
        search.check()?;
        Ok(Pager::new(self.clone(), search, log.clone()))
    }

    /// Walks `search` to its end and collects it (see [`SearchOutcome::collect`]). Use
    /// [`FhirClient::pages`] for large searches: this holds every resource in memory.
    pub async fn search(&self, search: &Search, log: &UpstreamLog) -> Result<SearchOutcome, FhirError> {
        SearchOutcome::collect(self.pages(search, log)?).await
    }
}
