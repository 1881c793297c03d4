//! An error as it appears in JSON and in job records.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An error as it appears in JSON: `{ "error": kind, "message": … }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// The [`ErrorKind`](crate::error::ErrorKind) as snake_case.
    pub error: String,
    /// The message.
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody {
            error: e.kind().as_str().to_owned(),
            message: e.to_string(),
        }
    }
}
