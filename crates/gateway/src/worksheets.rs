//! Coding worksheets handed in by agents (`worksheet.submit`) and reviewed by coders in
//! the dashboard. The review time a coder spends is recorded here; time saved is
//! computed from it (DESIGN.md §7).

use medicodax_audit::{Db, with_pool};
use serde::Serialize;
use sqlx::Row as _;

/// Expands to a `SELECT` of every worksheet column followed by `$rest`.
macro_rules! select_worksheet {
    ($rest:literal) => {
        concat!("SELECT connection, encounter, patient, class, agent, coded_ms, pipeline_ms, baseline_min, body, status, reviewer, review_ms, reviewed_at_ms, final_codes ", $rest)
    };
}

/// Errors of the worksheet store.
#[derive(Debug, thiserror::Error)]
#[error("worksheet store: {0}")]
pub struct WorksheetError(pub String);

fn err(e: impl std::fmt::Display) -> WorksheetError {
    WorksheetError(e.to_string())
}

/// A stored worksheet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredWorksheet {
    /// The connection.
    pub connection: String,
    /// The encounter id.
    pub encounter: String,
    /// The patient id.
    pub patient: String,
    /// The encounter class code.
    pub class: String,
    /// The agent that submitted it.
    pub agent: String,
    /// When it was submitted (Unix ms).
    pub coded_ms: i64,
    /// Pipeline time (ms).
    pub pipeline_ms: i64,
    /// The manual baseline for its class, minutes.
    pub baseline_min: f64,
    /// The worksheet JSON.
    pub body: String,
    /// `pending`, `accepted` or `edited`.
    pub status: String,
    /// Who reviewed it.
    pub reviewer: Option<String>,
    /// Review time (ms).
    pub review_ms: Option<i64>,
    /// When it was reviewed (Unix ms).
    pub reviewed_at_ms: Option<i64>,
    /// For an `edited` worksheet, the codes the coder settled on (JSON, see [`FinalCode`]).
    pub final_codes: Option<String>,
}

/// One code a coder settled on when editing a worksheet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FinalCode {
    /// The Condition the code is for; `None` for a code the coder added.
    pub condition_id: Option<String>,
    /// The ICD-10-CM code, dotted.
    pub code: String,
}

/// A coder's review of a pending worksheet.
#[derive(Clone, Debug)]
pub struct Review<'a> {
    /// `accepted` or `edited`.
    pub status: ReviewStatus,
    /// The reviewer's user name.
    pub reviewer: &'a str,
    /// Time from opening the worksheet to the decision (ms).
    pub review_ms: i64,
    /// Now (Unix ms).
    pub now_ms: i64,
    /// For an edit, the codes settled on.
    pub final_codes: Option<&'a [FinalCode]>,
}

/// The outcome of a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    /// Accepted as suggested.
    Accepted,
    /// Codes changed or removed.
    Edited,
}

impl ReviewStatus {
    /// `accepted` or `edited`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Accepted => "accepted",
            ReviewStatus::Edited => "edited",
        }
    }
}

/// What a review did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewResult {
    /// The worksheet was pending and is now reviewed.
    Recorded,
    /// No such worksheet.
    Missing,
    /// It was already reviewed (by someone, with this status).
    AlreadyReviewed(String),
}

/// The columns time-savings figures need (no worksheet body).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorksheetMeta {
    /// The encounter class code.
    pub class: String,
    /// When it was submitted (Unix ms).
    pub coded_ms: i64,
    /// Pipeline time (ms).
    pub pipeline_ms: i64,
    /// The manual baseline for its class, minutes.
    pub baseline_min: f64,
    /// `pending`, `accepted` or `edited`.
    pub status: String,
    /// Review time (ms), once reviewed.
    pub review_ms: Option<i64>,
}

impl WorksheetMeta {
    /// Minutes saved once reviewed: baseline − pipeline time − review time (DESIGN.md §7);
    /// `None` while the review time is not recorded.
    pub fn minutes_saved(&self) -> Option<f64> {
        self.review_ms.map(|r| self.baseline_min - (self.pipeline_ms as f64 + r as f64) / 60_000.0)
    }
}

impl StoredWorksheet {
    /// Minutes saved: baseline − pipeline time − review time (when recorded).
    pub fn minutes_saved(&self) -> f64 {
        let used = (self.pipeline_ms as f64 + self.review_ms.unwrap_or(0) as f64) / 60_000.0;
        self.baseline_min - used
    }
}

