//! Named actions: declaration, the bounded priority mailbox, enforced deadlines,
//! correlation ids, and the fluent request API.

mod context;
mod correlation;
mod deadline;
mod declare;
mod enqueue;
mod enqueue_shared;
mod error_body;
mod execute;
mod info;
mod inline;
mod mailbox;
mod metrics;

mod queue;
mod reply;
mod request;
mod route;
mod run;
mod serve;
mod singleton;
mod slots;
mod step;
mod table;
mod typed;
mod worker;

pub use crate::payload::JsonText;
pub use context::ActionContext;
pub use correlation::{MAX_CORRELATION_ID, check_correlation_id, new_correlation_id};
pub use declare::{ActionDecl, Actions};
pub use error_body::ErrorBody;
pub use execute::Execute;
pub use info::ActionInfo;
pub use request::{ActionOutput, ActionRequest, ActionTicket, CallOptions};
pub use serve::Serve;
pub use typed::{HandlerResult, TypedExecute, TypedJobTicket, TypedRequest, typed_request};
#[doc(hidden)]
pub use typed::{PlainValue, ResultKind, ReturnsResult, ReturnsValue, ValueKind, plain_value};

pub(crate) use context::{JobMeta, current_correlation};
pub(crate) use correlation::Correlation;
pub(crate) use queue::ActionQueue;
pub(crate) use request::Target;
pub(crate) use route::{declared_local, local_cell_pub, poke_direct};
pub(crate) use slots::Slots;
pub use table::same_action_name;
pub(crate) use table::{ActionTable, normalized};
pub(crate) use worker::{refuse_all, run_worker};
