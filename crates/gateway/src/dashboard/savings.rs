//! Time savings (`/savings`, admin and coder): what the coding pipeline saved.
//!
//! Time saved per encounter = the manual baseline for its class − the pipeline's time
//! − the coder's review time (DESIGN.md §7). The review time exists once a coder has
//! accepted or edited the worksheet, so only reviewed worksheets count as saved;
//! pending ones are shown apart as *provisional* (baseline − pipeline time, before
//! review). The page shows encounters coded, minutes saved per UTC day (coded day) as a
//! server-rendered SVG bar chart with the same numbers in a table, and a table by
//! encounter class. No patient data is read: only the worksheets' class, times and
//! status ([`crate::worksheets::WorksheetStore::all_meta`]).

use super::{Dash, Nav, Page, PageError, PageResult, Viewer, fmt, render};
use crate::worksheets::WorksheetMeta;
use askama::Template;
use std::collections::BTreeMap;

/// Figures for one encounter class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRow {
    /// The class code (`AMB`, `EMER`, `IMP`, …).
    pub class: String,
    /// A readable name.
    pub label: &'static str,
    /// The baseline, minutes (of the latest worksheet of the class).
    pub baseline_min: f64,
    /// Worksheets.
    pub encounters: u64,
    /// Reviewed worksheets.
    pub reviewed: u64,
    /// Mean pipeline time, ms.
    pub mean_pipeline_ms: i64,
    /// Mean review time of reviewed worksheets, ms.
    pub mean_review_ms: Option<i64>,
    /// Minutes saved by reviewed worksheets.
    pub minutes_saved: f64,
    /// Baseline − pipeline time of pending worksheets, minutes.
    pub provisional: f64,
}

/// Figures for one UTC day (by the day the worksheet was coded).
#[derive(Clone, Debug, PartialEq)]
pub struct DayRow {
    /// Days since 1970-01-01.
    pub day: i64,
    /// `YYYY-MM-DD`.
    pub label: String,
    /// Worksheets coded that day.
    pub encounters: u64,
    /// Of which reviewed.
    pub reviewed: u64,
    /// Minutes saved by the reviewed ones.
    pub minutes_saved: f64,
    /// Provisional minutes of the pending ones.
    pub provisional: f64,
}

/// The whole summary.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Summary {
    /// Worksheets (encounters coded).
    pub encounters: u64,
    /// Reviewed worksheets.
    pub reviewed: u64,
    /// Minutes saved by reviewed worksheets.
    pub minutes_saved: f64,
    /// Provisional minutes of pending worksheets.
    pub provisional: f64,
    /// By class, by code.
    pub classes: Vec<ClassRow>,
    /// By day, oldest first, every day from the first to the last (at most [`MAX_DAYS`]).
    pub days: Vec<DayRow>,
}

/// The most days the chart shows (the latest ones).
pub const MAX_DAYS: i64 = 31;

/// A readable name of an encounter class code.
pub fn class_label(class: &str) -> &'static str {
    match class {
        "AMB" | "ambulatory" => "ambulatory",
        "EMER" | "emergency" => "emergency",
        "IMP" | "ACUTE" | "NONAC" | "inpatient" => "inpatient",
        "OBSENC" => "observation",
        "HH" => "home health",
        "VR" => "virtual",
        "SS" => "short stay",
        "PRENC" => "pre-admission",
        "FLD" => "field",
        _ => "other outpatient",
    }
}

/// Sums worksheets into the page's figures (pure; the arithmetic of DESIGN.md §7).
pub fn summarize(rows: &[WorksheetMeta]) -> Summary {
    #[derive(Default)]
    struct Acc {
        baseline: f64,
        n: u64,
        reviewed: u64,
        pipeline_ms: i64,
        review_ms: i64,
        saved: f64,
        provisional: f64,
    }
    let mut s = Summary::default();
    let mut classes: BTreeMap<String, Acc> = BTreeMap::new();
    let mut days: BTreeMap<i64, DayRow> = BTreeMap::new();
    for w in rows {
        let c = classes.entry(w.class.clone()).or_default();
        let day = fmt::day_of(w.coded_ms);
        let d = days.entry(day).or_insert_with(|| DayRow { day, label: fmt::day_label(day), encounters: 0, reviewed: 0, minutes_saved: 0.0, provisional: 0.0 });
        s.encounters += 1;
        c.n += 1;
        d.encounters += 1;
        c.baseline = w.baseline_min;
        c.pipeline_ms = c.pipeline_ms.saturating_add(w.pipeline_ms);
        match w.minutes_saved() {
            Some(m) => {
                s.reviewed += 1;
                s.minutes_saved += m;
                c.reviewed += 1;
                c.review_ms = c.review_ms.saturating_add(w.review_ms.unwrap_or(0));
                c.saved += m;
                d.reviewed += 1;
                d.minutes_saved += m;
            }
            None => {
                let p = w.baseline_min - w.pipeline_ms as f64 / 60_000.0;
                s.provisional += p;
                c.provisional += p;
                d.provisional += p;
            }
        }
    }
    s.classes = classes
        .into_iter()
        .map(|(class, a)| ClassRow {
            label: class_label(&class),
            class,
            baseline_min: a.baseline,
            encounters: a.n,
            reviewed: a.reviewed,
            mean_pipeline_ms: a.pipeline_ms / i64::try_from(a.n.max(1)).unwrap_or(1),
            mean_review_ms: (a.reviewed > 0).then(|| a.review_ms / i64::try_from(a.reviewed).unwrap_or(1)),
            minutes_saved: a.saved,
            provisional: a.provisional,
        })
        .collect();
    if let (Some(first), Some(last)) = (days.keys().next().copied(), days.keys().next_back().copied()) {
        let first = first.max(last - (MAX_DAYS - 1));
        s.days = (first..=last)
            .map(|day| days.remove(&day).unwrap_or_else(|| DayRow { day, label: fmt::day_label(day), encounters: 0, reviewed: 0, minutes_saved: 0.0, provisional: 0.0 }))
            .collect();
    }
    s
}

