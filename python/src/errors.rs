//! Rust errors as the package's Python exceptions. The classes are defined in Python
//! (`dtc/errors.py`, where users read them); this module looks them up once and raises
//! them with the Rust error's text.

use dtc_sdk::{ClientError, WireError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyType};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class `name` of `dtc.errors`.
pub fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = ERRORS.get_or_try_init(py, || py.import("dtc.errors").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// An exception of class `name` with `args`, or the error met looking the class up.
pub fn raise<A>(py: Python<'_>, name: &str, args: A) -> PyErr
where
    A: pyo3::PyErrArguments + Send + Sync + 'static,
{
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, args),
        Err(e) => e,
    }
}

/// The Python exception class for a client error: what a caller can do about it.
fn class_name(e: &ClientError) -> &'static str {
    match e {
        ClientError::Wire(w) => match w {
            WireError::NotLeader { .. }
            | WireError::Unavailable { .. }
            | WireError::ShuttingDown => "Unavailable",
            WireError::Overloaded | WireError::LimitReached { .. } => "Overloaded",
            WireError::NotFound => "NotFound",
            WireError::BadRequest { .. } | WireError::VersionMismatch { .. } => "BadRequest",
            WireError::Auth { .. } => "Refused",
        },
        ClientError::Connect { .. } | ClientError::Closed => "Unavailable",
        ClientError::Refused { .. } => "Refused",
        ClientError::TooLarge { .. } => "BadRequest",
    }
}

/// A client error as the matching `dtc` exception.
pub fn client(py: Python<'_>, e: &ClientError) -> PyErr {
    raise(py, class_name(e), (e.to_string(),))
}