/// A new submission.
#[derive(Clone, Debug)]
pub struct Submission<'a> {
    /// The connection.
    pub connection: &'a str,
    /// The encounter id.
    pub encounter: &'a str,
    /// The patient id.
    pub patient: &'a str,
    /// The class code.
    pub class: &'a str,
    /// The submitting agent.
    pub agent: &'a str,
    /// Now (Unix ms).
    pub now_ms: i64,
    /// Pipeline time (ms).
    pub pipeline_ms: i64,
    /// Baseline minutes for the class.
    pub baseline_min: f64,
    /// The worksheet JSON text.
    pub body: &'a str,
}

/// The worksheet store (tables created by the gateway's migrations).
#[derive(Clone, Debug)]
pub struct WorksheetStore {
    db: Db,
}

impl WorksheetStore {
    /// The store on `db` (the gateway migrations must have run: [`crate::users::UserStore::open`]).
    pub fn new(db: Db) -> Self {
        WorksheetStore { db }
    }

    /// Stores a submission; a resubmission replaces a pending worksheet and leaves a reviewed one alone.
    /// Returns the status after the call.
    pub async fn submit(&self, s: &Submission<'_>) -> Result<String, WorksheetError> {
        let existing: Option<String> = with_pool!(&self.db, pool => {
            sqlx::query("SELECT status FROM worksheets WHERE connection = $1 AND encounter = $2").bind(s.connection).bind(s.encounter)
                .fetch_optional(pool).await.map(|o| o.and_then(|r| r.try_get::<String, _>("status").ok()))
        })
        .map_err(err)?;
        match existing.as_deref() {
            Some(st) if st != "pending" => return Ok(st.to_owned()),
            Some(_) => {
                with_pool!(&self.db, pool => {
                    sqlx::query("UPDATE worksheets SET patient=$3, class=$4, agent=$5, coded_ms=$6, pipeline_ms=$7, baseline_min=$8, body=$9 WHERE connection=$1 AND encounter=$2")
                        .bind(s.connection).bind(s.encounter).bind(s.patient).bind(s.class).bind(s.agent).bind(s.now_ms).bind(s.pipeline_ms).bind(s.baseline_min).bind(s.body)
                        .execute(pool).await.map(|_| ())
                })
                .map_err(err)?;
            }
            None => {
                with_pool!(&self.db, pool => {
                    sqlx::query("INSERT INTO worksheets (connection, encounter, patient, class, agent, coded_ms, pipeline_ms, baseline_min, body, status) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,'pending')")
                        .bind(s.connection).bind(s.encounter).bind(s.patient).bind(s.class).bind(s.agent).bind(s.now_ms).bind(s.pipeline_ms).bind(s.baseline_min).bind(s.body)
                        .execute(pool).await.map(|_| ())
                })
                .map_err(err)?;
            }
        }
        Ok("pending".to_owned())
    }

    /// Worksheets, newest first, at most `limit`.
    pub async fn list(&self, limit: i64) -> Result<Vec<StoredWorksheet>, WorksheetError> {
        let rows = with_pool!(&self.db, pool => {
            sqlx::query(select_worksheet!("FROM worksheets ORDER BY coded_ms DESC, encounter LIMIT $1"))
                .bind(limit).fetch_all(pool).await.map(|rows| rows.iter().map(row).collect::<Vec<_>>())
        })
        .map_err(err)?;
        rows.into_iter().collect()
    }

    /// One worksheet.
    pub async fn get(&self, connection: &str, encounter: &str) -> Result<Option<StoredWorksheet>, WorksheetError> {
        let r = with_pool!(&self.db, pool => {
            sqlx::query(select_worksheet!("FROM worksheets WHERE connection = $1 AND encounter = $2"))
                .bind(connection).bind(encounter).fetch_optional(pool).await.map(|o| o.as_ref().map(row))
        })
        .map_err(err)?;
        r.transpose()
    }

