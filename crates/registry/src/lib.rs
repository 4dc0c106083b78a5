//! kybern registry.
