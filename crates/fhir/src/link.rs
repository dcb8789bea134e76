//! The connection's FHIR base, its origin, and `next` links (pitfalls 17 and 19).
//!
//! A `next` link is resolved against the URL of the page that carried it, per RFC 3986
//! §5.2 (the `url` crate's `join`), and then used verbatim: existing percent-escapes are
//! never decoded or re-encoded and nothing is split at `http://` inside a query value.
//! The resolved URL must stay on the connection's origin (scheme, host, port after
//! default-port normalisation) and under its base path, with a FHIR-shaped path; the
//! bearer token is therefore only ever sent to the connection's own server.

use std::fmt;
use url::Url;

/// The longest `next` link followed, in bytes. Continuation tokens of several KB are
/// normal (pitfall 19); anything past this is refused rather than sent.
pub const MAX_NEXT_LINK_BYTES: usize = 64 * 1024;

/// A connection's FHIR base URL, checked and normalised.
#[derive(Clone, PartialEq, Eq)]
pub struct FhirBase {
    url: Url,
    /// The base path without a trailing slash (`""` for a base at the server root).
    path: String,
}

/// Why a URL cannot be a FHIR base.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBase {
    /// Not an absolute URL.
    #[error("the FHIR base URL does not parse: {0}")]
    Unparseable(String),
    /// Not http or https.
    #[error("the FHIR base URL must use https (or http for a local server), not {0:?}")]
    Scheme(String),
    /// Holds a user name or password.
    #[error("the FHIR base URL must not hold a user name or password")]
    Credentials,
    /// Has a query or fragment.
    #[error("the FHIR base URL must not have a query or fragment")]
    QueryOrFragment,
    /// Has no host.
    #[error("the FHIR base URL has no host")]
    NoHost,
}

impl FhirBase {
    /// Checks and normalises `s` (a trailing slash is removed).
    pub fn parse(s: &str) -> Result<Self, InvalidBase> {
        let url = Url::parse(s.trim()).map_err(|e| InvalidBase::Unparseable(e.to_string()))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(InvalidBase::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidBase::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(InvalidBase::QueryOrFragment);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidBase::NoHost);
        }
        let path = url.path().trim_end_matches('/').to_owned();
        Ok(Self { url, path })
    }

    /// The base URL as configured (normalised by the `url` crate).
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The base path without a trailing slash.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `scheme://host:port` with the port made explicit.
    pub fn origin(&self) -> String {
        origin_of(&self.url)
    }

    /// True when `u` has the base's scheme, host and port (default ports normalised).
    pub fn same_origin(&self, u: &Url) -> bool {
        u.scheme() == self.url.scheme() && u.host() == self.url.host() && u.port_or_known_default() == self.url.port_or_known_default()
    }

    /// The URL of `{base}/{relative}`; `relative` must already be percent-encoded.
    pub(crate) fn join_str(&self, relative: &str) -> Result<Url, url::ParseError> {
        let origin = self.url.origin().ascii_serialization();
        Url::parse(&format!("{origin}{}/{relative}", self.path))
    }

    /// Path and query of `u` relative to the base (`Observation?patient=x`), for the
    /// audit record: no scheme, host, port or token. A URL outside the base gives its
    /// full path and query.
    pub fn relative(&self, u: &Url) -> String {
        let path = u.path();
        let rel = path.strip_prefix(self.path.as_str()).filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(path);
        let rel = rel.strip_prefix('/').unwrap_or(rel);
        match u.query() {
            Some(q) => format!("{rel}?{q}"),
            None => rel.to_owned(),
        }
    }

    /// Resolves a `next` link against `request` (the URL of the page that carried it)
    /// and checks that it may be followed with the connection's token.
    pub fn resolve_next(&self, request: &Url, link: &str) -> Result<Url, NextLinkProblem> {
        if link.len() > MAX_NEXT_LINK_BYTES {
            return Err(NextLinkProblem::TooLong { bytes: link.len() });
        }
        if link.trim().is_empty() {
            return Err(NextLinkProblem::Empty);
        }
        let mut resolved = request.join(link).map_err(|e| NextLinkProblem::Unparseable(e.to_string()))?;
        resolved.set_fragment(None);
        if !resolved.username().is_empty() || resolved.password().is_some() {
            return Err(NextLinkProblem::Credentials);
        }
        if !self.same_origin(&resolved) {
            return Err(NextLinkProblem::OtherOrigin { origin: origin_of(&resolved), expected: self.origin() });
        }
        let under_base = match resolved.path().strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || rest == "/" || (rest.starts_with('/') && fhir_shaped(&rest[1..])),
            None => false,
        };
        if !under_base {
            return Err(NextLinkProblem::OutsideBase { path: short(resolved.path()), base_path: self.path.clone() });
        }
        Ok(resolved)
    }
}

impl fmt::Debug for FhirBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FhirBase({})", self.url)
    }
}

impl fmt::Display for FhirBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

/// The first path segment after the base must look like FHIR: a resource type name
/// (`[A-Z][A-Za-z0-9]*`) or a system-level interaction (`_search`, `_history`).
fn fhir_shaped(rest: &str) -> bool {
    let first = rest.split('/').next().unwrap_or("");
    let mut chars = first.chars();
    let type_like = matches!(chars.next(), Some(c) if c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric()) && first.len() <= 64;
    type_like || first == "_search" || first == "_history"
}

