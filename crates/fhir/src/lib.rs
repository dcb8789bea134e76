//! FHIR R4 client of MEDICODAX for the eleven resource types: read, search, paging,
//! OperationOutcome, retries and vendor quirks (the FHIR-client layer of `DESIGN.md`).
//!
//! It knows nothing of agents, policy or audit storage: the gateway gives it a search,
//! and gets back resources, warnings, an honest `incomplete` flag, typed errors that map
//! to problem codes, and the list of upstream requests for its audit record.
//!
//! # Architecture
//!
//! ```text
//!  gateway ──Search──► FhirClient ──plan (SearchProfile)──► Pager ──GET──► EHR
//!                          │                                  │ next links (link.rs)
//!                          │  TokenSource: permit + bearer    │ Bundle view (bundle.rs)
//!                          │  before every request            │ OperationOutcome (outcome.rs)
//!                          ▼                                  ▼
//!                    UpstreamLog (audit)         Page … ► SearchOutcome / SearchResult
//! ```
//!
//! - [`FhirClient`] ([`client`]): one connection. Every request sends
//!   `Accept: application/fhir+json` and a bearer token from the [`TokenSource`] (asked
//!   before every request, so the auth manager alone decides renewal), never follows
//!   redirects, and applies the retry rules of [`retry`]: `Retry-After` up to a cap, else
//!   bounded exponential back-off with jitter for 502/503/504 and network errors; one
//!   renewal after a 401; nothing after a 403. All waiting uses the injected
//!   [`Clock`](medicodax_clock::Clock).
//! - [`Search`] ([`search`]): name/value pairs or typed parameters per type, planned
//!   into query strings under the connection's [`SearchProfile`] ([`profile`]): the
//!   Epic-style per-category split of Observation searches, athena-style
//!   `subject=Patient/{id}`, a default page size.
//! - [`Pager`] ([`pager`]): a page at a time (also as a `Stream`), so memory stays
//!   bounded; `next` links are resolved per RFC 3986 and used verbatim, kept on the
//!   connection's origin and base path ([`link`]), loops stopped; a late failure ends the
//!   walk with what was fetched, marked incomplete. [`SearchOutcome`] collects a walk.
//! - [`bundle`] and [`outcome`]: lenient typed views of the few fields used (`total`,
//!   `link`, `entry.search.mode`, `OperationOutcome.issue`); resources stay
//!   `serde_json::Value` with every element. Outcome entries become warnings, never data;
//!   `error`/`fatal` issues in a 200 Bundle fail the page.
//! - [`FhirError`] ([`error`]): what happened and what to do, mapped to the gateway's
//!   problem codes by [`FhirError::problem_code`]. Errors and logs carry ids, statuses,
//!   content types and truncated diagnostics, never tokens or resource bodies.
//! - [`FhirClient::search_all`] ([`multi`]): several searches with bounded concurrency
//!   and a result per type, so a 403 on one type is a partial result.
//! - [`UpstreamLog`] ([`log`]): method, path relative to the base, and status of every
//!   request, for the audit record.

#![warn(missing_docs)]

pub mod bundle;
pub mod challenge;
pub mod client;
pub mod error;
pub mod link;
pub mod log;
pub mod media;
pub mod multi;
pub mod outcome;
pub mod pager;
pub mod profile;
pub mod retry;
pub mod search;
pub mod token;

pub use client::{BuildError, FHIR_JSON, FhirClient, FhirConfig};
pub use error::{FhirError, LimitSource};
pub use link::{FhirBase, InvalidBase, NextLinkProblem};
pub use log::UpstreamLog;
pub use multi::TypeResult;
pub use outcome::{Issue, Outcome, Severity};
pub use pager::{Page, Pager, SearchOutcome};
pub use profile::{CategorySplit, DEFAULT_OBSERVATION_CATEGORIES, SearchProfile};
pub use retry::{Jitter, RetryPolicy};
pub use search::{DatePrefix, InvalidSearch, Search, Token};
pub use token::{Bearer, InvalidBearer, RateLimited, TokenError, TokenSource};
