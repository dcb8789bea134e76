//! The text-match fallback: ICD-10-CM candidates for a concept the crosswalk lacks,
//! found by ranking the CMS long titles against the concept's words.
//!
//! Method (measured in [`crate::eval`]):
//!
//! 1. **Normalisation.** Text is lower-cased and split on anything that is not a letter
//!    or digit; a trailing SNOMED CT semantic tag (`(disorder)`, `(finding)` …) is
//!    dropped; `with no` and `no` become `without`; stop words go; each word is reduced
//!    by a light medical stemmer ([`stem`]) that folds plurals and the usual adjective
//!    and noun endings onto one stem (`gingiva`/`gingival`, `suicide`/`suicidal`,
//!    `psoriasis`/`psoriatic`, `dependence`/`dependent`).
//! 2. **Synonyms and abbreviations** ([`SYNONYMS`]): a query word or phrase also adds its
//!    ICD-10-CM wording as extra query terms at a lower weight (`sore throat` →
//!    `pharyngitis`, `MI` → `myocardial infarction`). Titles are never rewritten.
//! 3. **Retrieval.** Okapi BM25 (k1 1.2, b 0.75) over the title stems of every code and
//!    header; a query word missing from the vocabulary is expanded to the title stems it
//!    is a prefix of (truncated SNOMED displays such as `circulat`).
//! 4. **Re-ranking** of the best 500 by how much of the query the title covers and how
//!    much of the title the query covers (idf-weighted), where the words a coder adds
//!    by default when the documentation says nothing more (`unspecified`, `initial
//!    encounter`, `closed`, `other`) cost nothing; billable codes and `unspecified`
//!    titles get a small bonus, so with no further detail the ranking lands where the
//!    ICD-10-CM conventions do (the unspecified, billable code).

use crate::codeset::{CodeSet, IcdCode};
use std::collections::HashMap;

/// Stop words dropped from titles and queries.
const STOP: &[&str] = &[
    "a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "by", "with", "as", "from", "into", "per", "is", "are", "be", "nos", "s",
];

/// Title words that a coder adds by default when the documentation gives no detail;
/// an unmatched one costs the title nothing (`other` costs half).
const FREE: &[(&str, f32)] = &[("unspecified", 1.0), ("initial", 1.0), ("encounter", 1.0), ("closed", 1.0), ("other", 0.5), ("uncomplicated", 1.0), ("elsewhere", 1.0), ("classified", 1.0)];

/// Query-side synonyms and abbreviations: a phrase (lower-case words) and the ICD-10-CM
/// wording added for it. General clinical vocabulary, not tied to any data set.
pub const SYNONYMS: &[(&str, &str)] = &[
    ("sore throat", "pharyngitis"),
    ("heart attack", "myocardial infarction"),
    ("mi", "myocardial infarction"),
    ("stemi", "st elevation myocardial infarction"),
    ("high blood pressure", "hypertension"),
    ("htn", "hypertension"),
    ("neck pain", "cervicalgia"),
    ("back pain", "dorsalgia"),
    ("loss of taste", "ageusia parageusia"),
    ("loss of smell", "anosmia"),
    ("disease", "disorder"),
    ("disorder", "disease"),
    ("molar", "tooth"),
    ("molars", "teeth"),
    ("dental", "tooth"),
    ("rupture", "perforation"),
    ("ruptured", "perforation"),
    ("arthritis", "arthropathy arthropathic"),
    ("facial", "face head"),
    ("drug", "psychoactive substance"),
    ("history of", "personal history old presence status"),
    ("coronavirus 2", "covid 19"),
    ("sars cov 2", "covid 19"),
    ("overdose", "poisoning"),
    ("filling", "restoration restorative"),
    ("coronavirus disease 2019", "covid 19"),
    ("covid", "covid 19"),
    ("copd", "chronic obstructive pulmonary disease"),
    ("uti", "urinary tract infection"),
    ("uri", "upper respiratory infection"),
    ("dm", "diabetes mellitus"),
    ("t2dm", "type 2 diabetes mellitus"),
    ("chf", "congestive heart failure"),
    ("cad", "atherosclerotic heart disease coronary artery"),
    ("gerd", "gastro esophageal reflux disease"),
    ("afib", "atrial fibrillation"),
    ("ckd", "chronic kidney disease"),
    ("osa", "obstructive sleep apnea"),
    ("bmi", "body mass index"),
    ("cabg", "aortocoronary bypass graft"),
    ("coronary artery bypass grafting", "aortocoronary bypass graft"),
    ("nstemi", "non st elevation myocardial infarction"),
    ("tia", "transient cerebral ischemic attack"),
    ("dvt", "deep vein thrombosis"),
    ("pe", "pulmonary embolism"),
    ("adhd", "attention deficit hyperactivity disorder"),
];

