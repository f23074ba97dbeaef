//! Python values in, Python values out: durations, bodies, headers, put options, lease ids
//! and the manager's status.
//!
//! Owns: every check of what a Python caller passes. A value of the wrong type raises
//! `TypeError`, one out of range `ValueError`, each naming the argument; nothing a caller
//! passes can panic.

use std::collections::BTreeMap;
use std::time::Duration;

use hopmq::{Message, PRIORITY_MAX};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDelta, PyDict, PyList, PyString};

use crate::errors;
use crate::message::PyMessage;

/// A duration given as seconds (`int` or `float`) or as a `datetime.timedelta`.
pub(crate) fn duration(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    if value.is_instance_of::<PyDelta>() {
        let seconds: f64 = value.call_method0("total_seconds")?.extract()?;
        return seconds_to_duration(seconds, what);
    }
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number of seconds or a datetime.timedelta, not bool"
        )));
    }
    match value.extract::<f64>() {
        Ok(seconds) => seconds_to_duration(seconds, what),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be a number of seconds or a datetime.timedelta, not {}",
            type_name(value)
        ))),
    }
}

fn seconds_to_duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be zero or more seconds, not {seconds}"
        )));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err(format!("{what} of {seconds} seconds is too long")))
}

/// An optional duration: `None` stays `None`.
pub(crate) fn optional_duration(
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<Option<Duration>> {
    match value {
        Some(value) if !value.is_none() => duration(value, what).map(Some),
        _ => Ok(None),
    }
}

/// A message body: `bytes`, `str` (sent as UTF-8) or any other bytes-like object.
pub(crate) fn body(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(text.to_str()?.as_bytes().to_vec());
    }
    if let Ok(array) = value.cast::<PyByteArray>() {
        return Ok(array.to_vec());
    }
    match PyBuffer::<u8>::get(value) {
        Ok(buffer) => buffer.to_vec(value.py()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "body must be bytes or str (or another bytes-like object), not {}",
            type_name(value)
        ))),
    }
}

/// Headers: a mapping of `str` to `str`.
fn headers(value: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, String>> {
    let items = value.call_method0("items").map_err(|_| {
        PyTypeError::new_err(format!(
            "headers must be a mapping of str to str, not {}",
            type_name(value)
        ))
    })?;
    let mut headers = BTreeMap::new();
    for item in items.try_iter()? {
        let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        let Ok(key) = key.extract::<String>() else {
            return Err(PyTypeError::new_err(format!(
                "header names must be str, not {}",
                type_name(&key)
            )));
        };
        let Ok(text) = value.extract::<String>() else {
            return Err(PyTypeError::new_err(format!(
                "header `{key}` must be a str, not {}",
                type_name(&value)
            )));
        };
        headers.insert(key, text);
    }
    Ok(headers)
}

/// A priority, 0 to [`PRIORITY_MAX`].
fn priority(value: &Bound<'_, PyAny>) -> PyResult<u8> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err("priority must be an int, not bool"));
    }
    let Ok(priority) = value.extract::<i64>() else {
        return Err(PyTypeError::new_err(format!(
            "priority must be an int, not {}",
            type_name(value)
        )));
    };
    match u8::try_from(priority) {
        Ok(priority) if priority <= PRIORITY_MAX => Ok(priority),
        _ => Err(PyValueError::new_err(format!(
            "priority must be 0 to {PRIORITY_MAX}, not {priority}"
        ))),
    }
}

/// An optional string argument.
fn optional_string(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    value.extract::<String>().map(Some).map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a str, not {}", type_name(value)))
    })
}

/// The options `put` takes, by keyword.
pub(crate) const PUT_OPTIONS: &str =
    "priority, ttl, headers, correlation_id, reply_to, persistent, reports";