/// One bar segment of the chart (coordinates already formatted).
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Left.
    pub x: String,
    /// Top.
    pub y: String,
    /// Width.
    pub w: String,
    /// Height.
    pub h: String,
    /// `saved`, `provisional` or `loss`.
    pub class: &'static str,
    /// The tooltip.
    pub title: String,
}

/// An axis label.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// Position (y for the value axis, x for days).
    pub pos: String,
    /// The text.
    pub label: String,
}

/// The chart, laid out.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Width of the view box.
    pub width: u32,
    /// Height of the view box.
    pub height: u32,
    /// Bars.
    pub bars: Vec<Bar>,
    /// Value-axis ticks (grid lines).
    pub y_ticks: Vec<Tick>,
    /// Day labels.
    pub x_ticks: Vec<Tick>,
    /// The zero line's y.
    pub zero: String,
    /// Plot left edge.
    pub left: u32,
    /// Plot right edge.
    pub right: u32,
    /// A one-sentence description for screen readers.
    pub description: String,
}

fn nice_step(range: f64) -> f64 {
    let raw = range / 4.0;
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Lays out the minutes-saved-per-day chart.
pub fn chart(days: &[DayRow]) -> Chart {
    let (width, height, left, right, top, bottom) = (720u32, 260u32, 48u32, 712u32, 12.0f64, 228.0f64);
    let hi = days.iter().map(|d| d.minutes_saved.max(0.0) + d.provisional.max(0.0)).fold(0.0f64, f64::max);
    let lo = days.iter().map(|d| d.minutes_saved.min(0.0) + d.provisional.min(0.0)).fold(0.0f64, f64::min);
    let step = nice_step((hi - lo).max(1.0));
    let hi = (hi / step).ceil().max(1.0) * step;
    let lo = (lo / step).floor() * step;
    let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
    let n = days.len().max(1) as f64;
    let slot = f64::from(right - left) / n;
    let w = (slot * 0.7).clamp(1.0, 48.0);
    let mut bars = Vec::new();
    let mut x_ticks = Vec::new();
    let every = (days.len() / 8).max(1);
    for (i, d) in days.iter().enumerate() {
        let x = f64::from(left) + slot * i as f64 + (slot - w) / 2.0;
        let mut up = 0.0f64;
        let mut down = 0.0f64;
        for (v, class, what) in [(d.minutes_saved, "saved", "saved (reviewed)"), (d.provisional, "provisional", "provisional (awaiting review)")] {
            if v == 0.0 {
                continue;
            }
            let (from, to, class) = if v > 0.0 {
                let r = (up, up + v, class);
                up += v;
                r
            } else {
                let r = (down + v, down, "loss");
                down += v;
                r
            };
            bars.push(Bar {
                x: format!("{x:.1}"),
                y: format!("{:.1}", y(to)),
                w: format!("{w:.1}"),
                h: format!("{:.1}", (y(from) - y(to)).max(0.5)),
                class,
                title: format!("{}: {:.1} min {what}", d.label, v),
            });
        }
        if i % every == 0 {
            x_ticks.push(Tick { pos: format!("{:.1}", x + w / 2.0), label: d.label.get(5..).unwrap_or(&d.label).to_owned() });
        }
    }
    let mut y_ticks = Vec::new();
    let mut v = lo;
    while v <= hi + step / 2.0 {
        y_ticks.push(Tick { pos: format!("{:.1}", y(v)), label: format!("{v:.0}") });
        v += step;
    }
    let total: f64 = days.iter().map(|d| d.minutes_saved).sum();
    let description = match (days.first(), days.last()) {
        (Some(a), Some(b)) => format!("Minutes saved per day from {} to {}: {:.1} minutes saved in all by reviewed worksheets. The table below has the same numbers.", a.label, b.label, total),
        _ => "No worksheets yet.".to_owned(),
    };
    Chart { width, height, bars, y_ticks, x_ticks, zero: format!("{:.1}", y(0.0)), left, right, description }
}

#[derive(Template)]
#[template(path = "savings.html")]
struct SavingsPage {
    nav: Nav,
    summary: Summary,
    chart: Chart,
}

impl SavingsPage {
    fn min(&self, m: &f64) -> String {
        fmt::minutes(*m)
    }

    fn dur(&self, ms: &i64) -> String {
        fmt::millis(*ms)
    }

    fn opt_dur(&self, ms: &Option<i64>) -> String {
        ms.map(fmt::millis).unwrap_or_else(|| "-".to_owned())
    }
}

/// `GET /savings`.
pub async fn page(state: Dash, viewer: Viewer) -> PageResult {
    viewer.require(Page::Savings)?;
    let rows = state.gw.worksheets.all_meta().await.map_err(|e| PageError::internal("worksheets", &e))?;
    let summary = summarize(&rows);
    let chart = chart(&summary.days);
    Ok(render(&SavingsPage { nav: viewer.nav(Page::Savings), summary, chart }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_767_225_600_000; // 2026-01-01

    fn w(class: &str, coded_ms: i64, pipeline_ms: i64, baseline: f64, review_ms: Option<i64>) -> WorksheetMeta {
        WorksheetMeta { class: class.into(), coded_ms, pipeline_ms, baseline_min: baseline, status: if review_ms.is_some() { "accepted" } else { "pending" }.into(), review_ms }
    }

    #[test]
    fn time_saved_is_baseline_minus_pipeline_minus_review() {
        // 20 min inpatient, 30 s pipeline, 4.5 min review: 20 − 0.5 − 4.5 = 15.
        let rows = vec![
            w("IMP", T0, 30_000, 20.0, Some(270_000)),
            // 4 min ambulatory, 6 s pipeline, 54 s review: 4 − 0.1 − 0.9 = 3.
            w("AMB", T0 + 1000, 6_000, 4.0, Some(54_000)),
            // pending: provisional 6 − 0.2 = 5.8, not counted as saved.
            w("EMER", T0 + DAY + 5, 12_000, 6.0, None),
            // a review longer than the baseline saves a negative amount: 4 − 0 − 5 = −1.
            w("AMB", T0 + 3 * DAY, 0, 4.0, Some(300_000)),
        ];
        let s = summarize(&rows);
        assert_eq!(s.encounters, 4);
        assert_eq!(s.reviewed, 3);
        assert!((s.minutes_saved - 17.0).abs() < 1e-9, "{}", s.minutes_saved);
        assert!((s.provisional - 5.8).abs() < 1e-9, "{}", s.provisional);
        let amb = s.classes.iter().find(|c| c.class == "AMB").unwrap();
        assert_eq!((amb.encounters, amb.reviewed, amb.label), (2, 2, "ambulatory"));
        assert!((amb.minutes_saved - 2.0).abs() < 1e-9);
        assert_eq!(amb.mean_review_ms, Some(177_000));
        assert_eq!(amb.mean_pipeline_ms, 3_000);
        let emer = s.classes.iter().find(|c| c.class == "EMER").unwrap();
        assert_eq!(emer.mean_review_ms, None);
        // Days: 01-01 … 01-04, the gap day filled with zeros.
        let labels: Vec<&str> = s.days.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]);
        assert!((s.days[0].minutes_saved - 18.0).abs() < 1e-9);
        assert_eq!((s.days[2].encounters, s.days[2].minutes_saved), (0, 0.0));
        assert!((s.days[3].minutes_saved + 1.0).abs() < 1e-9);
    }

    #[test]
    fn chart_has_a_bar_per_nonzero_segment_and_a_loss_below_zero() {
        let rows = vec![w("IMP", T0, 30_000, 20.0, Some(270_000)), w("EMER", T0 + DAY, 12_000, 6.0, None), w("AMB", T0 + 2 * DAY, 0, 4.0, Some(300_000))];
        let s = summarize(&rows);
        let c = chart(&s.days);
        let classes: Vec<&str> = c.bars.iter().map(|b| b.class).collect();
        assert_eq!(classes, ["saved", "provisional", "loss"]);
        let zero: f64 = c.zero.parse().unwrap();
        let saved_top: f64 = c.bars[0].y.parse().unwrap();
        let loss_top: f64 = c.bars[2].y.parse().unwrap();
        assert!(saved_top < zero, "a saving rises above the zero line");
        assert!((loss_top - zero).abs() < 0.11, "a loss hangs from the zero line");
        assert!(c.bars[0].title.contains("15.0 min saved"), "{}", c.bars[0].title);
        assert!(c.description.contains("2026-01-01 to 2026-01-03"), "{}", c.description);
        assert!(c.y_ticks.len() >= 2);
    }

    #[test]
    fn empty_and_long_ranges() {
        let s = summarize(&[]);
        assert_eq!((s.encounters, s.days.len()), (0, 0));
        assert_eq!(chart(&s.days).bars.len(), 0);
        let rows = vec![w("AMB", T0, 0, 4.0, None), w("AMB", T0 + 100 * DAY, 0, 4.0, None)];
        let s = summarize(&rows);
        assert_eq!(s.days.len() as i64, MAX_DAYS, "only the latest days are charted");
        assert_eq!(s.encounters, 2);
    }
}