/// How the matcher behaves; the defaults are the product's, the switches exist so the
/// evaluation can measure what each part contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatchOptions {
    /// Apply [`SYNONYMS`].
    pub synonyms: bool,
    /// Apply the light stemmer (otherwise only lower-casing).
    pub stemming: bool,
    /// Re-rank the BM25 head by coverage, billable and default-word rules (otherwise plain BM25).
    pub rerank: bool,
    /// Only billable codes are returned (headers still score, but are left out).
    pub billable_only: bool,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions { synonyms: true, stemming: true, rerank: true, billable_only: true }
    }
}

/// Lower-cases and splits text into words (letters and digits), with `with no`/`no`/`w/o`
/// folded into `without`. Stop words are kept; see [`terms`].
pub fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let w = w.to_lowercase();
        match (out.last().map(String::as_str), w.as_str()) {
            (Some("with"), "no") | (Some("w"), "o") => {
                if let Some(last) = out.last_mut() {
                    *last = "without".into();
                }
            }
            (_, "no") => out.push("without".into()),
            _ => out.push(w),
        }
    }
    out
}

/// Drops a trailing SNOMED CT semantic tag such as ` (disorder)` from a display.
pub fn strip_semantic_tag(display: &str) -> &str {
    let t = display.trim_end();
    if let Some(open) = t.rfind('(')
        && t.ends_with(')')
    {
        let tag = t.get(open + 1..t.len() - 1).unwrap_or_default();
        if !tag.is_empty() && tag.len() <= 30 && tag.chars().all(|c| c.is_ascii_lowercase() || c == ' ' || c == '/') {
            return t.get(..open).unwrap_or_default().trim_end();
        }
    }
    t
}

/// The light medical stemmer: folds plurals, then one derivational ending, leaving at
/// least four characters.
pub fn stem(word: &str) -> String {
    if word == "teeth" {
        return "tooth".into();
    }
    let mut w = word.to_owned();
    if w.len() > 4 && w.is_ascii() {
        if let Some(s) = w.strip_suffix("ies") {
            w = format!("{s}y");
        } else if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
            w.pop();
        }
        const ENDINGS: &[(&str, &str)] = &[
            ("iasis", "ia"),
            ("iatic", "ia"),
            ("ness", ""),
            ("ically", ""),
            ("ical", ""),
            ("ities", ""),
            ("ity", ""),
            ("ation", "at"),
            ("ition", "it"),
            ("ion", ""),
            ("ive", ""),
            ("ious", ""),
            ("ous", ""),
            ("ence", ""),
            ("ency", ""),
            ("ance", ""),
            ("ent", ""),
            ("ant", ""),
            ("ed", ""),
            ("ing", ""),
            ("al", ""),
            ("ic", ""),
            ("ia", ""),
            ("ae", ""),
            ("a", ""),
            ("e", ""),
            ("y", ""),
        ];
        for (end, with) in ENDINGS {
            if let Some(base) = w.strip_suffix(end)
                && base.len() + with.len() >= 4
            {
                w = format!("{base}{with}");
                // a stem ending in "ia" from the first rules still loses it, as "ia" does
                if let Some(b) = w.strip_suffix("ia")
                    && b.len() >= 4
                {
                    w = b.to_owned();
                }
                break;
            }
        }
    }
    w
}

/// The index terms of a text: words without stop words, stemmed (or only lower-cased).
pub fn terms(text: &str, stemming: bool) -> Vec<String> {
    words(text).into_iter().filter(|w| !STOP.contains(&w.as_str())).map(|w| if stemming { stem(&w) } else { w }).collect()
}

/// One ranked candidate from [`TitleIndex::search`].
#[derive(Clone, Debug, PartialEq)]
pub struct TextCandidate<'c> {
    /// The code.
    pub code: &'c IcdCode,
    /// The ranking score (higher is better; comparable within one query).
    pub score: f32,
    /// Share of the query (idf-weighted) the title covers, 0-1.
    pub query_coverage: f32,
    /// Share of the title (idf-weighted, default words free) the query covers, 0-1.
    pub title_coverage: f32,
    /// The title's terms (stems) that matched the query.
    pub matched: Vec<String>,
}

