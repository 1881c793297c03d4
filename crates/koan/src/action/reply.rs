//! The channel that carries an accepted action's answer back to its waiting caller.
//!
//! faern's `oneshot` rather than tokio's (B3: every queued call makes one): its send is
//! a single atomic add, its receiver spends none of the task's cooperative budget, and
//! the channel has no reference counts: whichever end goes last frees it, nearly always
//! the caller once woken.
//!
//! Its receiver is `Send` but not `Sync`; held in a `SyncWrapper` (it is only ever
//! polled through `&mut`), an `ActionTicket` stays `Sync`, as it was on tokio's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use sync_wrapper::SyncWrapper;

use crate::error::Result;
use crate::payload::Payload;

/// The answering side; dropped unsent, its caller sees the answer lost.
pub(crate) type ReplyTx = oneshot::Sender<Result<Payload>>;

/// The caller's side: resolves to the answer, or to an error when it was lost.
pub(crate) struct ReplyRx(SyncWrapper<oneshot::AsyncReceiver<Result<Payload>>>);

impl std::fmt::Debug for ReplyRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyRx")
    }
}

impl Future for ReplyRx {
    type Output = std::result::Result<Result<Payload>, oneshot::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(self.0.get_mut()).poll(cx)
    }
}

/// A new channel for one answer.
pub(crate) fn channel() -> (ReplyTx, ReplyRx) {
    let (tx, rx) = oneshot::async_channel();
    (tx, ReplyRx(SyncWrapper::new(rx)))
}

/// The answer if it came, without waiting (nor registering a waker).
pub(crate) fn try_take(rx: &mut ReplyRx) -> Option<Result<Payload>> {
    let rx = rx.0.get_mut();
    if !rx.has_message() {
        return None;
    }
    // A message is there: the poll is ready at once, and wakes nobody.
    match Pin::new(rx).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(answer) => answer.ok(),
        Poll::Pending => None,
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    use super::*;
    use crate::error::Error;

    fn value(p: Option<Result<Payload>>) -> Option<u64> {
        p?.ok()?.decode::<u64>(&|| "test".to_owned()).ok()
    }

    #[tokio::test]
    async fn an_answer_reaches_the_waiting_caller() {
        let (tx, rx) = channel();
        let waiting = tokio::spawn(rx);
        tokio::task::yield_now().await;
        assert!(tx.send(Ok(Payload::of(7u64))).is_ok());
        let got = waiting.await.expect("the caller's task").ok();
        assert_eq!(value(got), Some(7));
    }

    #[tokio::test]
    async fn a_sender_dropped_unsent_is_a_lost_answer() {
        let (tx, rx) = channel();
        let waiting = tokio::spawn(rx);
        tokio::task::yield_now().await;
        drop(tx);
        assert!(waiting.await.expect("the caller's task").is_err());
    }

    #[test]
    fn an_answer_that_came_is_taken_without_waiting_and_a_caller_gone_is_seen() {
        let (tx, mut rx) = channel();
        assert!(try_take(&mut rx).is_none(), "nothing sent yet");
        assert!(tx.send(Ok(Payload::of(9u64))).is_ok());
        assert_eq!(value(try_take(&mut rx)), Some(9));
        let (tx, rx) = channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert!(tx.send(Err(Error::shutting_down("test"))).is_err());
    }
}
