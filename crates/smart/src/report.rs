//! `medicodax token --connection NAME`: fetch a token through the auth manager and
//! describe it. The token itself is included only when asked for.

use medicodax_config::Vendor;
use serde::Serialize;
use std::fmt;

use crate::error::AuthError;
use crate::manager::AuthManager;
use crate::scopes::GrantSource;

/// What `medicodax token` shows.
#[derive(Clone, Serialize)]
pub struct TokenReport {
    /// The connection.
    pub connection: String,
    /// The vendor profile.
    pub vendor: Vendor,
    /// The token endpoint used (also the assertion `aud`).
    pub token_endpoint: String,
    /// The scopes sent in the request, or `None` when the vendor takes none (Epic).
    pub requested_scopes: Option<Vec<String>>,
    /// The granted scopes (SMART strings).
    pub granted_scopes: Vec<String>,
    /// Where the granted scopes came from.
    pub granted_source: GrantSource,
    /// `token_type`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in_secs: u64,
    /// Seconds until it will be renewed.
    pub renews_in_secs: u64,
    /// Tokens fetched for this connection so far.
    pub generation: u64,
    /// The token itself, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

impl fmt::Debug for TokenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReport")
            .field("connection", &self.connection)
            .field("token_endpoint", &self.token_endpoint)
            .field("granted_scopes", &self.granted_scopes)
            .field("expires_in_secs", &self.expires_in_secs)
            .field("access_token", &self.access_token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TokenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connection      {} ({})", self.connection, self.vendor)?;
        writeln!(f, "token endpoint  {}", self.token_endpoint)?;
        match &self.requested_scopes {
            Some(s) => writeln!(f, "requested       {}", s.join(" "))?,
            None => writeln!(f, "requested       (no scope parameter: access comes from the registration)")?,
        }
        let source = match self.granted_source {
            GrantSource::Response => "",
            GrantSource::AssumedRequested => "  (not in the response: taken as requested)",
            GrantSource::AssumedConfigured => "  (not in the response: taken as configured)",
        };
        writeln!(f, "granted         {}{source}", self.granted_scopes.join(" "))?;
        writeln!(f, "token type      {}", self.token_type)?;
        writeln!(f, "expires in      {} s", self.expires_in_secs)?;
        write!(f, "renews in       {} s", self.renews_in_secs)?;
        if let Some(t) = &self.access_token {
            write!(f, "\naccess token    {t}")?;
        }
        Ok(())
    }
}

/// Fetches a token for `connection` (cached if still good) and describes it; the token
/// value is included only when `reveal` is true.
pub async fn token_report(manager: &AuthManager, connection: &str, reveal: bool) -> Result<TokenReport, AuthError> {
    let handle = manager.token(connection).await?;
    let settings = manager.settings(connection).ok_or_else(|| AuthError::UnknownConnection(connection.chars().take(64).collect()))?;
    let endpoint = manager.discovery(connection).map(|d| d.token_endpoint.clone()).unwrap_or_default();
    let now = manager.clock().monotonic();
    let granted = handle.granted_scopes();
    Ok(TokenReport {
        connection: connection.to_owned(),
        vendor: settings.vendor,
        token_endpoint: endpoint,
        requested_scopes: settings.send_scope.then(|| handle.scopes().as_slice().to_vec()),
        granted_scopes: granted.scopes.clone(),
        granted_source: granted.source,
        token_type: handle.token_type().to_owned(),
        expires_in_secs: now.until(handle.expires_at()).as_secs(),
        renews_in_secs: now.until(handle.renew_at()).as_secs(),
        generation: handle.generation(),
        access_token: reveal.then(|| handle.access_token().expose_secret().to_owned()),
    })
}