impl TextCandidate<'_> {
    /// A confidence in 0-0.75 for a text match: how well query and title cover each
    /// other. Text matches never reach the `high` band.
    pub fn confidence(&self) -> f64 {
        let c = 0.75 * f64::from(self.query_coverage) * (0.4 + 0.6 * f64::from(self.title_coverage));
        (c * 100.0).round() / 100.0
    }
}

/// A query term: an index term, its weight, and the span of query words it stands for.
struct QueryTerm {
    term: u32,
    weight: f32,
    words: std::ops::Range<usize>,
}

/// A title term and what leaving it unmatched costs (0 for a default word, 1 normally,
/// more for a laterality the query does not give).
#[derive(Clone, Copy)]
struct DocTerm {
    term: u32,
    cost: f32,
}

/// A BM25 index over the long titles of a code set.
pub struct TitleIndex<'c> {
    codes: &'c CodeSet,
    options: MatchOptions,
    vocab: HashMap<String, u32>,
    sorted_vocab: Vec<(String, u32)>,
    term_names: Vec<String>,
    trigrams: HashMap<[u8; 3], Vec<u32>>,
    postings: Vec<Vec<(u32, u16)>>,
    doc_terms: Vec<Vec<DocTerm>>,
    doc_len: Vec<u16>,
    idf: Vec<f32>,
    unspecified: Option<u32>,
    avgdl: f32,
}

impl std::fmt::Debug for TitleIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TitleIndex").field("docs", &self.doc_len.len()).field("terms", &self.vocab.len()).field("options", &self.options).finish()
    }
}

const K1: f32 = 1.2;
const B: f32 = 0.75;
const HEAD: usize = 500;
/// Laterality and episode-of-care words: left unmatched they cost more, since
/// ICD-10-CM codes an unstated side as unspecified and an unstated episode as initial.
const SPECIFIERS: &[&str] = &["right", "left", "bilateral", "unilateral", "subsequent", "sequela"];

/// The title's terms with the cost of leaving each unmatched. Clause by clause (split at
/// commas): `without …` and `not …` (up to the next preposition) state the default
/// (absence) and cost nothing, nor
/// does `unspecified` and the word it qualifies (`unspecified ear`) or the rest of an
/// `unspecified whether …` clause; the [`FREE`] words cost what they say.
fn title_terms(title: &str, stemming: bool) -> Vec<(String, f32)> {
    let norm = |w: &str| if stemming { stem(w) } else { w.to_owned() };
    let mut out = Vec::new();
    for clause in title.split([',', ';', '[', ']', '(', ')']) {
        let ws = words(clause);
        let mut free_rest = false;
        let mut free_next = false;
        let mut absent = false;
        for (i, w) in ws.iter().enumerate() {
            let w = w.as_str();
            if w == "without" || w == "not" {
                absent = true;
            } else if absent && STOP.contains(&w) && w != "or" && w != "and" {
                absent = false;
            }
            if w == "unspecified" && matches!(ws.get(i + 1).map(String::as_str), Some("whether" | "as")) {
                free_rest = true;
            }
            if STOP.contains(&w) {
                continue;
            }
            let mut cost = FREE.iter().find(|(f, _)| *f == w).map_or(1.0, |(_, c)| 1.0 - c);
            if SPECIFIERS.contains(&w) {
                cost = 1.5;
            }
            if absent {
                cost = 0.0;
            }
            if free_rest || free_next {
                cost = 0.0;
            }
            free_next = w == "unspecified";
            out.push((norm(w), cost));
        }
    }
    out
}

fn trigrams_of(term: &str) -> Vec<[u8; 3]> {
    let padded: Vec<u8> = format!("#{term}#").into_bytes();
    let mut t: Vec<[u8; 3]> = padded.windows(3).filter_map(|w| <[u8; 3]>::try_from(w).ok()).collect();
    t.sort_unstable();
    t.dedup();
    t
}

