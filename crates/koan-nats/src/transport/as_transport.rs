//! `NatsTransport` as koan's [`Transport`]: calls, durable jobs and their records,
//! events, health and the registry's view, as a host asks for them.

use super::*;

impl Transport for NatsTransport {
    fn call(&self, call: RemoteCall) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(self.call_now(call))
    }

    /// One box a call: the future owns the transport's `Arc`.
    fn call_shared(self: Arc<Self>, call: RemoteCall) -> BoxFuture<'static, Result<Value, Error>> {
        Box::pin(async move { self.call_now(call).await })
    }

    fn enqueue(&self, call: RemoteCall, job: DurableJob) -> BoxFuture<'_, Result<bool, Error>> {
        let job = crate::enqueue::job_of(call, job);
        Box::pin(async move {
            // Disconnected, the client would hold the publish and send it once back:
            // the enqueue waited its 15 s, answered "outcome unknown", and the job
            // ran minutes later (found by a probe). Refused at once instead.
            let what = format!("durable enqueue of `{}` on `{}`", job.action, job.service);
            self.offline(&what)?;
            let stored = crate::enqueue::enqueue(self, &job).await?;
            // A new job's outcome comes after its waiter, by the watch; a repeat's
            // (of an id stored before, or of a key's job past the duplicate window)
            // may be written already, and only a read brings it.
            if stored && crate::queue::fresh_id(&job.id) {
                self.inner.waiters.stored_new(&subjects::key(&job.id));
            }
            Ok(stored)
        })
    }

    fn keeps_delayed(&self) -> bool {
        true
    }

    fn keeps_chains(&self) -> bool {
        true
    }

    fn shares_jobs_of(&self, service: &str) -> bool {
        self.inner
            .shared_jobs
            .lock()
            .is_ok_and(|s| s.contains(service))
    }

    fn outcome(&self, id: &str) -> BoxFuture<'static, Result<Value, Error>> {
        let key = subjects::key(id);
        let rx = self.inner.waiters.wait(&key);
        let id = id.to_owned();
        // Interest is registered now (the host calls this before enqueueing); the
        // connection's one watch of the outcomes bucket resolves it, and its sweep
        // looks up any key the watch missed (say, while it reconnected).
        Box::pin(async move {
            rx.await.map_err(|_| {
                unavailable(format!(
                    "the connection that awaited the outcome of {id} is gone"
                ))
            })?
        })
    }

    fn job(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>, Error>> {
        let id = id.to_owned();
        Box::pin(async move {
            self.offline(&format_args!("job {id} cannot be read"))?;
            match crate::records::get_aged(self, &id).await? {
                Some((r, age_ms)) => {
                    let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
                    Ok(Some(crate::record_outcome::as_read(self, r, age).await))
                }
                None => Ok(None),
            }
        })
    }

    fn jobs<'a>(&'a self, query: &'a JobQuery) -> BoxFuture<'a, Option<JobPage>> {
        Box::pin(async move {
            let view = &self.inner.jobs_view;
            let caught_up = view.ready(&self.inner.records, self.connected()).await;
            let mut page = view.list(query);
            if self.connected() {
                let written_ago = |key: &str| view.written_ago(key);
                crate::record_outcome::page_as_read(self, &mut page, query, written_ago).await;
            }
            // While the broker is away, or the view has not yet read the bucket,
            // it answers from memory, and says so.
            page.stale = !caught_up || !self.connected();
            Some(page)
        })
    }

    fn job_counts<'a>(&'a self, service: Option<&'a str>) -> BoxFuture<'a, Option<JobCounts>> {
        Box::pin(async move {
            let view = &self.inner.jobs_view;
            let caught_up = view.ready(&self.inner.records, self.connected()).await;
            if caught_up && self.connected() {
                crate::record_outcome::view_as_read(self).await;
            }
            // As a listing says it (a script checking for dead jobs was told
            // there were none, all zeros, while the bucket could not be read; a
            // probe).
            Some(view.counts(service).stale(!caught_up || !self.connected()))
        })
    }

    fn dead_jobs<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async move {
            self.offline(&"the dead jobs cannot be listed")?;
            crate::records::dead_ids(self, service).await
        })
    }

    fn cancel_job(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>, Error>> {
        let id = id.to_owned();
        Box::pin(async move {
            self.offline(&format_args!("job {id} cannot be cancelled"))?;
            crate::cancels::cancel(self, &id).await
        })
    }

    fn retry_job(
        &self,
        id: &str,
        from: RetryFrom,
    ) -> BoxFuture<'_, Result<Option<JobRecord>, Error>> {
        let id = id.to_owned();
        Box::pin(async move {
            self.offline(&format_args!("job {id} cannot be retried"))?;
            crate::enqueue::retry(self, &id, from).await
        })
    }

    fn delete_job(&self, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let id = id.to_owned();
        Box::pin(async move {
            self.offline(&format_args!("job {id} cannot be deleted"))?;
            if let Some(r) = crate::records::get(self, &id).await? {
                crate::record_outcome::settled(self, r).await;
            }
            crate::records::delete(self, &id).await
        })
    }

    /// Queued for the broker, or dropped, counted and said at the 1st, 2nd, 4th, …
    /// one of each reason (a warning each wrote 90,000 lines for a burst; found by
    /// a probe): `outbox.rs`.
    fn publish(&self, event: &EventEnvelope) {
        self.inner.outbox.publish(event);
    }

    fn query(&self, service: &str, query: RemoteQuery) -> BoxFuture<'_, Result<Value, Error>> {
        let service = service.to_owned();
        Box::pin(async move { self.query_now(&service, query).await })
    }

    fn host_id(&self) -> Option<String> {
        Some(self.inner.host_id.clone())
    }

    fn instances(&self) -> BoxFuture<'_, Result<Vec<Instance>, Error>> {
        let list = self
            .inner
            .view
            .instances(self.stale_after(), self.connected() && !self.view_behind());
        Box::pin(async move { Ok(list) })
    }

    fn knows(&self, service: &str) -> Option<bool> {
        self.inner.view.knows(service)
    }

    fn serves_elsewhere(&self, service: &str) -> bool {
        let me = self.inner.host_id.as_str();
        let mut other = false;
        self.each_route(service, |r| other |= *r.host != *me);
        other
    }

    fn actions_of(&self, service: &str) -> Option<Vec<String>> {
        self.inner.view.actions_of(service)
    }

    fn health(&self) -> Option<HealthReport> {
        // The broker refusing writes for want of room: said first, whatever else.
        if let Some(refused) = self.inner.refusals.said()
            && self.connection_state() == ConnectionState::Connected
        {
            return Some(HealthReport::degraded(format!(
                "connected to NATS at {}, but {refused}",
                self.server()
            )));
        }
        let failing = self
            .inner
            .heartbeat_failing
            .lock()
            .ok()
            .and_then(|f| f.clone());
        let connected = self.connection_state() == ConnectionState::Connected;
        if let Some(why) = failing.filter(|_| connected) {
            return Some(HealthReport::degraded(format!(
                "connected to NATS at {}, but this host's last heartbeat failed ({why}): if they keep failing for three periods the cluster takes it for gone, and calls and jobs for its services go elsewhere or fail",
                self.server()
            )));
        }
        Some(match self.connection_state() {
            ConnectionState::Connected if self.view_behind() => HealthReport::degraded(format!(
                "connected to NATS at {}, but this host's own heartbeat has not come back through the registry for three periods: the cluster sees it as gone (its heartbeats fail, or it was paused); listings are the last known view",
                self.server()
            )),
            ConnectionState::Connected => {
                HealthReport::healthy(format!("connected to NATS at {}", self.server()))
            }
            _ => HealthReport::degraded(format!(
                "disconnected from NATS at {}; reconnecting (calls to other instances fail, listings are the last known view)",
                self.inner.opts.url
            )),
        })
    }

    fn may_run(&self, service: &str) -> BoxFuture<'_, bool> {
        let lease = self.lease_of(service);
        let service = service.to_owned();
        // Asked for singletons only: without a lease (not attached yet, or
        // detached) this host must not run their ticks.
        Box::pin(async move {
            match lease {
                Some(l) => crate::lease::confirm(self, &service, &l).await,
                None => false,
            }
        })
    }

    fn liveness(&self) -> Option<koan::transport::Liveness> {
        // Late once a heartbeat is missed; gone after three (`stale_after`).
        Some(koan::transport::Liveness::new(
            self.inner.opts.heartbeat * 2,
            self.stale_after(),
        ))
    }

    fn may_poke(&self, service: &str) -> BoxFuture<'_, bool> {
        let lease = self.lease_of(service);
        let service = service.to_owned();
        Box::pin(async move {
            match lease {
                Some(l) => crate::lease::renew(self, &service, &l).await,
                None => false,
            }
        })
    }
}
