//! Response media types (pitfall 23).
//!
//! Types are compared case-insensitively and parameters are ignored, except a `charset`
//! other than UTF-8 (FHIR JSON is UTF-8; anything else is refused rather than misread).
//! `application/json` is accepted as FHIR JSON because real servers label it so.

/// What a `Content-Type` header says about a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// FHIR JSON (`application/fhir+json`, `application/json`, `application/json+fhir`)
    /// in UTF-8, or no `Content-Type` at all (the body is tried as JSON).
    Json,
    /// JSON in a charset other than UTF-8 (the charset, lower-cased).
    JsonWrongCharset(String),
    /// FHIR XML or plain XML.
    Xml,
    /// Anything else (HTML error pages, text, garbage headers).
    Other,
}

/// The longest `Content-Type` value repeated in an error.
const MAX_CONTENT_TYPE_CHARS: usize = 100;

/// Classifies a `Content-Type` header value (`None` when the header is absent).
pub fn classify(content_type: Option<&str>) -> MediaKind {
    let Some(raw) = content_type else { return MediaKind::Json };
    let Ok(m) = raw.trim().parse::<mime::Mime>() else { return MediaKind::Other };
    let essence = m.essence_str().to_ascii_lowercase();
    match essence.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => {
            match m.get_param(mime::CHARSET).map(|c| c.as_str().to_ascii_lowercase()) {
                None => MediaKind::Json,
                Some(c) if c == "utf-8" || c == "utf8" => MediaKind::Json,
                Some(c) => MediaKind::JsonWrongCharset(c.chars().take(40).collect()),
            }
        }
        "application/fhir+xml" | "application/xml" | "text/xml" | "application/xml+fhir" => MediaKind::Xml,
        _ => MediaKind::Other,
    }
}

/// A header value safe to put in an error message: printable ASCII, at most 100 characters.
pub fn printable(content_type: Option<&str>) -> String {
    match content_type {
        None => "(none)".to_owned(),
        Some(s) => s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(MAX_CONTENT_TYPE_CHARS).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_json_forms_and_the_rest() {
        for ct in [
            "application/fhir+json",
            "application/fhir+json;charset=UTF-8",
            "application/fhir+json; charset=utf-8; fhirVersion=4.0",
            "application/json",
            "APPLICATION/FHIR+JSON",
            "application/json+fhir; charset=UTF8",
        ] {
            assert_eq!(classify(Some(ct)), MediaKind::Json, "{ct}");
        }
        assert_eq!(classify(None), MediaKind::Json);
        assert_eq!(classify(Some("application/fhir+json; charset=ISO-8859-1")), MediaKind::JsonWrongCharset("iso-8859-1".into()));
        assert_eq!(classify(Some("application/fhir+xml")), MediaKind::Xml);
        assert_eq!(classify(Some("Application/XML; charset=utf-8")), MediaKind::Xml);
        assert_eq!(classify(Some("text/html")), MediaKind::Other);
        assert_eq!(classify(Some(";;;")), MediaKind::Other);
        assert_eq!(classify(Some("")), MediaKind::Other);
        assert_eq!(printable(Some("text/html\u{7}x")), "text/htmlx");
    }
}
