//! The SMART Backend Services client and the central auth manager (the SMART client layer
//! of `DESIGN.md`): discovery, client assertions, token requests, vendor profiles, the
//! token cache with refresh-ahead and single flight, the 401 policy, per-connection rate
//! budgets and the assertion keys. It knows nothing of agents or policy.
//!
//! How the pieces fit, bottom up:
//!
//! - [`profile`]: [`VendorProfile`] holds each vendor's defaults (Epic, eClinicalWorks,
//!   Oracle Health, athenahealth, generic SMART); [`ConnectionSettings::resolve`] applies a
//!   connection's overrides and refuses at startup what the vendor would refuse later
//!   (a wrong assertion `alg`, an assertion lifetime over 300 s, missing scopes), with a
//!   [`SetupError`] naming the connection and the setting.
//! - [`assertion`]: [`assertion::mint`] signs a fresh RS384/ES384 client assertion
//!   (`iss` = `sub` = client id, `aud` = token endpoint byte for byte, back-dated `iat`,
//!   `exp − iat` ≤ 300 s, UUIDv4 `jti`) with the connection's key-ring signer; the
//!   [`AssertionSummary`] is its loggable account.
//! - [`discovery`]: `{fhir_base}/.well-known/smart-configuration`, relative URLs resolved,
//!   warnings when the advertised algorithms, methods or grants do not fit.
//! - [`token`]: the exact form body, lenient-where-harmless response parsing, and error
//!   typing with a redacted [`TokenFailureRecord`] for the audit log.
//! - [`rate`]: [`RateBudget`], sliding-minute budgets shared by token and FHIR requests.
//! - [`manager`]: [`AuthManager`], one per process, keyed by (connection, scope set).
//!   [`AuthManager::token`] gives a [`TokenHandle`]; after a 401 the FHIR client calls
//!   [`AuthManager::renew_after_unauthorized`] with the handle it used (exactly that
//!   token is dropped, compared by value; [`AuthManager::invalidate_value`] does the same
//!   for an adapter that kept only the value), retries once, and never renews on a 403;
//!   [`AuthManager::acquire`] draws a FHIR request from the budget and
//!   [`AuthManager::note_rate_limited`] records an upstream 429;
//!   [`AuthManager::status`] is the dashboard's view; [`AuthManager::jwks`] is every
//!   connection's published public keys.
//! - [`report`]: [`token_report`] behind `medicodax token --connection NAME`.
//!
//! Secrets never leak by formatting: [`AccessToken`], [`TokenHandle`] and
//! [`assertion::ClientAssertion`] redact themselves in `Debug`/`Display`, errors and logs
//! carry ids, classes and claim values we chose, never a token, an assertion or a key.
//! Time comes only from the injected [`medicodax_clock::Clock`]: expiry and renewal on its
//! monotonic line, assertion claims on its wall clock.

pub mod assertion;
pub mod discovery;
pub mod error;
pub mod http;
pub mod keys;
pub mod manager;
pub mod profile;
pub mod rate;
pub mod report;
pub mod scopes;
pub mod secret;
pub mod token;

pub use assertion::{AssertionClaims, AssertionSummary, ClientAssertion};
pub use discovery::{Discovery, DiscoveryError};
pub use error::{AuthError, ErrorClass};
pub use manager::{AuthManager, AuthManagerBuilder, ConnectionStatus, RotateError, TokenHandle, TokenStatus};
pub use profile::{ConnectionSettings, RateRule, SetupError, SetupErrors, SetupProblem, VendorProfile};
pub use rate::{BudgetStatus, RateBudget, RequestKind};
pub use report::{TokenReport, token_report};
pub use scopes::{GrantSource, GrantedScopes, ScopeSet};
pub use secret::AccessToken;
pub use token::TokenFailureRecord;