fn origin_of(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port_or_known_default() {
        Some(p) => format!("{}://{}:{}", u.scheme(), host, p),
        None => format!("{}://{}", u.scheme(), host),
    }
}

fn short(s: &str) -> String {
    crate::outcome::truncate_chars(s, 200)
}

/// Why a `next` link was not followed. Paging stops; the result is marked incomplete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NextLinkProblem {
    /// The link is empty.
    #[error("the next link is empty")]
    Empty,
    /// The link does not resolve to a URL.
    #[error("the next link does not resolve to a URL ({0})")]
    Unparseable(String),
    /// The link is longer than [`MAX_NEXT_LINK_BYTES`].
    #[error("the next link is {bytes} bytes long, over the 64 KiB limit")]
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// The link holds a user name or password.
    #[error("the next link holds a user name or password")]
    Credentials,
    /// The link points at another server; the token is only sent to the connection's own.
    #[error("the next link points at {origin}, not the connection's origin {expected}; the bearer token is only sent to the connection's own server")]
    OtherOrigin {
        /// The link's origin (`scheme://host:port`).
        origin: String,
        /// The connection's origin.
        expected: String,
    },
    /// The link resolves outside the FHIR base path or to a path that is not FHIR.
    #[error("the next link resolves to path {path:?}, which is not a FHIR path under the base {base_path:?}")]
    OutsideBase {
        /// The resolved path (truncated, no query).
        path: String,
        /// The connection's base path.
        base_path: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FhirBase {
        FhirBase::parse("https://fhir.vendor-b.example/fhir/r4").unwrap()
    }

    #[test]
    fn base_parsing() {
        assert_eq!(FhirBase::parse("https://h.example/fhir/r4/").unwrap().path(), "/fhir/r4");
        assert_eq!(FhirBase::parse("https://h.example").unwrap().path(), "");
        assert_eq!(FhirBase::parse("ftp://h.example/x"), Err(InvalidBase::Scheme("ftp".into())));
        assert_eq!(FhirBase::parse("https://u:p@h.example/x"), Err(InvalidBase::Credentials));
        assert_eq!(FhirBase::parse("https://h.example/x?a=b"), Err(InvalidBase::QueryOrFragment));
        assert!(matches!(FhirBase::parse("/relative"), Err(InvalidBase::Unparseable(_))));
        assert_eq!(base().origin(), "https://fhir.vendor-b.example:443");
    }

    #[test]
    fn default_ports_are_the_same_origin() {
        let b = FhirBase::parse("https://FHIR.vendor-b.example:443/fhir/r4").unwrap();
        let req = Url::parse("https://fhir.vendor-b.example/fhir/r4/Patient").unwrap();
        assert!(b.resolve_next(&req, "https://fhir.vendor-b.example/fhir/r4/Patient?p=2").is_ok());
        assert!(b.resolve_next(&req, "https://fhir.vendor-b.example:443/fhir/r4/Patient?p=2").is_ok());
        assert!(matches!(
            b.resolve_next(&req, "https://fhir.vendor-b.example:8443/fhir/r4/Patient?p=2"),
            Err(NextLinkProblem::OtherOrigin { .. })
        ));
        assert!(matches!(b.resolve_next(&req, "http://fhir.vendor-b.example/fhir/r4/Patient?p=2"), Err(NextLinkProblem::OtherOrigin { .. })));
        assert_eq!(
            b.resolve_next(&req, "https://evil.example/fhir/r4/Patient?p=2"),
            Err(NextLinkProblem::OtherOrigin { origin: "https://evil.example:443".into(), expected: "https://fhir.vendor-b.example:443".into() })
        );
        assert_eq!(b.resolve_next(&req, "https://u:p@fhir.vendor-b.example/fhir/r4/Patient"), Err(NextLinkProblem::Credentials));
        assert!(matches!(b.resolve_next(&req, "/fhir/r4/../admin/Patient"), Err(NextLinkProblem::OutsideBase { .. })));
        assert!(matches!(b.resolve_next(&req, "/fhir/r4x/Patient"), Err(NextLinkProblem::OutsideBase { .. })));
        assert_eq!(b.resolve_next(&req, "  "), Err(NextLinkProblem::Empty));
        assert!(matches!(b.resolve_next(&req, &"a".repeat(MAX_NEXT_LINK_BYTES + 1)), Err(NextLinkProblem::TooLong { .. })));
        assert!(matches!(b.resolve_next(&req, "http://[::1"), Err(NextLinkProblem::Unparseable(_))));
    }

    #[test]
    fn relative_paths_for_the_audit_record() {
        let b = base();
        assert_eq!(b.relative(&Url::parse("https://fhir.vendor-b.example/fhir/r4/Observation?patient=pt-1001").unwrap()), "Observation?patient=pt-1001");
        assert_eq!(b.relative(&Url::parse("https://fhir.vendor-b.example/fhir/r4?_getpages=7c1e").unwrap()), "?_getpages=7c1e");
        assert_eq!(b.relative(&Url::parse("https://fhir.vendor-b.example/fhir/r4/Patient/pt-1").unwrap()), "Patient/pt-1");
        assert_eq!(b.join_str("Patient/pt-1").unwrap().as_str(), "https://fhir.vendor-b.example/fhir/r4/Patient/pt-1");
    }
}
