//! Access policy: SMART v1/v2 scope grammar, roles, compartments, search-parameter allow-lists, redaction
