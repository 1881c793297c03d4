//! The public handles and tickets can be sent to and shared between tasks
//! (`Send + Sync`): a ticket kept in an `RwLock`'s map, a handle in an `Arc`'d state.
//! A change of an internal channel must not take that away (the answer's channel is
//! not `Sync` by itself).

fn shared_between_threads<T: Send + Sync>() {}

#[test]
fn handles_and_tickets_are_send_and_sync() {
    shared_between_threads::<koan::HostHandle>();
    shared_between_threads::<koan::action::ActionTicket>();
    shared_between_threads::<koan::job::JobTicket>();
}
