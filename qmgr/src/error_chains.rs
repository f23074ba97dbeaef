//! The house rule for errors with a cause, held for each type that has one: the message states
//! the cause (logs and wire replies print errors with `Display` alone), so `source()` must not
//! return it too, or a chain printed whole (anyhow's `{:#}`, as the binary prints errors) says
//! it twice: "No such file or directory (os error 2): No such file or directory (os error 2)".

use std::error::Error;
use std::io;
use std::path::PathBuf;

/// Panics if any error of `error`'s chain repeats its cause's message.
#[track_caller]
fn assert_each_cause_once(error: &(dyn Error + 'static)) {
    let whole = format!("{:#}", anyhow::anyhow!("{error}").context("top"));
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(cause) = e.source() {
            assert!(
                !e.to_string().contains(&cause.to_string()),
                "`{e}` states its cause `{cause}` and returns it as source(): {whole}"
            );
        }
        current = e.source();
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

#[test]
fn errors_with_a_cause_state_it_once() {
    let postcard = || postcard::from_bytes::<u64>(&[]).expect_err("empty is no u64");
    let errors: Vec<Box<dyn Error>> = vec![
        Box::new(crate::store::StoreError::io("/j", not_found())),
        Box::new(crate::store::StoreError::Replay {
            segment: 1,
            offset: 2,
            error: Box::new(not_found()),
        }),
        Box::new(crate::channel::quic::QuicError::Bind {
            address: "127.0.0.1:1".parse().expect("an address"),
            error: io::Error::from(io::ErrorKind::AddrInUse),
        }),
        Box::new(crate::certs::CertsError::Io {
            path: PathBuf::from("/c"),
            error: not_found(),
        }),
        Box::new(crate::record::RecordError::from(postcard())),
        Box::new(crate::channel::frame::FrameError::Malformed(postcard())),
        Box::new(crate::manager::recovery::RecoverError::Record {
            segment: 1,
            offset: 2,
            error: crate::record::RecordError::from(postcard()),
        }),
        Box::new(crate::reload::ReloadError::Read {
            file: PathBuf::from("/t.toml"),
            error: not_found(),
        }),
        Box::new(crate::config::ConfigError::from(
            config::ConfigError::Message("bad".into()),
        )),
        Box::new(hopmq_routing::TopologyError::Io {
            path: PathBuf::from("/t.toml"),
            error: not_found(),
        }),
        Box::new(hopmq::ClientError::Connect {
            path: PathBuf::from("/s"),
            error: not_found(),
        }),
        Box::new(hopmq::ClientError::Handshake(hopmq::ApiError::ShuttingDown)),
        Box::new(hopmq::protocol::FrameError::from(not_found())),
        Box::new(hopmq::protocol::FrameError::from(postcard())),
    ];
    for error in &errors {
        assert_each_cause_once(error.as_ref());
    }
}