/// A message to put: `body` with the put options in `options` (keyword arguments of `put`,
/// or the options dict of a `put_batch` item). `None` for an option means its default.
pub(crate) fn outgoing(
    body_value: &Bound<'_, PyAny>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Message> {
    let mut message = Message::new(body(body_value)?);
    let Some(options) = options else {
        return Ok(message);
    };
    for (key, value) in options.iter() {
        let key: String = key.extract()?;
        let given = !value.is_none();
        match key.as_str() {
            "priority" if given => message.priority = priority(&value)?,
            "ttl" if given => message.ttl = Some(duration(&value, "ttl")?),
            "headers" if given => message.headers = headers(&value)?,
            "correlation_id" => message.correlation_id = optional_string(&value, "correlation_id")?,
            "reply_to" => message.reply_to = optional_string(&value, "reply_to")?,
            "persistent" if given => {
                message.persistent = value.extract::<bool>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "persistent must be a bool, not {}",
                        type_name(&value)
                    ))
                })?;
            }
            "reports" if given => message = message.reports(reports(&value)?),
            "priority" | "ttl" | "headers" | "persistent" | "reports" => {}
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unknown put option `{other}`; the options are {PUT_OPTIONS}"
                )));
            }
        }
    }
    Ok(message)
}

/// The reports a put asks for: `"arrival,delivery"` or an iterable of kinds.
fn reports(value: &Bound<'_, PyAny>) -> PyResult<hopmq::Reports> {
    let text = if let Ok(text) = value.extract::<String>() {
        text
    } else {
        let kinds: Vec<String> = value.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "reports must be a str or an iterable of str (arrival, delivery, exception), \
                 not {}",
                type_name(value)
            ))
        })?;
        kinds.join(",")
    };
    text.parse()
        .map_err(|e: hopmq::report::BadReports| PyValueError::new_err(e.to_string()))
}

/// One item of `put_batch` (`call`, whose items name an `address`) or `publish_batch` (a
/// `topic`): `(address, body)` or `(address, body, options)`.
pub(crate) fn batch_item(
    item: &Bound<'_, PyAny>,
    (call, target): (&str, &str),
) -> PyResult<(String, Message)> {
    let shape_error = || {
        PyTypeError::new_err(format!(
            "each {call} item must be ({target}, body) or ({target}, body, options), not {}",
            type_name(item)
        ))
    };
    if item.is_instance_of::<PyString>() || item.is_instance_of::<PyBytes>() {
        return Err(shape_error());
    }
    let parts: Vec<Bound<'_, PyAny>> = item.extract().map_err(|_| shape_error())?;
    let (address, body_value, options) = match parts.as_slice() {
        [address, body] => (address, body, None),
        [address, body, options] => (address, body, Some(options)),
        _ => return Err(shape_error()),
    };
    let address = address.extract::<String>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{target} must be a str, not {}",
            type_name(address)
        ))
    })?;
    let options = match options {
        Some(options) if !options.is_none() => Some(options.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{call} options must be a dict, not {}",
                type_name(options)
            ))
        })?),
        _ => None,
    };
    Ok((address, outgoing(body_value, options)?))
}

/// Lease ids to settle: a leased `Message`, a lease id, or an iterable of either.
pub(crate) fn lease_ids(value: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Some(id) = one_lease(value)? {
        return Ok(vec![id]);
    }
    let Ok(items) = value.try_iter() else {
        return Err(not_a_lease(value));
    };
    let mut ids = Vec::new();
    for item in items {
        let item = item?;
        match one_lease(&item)? {
            Some(id) => ids.push(id),
            None => return Err(not_a_lease(&item)),
        }
    }
    Ok(ids)
}

/// The lease of a `Message` or an int; `None` for anything else.
fn one_lease(value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if let Ok(message) = value.cast::<PyMessage>() {
        return message.get().lease_id().map(Some);
    }
    if value.is_instance_of::<PyBool>() || value.is_instance_of::<PyString>() {
        return Ok(None);
    }
    match value.extract::<i128>() {
        Ok(id) => u64::try_from(id)
            .map(Some)
            .map_err(|_| errors::InvalidArgument::new_err(format!("no lease has the id {id}"))),
        Err(_) => Ok(None),
    }
}

fn not_a_lease(value: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "expected a leased Message, a lease id (int), or an iterable of them, not {}",
        type_name(value)
    ))
}

/// The name of a value's type, for error messages.
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "an unknown type".to_owned(), |name| name.to_string())
}

/// A JSON value as the Python value `json.loads` would make of it.
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    value: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(number) => {
            if let Some(n) = number.as_u64() {
                n.into_pyobject(py)?.into_any()
            } else if let Some(n) = number.as_i64() {
                n.into_pyobject(py)?.into_any()
            } else {
                number
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    .into_pyobject(py)?
                    .into_any()
            }
        }
        Value::String(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}