impl<'c> TitleIndex<'c> {
    /// Indexes every long title of `codes`.
    pub fn build(codes: &'c CodeSet, options: MatchOptions) -> TitleIndex<'c> {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, u16)>> = Vec::new();
        let mut doc_terms = Vec::with_capacity(codes.len());
        let mut doc_len = Vec::with_capacity(codes.len());
        for (doc, c) in codes.iter().enumerate() {
            let ts = title_terms(&c.long_title, options.stemming);
            let mut counts: Vec<(u32, u16, f32)> = Vec::new();
            for (t, cost) in &ts {
                let next = u32::try_from(vocab.len()).unwrap_or(u32::MAX);
                let id = *vocab.entry(t.clone()).or_insert(next);
                if id as usize == postings.len() {
                    postings.push(Vec::new());
                }
                match counts.iter_mut().find(|(i, _, _)| *i == id) {
                    Some((_, n, c)) => {
                        *n = n.saturating_add(1);
                        *c = c.max(*cost);
                    }
                    None => counts.push((id, 1, *cost)),
                }
            }
            let doc = u32::try_from(doc).unwrap_or(u32::MAX);
            for &(id, n, _) in &counts {
                if let Some(p) = postings.get_mut(id as usize) {
                    p.push((doc, n));
                }
            }
            doc_terms.push(counts.iter().map(|&(term, _, cost)| DocTerm { term, cost }).collect());
            // default words do not make a title longer: "…, initial encounter" and
            // "…, sequela" compete on what they say, not on their length
            doc_len.push(u16::try_from(ts.len()).unwrap_or(u16::MAX));
        }
        let n = doc_len.len().max(1) as f32;
        let avgdl = doc_len.iter().map(|&l| f32::from(l)).sum::<f32>() / n;
        let idf = postings.iter().map(|p| (1.0 + (n - p.len() as f32 + 0.5) / (p.len() as f32 + 0.5)).ln()).collect();
        let unspecified = vocab.get(&if options.stemming { stem("unspecified") } else { "unspecified".to_owned() }).copied();
        let mut sorted_vocab: Vec<(String, u32)> = vocab.iter().map(|(k, v)| (k.clone(), *v)).collect();
        sorted_vocab.sort();
        let mut term_names = vec![String::new(); vocab.len()];
        let mut trigrams: HashMap<[u8; 3], Vec<u32>> = HashMap::new();
        for (t, &id) in &vocab {
            if let Some(slot) = term_names.get_mut(id as usize) {
                *slot = t.clone();
            }
            if t.len() >= 5 && t.is_ascii() {
                for g in trigrams_of(t) {
                    trigrams.entry(g).or_default().push(id);
                }
            }
        }
        TitleIndex { codes, options, vocab, sorted_vocab, term_names, trigrams, postings, doc_terms, doc_len, idf, unspecified, avgdl }
    }

    /// The options it was built with.
    pub fn options(&self) -> MatchOptions {
        self.options
    }

