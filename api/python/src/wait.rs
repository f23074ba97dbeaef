//! Waiting on the manager without holding the interpreter, and without becoming deaf to
//! Ctrl-C.
//!
//! Owns: [`sliced`], how every call that may wait runs. A wait is cut into requests of at
//! most [`SLICE`], each made with the GIL released so other Python threads run; between two
//! of them the thread takes the GIL back only to run pending signal handlers, so a
//! `KeyboardInterrupt` lands within a slice. Each slice is a whole request that has been
//! answered, so an interrupt never abandons a destructive get whose message would then be
//! lost (the protocol cannot withdraw a request).

use std::time::{Duration, Instant};

use hopmq::ClientError;
use pyo3::prelude::*;

use crate::errors;

/// The longest single request of a wait: how late a Ctrl-C may be noticed, against one request
/// to the manager per slice while nothing comes.
pub(crate) const SLICE: Duration = Duration::from_millis(500);

/// Calls `attempt(wait)` with the GIL released until it returns something or `timeout` has
/// passed (`None`: until it returns something); `Ok(None)` when the time ran out. `attempt`
/// is given how long its request may wait on the manager.
pub(crate) fn sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> Result<Option<T>, ClientError> + Send,
) -> PyResult<Option<T>> {
    // A timeout too far away to be an instant is no timeout at all.
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        let wait = match deadline {
            Some(deadline) => SLICE.min(deadline.saturating_duration_since(Instant::now())),
            None => SLICE,
        };
        let got = py
            .detach(|| attempt(wait))
            .map_err(|error| errors::to_py(py, error))?;
        if got.is_some() {
            return Ok(got);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
