//! Unit tests of the client's defaults and error texts.

use super::*;

#[test]
fn the_default_socket_is_overridden_by_the_environment() {
    // Setting the variable is unsafe in edition 2024 (and unsafe code is denied), so only
    // the fallback is checked here.
    if std::env::var_os(SOCKET_ENV).is_none() {
        assert_eq!(socket_path_default(), PathBuf::from(SOCKET_PATH_DEFAULT));
    }
}

#[test]
fn wrong_replies_are_named() {
    let error = unexpected("put", &Reply::Done);
    assert_eq!(error.to_string(), "unexpected reply to put: Done");
}
