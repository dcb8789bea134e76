//! The reference coding agent: coding worksheets from signed tool calls only
