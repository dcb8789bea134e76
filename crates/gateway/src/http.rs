//! The HTTP API: thin axum handlers over [`Gateway`].

use crate::problem::{ApiProblem, documentation};
use crate::service::{CallAnswer, Channel, Gateway};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medicodax_wire::ProblemCode;
use std::sync::Arc;

/// The receipt header.
pub const RECEIPT_HEADER: &str = "medicodax-receipt";

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// The API routes (without MCP and the dashboard, which are added by the server).
pub fn api_router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/calls", post(call))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/problems/{code}", get(problem_doc))
        .with_state(gw)
}

/// Turns a call answer into an HTTP response.
pub fn answer_response(a: CallAnswer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type))], a.body).into_response();
    let h = resp.headers_mut();
    if let Some(r) = a.receipt.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(RECEIPT_HEADER, r);
    }
    if let Some(s) = a.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn is_jwt(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/jwt"))
}

async fn call(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    if !is_jwt(req.headers()) {
        return ApiProblem::new(ProblemCode::UnsupportedMediaType, "send the signed call as the body with Content-Type: application/jwt").into_response();
    }
    let limit = gw.config.gateway.max_call_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return ApiProblem::new(ProblemCode::TooLarge, format!("the call is {len} bytes; the limit is {limit} bytes")).into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => return ApiProblem::new(ProblemCode::TooLarge, format!("the call is larger than the limit of {limit} bytes")).into_response(),
    };
    // The pipeline runs on its own task: a client that disconnects must not cancel it
    // between the intent record and the outcome record.
    let task = tokio::spawn(async move { gw.handle_call(&body, Channel::Http).await });
    match task.await {
        Ok(answer) => answer_response(answer),
        Err(_) => ApiProblem::new(ProblemCode::Internal, "the call's task failed; the audit log holds its intent").into_response(),
    }
}

async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    let (set, cc) = gw.keys.jwks();
    let mut resp = Json(set).into_response();
    if let Ok(v) = HeaderValue::from_str(&cc) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let head = gw.audit.head();
    let db_ok = medicodax_audit::with_pool!(gw.audit.db(), pool => sqlx::query("SELECT 1").execute(pool).await.is_ok());
    let body = serde_json::json!({"audit_log": {"writable": db_ok, "size": head.size}, "connections": gw.ehrs.len()});
    let status = if db_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    gw.auth.record_metrics();
    let stats = gw.audit.stats();
    metrics::gauge!("medicodax_audit_log_size").set(gw.audit.head().size as f64);
    metrics::gauge!("medicodax_audit_batches").set(stats.batches as f64);
    metrics::gauge!("medicodax_audit_failed_batches").set(stats.failed_batches as f64);
    match crate::metrics::handle() {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder is installed in this process\n").into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn problem_doc(Path(code): Path<String>) -> Response {
    match ProblemCode::ALL.into_iter().find(|c| c.as_str() == code) {
        Some(c) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}: {}\n\n{}\n", c.as_str(), c.title(), documentation(c))).into_response(),
        None => ApiProblem::new(ProblemCode::NotFound, "no such problem code; see /v1/openapi.json for the list").into_response(),
    }
}
