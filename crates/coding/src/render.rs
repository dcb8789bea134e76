//! The worksheet as a readable plain-text table for a terminal or a text file.

use crate::worksheet::Worksheet;
use std::fmt::Write;

/// Cuts `s` to at most `n` characters, marking a cut with `…`.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Renders a worksheet as plain text: a header, one row per suggestion (diagnosis,
/// rank, code, title, confidence and band, source, evidence), procedures, the principal
/// diagnosis, and flags.
pub fn to_table(w: &Worksheet) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Encounter {}  class {} ({})  {}  {}",
        w.encounter_id,
        w.encounter_class.as_str(),
        w.class_code.as_deref().unwrap_or("?"),
        w.start.as_deref().unwrap_or(""),
        w.encounter_type.as_deref().unwrap_or("")
    );
    if let Some(p) = &w.principal {
        let _ = writeln!(out, "Principal: {} {}  ({})", p.code, p.title, p.reasons.join("; "));
    }
    let _ = writeln!(out, "{:<36} {:>2}  {:<9} {:<50} {:>4} {:<6} {:<9} evidence", "diagnosis", "#", "code", "title", "conf", "band", "source");
    for d in &w.diagnoses {
        let name = cut(d.display.as_deref().unwrap_or("(no display)"), 36);
        if d.suggestions.is_empty() {
            let _ = writeln!(out, "{name:<36} {:>2}  {:<9} {:<50}", "-", "-", "(no ICD-10-CM suggestion)");
        }
        for (i, s) in d.suggestions.iter().enumerate() {
            let lines: Vec<String> = s.evidence.note_lines.iter().map(|l| format!("L{}", l.line)).collect();
            let mut source = s.source.as_str().to_owned();
            for a in &s.also_from {
                source.push('+');
                source.push_str(a.as_str());
            }
            let ev = if lines.is_empty() { format!("Condition/{}", cut(&d.condition_id, 12)) } else { format!("Condition/{} note {}", cut(&d.condition_id, 12), lines.join(",")) };
            let _ = writeln!(
                out,
                "{:<36} {:>2}  {:<9} {:<50} {:>4.2} {:<6} {:<9} {}",
                if i == 0 { name.clone() } else { String::new() },
                s.rank,
                s.code,
                cut(&s.title, 50),
                s.confidence,
                s.band.as_str(),
                source,
                ev
            );
        }
    }
    if !w.procedures.is_empty() {
        let _ = writeln!(out, "Procedures:");
        for p in &w.procedures {
            let codes: Vec<String> = p.codes.iter().map(|c| format!("{} {}", if c.system == crate::fhir::SNOMED { "SNOMED" } else { c.system.as_str() }, c.code)).collect();
            let _ = writeln!(out, "  {:<60} {}", cut(p.display.as_deref().unwrap_or("(no display)"), 60), codes.join(", "));
        }
    }
    if !w.flags.is_empty() {
        let _ = writeln!(out, "Flags:");
        for f in &w.flags {
            let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let _ = writeln!(out, "  [{kind}] {}{}", f.resource.as_deref().map(|r| format!("{r}: ")).unwrap_or_default(), f.message);
        }
    }
    out
}
