//! The process's one tokio runtime, which every client and worker of the package shares, and
//! the way a Python thread waits on it: with the GIL released, waking every 100 ms to run
//! Python's signal handlers, so that Ctrl-C interrupts a blocking call.
//!
//! The runtime's threads never take the GIL; whatever calls into Python runs on its
//! blocking pool (`spawn_blocking`) or in a Python thread. A CPU-bound handler holding the
//! GIL therefore never delays a heartbeat.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::time::Instant;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// How often a waiting Python thread looks at its signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The shared runtime, started on first use.
pub fn get() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("dtc-runtime")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start dtc's runtime: {e}")))?;
    // Two threads may race to start it; the loser's runtime is dropped unused.
    let _ = RUNTIME.set(rt);
    RUNTIME
        .get()
        .ok_or_else(|| PyRuntimeError::new_err("dtc's runtime did not start"))
}

/// Runs `fut` on the calling thread, inside the runtime, with the GIL released. Returns
/// `None` if `deadline` passes first (the future is then dropped); a Python signal handler
/// that raises (Ctrl-C's `KeyboardInterrupt`) drops the future and raises.
///
/// The future is polled here rather than spawned: the answer then wakes this thread
/// directly, one thread hand-off fewer per call.
pub fn wait<T, F>(py: Python<'_>, fut: F, deadline: Option<Instant>) -> PyResult<Option<T>>
where
    T: Send,
    F: Future<Output = T> + Send,
{
    let rt = get()?;
    let mut fut = Box::pin(fut);
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
            None => SIGNAL_CHECK,
        };
        let done =
            py.detach(|| rt.block_on(async { tokio::time::timeout(slice, fut.as_mut()).await }));
        if let Ok(value) = done {
            return Ok(Some(value));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}
