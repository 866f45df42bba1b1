//! Sleeps with microsecond precision that burn no CPU and need no extra thread.
//!
//! tokio's timer rounds to whole milliseconds, so a 100 µs task would take 1 ms. A
//! [`PreciseTimer`] instead keeps a heap of deadlines in one driver task and arms a Linux
//! `timerfd` for the earliest; the runtime's own epoll wakes when it fires, and every sleeper
//! whose deadline has passed is woken at once. (Elsewhere it falls back to tokio's timer.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Sleeper = (Instant, oneshot::Sender<()>);

/// A precise timer. Cheap to clone; its driver task starts with the first sleep (on the
/// runtime of that sleep) and stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct PreciseTimer {
    tx: mpsc::UnboundedSender<Sleeper>,
    /// The driver's half, until the driver starts.
    rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Sleeper>>>>,
    started: Arc<AtomicBool>,
}

impl Default for PreciseTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl PreciseTimer {
    /// A timer whose driver has not started yet.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sleeps for `d`: returns no earlier than `d` from now, typically a few µs after.
    pub async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        self.start_driver();
        let (tx, rx) = oneshot::channel();
        if self.tx.send((Instant::now() + d, tx)).is_err() || rx.await.is_err() {
            // The driver could not run (no timerfd); fall back to tokio's coarser timer.
            tokio::time::sleep(d).await;
        }
    }

    fn start_driver(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        self.started.store(true, Ordering::Release);
        let rx = match self.rx.lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        if let Some(rx) = rx {
            tokio::spawn(drive(rx));
        }
    }
}

/// One entry of the heap, ordered by deadline, then by arrival.
struct Entry(Instant, u64, oneshot::Sender<()>);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Heap {
    fn push(&mut self, (deadline, waker): Sleeper) {
        self.seq += 1;
        self.entries.push(Reverse(Entry(deadline, self.seq, waker)));
    }

    /// Wakes every sleeper due by `now`; returns the next deadline.
    fn fire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse(Entry(deadline, ..))) = self.entries.peek() {
            if *deadline > now {
                return Some(*deadline);
            }
            if let Some(Reverse(Entry(_, _, waker))) = self.entries.pop() {
                waker.send(()).ok();
            }
        }
        None
    }
}

#[cfg(target_os = "linux")]
async fn drive(mut rx: mpsc::UnboundedReceiver<Sleeper>) {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use tokio::io::unix::AsyncFd;

    struct Fd(TimerFd);
    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
    let fd = match TimerFd::new(ClockId::CLOCK_MONOTONIC, flags) {
        Ok(timer) => match register(Fd(timer)) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "cannot poll a timerfd; sleeps fall back to tokio's timer");
                return;
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a timerfd; sleeps fall back to tokio's timer");
            return;
        }
    };
    #[allow(unsafe_code)]
    fn register(fd: Fd) -> std::io::Result<AsyncFd<Fd>> {
        // SAFETY: `Fd` owns its timerfd, which stays open until the `AsyncFd` (its only
        // owner) is dropped, and `as_raw_fd` always returns that same descriptor.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    }

    let mut heap = Heap::default();
    let mut armed: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let next = heap.fire(now);
        if next != armed {
            let set = match next {
                Some(deadline) => {
                    let wait = deadline
                        .saturating_duration_since(now)
                        .max(Duration::from_micros(1));
                    fd.get_ref().0.set(
                        Expiration::OneShot(TimeSpec::from_duration(wait)),
                        TimerSetTimeFlags::empty(),
                    )
                }
                None => fd.get_ref().0.unset(),
            };
            if let Err(e) = set {
                tracing::warn!(error = %e, "cannot arm the timerfd; stopping precise sleeps");
                return;
            }
            armed = next;
        }
        tokio::select! {
            got = rx.recv() => match got {
                Some(sleeper) => {
                    heap.push(sleeper);
                    while let Ok(sleeper) = rx.try_recv() {
                        heap.push(sleeper);
                    }
                }
                None => return,
            },
            ready = fd.readable(), if armed.is_some() => match ready {
                Ok(mut guard) => {
                    // Reading resets the expiry count; EAGAIN means it was not due yet.
                    let _ = guard.get_inner().0.wait();
                    guard.clear_ready();
                    armed = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "timerfd failed; stopping precise sleeps");
                    return;
                }
            },
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn drive(mut rx: mpsc::UnboundedReceiver<Sleeper>) {
    while let Some((deadline, waker)) = rx.recv().await {
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            waker.send(()).ok();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_at_least_as_long_as_asked_and_wakes_in_order() {
        let timer = PreciseTimer::new();
        let start = Instant::now();
        let (a, b) = tokio::join!(
            async {
                timer.sleep(Duration::from_micros(300)).await;
                Instant::now()
            },
            async {
                timer.sleep(Duration::from_micros(100)).await;
                Instant::now()
            }
        );
        assert!(a.duration_since(start) >= Duration::from_micros(300));
        assert!(b.duration_since(start) >= Duration::from_micros(100));
        assert!(b <= a, "the shorter sleep wakes first");
    }

    #[test]
    fn the_heap_fires_due_sleepers_only() {
        let mut heap = Heap::default();
        let now = Instant::now();
        let (t1, mut r1) = oneshot::channel();
        let (t2, mut r2) = oneshot::channel();
        heap.push((now + Duration::from_millis(5), t2));
        heap.push((now, t1));
        assert_eq!(heap.fire(now), Some(now + Duration::from_millis(5)));
        assert!(r1.try_recv().is_ok());
        assert!(r2.try_recv().is_err());
        assert_eq!(heap.fire(now + Duration::from_millis(5)), None);
        assert!(r2.try_recv().is_ok());
    }
}