    /// Records a review of a pending worksheet, atomically: a worksheet already reviewed
    /// is left alone (the first review wins).
    pub async fn review(&self, connection: &str, encounter: &str, review: &Review<'_>) -> Result<ReviewResult, WorksheetError> {
        let codes = review.final_codes.map(serde_json::to_string).transpose().map_err(err)?;
        let n = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE worksheets SET status = $3, reviewer = $4, review_ms = $5, reviewed_at_ms = $6, final_codes = $7 WHERE connection = $1 AND encounter = $2 AND status = 'pending'")
                .bind(connection).bind(encounter).bind(review.status.as_str()).bind(review.reviewer).bind(review.review_ms).bind(review.now_ms).bind(codes.as_deref())
                .execute(pool).await.map(|r| r.rows_affected())
        })
        .map_err(err)?;
        if n > 0 {
            return Ok(ReviewResult::Recorded);
        }
        match self.get(connection, encounter).await? {
            None => Ok(ReviewResult::Missing),
            Some(w) => Ok(ReviewResult::AlreadyReviewed(w.status)),
        }
    }

    /// The time-savings columns of every worksheet, oldest first.
    pub async fn all_meta(&self) -> Result<Vec<WorksheetMeta>, WorksheetError> {
        let rows = with_pool!(&self.db, pool => {
            sqlx::query("SELECT class, coded_ms, pipeline_ms, baseline_min, status, review_ms FROM worksheets ORDER BY coded_ms, encounter")
                .fetch_all(pool).await.map(|rows| {
                    rows.iter().map(|r| -> Result<WorksheetMeta, sqlx::Error> {
                        Ok(WorksheetMeta {
                            class: r.try_get("class")?,
                            coded_ms: r.try_get("coded_ms")?,
                            pipeline_ms: r.try_get("pipeline_ms")?,
                            baseline_min: r.try_get("baseline_min")?,
                            status: r.try_get("status")?,
                            review_ms: r.try_get("review_ms")?,
                        })
                    }).collect::<Vec<_>>()
                })
        })
        .map_err(err)?;
        rows.into_iter().map(|r| r.map_err(err)).collect()
    }
}

fn row<R: sqlx::Row>(r: &R) -> Result<StoredWorksheet, WorksheetError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredWorksheet {
        connection: r.try_get("connection").map_err(err)?,
        encounter: r.try_get("encounter").map_err(err)?,
        patient: r.try_get("patient").map_err(err)?,
        class: r.try_get("class").map_err(err)?,
        agent: r.try_get("agent").map_err(err)?,
        coded_ms: r.try_get("coded_ms").map_err(err)?,
        pipeline_ms: r.try_get("pipeline_ms").map_err(err)?,
        baseline_min: r.try_get("baseline_min").map_err(err)?,
        body: r.try_get("body").map_err(err)?,
        status: r.try_get("status").map_err(err)?,
        reviewer: r.try_get("reviewer").map_err(err)?,
        review_ms: r.try_get("review_ms").map_err(err)?,
        reviewed_at_ms: r.try_get("reviewed_at_ms").map_err(err)?,
        final_codes: r.try_get("final_codes").map_err(err)?,
    })
}

/// The manual coding baseline for an encounter class code, in minutes (DESIGN.md §7).
pub fn baseline_minutes(class: &str, cfg: &medicodax_config::CodingConfig) -> f64 {
    match class {
        "IMP" | "ACUTE" | "NONAC" | "inpatient" => cfg.inpatient_minutes,
        "EMER" | "emergency" => cfg.emergency_minutes,
        _ => cfg.outpatient_minutes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn submit_replaces_pending_and_keeps_reviewed() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        crate::users::UserStore::open(db.clone()).await.unwrap();
        let ws = WorksheetStore::new(db);
        let mut s = Submission { connection: "c", encounter: "e1", patient: "p", class: "AMB", agent: "a", now_ms: 1, pipeline_ms: 1200, baseline_min: 4.0, body: "{}" };
        assert_eq!(ws.submit(&s).await.unwrap(), "pending");
        s.now_ms = 2;
        s.body = "{\"v\":2}";
        assert_eq!(ws.submit(&s).await.unwrap(), "pending");
        let all = ws.list(10).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].body, "{\"v\":2}");
        assert!((all[0].minutes_saved() - (4.0 - 0.02)).abs() < 1e-9);
        assert_eq!(baseline_minutes("EMER", &Default::default()), 6.0);
        assert_eq!(baseline_minutes("IMP", &Default::default()), 20.0);
        assert_eq!(baseline_minutes("AMB", &Default::default()), 4.0);
    }
}
