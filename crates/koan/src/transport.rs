//! The seam through which calls reach services hosted in other processes.
//! `koan-nats` implements it; the runtime uses it when a service is not local.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::util::BoxFuture;

/// An action call bound for another process. Parameters are always JSON on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteCall {
    /// The service's name.
    pub service: String,
    /// The action's name.
    pub action: String,
    /// The parameters.
    pub params: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Deadline, queue time included.
    pub timeout: Option<Duration>,
    /// The correlation id.
    pub correlation_id: String,
}

/// Carries calls to services that this host does not run.
pub trait Transport: Send + Sync + 'static {
    /// Runs `call` on an instance that hosts the service and returns its JSON result.
    /// Errors keep their [`ErrorKind`](crate::ErrorKind); no instance is
    /// `ServiceUnavailable`.
    fn call(&self, call: RemoteCall) -> BoxFuture<'_, Result<Value>>;
}
