//! What an MCP client sees before it calls anything: the server's identity and the tool
//! list, with a JSON Schema for each tool's `arguments`.
//!
//! The list is built from [`ToolName::ALL`], so the gateway's `/mcp` and the stdio
//! bridge offer exactly the tools the gateway executes. Nothing here depends on who asks:
//! listing needs no signature and reveals no data (no connection names, no roles).
//!
//! The schemas describe what the gateway's strict argument types accept (the FHIR id
//! grammar, the eleven resource types, `[name, value]` search pairs,
//! `additionalProperties: false`). They are guidance for the client; the gateway still
//! checks every call itself and answers `400 bad-arguments` naming the field.

use medicodax_wire::tools::MAX_SEARCH_RESULTS;
use medicodax_wire::{ResourceType, ToolName};
use rmcp::model::{Implementation, JsonObject, ServerCapabilities, ServerConfig, Tool, ToolAnnotations};
use serde_json::{Value, json};

/// `params._meta` key of a `tools/call` that carries the signed call (a compact JWS).
pub const CALL_META_KEY: &str = "io.medicodax/call";
/// Result `_meta` key of the gateway's receipt (a compact JWS).
pub const RECEIPT_META_KEY: &str = "io.medicodax/receipt";
/// Result `_meta` key of the HTTP status the same call gets on `POST /v1/calls`.
pub const STATUS_META_KEY: &str = "io.medicodax/status";
/// Result `_meta` key of `Retry-After` seconds (429 and some 503 answers).
pub const RETRY_AFTER_META_KEY: &str = "io.medicodax/retry-after";
/// Result `_meta` key naming a failure of the stdio bridge itself (the gateway was not
/// reached, or its answer did not check out); such results carry no receipt.
pub const BRIDGE_ERROR_META_KEY: &str = "io.medicodax/bridge-error";

/// The FHIR id grammar of DESIGN.md §3.1.
const FHIR_ID_PATTERN: &str = "^[A-Za-z0-9\\-.]{1,64}$";
/// A connection name: 1 to 64 characters from `A-Za-z0-9-_.`.
const CONNECTION_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

fn connection() -> Value {
    json!({"type": "string", "pattern": CONNECTION_PATTERN, "description": "The EHR connection name, as connections.list shows it."})
}

fn resource_type(what: &str) -> Value {
    json!({"type": "string", "enum": ResourceType::ALL.map(ResourceType::as_str), "description": what})
}

fn fhir_id(what: &str) -> Value {
    json!({"type": "string", "pattern": FHIR_ID_PATTERN, "description": what})
}

/// An object schema with `properties` (a JSON object literal), the `required` names, and
/// no other members allowed.
fn object(properties: Value, required: &[&str]) -> JsonObject {
    let mut o = JsonObject::new();
    o.insert("type".into(), json!("object"));
    o.insert("properties".into(), properties);
    if !required.is_empty() {
        o.insert("required".into(), json!(required));
    }
    o.insert("additionalProperties".into(), json!(false));
    o
}

/// The JSON Schema of a tool's `arguments`, or `None` for a name the gateway does not offer.
pub fn input_schema(tool: &str) -> Option<JsonObject> {
    // Matched on the wire name rather than on the enum, so that this crate builds while
    // the tool set grows; `every_tool_has_a_schema` fails for a tool added without one.
    let schema = match tool {
        "fhir.read" => object(
            json!({"connection": connection(), "type": resource_type("The resource type."), "id": fhir_id("The resource id.")}),
            &["connection", "type", "id"],
        ),
        "fhir.search" => object(
            json!({
                "connection": connection(),
                "type": resource_type("The resource type searched."),
                "params": {
                    "type": "array",
                    "description": "Search parameters as [name, value] pairs, in order, e.g. [[\"patient\", \"123\"], [\"date\", \"ge2024-01-01\"]]. Never a URL.",
                    "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                },
                "max_results": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_RESULTS, "description": "Stop after this many results (default and maximum 10000)."},
            }),
            &["connection", "type"],
        ),
        "encounter.bundle" => object(json!({"connection": connection(), "encounter": fhir_id("The Encounter id.")}), &["connection", "encounter"]),
        "connections.list" => object(json!({}), &[]),
        "worksheet.submit" => object(
            json!({
                "connection": connection(),
                "encounter": fhir_id("The Encounter coded."),
                "patient": fhir_id("Its Patient."),
                "class": {"type": "string", "description": "The encounter class code (AMB, EMER, IMP, ...)."},
                "pipeline_ms": {"type": "integer", "minimum": 0, "description": "Time spent coding the encounter, in milliseconds."},
                "worksheet": {"type": "object", "description": "The coding worksheet (JSON, at most 48 KiB)."},
            }),
            &["connection", "encounter", "patient", "class", "pipeline_ms", "worksheet"],
        ),
        _ => return None,
    };
    Some(schema)
}

