//! hopmq's Python client: the extension module `hopmq._hopmq`, which the package `hopmq`
//! (`python/hopmq/__init__.py`) re-exports.
//!
//! A thin layer over the blocking Rust client ([`hopmq::blocking::Client`]): Python arguments
//! are checked and converted (`convert`), every call that talks to the manager runs with the
//! GIL released, waits are cut into slices so that Ctrl-C is heard (`wait`), and every Rust
//! error becomes an exception under `hopmq.Error` (`errors`). `client` is `hopmq.Client`,
//! `message` the received `hopmq.Message`, `streams` iteration, subscriptions and notify,
//! `pubsub` topic subscriptions.
//!
//! Invariant: nothing a Python caller passes, and nothing a manager sends, makes this crate
//! panic; each becomes an exception.

mod client;
mod convert;
mod errors;
mod message;
mod pubsub;
mod streams;
mod wait;

use pyo3::prelude::*;

/// The socket `Client()` connects to without an argument: $HOPMQ_SOCKET, else
/// ./qmgr-data/qmgr.sock.
#[pyfunction]
fn default_socket_path() -> String {
    hopmq::socket_path_default().display().to_string()
}

#[pymodule]
fn _hopmq(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<client::PyClient>()?;
    module.add_class::<message::PyMessage>()?;
    module.add_class::<message::PyTrace>()?;
    module.add_class::<streams::MessageIterator>()?;
    module.add_class::<streams::PySubscription>()?;
    module.add_class::<streams::PyNotifyHandle>()?;
    module.add_class::<pubsub::PyTopicSubscription>()?;
    module.add_class::<pubsub::PyMissed>()?;
    for (name, class) in errors::classes(py) {
        module.add(name, class)?;
    }
    module.add_function(wrap_pyfunction!(default_socket_path, module)?)?;
    module.add_function(wrap_pyfunction!(streams::stop_notifications, module)?)?;
    module.add("PRIORITY_DEFAULT", hopmq::PRIORITY_DEFAULT)?;
    module.add("PRIORITY_MAX", hopmq::PRIORITY_MAX)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
