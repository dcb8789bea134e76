//! The gateway: HTTP API, MCP, dashboard, sessions and metrics, wiring the layers together
