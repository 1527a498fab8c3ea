//! The server's shutdown signal, cheap enough to look at for every event of every stream.
//!
//! A cancellation token takes a lock to be checked and another to be waited on; an open stream
//! that polled one beside its events would pay both for every token it sends. Here a check is an
//! atomic load, and a stream registers its waker with the token once, not on every poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    token: CancellationToken,
}

/// Set once, when the server starts shutting down; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Closing(Arc<Inner>);

impl Closing {
    pub fn cancel(&self) {
        // The flag first: whoever the token wakes must find it set.
        self.0.flag.store(true, Ordering::Release);
        self.0.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::Acquire)
    }

    /// Resolves once [`Closing::cancel`] was called.
    pub fn cancelled_owned(self) -> WaitForCancellationFutureOwned {
        self.0.token.clone().cancelled_owned()
    }

    /// `stream`, ended early when the server starts shutting down.
    pub fn until<S: Stream>(&self, stream: S) -> Until<S> {
        Until {
            stream: Box::pin(stream),
            closing: self.clone(),
            wait: Box::pin(self.clone().cancelled_owned()),
            registered: None,
            done: false,
        }
    }
}

/// See [`Closing::until`].
pub struct Until<S> {
    stream: Pin<Box<S>>,
    closing: Closing,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token will wake, once the stream had nothing to send.
    registered: Option<Waker>,
    done: bool,
}

impl<S: Stream> Stream for Until<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if this.done || this.closing.is_cancelled() {
            this.done = true;
            return Poll::Ready(None);
        }
        match this.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Be woken by a shutdown as well; the token needs to hear of a waker only when
                // it is not the one it already has.
                if !this
                    .registered
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    if this.wait.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    this.registered = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_stream_ends_when_closing_and_a_busy_one_at_its_next_item() {
        let closing = Closing::default();
        // A stream that never yields: only the shutdown can end it.
        let mut idle = closing.until(futures::stream::pending::<u32>());
        let waiting = tokio::spawn(async move { idle.next().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());

        let mut busy = closing.until(futures::stream::iter(0..));
        assert_eq!(busy.next().await, Some(0));
        assert!(!closing.is_cancelled());
        closing.cancel();
        assert!(closing.is_cancelled());
        assert_eq!(busy.next().await, None);
        assert_eq!(busy.next().await, None);
        let ended = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(ended.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn a_stream_that_ends_on_its_own_ends() {
        let closing = Closing::default();
        let items: Vec<u32> = closing.until(futures::stream::iter(0..3)).collect().await;
        assert_eq!(items, vec![0, 1, 2]);
    }
}
