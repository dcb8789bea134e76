//! The `Bearer` challenge of a `WWW-Authenticate` header (RFC 6750 §3), for telling a
//! scope denial (`error="insufficient_scope"`, pitfall 14 c) from other 401/403 answers.

use crate::outcome::truncate_chars;

/// The parameters of a `Bearer` challenge that the client acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `error`, e.g. `invalid_token` or `insufficient_scope`.
    pub error: Option<String>,
    /// `scope`: the scope the resource needs.
    pub scope: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/".contains(c)
}

/// Parses the `Bearer` challenge out of a `WWW-Authenticate` value that may hold several
/// challenges; `None` if there is no `Bearer` challenge. Never panics on garbage.
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let chars: Vec<char> = header.chars().take(4096).collect();
    let mut i = 0;
    let mut in_bearer = false;
    let mut found: Option<BearerChallenge> = None;
    while i < chars.len() {
        while i < chars.len() && (chars[i] == ',' || chars[i].is_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < chars.len() && is_tchar(chars[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // not a token: skip one character and go on
            continue;
        }
        let token: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        if j < chars.len() && chars[j] == '=' {
            // auth-param: name = token / quoted-string
            j += 1;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let mut value = String::new();
            if j < chars.len() && chars[j] == '"' {
                j += 1;
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    value.push(chars[j]);
                    j += 1;
                }
                j += 1; // closing quote (or past the end)
            } else {
                while j < chars.len() && is_tchar(chars[j]) {
                    value.push(chars[j]);
                    j += 1;
                }
            }
            i = j;
            if in_bearer && let Some(c) = found.as_mut() {
                let value = Some(truncate_chars(&value, 300));
                match token.to_ascii_lowercase().as_str() {
                    "error" => c.error = value,
                    "scope" => c.scope = value,
                    "error_description" => c.error_description = value,
                    _ => {}
                }
            }
        } else {
            // a new challenge's scheme
            in_bearer = token.eq_ignore_ascii_case("bearer") && found.is_none();
            if in_bearer {
                found = Some(BearerChallenge::default());
            }
            i = j;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitfall_14_headers() {
        let c = parse_bearer_challenge(r#"Bearer realm="fhir.epic-test.example", error="invalid_token""#).unwrap();
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(c.scope, None);
        let c = parse_bearer_challenge(r#"Bearer error="insufficient_scope", scope="system/Specimen.read""#).unwrap();
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("system/Specimen.read"));
    }

    #[test]
    fn several_challenges_tokens_and_escapes() {
        let c = parse_bearer_challenge(r#"Basic realm="x", bearer error=insufficient_scope, scope="a b\"c", error_description="d""#).unwrap();
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("a b\"c"));
        assert_eq!(c.error_description.as_deref(), Some("d"));
        let c = parse_bearer_challenge(r#"Bearer realm="x", Basic error="insufficient_scope""#).unwrap();
        assert_eq!(c.error, None, "parameters of a later challenge are not the bearer's");
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge("Bearer").unwrap(), BearerChallenge::default());
    }

    #[test]
    fn garbage_does_not_panic() {
        for h in ["", "=", "\"", "Bearer error=\"unterminated", "Bearer ,,,= = =\"", "Bearer error=\\", "ÿÿ Bearer scope=\"é\""] {
            let _ = parse_bearer_challenge(h);
        }
        assert_eq!(parse_bearer_challenge("ÿÿ Bearer scope=\"é\"").unwrap().scope.as_deref(), Some("é"));
    }
}
