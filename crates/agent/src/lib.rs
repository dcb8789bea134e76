//! Agent-side client: sign a tool call, send it, check the receipt
