//! What `info()` says of a service's declared actions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Describes an action or event in `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct ActionInfo {
    /// The action's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its parameters (`null` when it takes none).
    pub params_schema: Value,
    /// True for the built-in pokes of periodic services.
    pub builtin: bool,
    /// Declared safe to run twice: a remote call whose instance leaves the cluster
    /// mid-call is sent again to another instance (absent means `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
}
