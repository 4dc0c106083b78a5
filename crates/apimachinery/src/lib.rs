//! kybern's API machinery: what every resource shares and that does no I/O. Objects are
//! `serde_json::Value`s here; typed k8s-openapi structs are only used at the edges.

// ApiError (a Status with details) is returned on cold paths only; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod continuation;
pub mod fieldset;
pub mod meta;
pub mod patch;
pub mod selector;
pub mod status;
pub mod time;

pub use selector::{FieldSelector, LabelSelector};
pub use status::{ApiError, FieldError};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
