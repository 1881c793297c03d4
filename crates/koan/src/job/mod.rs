//! Jobs: enqueued actions kept in a [`JobStore`] until they are done.
//!
//! `enqueue()` answers only once the store has the job. A runner on each host claims
//! due jobs of the services it runs (with a lease it renews while the job runs), runs
//! them through the service's mailbox like any call, and records the outcome only
//! while it still holds the claim. A job whose claim lapsed (its process died or
//! stalled) is claimed again with the next attempt number: delivery is at least once,
//! and handlers see the job's id, attempt and idempotency key to make it effectively
//! once.

mod api;
mod cluster;
mod heartbeat;
mod id;
mod memory;
mod record;
mod remote;
mod runner;
mod running;
mod shutdown;
mod store;
mod store_health;
mod ticket;
mod transition;
mod upkeep;
mod utc_time;

pub use api::Jobs;
pub(crate) use id::keyed_job_id;
pub use id::{job_id_as_written, new_job_id, new_job_id_time};
pub use memory::MemoryJobStore;
pub use record::{
    JobAttempt, JobCounts, JobInfo, JobPage, JobQuery, JobRecord, JobState, JobStep, NewJob,
    RetryPolicy,
};
pub use running::{Registered, Running};
pub use store::{
    Claim, ClaimRequest, Claimed, Finish, JobStore, LiveServices, Pushed, cut_result, passed_over,
};
pub use ticket::JobTicket;
pub use transition::{
    MAX_ERROR_BYTES, MAX_HISTORY, MAX_LAPSES, RetryFrom, apply_cancel, apply_claim, apply_finish,
    apply_retry, cancelled, check_delete, is_cancelled, never_retried, same_call, unknown_job,
    wrong_state,
};

pub(crate) use runner::{JobRunner, JobSettings, run as run_jobs};
