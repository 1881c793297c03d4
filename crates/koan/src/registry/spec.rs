//! What a service is, fixed when the host is built: its name, kind, options,
//! schedule, declared actions and the object that runs it.

use std::any::TypeId;
use std::sync::Arc;

use crate::action::ActionTable;
use crate::clock::Clock;
use crate::schedule::Schedule;
use crate::service::{ErasedService, Runner, ServiceKind, ServiceOptions};

pub(crate) struct ServiceSpec {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ServiceKind,
    pub(crate) type_id: TypeId,
    pub(crate) options: ServiceOptions,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) service: Arc<dyn ErasedService>,
    pub(crate) runner: Runner,
    pub(crate) actions: Arc<ActionTable>,
    /// Why it is disabled (configuration), if it is.
    pub(crate) disabled: Option<String>,
    pub(crate) clock: Clock,
}
