//! Clinical notes: decoding `DocumentReference` attachments into numbered lines, and
//! finding the lines that mention a concept.
//!
//! Attachments arrive as base64 in `content[].attachment.data`. Bad base64, a non-text
//! content type or a note that is not UTF-8 never fails the worksheet: the note is
//! skipped or decoded lossily, and the worksheet carries a flag saying so.

use crate::fhir::{arr, id, str_at};
use crate::text::{strip_semantic_tag, terms};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// Notes larger than this (decoded) are cut, so one huge attachment cannot stall a run.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// One line of a clinical note, numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteLine {
    /// The DocumentReference id.
    pub document: String,
    /// 1-based line number within the decoded attachment.
    pub line: usize,
    /// The line's text.
    pub text: String,
}

/// Why a note attachment could not be used as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteProblem {
    /// `data` is not valid base64; the attachment was skipped.
    BadBase64,
    /// The content type is not text; the attachment was skipped.
    NotText,
    /// The bytes are not UTF-8; invalid sequences were replaced.
    NotUtf8,
    /// The attachment has only a `url`; the pipeline fetches nothing outside tool calls.
    ByReference,
    /// Longer than [`MAX_NOTE_BYTES`]; the rest was ignored.
    Truncated,
}

/// The decoded notes of an encounter, line by line, with a token index for mentions.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    lines: Vec<NoteLine>,
    stems: Vec<HashSet<String>>,
    /// Problems met while decoding, with the DocumentReference id.
    pub problems: Vec<(String, NoteProblem)>,
    /// How many attachments were read.
    pub documents_read: usize,
}

