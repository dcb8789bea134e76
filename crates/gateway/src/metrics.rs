//! Prometheus metrics: one process-wide recorder, rendered at `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle. If another
/// recorder was installed first (an embedding application's), returns `None` and
/// `/metrics` says so.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => {
                describe();
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will be empty");
                None
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!("medicodax_calls_total", "Verified tool calls by tool and decision");
    metrics::describe_counter!("medicodax_calls_rejected_total", "Calls that did not verify, by reason (not audited)");
    metrics::describe_histogram!("medicodax_call_seconds", "Time from receiving a call to its answer");
    metrics::describe_counter!("medicodax_upstream_requests_total", "Requests to EHRs by connection and status class");
    metrics::describe_counter!("medicodax_agent_jwks_fetches_total", "Fetches of agents' JWKS URLs");
    metrics::describe_counter!("medicodax_agent_jwks_fetch_failures_total", "Failed fetches of agents' JWKS URLs");
}
