use crate::error::{Error, ErrorKind, Result};

/// How a host ended.
#[derive(Debug, Clone)]
pub enum HostExit {
    /// Stopped on request (signal or `shutdown()`).
    Stopped,
    /// A startup service failed and fail-fast stopped the host.
    StartupFailed(Error),
    /// A critical service failed for good.
    CriticalFailure {
        /// The failed service.
        service: String,
        /// Its last error.
        error: String,
    },
}

impl HostExit {
    /// Whether this was a clean stop.
    pub fn is_success(&self) -> bool {
        matches!(self, HostExit::Stopped)
    }

    /// The process exit code: 0 for a clean stop, 1 for a startup failure, 2 for a
    /// critical service failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            HostExit::Stopped => 0,
            HostExit::StartupFailed(_) => 1,
            HostExit::CriticalFailure { .. } => 2,
        }
    }

    /// `Ok(())` for a clean stop, the failure as an [`Error`] otherwise.
    pub fn into_result(self) -> Result<()> {
        match self {
            HostExit::Stopped => Ok(()),
            // Already a startup error: said as it is, not wrapped in its own words.
            HostExit::StartupFailed(e) if e.kind() == ErrorKind::Startup => Err(e),
            HostExit::StartupFailed(e) => Err(Error::new(
                ErrorKind::Startup,
                format!("the host did not start: {}", e.message()),
            )
            .with_source(e)),
            HostExit::CriticalFailure { service, error } => Err(Error::new(
                ErrorKind::CriticalFailure,
                format!("critical service `{service}` failed: {error}"),
            )),
        }
    }
}
