//! kybern API server.
