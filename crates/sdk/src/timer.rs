//! Sleeps with microsecond precision that burn no CPU. tokio's timer rounds to whole
//! milliseconds, so a 100 µs task would take 1 ms; instead one thread per [`PreciseTimer`]
//! keeps a heap of deadlines, blocks until the earliest (with the kernel's timer slack set to
//! 1 ns for that thread alone), and wakes every sleeper whose deadline has passed at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type Sleeper = (Instant, oneshot::Sender<()>);

/// A timer thread; sleeps registered with it wake within microseconds of their deadline.
/// The thread exits when the timer is dropped.
#[derive(Clone, Debug)]
pub struct PreciseTimer {
    tx: std_mpsc::Sender<Sleeper>,
}

/// One entry of the timer heap, ordered by deadline only.
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

impl PreciseTimer {
    /// Starts the timer thread.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel::<Sleeper>();
        std::thread::Builder::new()
            .name("dtc-timer".into())
            .spawn(move || timer_thread(&rx))?;
        Ok(Self { tx })
    }

    /// Sleeps for `d`: returns no earlier than `d` from now, typically a few µs after.
    pub async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send((Instant::now() + d, tx)).is_err() {
            // The timer thread is gone (it never exits while a handle lives); fall back.
            tokio::time::sleep(d).await;
            return;
        }
        rx.await.ok();
    }
}

fn timer_thread(rx: &std_mpsc::Receiver<Sleeper>) {
    set_fine_timer_slack();
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while let Some(Reverse(Entry(deadline, ..))) = heap.peek() {
            if *deadline > now {
                break;
            }
            if let Some(Reverse(Entry(_, _, waker))) = heap.pop() {
                waker.send(()).ok();
            }
        }
        let next = match heap.peek() {
            Some(Reverse(Entry(deadline, ..))) => {
                rx.recv_timeout(deadline.saturating_duration_since(now))
            }
            None => rx
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((deadline, waker)) => {
                seq += 1;
                heap.push(Reverse(Entry(deadline, seq, waker)));
                while let Ok((deadline, waker)) = rx.try_recv() {
                    seq += 1;
                    heap.push(Reverse(Entry(deadline, seq, waker)));
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                if heap.is_empty() {
                    return;
                }
                if let Some(Reverse(Entry(deadline, ..))) = heap.peek() {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                }
            }
        }
    }
}

/// Sets this thread's timer slack to 1 ns (Linux; the default of 50 µs would make every
/// wake-up late by up to that much).
#[allow(unsafe_code)]
fn set_fine_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only the calling
    // thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_at_least_as_long_as_asked_and_wakes_in_order() -> std::io::Result<()> {
        let timer = PreciseTimer::start()?;
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
        Ok(())
    }
}
