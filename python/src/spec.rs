//! Python arguments into the Rust SDK's types: payloads (`bytes`, `str`, any buffer),
//! task ids, addresses, credentials, and a task's options as the Python layer passes them
//! (whole milliseconds, normalised from seconds, `timedelta` and `datetime` in
//! `dtc/_options.py`).

use bytes::Bytes;
use dtc_proto::credentials::{CredentialSources, Credentials};
use dtc_sdk::{Backoff, Start, TaskId, TaskSpec};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

/// A backoff as `(initial_ms, multiplier_pct, max_ms, jitter_pct)`.
pub type BackoffArgs = (u64, u32, u64, u8);

/// A task's options beyond its input, as `(delay_ms, at_ms, timeout_ms, expires_ms,
/// backoff, queue, priority, (key, key_limit))`; `None` where the shard's default applies.
pub type OptionArgs = (
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<BackoffArgs>,
    Option<String>,
    u8,
    Option<(String, u32)>,
);

/// The bytes of a payload or a result: `bytes`, `str` (as UTF-8), `None` (empty), or any
/// object `bytes()` accepts (`bytearray`, `memoryview`).
pub fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Bytes::copy_from_slice(s.to_cow()?.as_bytes()));
    }
    if obj.is_none() {
        return Ok(Bytes::new());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    // Anything with the buffer protocol (memoryview, array, numpy); not ints, which
    // bytes() would read as a length.
    match PyMemoryView::from(obj).and_then(|view| {
        Ok(obj
            .py()
            .get_type::<PyBytes>()
            .call1((view,))?
            .cast_into::<PyBytes>()?)
    }) {
        Ok(b) => Ok(Bytes::copy_from_slice(b.as_bytes())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "expected bytes, str or None, got {}",
            obj.get_type().name()?
        ))),
    }
}

/// A task id from its text (a UUID).
pub fn task_id(py: Python<'_>, text: &str) -> PyResult<TaskId> {
    text.parse().map_err(|_| {
        crate::errors::raise(
            py,
            "BadRequest",
            (format!("{text:?} is not a task id (a UUID)"),),
        )
    })
}

/// Addresses from `"host:port"`, `"host:port,host:port"` or a list of them.
pub fn addrs(given: &[String]) -> PyResult<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in given.iter().flat_map(|g| g.split(',')) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let resolved = part.to_socket_addrs().map_err(|e| {
            PyValueError::new_err(format!("{part:?} is not an address (host:port): {e}"))
        })?;
        out.extend(resolved);
    }
    if out.is_empty() {
        return Err(PyValueError::new_err(
            "no address given (expected \"host:port\", e.g. \"127.0.0.1:6000\")",
        ));
    }
    Ok(out)
}

/// The credentials a program was given, as the CLI's flags give them: a secrets directory
/// (`dtc secrets init DIR`), or the cluster CA's certificate and a token file
/// (`worker.toml`, `client.toml`), each file overriding the directory's; plain mode when
/// none is given.
pub fn credentials(
    secrets: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
) -> PyResult<Arc<Credentials>> {
    let sources = CredentialSources {
        secrets,
        tls_ca: ca_file,
        token_file,
        ..CredentialSources::default()
    };
    Credentials::load(&sources)
        .map(Arc::new)
        .map_err(|e| PyValueError::new_err(format!("cannot load the secrets: {e}")))
}

/// A task to submit, checked as the shard will check it.
pub fn task(
    kind: String,
    payload: &Bound<'_, PyAny>,
    id: Option<&str>,
    max_attempts: Option<u32>,
    options: Option<OptionArgs>,
) -> PyResult<TaskSpec> {
    let mut spec = TaskSpec::new(kind, bytes_of(payload)?);
    if let Some(id) = id {
        spec.id = task_id(payload.py(), id)?;
    }
    if let Some(n) = max_attempts {
        spec.max_attempts = n;
    }
    if let Some((delay_ms, at_ms, timeout_ms, expires_ms, backoff, queue, priority, key)) = options
    {
        let o = spec.options_mut();
        o.start = match (delay_ms, at_ms) {
            (Some(_), Some(_)) => {
                return Err(crate::errors::raise(
                    payload.py(),
                    "BadRequest",
                    ("give either delay or at, not both",),
                ));
            }
            (Some(ms), None) => Start::After(ms),
            (None, Some(ms)) => Start::At(ms),
            (None, None) => Start::Now,
        };
        o.timeout_ms = timeout_ms;
        o.expires_ms = expires_ms;
        o.backoff = backoff.map(|(initial_ms, multiplier_pct, max_ms, jitter_pct)| Backoff {
            initial_ms,
            multiplier_pct,
            max_ms,
            jitter_pct,
        });
        o.queue = queue;
        o.priority = priority;
        if let Some((key, limit)) = key {
            spec = spec.with_concurrency(key, limit);
        }
    }
    spec.check_shape()
        .map_err(|e| crate::errors::raise(payload.py(), "BadRequest", (e.to_string(),)))?;
    Ok(spec)
}
