//! What `info()` says of a service's declared events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Describes an event in `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct EventInfo {
    /// The event's name.
    pub name: String,
    /// What it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its payload (`null` when undeclared).
    pub payload_schema: Value,
}
