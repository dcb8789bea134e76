//! Embedded Epic-like and eClinicalWorks-like EHRs over the bundled Synthea patients.
//!
//! One loopback listener serves both vendor styles under their own path prefixes, as a
//! real EHR would, for `medicodax demo`, `medicodax sandbox` and the tests:
//!
//! | | Epic-like | eClinicalWorks-like |
//! |---|---|---|
//! | FHIR base | `/epic/api/FHIR/R4` | `/ecw/fhir/r4/PRAC01` |
//! | token endpoint | `/epic/oauth2/token` | `/ecw/oauth2/token` |
//! | assertion algs | RS256/384/512; ES256/384 only with a JWKS URL | RS384 |
//! | token | 3600 s, Epic-style scopes from the registration, no `scope` needed | 300 s, requested `system/` scopes ∩ registration |
//! | paging | opaque `sessionID` links that expire | `page` parameter |
//! | rate budget | none | 250 requests/minute (token + FHIR), 429 without `Retry-After` |
//! | quirks | Observation needs `category` or `code`; category sub-APIs; OperationOutcome entries in searchsets; ICD-10-CM on Conditions | SNOMED CT only |
//!
//! The twelve patients are split alternately by sorted id (Epic gets the first).
//!
//! Architecture, outside in:
//!
//! - [`Sandbox::start`] takes a [`SandboxConfig`] (listen address, registered
//!   [`ClientRegistration`]s, the injectable [`medicodax_clock::Clock`], per-vendor
//!   [`VendorSettings`]) and returns a [`SandboxHandle`]: the bound address, the URLs,
//!   [`Faults`] switches, [`Stats`] (the request log), the patient lists, and shutdown.
//! - Every request passes a gate that logs it (method, path, status, token *label*,
//!   never a token or a body), charges eClinicalWorks' budget and applies faults.
//! - The token endpoints (`oauth`) judge client assertions in `assertion` with
//!   `jsonwebtoken::decode` and an explicit `Validation`, independently of the gateway's
//!   own JOSE code, plus each vendor's rules; keys come from the client's registered
//!   JWKS URL through `jwks` (cached per `Cache-Control`, refetched on an unknown `kid` at
//!   most once per cooldown) or from an inline JWKS.
//! - FHIR requests (`fhir`) check the bearer token (401), the type (404), the token's
//!   scopes with [`medicodax_policy::scope::ScopeSet`] (403), then read or search the
//!   [`Dataset`], which is loaded once per process from the embedded bundles, with
//!   `urn:uuid:` references resolved and each resource pre-indexed and stored as its
//!   JSON text (unknown elements pass through untouched).
//!
//! All time decisions (assertion windows, token expiry, paging-link expiry, rate
//! windows, JWKS cache ages, added latency) use the configured clock, so tests move time
//! with a `ManualClock` instead of sleeping.
//!
//! Figures (2-core machine; `cargo test -p medicodax-sandbox [--release] --bench startup`):
//! 12 bundles, 22,670 entries, 18,977 resources served (Epic 5,435, eClinicalWorks
//! 13,542; 156 ICD-10-CM codings added). The first load takes about 1.0 s in a release
//! build and 6 s in a debug build (decompressing and parsing 47 MB of pretty-printed
//! JSON dominates); later starts in the same process take under 20 ms (release).
//! One sequential client pages through every resource at about 51,000 resources/s
//! (release) or 6,000/s (debug).

#![warn(missing_docs)]

mod assertion;
mod config;
mod data;
mod date;
mod faults;
mod fhir;
mod index;
mod jwks;
mod oauth;
mod outcome;
mod search;
mod server;
mod state;
mod vendor;

pub use config::{ClientKeys, ClientRegistration, RateLimitRetryAfter, SandboxConfig, VendorSettings, default_scopes};
pub use data::{DataError, Dataset, EncounterSummary, ICD10CM_SYSTEM, LoadStats, PatientSummary, SNOMED_SYSTEM};
pub use faults::{FaultStatus, Faults, RequestKind, RequestRecord, RetryAfter, Stats};
pub use oauth::JWT_BEARER;
pub use server::{Sandbox, SandboxHandle, StartError};
pub use state::RegistrationError;
pub use vendor::{ResourceType, Vendor};
