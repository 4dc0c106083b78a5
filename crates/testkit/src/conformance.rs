//! The Kv conformance suite.
