//! `retry_all_dead` on a host's own store, against the runs it starts: each job
//! dead when it is reached runs once more, and the count says how many did.
//!
//! A store's pages take time (a file, a lock), and meanwhile the jobs just retried
//! run. The store here waits for them at each page of dead jobs, or lets another
//! caller retry one first: what a busy SQLite store does by chance.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::store::{Twist, Twisted};
use koan::job::{JobPage, JobQuery, JobState, JobStore, MemoryJobStore};
use koan::testing::within;
use koan::transport::BoxFuture;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext,
};

/// How many times each job ran.
type Runs = Arc<Mutex<HashMap<String, u32>>>;

/// `doomed` always fails; `second` fails its first run and succeeds after.
#[derive(Default)]
struct Work {
    runs: Runs,
}

impl Work {
    fn ran(&self, cx: &ActionContext) -> u32 {
        let id = cx.job().map(|j| j.id.clone()).unwrap_or_default();
        let mut runs = self.runs.lock().expect("runs");
        let n = runs.entry(id).or_default();
        *n += 1;
        *n
    }
}

impl Service for Work {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "doomed",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                svc.ran(&cx);
                Err::<(), BoxError>("doomed".into())
            },
        )
        .max_attempts(1);
        a.action(
            "second",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                match svc.ran(&cx) {
                    1 => Err::<u32, BoxError>("first run fails".into()),
                    n => Ok(n),
                }
            },
        )
        .max_attempts(1);
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// What the store does at a page of dead jobs.
#[derive(Clone, Copy, PartialEq)]
enum AtDeadPage {
    /// Waits until no job is queued or running (the retried ones have run).
    WaitForRuns,
    /// Hands the page back once another caller has retried its first job, and
    /// that run has succeeded (once).
    RetriedElsewhere,
    /// Takes 10 s (a large store).
    Slow,
}

/// Slow at pages of dead jobs, as [`AtDeadPage`] says.
struct SlowPages {
    at_dead_page: AtDeadPage,
    host: OnceLock<HostHandle>,
    retried_elsewhere: AtomicBool,
}

impl SlowPages {
    async fn dead_page(&self, inner: &MemoryJobStore, query: JobQuery) -> koan::Result<JobPage> {
        if self.at_dead_page == AtDeadPage::WaitForRuns {
            loop {
                let c = inner.counts(None).await?;
                if c.get(JobState::Queued) + c.get(JobState::Running) == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if self.at_dead_page == AtDeadPage::Slow {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let page = inner.list(query).await?;
        if self.at_dead_page == AtDeadPage::RetriedElsewhere
            && !self.retried_elsewhere.swap(true, Ordering::SeqCst)
            && let (Some(job), Some(host)) = (page.jobs.first(), self.host.get())
        {
            host.jobs().retry(&job.id).await?;
            koan::testing::wait_for_job(host, &job.id, JobState::Succeeded).await;
        }
        Ok(page)
    }
}

impl Twist for SlowPages {
    fn list<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        query: JobQuery,
    ) -> BoxFuture<'a, koan::Result<JobPage>> {
        if query.state == Some(JobState::Dead) {
            return Box::pin(self.dead_page(inner, query));
        }
        inner.list(query)
    }
}

/// A host of `Work` on a [`SlowPages`] store, with five dead jobs of `action`.
async fn five_dead(action: &str, at_dead_page: AtDeadPage) -> anyhow::Result<(HostHandle, Runs)> {
    let store = Twisted::new(SlowPages {
        at_dead_page,
        host: OnceLock::new(),
        retried_elsewhere: AtomicBool::new(false),
    });
    let work = Work::default();
    let runs = Arc::clone(&work.runs);
    let host = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .instance(work)
        .build()?
        .start();
    host.started().await?;
    let _ = store.twist.host.set(host.clone());
    for _ in 0..5 {
        let ticket = host.service("Work").action(action, ()).enqueue().await?;
        koan::testing::wait_for_job(&host, ticket.id(), JobState::Dead).await;
    }
    Ok((host, runs))
}

/// How many jobs ran how many times: (runs, jobs).
fn tally(runs: &Runs) -> Vec<(u32, usize)> {
    let mut by_runs: HashMap<u32, usize> = HashMap::new();
    for n in runs.lock().expect("runs").values() {
        *by_runs.entry(*n).or_default() += 1;
    }
    let mut tally: Vec<(u32, usize)> = by_runs.into_iter().collect();
    tally.sort_unstable();
    tally
}

#[tokio::test(start_paused = true)]
async fn a_job_that_dies_again_at_once_is_retried_once_and_counted_once() -> anyhow::Result<()> {
    let (host, runs) = five_dead("doomed", AtDeadPage::WaitForRuns).await?;
    let n = within("retry_all_dead", host.jobs().retry_all_dead(None)).await?;
    assert_eq!(n, 5, "five dead jobs, each retried once");
    let ids: Vec<String> = runs.lock().expect("runs").keys().cloned().collect();
    for id in &ids {
        koan::testing::wait_for_job(&host, id, JobState::Dead).await;
    }
    assert_eq!(
        tally(&runs),
        [(2, 5)],
        "each ran twice: its run and one retry"
    );
    Ok(koan::testing::stop(&host).await?)
}

#[tokio::test(start_paused = true)]
async fn a_job_retried_and_succeeded_meanwhile_is_not_run_again() -> anyhow::Result<()> {
    let (host, runs) = five_dead("second", AtDeadPage::RetriedElsewhere).await?;
    let n = within("retry_all_dead", host.jobs().retry_all_dead(None)).await?;
    assert_eq!(n, 4, "one of the five was no longer dead when reached");
    let ids: Vec<String> = runs.lock().expect("runs").keys().cloned().collect();
    for id in &ids {
        koan::testing::wait_for_job(&host, id, JobState::Succeeded).await;
    }
    assert_eq!(
        tally(&runs),
        [(2, 5)],
        "each ran twice: the one retried elsewhere was not run a third time"
    );
    Ok(koan::testing::stop(&host).await?)
}

/// The walk goes to its end when its caller stops waiting (an HTTP client that hung
/// up stopped it part-way, the rest left dead; found by a probe).
#[tokio::test(start_paused = true)]
async fn the_walk_goes_on_when_its_caller_stops_waiting() -> anyhow::Result<()> {
    let (host, runs) = five_dead("second", AtDeadPage::Slow).await?;
    let gave_up =
        tokio::time::timeout(Duration::from_secs(1), host.jobs().retry_all_dead(None)).await;
    assert!(
        gave_up.is_err(),
        "the caller stopped waiting before the first page"
    );
    let ids: Vec<String> = runs.lock().expect("runs").keys().cloned().collect();
    for id in &ids {
        koan::testing::wait_for_job(&host, id, JobState::Succeeded).await;
    }
    assert_eq!(tally(&runs), [(2, 5)], "each retried once");
    Ok(koan::testing::stop(&host).await?)
}
