//! How answers reach an asyncio event loop: the runtime's threads post `(future, answer)`
//! pairs to a [`Mailbox`] without the GIL, and wake the loop through a pipe the loop
//! watches (`loop.add_reader(mailbox.fileno(), mailbox.drain)`); `drain`, on the loop's
//! thread, resolves every future posted since the last one. A burst of answers costs one
//! wake-up, not one `call_soon_threadsafe` each.
//!
//! At most one byte is ever in the pipe: a poster writes only when it turns `pending` from
//! false to true, and `drain` reads that byte before it clears `pending` and takes the
//! queue. The queue holds at most the answers of requests in flight, which the client's
//! in-flight bound limits.

use crate::view::View;
use crate::{errors, lock};
use dtc_sdk::{ClientError, TaskView};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::io::{PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An answer for a waiting coroutine.
pub type Answer = Result<TaskView, ClientError>;

/// The queue and the pipe shared by the loop's side and the runtime's.
pub struct Inner {
    queue: Mutex<Vec<(Py<PyAny>, Answer)>>,
    pending: AtomicBool,
    /// Requests started and not yet resolved by `drain`.
    outstanding: AtomicUsize,
    reader: PipeReader,
    writer: PipeWriter,
}

impl Inner {
    /// Counts a request whose answer will be posted here.
    pub fn expect(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// Queues `answer` for `future` and wakes the loop if it is not already woken.
    pub fn post(&self, future: Py<PyAny>, answer: Answer) {
        lock(&self.queue).push((future, answer));
        if !self.pending.swap(true, Ordering::AcqRel)
            && let Err(e) = (&self.writer).write_all(&[1])
        {
            tracing::error!(error = %e, "cannot wake the event loop; its calls will hang");
        }
    }
}

/// Where a client's answers wait for their event loop.
#[pyclass(frozen, module = "dtc._native")]
pub struct Mailbox {
    pub(crate) inner: Arc<Inner>,
}

#[pymethods]
impl Mailbox {
    #[new]
    fn new() -> PyResult<Self> {
        let (reader, writer) = std::io::pipe()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot make a pipe: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                reader,
                writer,
            }),
        })
    }

    /// The file descriptor the event loop watches.
    fn fileno(&self) -> i32 {
        self.inner.reader.as_raw_fd()
    }

    /// How many requests are waiting for their answer.
    #[getter]
    fn outstanding(&self) -> usize {
        self.inner.outstanding.load(Ordering::Acquire)
    }

    /// Resolves every future whose answer has arrived (a future cancelled meanwhile is
    /// skipped). Called by the event loop when the pipe is readable; returns how many
    /// requests are still waiting.
    fn drain(&self, py: Python<'_>) -> PyResult<usize> {
        let mut byte = [0u8; 1];
        (&self.inner.reader)
            .read_exact(&mut byte)
            .map_err(|e| PyRuntimeError::new_err(format!("dtc's wake-up pipe failed: {e}")))?;
        self.inner.pending.store(false, Ordering::Release);
        let answers = std::mem::take(&mut *lock(&self.inner.queue));
        self.inner
            .outstanding
            .fetch_sub(answers.len(), Ordering::AcqRel);
        for (future, answer) in answers {
            let future = future.bind(py);
            if future.call_method0("done")?.is_truthy()? {
                continue;
            }
            match answer {
                Ok(view) => future.call_method1("set_result", (View(view),))?,
                Err(e) => future.call_method1("set_exception", (errors::client(py, &e),))?,
            };
        }
        Ok(self.outstanding())
    }
}
