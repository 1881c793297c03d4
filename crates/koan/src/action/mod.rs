//! Named actions: declaration, the bounded priority mailbox, enforced deadlines,
//! correlation ids, and the fluent request API.

mod context;
mod correlation;
mod declare;
mod enqueue;
mod enqueue_shared;
mod error_body;
mod execute;
mod info;
mod inline;
mod mailbox;
mod metrics;
mod payload;
mod request;
mod route;
mod slots;
mod typed;
mod worker;

pub use context::ActionContext;
pub use declare::{ActionDecl, Actions};
pub use error_body::ErrorBody;
pub use execute::Execute;
pub use info::{ActionInfo, EventInfo};
pub use request::{ActionOutput, ActionRequest, ActionTicket, CallOptions};
pub use typed::{HandlerResult, TypedExecute, TypedJobTicket, TypedRequest, typed_request};

pub(crate) use context::{JobMeta, current_correlation};
pub(crate) use correlation::Correlation;
pub(crate) use declare::ActionTable;
pub(crate) use mailbox::Mailbox;
pub(crate) use payload::{Payload, from_json};
pub(crate) use request::Target;
pub(crate) use route::{local_cell_pub, poke_direct};
pub(crate) use slots::Slots;
pub(crate) use worker::{refuse_all, run_worker};
