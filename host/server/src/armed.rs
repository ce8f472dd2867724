//! A deadline timer polled only when it may have fired.
//!
//! tokio's `Sleep::poll` costs about 120 instructions (the task's budget,
//! the waker comparison, the timer's state) even when its deadline is far
//! off, and a connection's task is polled a few times a request
//! (`bench/request_icount.sh`). A timer registered with this task's waker
//! that has not fired wakes the task when it does, so polling it again
//! changes nothing: [`Armed::poll`] skips that poll for one atomic load
//! (`Sleep::is_elapsed`) and a waker comparison.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::Sleep;

/// The waker a timer was registered with, until it fires or is reset.
#[derive(Debug, Default)]
pub(crate) struct Armed(Option<Waker>);

impl Armed {
    /// Forget the registration: call after `Sleep::reset` (a timer that
    /// had fired is registered again by its next poll).
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }

    /// Poll `sleep`, unless it is registered with `cx`'s waker and has not
    /// fired.
    pub(crate) fn poll(&mut self, mut sleep: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !sleep.is_elapsed() {
            return Poll::Pending;
        }
        // Outside the task's budget: an exhausted budget would answer
        // `Pending` without registering the timer, and it would then never
        // be polled again.
        match Pin::new(&mut tokio::task::unconstrained(sleep.as_mut())).poll(cx) {
            Poll::Ready(()) => {
                self.0 = None;
                Poll::Ready(())
            }
            Poll::Pending => {
                if !self.0.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    self.0 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A skipped poll still sees the timer fire, and a reset timer is
    /// registered again.
    #[tokio::test(start_paused = true)]
    async fn fires_after_skipped_polls_and_after_a_reset() {
        let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(5)));
        let mut armed = Armed::default();
        let mut polls = 0;
        let fired = std::future::poll_fn(|cx| {
            polls += 1;
            armed.poll(sleep.as_mut(), cx)
        });
        tokio::time::timeout(Duration::from_secs(6), fired)
            .await
            .expect("the timer fires");
        assert!(polls >= 2, "polled before and after firing");
        // Reset after firing: fires again at the new deadline, not before.
        sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_secs(3));
        armed.disarm();
        let start = tokio::time::Instant::now();
        std::future::poll_fn(|cx| armed.poll(sleep.as_mut(), cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    /// A timer that fired while still armed (its waker taken, the task
    /// not yet polled) and is then reset, as the shutdown grace does:
    /// after `disarm` the next poll registers it again, and it fires at
    /// the new deadline.
    #[tokio::test(start_paused = true)]
    async fn a_fired_timer_reset_before_it_is_seen_fires_again() {
        let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(5)));
        let mut armed = Armed::default();
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(armed.poll(sleep.as_mut(), &mut cx).is_pending());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(sleep.is_elapsed(), "fired, not yet seen through `armed`");
        sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_secs(3));
        armed.disarm();
        assert!(armed.poll(sleep.as_mut(), &mut cx).is_pending());
        let woken = count.0.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            count.0.load(std::sync::atomic::Ordering::Relaxed),
            woken + 1,
            "the reset timer wakes the task"
        );
        assert!(armed.poll(sleep.as_mut(), &mut cx).is_ready());
    }

    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A poll with another waker registers that one (the skip holds only
    /// for the waker the timer has), and the timer wakes it when it fires.
    #[tokio::test(start_paused = true)]
    async fn another_waker_registers_again_and_is_woken() {
        let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(60)));
        let mut armed = Armed::default();
        let (a, b) = (
            std::sync::Arc::new(Count(Default::default())),
            std::sync::Arc::new(Count(Default::default())),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        assert!(armed
            .poll(sleep.as_mut(), &mut Context::from_waker(&wa))
            .is_pending());
        assert!(armed.0.as_ref().is_some_and(|w| w.will_wake(&wa)));
        assert!(armed
            .poll(sleep.as_mut(), &mut Context::from_waker(&wb))
            .is_pending());
        assert!(armed.0.as_ref().is_some_and(|w| w.will_wake(&wb)));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(b.0.load(std::sync::atomic::Ordering::Relaxed), 1, "b woken");
        assert!(sleep.is_elapsed());
        assert!(armed
            .poll(sleep.as_mut(), &mut Context::from_waker(&wb))
            .is_ready());
    }
}