impl Notes {
    /// Decodes the text attachments of `documents` (DocumentReference resources).
    pub fn decode(documents: &[Value]) -> Notes {
        let mut notes = Notes::default();
        for doc in documents {
            let doc_id = id(doc).unwrap_or("(no id)").to_owned();
            for content in arr(doc, "content") {
                let Some(att) = content.get("attachment") else { continue };
                let ctype = str_at(att, "contentType").unwrap_or("text/plain").to_ascii_lowercase();
                let Some(data) = str_at(att, "data") else {
                    if str_at(att, "url").is_some() {
                        notes.problems.push((doc_id.clone(), NoteProblem::ByReference));
                    }
                    continue;
                };
                if !ctype.starts_with("text/") {
                    notes.problems.push((doc_id.clone(), NoteProblem::NotText));
                    continue;
                }
                let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = match base64::engine::general_purpose::STANDARD.decode(&cleaned) {
                    Ok(b) => b,
                    Err(_) => match base64::engine::general_purpose::URL_SAFE.decode(&cleaned) {
                        Ok(b) => b,
                        Err(_) => {
                            notes.problems.push((doc_id.clone(), NoteProblem::BadBase64));
                            continue;
                        }
                    },
                };
                let bytes = if bytes.len() > MAX_NOTE_BYTES {
                    notes.problems.push((doc_id.clone(), NoteProblem::Truncated));
                    bytes.get(..MAX_NOTE_BYTES).unwrap_or_default().to_vec()
                } else {
                    bytes
                };
                let text = match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        notes.problems.push((doc_id.clone(), NoteProblem::NotUtf8));
                        String::from_utf8_lossy(e.as_bytes()).into_owned()
                    }
                };
                notes.documents_read += 1;
                for (i, line) in text.split('\n').enumerate() {
                    let line = line.trim_end_matches('\r');
                    if line.trim().is_empty() {
                        continue;
                    }
                    notes.stems.push(terms(line, true).into_iter().collect());
                    notes.lines.push(NoteLine { document: doc_id.clone(), line: i + 1, text: line.to_owned() });
                }
            }
        }
        notes
    }

    /// Every non-blank line.
    pub fn lines(&self) -> &[NoteLine] {
        &self.lines
    }

    /// True if no note text was read.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The lines that mention a concept: they hold every content word of `phrase` (its
    /// semantic tag dropped; stemmed), or at least three quarters of them for phrases
    /// of five words or more.
    pub fn mentions(&self, phrase: &str) -> Vec<&NoteLine> {
        let want: Vec<String> = terms(strip_semantic_tag(phrase), true);
        self.lines_with(&want)
    }

    /// The lines holding (nearly) all of the given stems; see [`Notes::mentions`].
    pub fn lines_with(&self, stems: &[String]) -> Vec<&NoteLine> {
        let mut want: Vec<&String> = stems.iter().collect();
        want.sort();
        want.dedup();
        if want.is_empty() {
            return Vec::new();
        }
        let need = if want.len() >= 5 { (want.len() * 3).div_ceil(4) } else { want.len() };
        self.lines.iter().zip(&self.stems).filter(|(_, s)| want.iter().filter(|w| s.contains(w.as_str())).count() >= need).map(|(l, _)| l).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, ctype: &str, data: &str) -> Value {
        json!({ "resourceType": "DocumentReference", "id": id, "content": [{ "attachment": { "contentType": ctype, "data": data } }] })
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn lines_are_numbered_in_the_attachment_and_mentions_use_stems() {
        let text = "2020-04-27\n\n# Chief Complaint\n- sprain of ankle (disorder)\r\nPatient has a history of gingivitis (disorder).\n";
        let n = Notes::decode(&[doc("d1", "text/plain; charset=utf-8", &b64(text.as_bytes()))]);
        assert_eq!(n.documents_read, 1);
        assert!(n.problems.is_empty());
        let m = n.mentions("Sprain of ankle (disorder)");
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].document.as_str(), m[0].line, m[0].text.as_str()), ("d1", 4, "- sprain of ankle (disorder)"));
        assert_eq!(n.mentions("Ankle sprains").len(), 1, "word order and plurals do not matter");
        assert!(n.mentions("Fracture of ankle").is_empty());
        assert!(n.mentions("(disorder)").is_empty(), "a bare tag mentions nothing");
        assert_eq!(n.mentions("Gingivitis")[0].line, 5);
    }

    #[test]
    fn bad_attachments_are_skipped_or_decoded_lossily_with_a_problem() {
        let docs = [
            doc("bad", "text/plain", "%%%not base64%%%"),
            doc("pdf", "application/pdf", &b64(b"%PDF-1.4")),
            doc("latin1", "text/plain", &b64(b"caf\xe9 fever\n")),
            json!({ "id": "url", "content": [{ "attachment": { "url": "https://x.example/n.txt" } }] }),
            json!({ "id": "odd", "content": "nope" }),
            json!(42),
        ];
        let n = Notes::decode(&docs);
        assert_eq!(
            n.problems,
            vec![
                ("bad".to_owned(), NoteProblem::BadBase64),
                ("pdf".to_owned(), NoteProblem::NotText),
                ("latin1".to_owned(), NoteProblem::NotUtf8),
                ("url".to_owned(), NoteProblem::ByReference),
            ]
        );
        assert_eq!(n.lines().len(), 1);
        assert_eq!(n.lines()[0].text, "caf\u{fffd} fever");
        assert_eq!(n.mentions("Fever").len(), 1);
    }

    #[test]
    fn base64_with_line_breaks_and_url_safe_alphabet_is_accepted() {
        let raw = b64(b"line one\nline two ??>\n");
        let wrapped = format!("{}\n{}", &raw[..8], &raw[8..]);
        assert_eq!(Notes::decode(&[doc("w", "text/plain", &wrapped)]).lines().len(), 2);
        let url = base64::engine::general_purpose::URL_SAFE.encode(b"line two ??>\n");
        assert_ne!(url, b64(b"line two ??>\n"), "the sample needs a character that differs");
        assert_eq!(Notes::decode(&[doc("u", "text/plain", &url)]).lines()[0].text, "line two ??>");
    }
}
