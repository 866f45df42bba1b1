//! `dtc._native`: the native core of dtc's Python package. It exposes the Rust SDK — the
//! client that follows leaders and retries with the same task id over one multiplexed
//! connection, and the worker with its prefetch, heartbeats and draining — to CPython
//! through PyO3's stable ABI, so that Python gets them without a second implementation.
//!
//! The Python package (`python/python/dtc`) is the public face: `dtc.Client`,
//! `dtc.AsyncClient`, `dtc.Worker` and the exceptions are defined there and call into this
//! module. Everything here runs on one shared tokio runtime (`runtime.rs`) whose threads
//! never hold the GIL.

mod client;
mod errors;
mod mailbox;
mod runtime;
mod spec;
mod view;
mod worker;

use pyo3::prelude::*;
use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, going on past a panic of another holder: every lock here guards a queue or
/// a slot whose contents stay valid whatever a panicking holder did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The native core of the `dtc` package (use `dtc`, not this module).
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The SDK's own warnings (a lost coordinator, a refused credential) on stderr, filtered
    // by DTC_LOG (default: warnings only). A program that set up tracing keeps its own.
    let filter = tracing_subscriber::EnvFilter::try_from_env("DTC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<client::Client>()?;
    m.add_class::<mailbox::Mailbox>()?;
    m.add_class::<view::View>()?;
    m.add_class::<worker::Worker>()?;
    m.add_class::<worker::HandlerTask>()?;
    Ok(())
}