/// One tool's listing. `None` for a tool without a schema (see [`input_schema`]).
pub fn tool(name: ToolName) -> Option<Tool> {
    let schema = input_schema(name.as_str())?;
    let read_only = name.as_str() != "worksheet.submit";
    // Reads reach the EHR (an open world); the worksheet stays inside the gateway.
    let annotations = ToolAnnotations::new().read_only(read_only).destructive(false).open_world(read_only);
    Some(Tool::new(name.as_str(), name.description(), schema).with_annotations(annotations))
}

/// Every tool the gateway offers, in [`ToolName::ALL`] order.
pub fn tools() -> Vec<Tool> {
    ToolName::ALL.into_iter().filter_map(tool).collect()
}

/// What both MCP servers tell clients about signing.
pub const INSTRUCTIONS: &str = "MEDICODAX gives AI agents FHIR R4 data from EHRs through signed, policy-checked and audited tool calls. \
Every tools/call must carry a compact JWS (typ medicodax-call+jwt) signed with the agent's registered key in params._meta[\"io.medicodax/call\"], \
whose `tool` and `args` equal the request's `name` and `arguments`; `medicodax mcp` does this for clients that cannot sign. \
Each result's text is the answer's exact bytes; the gateway's signed receipt over them is in _meta[\"io.medicodax/receipt\"].";

/// The server identity and capabilities (tools only) for `initialize` and `server/discover`.
pub fn server_config(name: &str) -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(Implementation::new(name, env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_wire::tools::{ConnectionsListArgs, EncounterBundleArgs, FhirReadArgs, FhirSearchArgs};
    use serde::de::DeserializeOwned;

    #[test]
    fn every_tool_has_a_schema() {
        let listed: Vec<String> = tools().iter().map(|t| t.name.to_string()).collect();
        let all: Vec<String> = ToolName::ALL.iter().map(|t| t.as_str().to_owned()).collect();
        assert_eq!(listed, all);
        assert!(input_schema("fhir.delete").is_none());
        for t in tools() {
            assert_eq!(t.description.as_deref(), Some(t.name.parse::<ToolName>().unwrap().description()));
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
            assert_eq!(t.input_schema.get("additionalProperties"), Some(&json!(false)));
        }
    }

    /// The schema's members are the argument type's fields, and `required` is the set the
    /// type cannot do without: checked by deserialising with each member left out.
    fn agrees_with<T: DeserializeOwned>(tool: &str, full: Value) {
        let schema = input_schema(tool).unwrap();
        let props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let given: Vec<&String> = full.as_object().unwrap().keys().collect();
        assert_eq!(props, given, "{tool}: schema members vs a full example");
        serde_json::from_value::<T>(full.clone()).unwrap_or_else(|e| panic!("{tool}: the full example is refused: {e}"));
        let required: Vec<&str> = schema.get("required").and_then(Value::as_array).map(|r| r.iter().map(|v| v.as_str().unwrap()).collect()).unwrap_or_default();
        for name in given {
            let mut partial = full.clone();
            partial.as_object_mut().unwrap().remove(name);
            let accepted = serde_json::from_value::<T>(partial).is_ok();
            assert_eq!(accepted, !required.contains(&name.as_str()), "{tool}: is {name} required?");
        }
        let mut extra = full.clone();
        extra["surprise"] = json!(1);
        assert!(serde_json::from_value::<T>(extra).is_err(), "{tool}: unknown members are refused, as the schema says");
    }

    #[test]
    fn schemas_agree_with_the_wire_argument_types() {
        agrees_with::<FhirReadArgs>("fhir.read", json!({"connection": "epic-sandbox", "id": "p-1", "type": "Patient"}));
        agrees_with::<FhirSearchArgs>(
            "fhir.search",
            json!({"connection": "epic-sandbox", "max_results": 5, "params": [["patient", "p-1"]], "type": "Condition"}),
        );
        agrees_with::<EncounterBundleArgs>("encounter.bundle", json!({"connection": "ecw-sandbox", "encounter": "e.1"}));
        agrees_with::<ConnectionsListArgs>("connections.list", json!({}));
    }

    #[test]
    fn schema_patterns_and_enums_match_the_wire_grammar() {
        let read = input_schema("fhir.read").unwrap();
        let types: Vec<&str> = read["properties"]["type"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(types.len(), 11);
        for t in &types {
            assert!(t.parse::<ResourceType>().is_ok(), "{t}");
        }
        assert_eq!(read["properties"]["id"]["pattern"], json!(FHIR_ID_PATTERN));
        for ok in ["a", "A-1.b", &"x".repeat(64)] {
            assert!(medicodax_wire::FhirId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a_b", "a/b", &"x".repeat(65)] {
            assert!(medicodax_wire::FhirId::new(bad).is_err(), "{bad}");
        }
        assert!(medicodax_wire::tools::valid_connection_name("epic_sandbox.2-x"));
    }

    #[test]
    fn the_server_announces_tools_and_how_to_sign() {
        let c = server_config("medicodax-gateway");
        assert!(c.capabilities.tools.is_some());
        assert!(c.capabilities.resources.is_none() && c.capabilities.prompts.is_none());
        assert_eq!(c.server_info.name, "medicodax-gateway");
        assert!(c.instructions.as_deref().unwrap_or_default().contains(CALL_META_KEY));
    }
}
