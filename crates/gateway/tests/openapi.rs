//! The OpenAPI document is valid OpenAPI 3.1 (checked by openapi-spec-validator, a
//! validator we did not write), names every API route the router serves, and lists every
//! documented problem code.

use medicodax_gateway::http::OPENAPI;
use medicodax_wire::{ProblemCode, ToolName};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn interop_dir() -> PathBuf {
    std::env::var_os("MEDICODAX_INTEROP_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop"))
}

#[test]
fn the_document_names_every_route_tool_and_problem_code() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/v1/calls", "/mcp", "/.well-known/jwks.json", "/v1/openapi.json", "/v1/problems/{code}", "/healthz", "/readyz", "/metrics"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    let codes: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(codes, ProblemCode::ALL.map(|c| c.as_str()).to_vec());
    let desc = doc["paths"]["/v1/calls"]["post"]["description"].as_str().unwrap();
    for t in ToolName::ALL {
        assert!(desc.contains(t.as_str()), "{t} is not documented");
    }
}

#[test]
fn openapi_spec_validator_accepts_the_document() {
    let py = interop_dir().join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run scripts/test-deps.sh", py.display());
    let mut child = Command::new(py)
        .arg(interop_dir().join("openapi/validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(OPENAPI.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.trim() == "ok", "openapi-spec-validator: {stdout}{}", String::from_utf8_lossy(&out.stderr));
}
