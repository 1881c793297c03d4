//! Loom models (`RUSTFLAGS="--cfg koan_loom" cargo test -p koan --lib loom`): the
//! hand-off between pushes, two workers taking with [`Mailbox::next`], the close, and
//! the lane of priority 0 beside the locked priorities.

use std::sync::Arc;

use loom::sync::mpsc;

use super::{Job, Mailbox};
use crate::action::correlation::Correlation;

/// A mailbox of four jobs, of a service with one action.
pub(crate) fn mailbox() -> Arc<Mailbox> {
    Arc::new(Mailbox::new(
        Arc::from("svc"),
        Box::new([Arc::from("noop")]),
        4,
        1,
    ))
}

/// A job whose priority is its id (it never runs: the model only moves it).
pub(crate) fn job(id: i32) -> Job {
    Job {
        action: 0,
        params: crate::payload::Params::of(()),
        priority: id,
        deadline: None,
        timeout: None,
        correlation: Correlation::Generated(0),
        job: None,
        cancel_on: None,
        reply: None,
        enqueued_at: crate::clock::moment(),
        answered: true,
        by_worker: false,
        detached: false,
        claim: None,
    }
}

/// A worker: reports the id of every job it takes, and returns once closed.
fn worker(mailbox: &Arc<Mailbox>, taken: &mpsc::Sender<i32>) -> loom::thread::JoinHandle<()> {
    let (mailbox, taken) = (Arc::clone(mailbox), taken.clone());
    loom::thread::spawn(move || {
        loom::future::block_on(async {
            while let Some((job, ())) = mailbox.next(|| async {}).await {
                taken.send(job.priority).expect("the model listens");
            }
        })
    })
}

/// A job pushed while two workers wait is taken once (a lost wake-up would
/// leave both asleep on it: loom reports the deadlock), also when the second
/// worker saw it queued and then finds nothing; the close then wakes both idle
/// workers, whichever way they wait, and they return.
#[test]
fn loom_a_push_is_taken_once_and_close_wakes_both_workers() {
    // Three threads: at most two preemptions (it already finds a worker left
    // asleep past the close) keep it to seconds.
    // A job under the lock, then one in the lane.
    for priority in [1, 0] {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(model.preemption_bound.map_or(2, |b| b.min(2)));
        model.check(move || {
            let mailbox = mailbox();
            let (tx, rx) = mpsc::channel();
            let workers = [worker(&mailbox, &tx), worker(&mailbox, &tx)];
            mailbox.push(job(priority)).expect("room for it");
            assert_eq!(rx.recv().expect("the job is taken"), priority);
            assert!(mailbox.close().is_empty());
            for w in workers {
                w.join().expect("a worker returns after the close");
            }
            assert!(rx.try_recv().is_err(), "no job taken twice");
        });
    }
}

/// A close racing a push: the job is either taken by the worker or handed back
/// by the close, never both and never lost, and the worker returns; for a job
/// of the lane (priority 0) and one under the lock.
#[test]
fn loom_a_job_pushed_before_the_close_is_taken_or_handed_back() {
    for priority in [0, 1] {
        loom::model(move || {
            let mailbox = mailbox();
            let (tx, rx) = mpsc::channel();
            let w = worker(&mailbox, &tx);
            mailbox.push(job(priority)).expect("room for it");
            let handed_back = mailbox.close().len();
            w.join().expect("the worker returns after the close");
            let taken = usize::from(rx.try_recv().is_ok());
            assert_eq!(taken + handed_back, 1);
            assert_eq!(mailbox.len(), 0, "the count agrees");
        });
    }
}

/// A push to the lane racing the close, on two threads: a job the push accepted
/// is handed back by the close or emptied from the lane by the push itself (it
/// saw the close), never left behind in the closed mailbox; the count agrees.
#[test]
fn loom_a_lane_push_racing_the_close_is_never_left_behind() {
    loom::model(|| {
        let mailbox = mailbox();
        let pushing = Arc::clone(&mailbox);
        let pusher = loom::thread::spawn(move || pushing.push(job(0)).is_ok());
        let handed_back = mailbox.close().len();
        let accepted = pusher.join().expect("the push returns");
        assert!(handed_back <= usize::from(accepted));
        assert!(
            mailbox.lane_pop().is_none(),
            "a job left in a closed mailbox"
        );
        assert_eq!(mailbox.len(), 0, "the count agrees");
    });
}

/// A job of a higher priority, queued under the lock, goes before the lane's.
#[test]
fn loom_a_higher_priority_goes_before_the_lane() {
    loom::model(|| {
        let mailbox = mailbox();
        let (tx, rx) = mpsc::channel();
        mailbox.push(job(0)).expect("room for it");
        mailbox.push(job(2)).expect("room for it");
        mailbox.push(job(-1)).expect("room for it");
        let w = worker(&mailbox, &tx);
        let order: Vec<i32> = (0..3).map(|_| rx.recv().expect("taken")).collect();
        assert_eq!(order, [2, 0, -1]);
        assert!(mailbox.close().is_empty());
        w.join().expect("the worker returns after the close");
    });
}

/// Jobs of priority 0 pushed one after another while a worker takes them are taken
/// in order: also when the lane (two slots under loom) is full and a job queues
/// under the lock behind it, and the worker then makes room in the lane before the
/// next push (which must queue behind that one, not in the lane).
#[test]
fn loom_the_lane_full_keeps_arrival_order() {
    loom::model(|| {
        let mailbox = mailbox();
        let (tx, rx) = mpsc::channel();
        let w = {
            let mailbox = Arc::clone(&mailbox);
            loom::thread::spawn(move || {
                loom::future::block_on(async {
                    while let Some((job, ())) = mailbox.next(|| async {}).await {
                        tx.send(job.action).expect("the model listens");
                    }
                })
            })
        };
        for n in 0..4 {
            let mut job = job(0);
            job.action = n;
            mailbox.push(job).expect("room for it");
        }
        let order: Vec<usize> = (0..4).map(|_| rx.recv().expect("taken")).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert!(mailbox.close().is_empty());
        w.join().expect("the worker returns after the close");
    });
}
