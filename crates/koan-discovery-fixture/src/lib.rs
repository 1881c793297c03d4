//! Services defined in a crate of their own, found by `HostBuilder::discover()` in any
//! binary that links this crate.

use koan::{BoxError, PeriodicService, ServiceContext};

/// A periodic service that lives outside the crate that hosts it.
#[koan::service(every = "10m", description = "Defined in another crate")]
#[derive(Debug, Default)]
pub struct ReportService;

impl PeriodicService for ReportService {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}
