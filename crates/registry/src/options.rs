//! The options and results of `GenericStore`'s operations, as the API server's query parameters
//! and answers carry them.

use apimachinery::{ApiError, FieldSelector, LabelSelector};
use serde_json::Value;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}"
            ))),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who makes the write (`fieldManager`); its fields are recorded in managedFields.
    pub field_manager: String,
}

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub label: LabelSelector,
    pub field: FieldSelector,
    pub limit: i64,
    pub continue_token: String,
    pub resource_version: String,
    pub resource_version_match: String,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// How dependents are handled (`propagationPolicy`, or the deprecated `orphanDependents`);
    /// None: the resource's default (Background for every resource served here).
    pub propagation: Option<Propagation>,
}

/// `metav1.DeletionPropagation`: what the garbage collector does with an object's dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their owner reference and stay (finalizer `orphan`).
    Orphan,
    /// The owner goes at once; the garbage collector deletes the dependents afterwards.
    Background,
    /// The owner stays (finalizer `foregroundDeletion`) until its blocking dependents are gone.
    Foreground,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }
}

pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: i64,
    pub continue_token: String,
    pub remaining: Option<i64>,
}

/// A write's answer: the object and any warnings (unknown fields under fieldValidation=Warn).
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    /// True when the write created the object (201 rather than 200).
    pub created: bool,
}

pub enum Deleted {
    /// Removed now; the last state of the object.
    Gone(Value),
    /// Marked for deletion (finalizers, grace period); the updated object.
    Pending(Value),
}
