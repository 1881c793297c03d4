//! Where a service's actions wait and run: the bounded priority mailbox, the
//! concurrency slots its workers and idle-service callers share (which also count
//! the runs in flight).

use std::sync::Arc;

use super::mailbox::Mailbox;
use super::slots::Slots;

pub(crate) struct ActionQueue {
    pub(crate) mailbox: Arc<Mailbox>,
    /// One permit per action that may run at once (`max_concurrency`), shared by the
    /// mailbox workers and by callers running an action themselves when the service
    /// is idle (`action::inline`). Counts the runs in flight too
    /// ([`Slots::running`]) and the finished actions; shared with the service's
    /// `Activity`, which reads those counts.
    pub(crate) slots: Arc<Slots>,
}

impl ActionQueue {
    /// The queue of `service`, whose declared actions are named `actions` (in its
    /// table's order).
    pub(crate) fn new(
        service: &Arc<str>,
        actions: Box<[Arc<str>]>,
        capacity: usize,
        max_concurrency: usize,
    ) -> Self {
        ActionQueue {
            mailbox: Arc::new(Mailbox::new(
                Arc::clone(service),
                actions,
                capacity,
                max_concurrency,
            )),
            slots: Arc::new(Slots::closed(max_concurrency)),
        }
    }
}
