//! Named actions: declaration, the bounded priority mailbox, enforced deadlines,
//! correlation ids, and the fluent request API.

mod context;
mod correlation;
mod declare;
mod inline;
mod ledger;
mod mailbox;
mod metrics;
mod payload;
mod request;
mod slots;
mod worker;

pub use context::ActionContext;
pub use declare::{ActionDecl, ActionInfo, Actions, EventInfo};
pub use ledger::{ActionRecord, ActionState, ErrorBody};
pub use request::{ActionOutput, ActionRequest, ActionTicket, CallOptions, Execute};

pub(crate) use context::current_correlation;
pub(crate) use declare::ActionTable;
pub(crate) use ledger::Ledger;
pub(crate) use mailbox::Mailbox;
pub(crate) use payload::from_json;
pub(crate) use request::{Target, local_cell_pub, poke_direct};
pub(crate) use slots::Slots;
pub(crate) use worker::{refuse_all, run_worker};
