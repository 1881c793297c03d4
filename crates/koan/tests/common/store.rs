//! A job store that forwards every call to the in-memory one but those its
//! [`Twist`] changes: what the tests of the runner's passes and of
//! `retry_all_dead` count or slow down.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use koan::ServiceContext;
use koan::job::{
    Claim, ClaimRequest, Claimed, Finish, JobCounts, JobPage, JobQuery, JobRecord, JobStore,
    LiveServices, MemoryJobStore, NewJob, Pushed, RetryFrom,
};
use koan::transport::BoxFuture;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};

/// What a test changes of the in-memory store: each call forwards by default.
pub(crate) trait Twist: Send + Sync + 'static {
    /// Whether the store says it survives the process (the same store handed to
    /// the next host stands for the file a restarted process opens again).
    fn durable(&self) -> bool {
        false
    }
    fn push<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        job: NewJob,
    ) -> BoxFuture<'a, koan::Result<Pushed>> {
        inner.push(job)
    }
    fn claim<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        request: ClaimRequest,
    ) -> BoxFuture<'a, koan::Result<Vec<Claimed>>> {
        inner.claim(request)
    }
    fn list<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        query: JobQuery,
    ) -> BoxFuture<'a, koan::Result<JobPage>> {
        inner.list(query)
    }
    fn live_services<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
    ) -> BoxFuture<'a, koan::Result<Option<LiveServices>>> {
        inner.live_services()
    }
    fn finish<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        claim: &Claim,
        how: Finish,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, koan::Result<bool>> {
        inner.finish(claim, how, now)
    }
}

/// The in-memory store with `twist`.
pub(crate) struct Twisted<T> {
    pub(crate) inner: MemoryJobStore,
    pub(crate) twist: T,
}

impl<T: Twist> Twisted<T> {
    /// A new empty store with `twist`, shared.
    pub(crate) fn new(twist: T) -> Arc<Self> {
        Arc::new(Twisted {
            inner: MemoryJobStore::new(),
            twist,
        })
    }
}

impl<T: Twist> JobStore for Twisted<T> {
    fn is_durable(&self) -> bool {
        self.twist.durable() || self.inner.is_durable()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn push(&self, job: NewJob) -> BoxFuture<'_, koan::Result<Pushed>> {
        self.twist.push(&self.inner, job)
    }
    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, koan::Result<Vec<Claimed>>> {
        self.twist.claim(&self.inner, request)
    }
    fn heartbeat(&self, claim: &Claim, until: DateTime<Utc>) -> BoxFuture<'_, koan::Result<bool>> {
        self.inner.heartbeat(claim, until)
    }
    fn finish(
        &self,
        claim: &Claim,
        how: Finish,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, koan::Result<bool>> {
        self.twist.finish(&self.inner, claim, how, now)
    }
    fn get(&self, id: &str) -> BoxFuture<'_, koan::Result<Option<JobRecord>>> {
        self.inner.get(id)
    }
    fn list(&self, query: JobQuery) -> BoxFuture<'_, koan::Result<JobPage>> {
        self.twist.list(&self.inner, query)
    }
    fn counts(&self, service: Option<&str>) -> BoxFuture<'_, koan::Result<JobCounts>> {
        self.inner.counts(service)
    }
    fn next_due(&self, services: &[String]) -> BoxFuture<'_, koan::Result<Option<DateTime<Utc>>>> {
        self.inner.next_due(services)
    }
    fn live_services(&self) -> BoxFuture<'_, koan::Result<Option<LiveServices>>> {
        self.twist.live_services(&self.inner)
    }
    fn retry(
        &self,
        id: &str,
        from: RetryFrom,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, koan::Result<JobRecord>> {
        self.inner.retry(id, from, now)
    }
    fn cancel(&self, id: &str, now: DateTime<Utc>) -> BoxFuture<'_, koan::Result<JobRecord>> {
        self.inner.cancel(id, now)
    }
    fn delete(&self, id: &str) -> BoxFuture<'_, koan::Result<bool>> {
        self.inner.delete(id)
    }
    fn purge(&self, older: DateTime<Utc>, max_bytes: u64) -> BoxFuture<'_, koan::Result<u64>> {
        self.inner.purge(older, max_bytes)
    }
}

/// A background service whose one action, `double`, answers twice its number: the
/// job the store tests run.
#[derive(Default)]
pub(crate) struct Work;

impl Service for Work {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "double",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n * 2) },
        );
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}
