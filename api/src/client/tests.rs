//! Unit tests of the client's defaults and error texts.

use super::*;

#[test]
fn the_default_socket_is_overridden_by_the_environment() {
    // Setting the variable is unsafe in edition 2024 (and unsafe code is denied), so the
    // variable's value is passed in; `tests/local_queues.rs` runs the CLI with it set.
    assert_eq!(
        socket_path_from(Some("/run/hopmq/bravo.sock".into())),
        PathBuf::from("/run/hopmq/bravo.sock")
    );
    assert_eq!(socket_path_from(None), PathBuf::from(SOCKET_PATH_DEFAULT));
    assert_eq!(
        socket_path_from(Some("".into())),
        PathBuf::from(SOCKET_PATH_DEFAULT),
        "an empty value counts as unset"
    );
    // And the public function reads the variable this process runs with.
    assert_eq!(
        socket_path_default(),
        socket_path_from(std::env::var_os(SOCKET_ENV))
    );
}

#[test]
fn wrong_replies_are_named() {
    let error = unexpected("put", &Reply::Done);
    assert_eq!(error.to_string(), "unexpected reply to put: Done");
}