    /// Title terms close in spelling to an unknown word (trigram Dice coefficient ≥ 0.6).
    fn similar_terms(&self, word: &str) -> Vec<(u32, f32)> {
        if word.len() < 6 || !word.is_ascii() {
            return Vec::new();
        }
        let grams = trigrams_of(word);
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for g in &grams {
            for &id in self.trigrams.get(g).map(Vec::as_slice).unwrap_or_default() {
                *shared.entry(id).or_insert(0) += 1;
            }
        }
        let mut out: Vec<(u32, f32)> = shared
            .into_iter()
            .filter_map(|(id, n)| {
                let other = self.term_names.get(id as usize).map_or(0, |t| t.len() + 2 - 2);
                let dice = 2.0 * n as f32 / (grams.len() + other) as f32;
                (dice >= 0.6).then_some((id, dice))
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(3);
        out
    }

    fn query_terms(&self, query: &str) -> Vec<QueryTerm> {
        let stemming = self.options.stemming;
        let ws: Vec<String> = words(strip_semantic_tag(query));
        let mut qt: Vec<QueryTerm> = Vec::new();
        let push = |qt: &mut Vec<QueryTerm>, term: u32, weight: f32, words: std::ops::Range<usize>| match qt.iter_mut().find(|q| q.term == term) {
            Some(q) if q.weight >= weight => {}
            Some(q) => {
                q.weight = weight;
                q.words = words;
            }
            None => qt.push(QueryTerm { term, weight, words }),
        };
        for (i, w) in ws.iter().enumerate() {
            if STOP.contains(&w.as_str()) {
                continue;
            }
            let label = if stemming { stem(w) } else { w.clone() };
            if let Some(&id) = self.vocab.get(&label) {
                push(&mut qt, id, 1.0, i..i + 1);
                continue;
            }
            // an unknown word: the title stems it is a prefix of (a truncated display),
            // else the stems spelled most like it
            let start = self.sorted_vocab.partition_point(|(t, _)| t.as_str() < label.as_str());
            let mut found = false;
            if label.len() >= 5 {
                for (_, id) in self.sorted_vocab.iter().skip(start).take_while(|(t, _)| t.starts_with(label.as_str())).take(5) {
                    push(&mut qt, *id, 0.8, i..i + 1);
                    found = true;
                }
            }
            if !found {
                for (id, dice) in self.similar_terms(&label) {
                    push(&mut qt, id, 0.8 * dice, i..i + 1);
                }
            }
        }
        if self.options.synonyms {
            for (phrase, wording) in SYNONYMS {
                let p: Vec<&str> = phrase.split(' ').collect();
                for start in 0..ws.len() {
                    if ws.get(start..start + p.len()).is_some_and(|span| span.iter().zip(&p).all(|(a, b)| a == b)) {
                        for t in terms(wording, stemming) {
                            if let Some(&id) = self.vocab.get(&t) {
                                push(&mut qt, id, 0.8, start..start + p.len());
                            }
                        }
                    }
                }
            }
        }
        qt
    }

    /// The best `k` candidates for a query (a display or a note phrase), best first.
    pub fn search(&self, query: &str, k: usize) -> Vec<TextCandidate<'c>> {
        let qt = self.query_terms(query);
        if qt.is_empty() || k == 0 {
            return Vec::new();
        }
        let idf = |t: u32| self.idf.get(t as usize).copied().unwrap_or(0.0);
        let mut acc: HashMap<u32, f32> = HashMap::new();
        for q in &qt {
            let w = q.weight * idf(q.term);
            for &(doc, tf) in self.postings.get(q.term as usize).map(Vec::as_slice).unwrap_or_default() {
                let dl = f32::from(self.doc_len.get(doc as usize).copied().unwrap_or(1));
                let tf = f32::from(tf);
                *acc.entry(doc).or_insert(0.0) += w * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl / self.avgdl));
            }
        }
        let mut head: Vec<(u32, f32)> = acc.into_iter().collect();
        let by_score = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if head.len() > HEAD {
            head.select_nth_unstable_by(HEAD, by_score);
            head.truncate(HEAD);
        }
        head.sort_by(by_score);
        let top_bm25 = head.first().map(|h| h.1).unwrap_or(1.0).max(f32::EPSILON);
        // each query word weighs what its best term weighs; synonym terms cover their phrase
        let span = qt.iter().map(|q| q.words.end).max().unwrap_or(0);
        let mut word_mass = vec![0.0f32; span];
        for q in &qt {
            for i in q.words.clone() {
                if let Some(m) = word_mass.get_mut(i) {
                    *m = m.max(q.weight * idf(q.term));
                }
            }
        }
        let query_mass: f32 = word_mass.iter().sum::<f32>().max(f32::EPSILON);
        let mut out: Vec<TextCandidate<'c>> = Vec::with_capacity(head.len());
        for (doc, bm25) in head {
            let Some(code) = self.codes.at(doc as usize) else { continue };
            if self.options.billable_only && !code.billable {
                continue;
            }
            let dterms = self.doc_terms.get(doc as usize).map(Vec::as_slice).unwrap_or_default();
            let mut covered = vec![0.0f32; span];
            let mut matched = Vec::new();
            for q in qt.iter().filter(|q| dterms.iter().any(|d| d.term == q.term)) {
                for i in q.words.clone() {
                    if let Some(c) = covered.get_mut(i) {
                        *c = c.max(q.weight * idf(q.term));
                    }
                }
                if let Some(t) = self.term_names.get(q.term as usize) {
                    matched.push(t.clone());
                }
            }
            let query_coverage = (covered.iter().sum::<f32>() / query_mass).min(1.0);
            let (mut title_hit, mut title_mass) = (0.0f32, 0.0f32);
            for d in dterms {
                if qt.iter().any(|q| q.term == d.term) {
                    title_hit += idf(d.term);
                    title_mass += idf(d.term);
                } else {
                    title_mass += idf(d.term) * d.cost;
                }
            }
            let title_coverage = if title_mass > 0.0 { (title_hit / title_mass).min(1.0) } else { 1.0 };
            let score = if self.options.rerank {
                let unspecified = self.unspecified.is_some_and(|u| dterms.iter().any(|d| d.term == u));
                query_coverage * (0.6 + 0.4 * title_coverage) + 0.05 * bm25 / top_bm25 + if code.billable { 0.03 } else { 0.0 } + if unspecified { 0.02 } else { 0.0 }
            } else {
                bm25
            };
            out.push(TextCandidate { code, score, query_coverage, title_coverage, matched });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.code.code.cmp(&b.code.code)));
        // codes that differ only in the 7th character (episode of care) are one concept
        // for the coder: keep the best of each so the k places hold k concepts
        let mut families = std::collections::HashSet::new();
        out.retain(|c| families.insert(c.code.code.get(..6).filter(|_| c.code.code.len() == 7).unwrap_or(&c.code.code).to_owned()));
        out.truncate(k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_negation_and_tags_are_dropped() {
        assert_eq!(words("Concussion with no loss of consciousness"), ["concussion", "without", "loss", "of", "consciousness"]);
        assert_eq!(words("Fever w/o rash"), ["fever", "without", "rash"]);
        assert_eq!(strip_semantic_tag("Sprain (morphologic abnormality)"), "Sprain");
        assert_eq!(strip_semantic_tag("Severe anxiety (panic) (finding)"), "Severe anxiety (panic)");
        assert_eq!(strip_semantic_tag("COVID-19 (U07.1)"), "COVID-19 (U07.1)", "a code in parentheses is not a tag");
    }

    #[test]
    fn the_stemmer_folds_medical_variants_onto_one_stem() {
        for (a, b) in [
            ("gingiva", "gingival"),
            ("suicide", "suicidal"),
            ("psoriasis", "psoriatic"),
            ("dependence", "dependent"),
            ("fractured", "fracture"),
            ("homelessness", "homeless"),
            ("injuries", "injury"),
            ("diabetes", "diabetic"),
            ("anemia", "anemic"),
            ("infection", "infective"),
            ("teeth", "tooth"),
            ("ischemic", "ischemia"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} / {b}");
        }
        assert_ne!(stem("acute"), stem("chronic"));
        assert_eq!(stem("ear"), "ear", "short words are left alone");
        assert_eq!(stem("ärger"), "ärger", "non-ASCII words are left alone");
    }

    #[test]
    fn search_ranks_the_unspecified_billable_code_first_for_a_bare_concept() {
        let idx = crate::Reference::embedded().unwrap().index();
        let top = |q: &str| idx.search(q, 5).first().map(|c| c.code.dotted.clone());
        assert_eq!(top("Essential hypertension (disorder)").as_deref(), Some("I10"));
        assert_eq!(top("Acute bronchitis (disorder)").as_deref(), Some("J20.9"));
        assert_eq!(top("Concussion with no loss of consciousness").as_deref(), Some("S06.0X0A"));
        assert_eq!(top("Streptococcal sore throat (disorder)").as_deref(), Some("J02.0"));
        for c in idx.search("Fracture of clavicle", 5) {
            assert!(c.code.billable, "{} is a header", c.code.dotted);
        }
        assert!(idx.search("(disorder)", 5).is_empty(), "a bare tag is no query");
        assert!(idx.search("", 5).is_empty());
        assert!(idx.search("hypertension", 0).is_empty());
    }

    #[test]
    fn the_k_places_hold_k_concepts_and_the_episode_defaults_to_initial() {
        let idx = crate::Reference::embedded().unwrap().index();
        let r = idx.search("Sprain (morphologic abnormality)", 5);
        assert_eq!(r.len(), 5);
        let families: std::collections::HashSet<&str> = r.iter().map(|c| &c.code.code[..6]).collect();
        assert_eq!(families.len(), 5, "no two suggestions differ only in the 7th character");
        assert!(r.iter().all(|c| c.code.code.ends_with('A')), "{:?}", r.iter().map(|c| &c.code.dotted).collect::<Vec<_>>());
        let r = idx.search("Acute infective cystitis", 2);
        assert_eq!(r[0].code.dotted, "N30.00", "\"without hematuria\" is the default");
        assert_eq!(r[1].code.dotted, "N30.01");
    }

    #[test]
    fn a_truncated_word_matches_by_prefix() {
        let idx = crate::Reference::embedded().unwrap().index();
        let r = idx.search("Abnormal findings diagnostic imaging heart+coronary circulat (finding)", 3);
        assert_eq!(r[0].code.dotted, "R93.1");
        assert!(r[0].confidence() > 0.5 && r[0].confidence() <= 0.75, "{}", r[0].confidence());
    }
}
