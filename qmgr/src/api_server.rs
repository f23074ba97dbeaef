//! The local API: accepts applications on the Unix socket, does the handshake, and moves
//! frames between each connection and the manager core. No queue logic lives here.
//!
//! Invariant: a connection that sends a malformed or oversized frame, or anything but `Hello`
//! first, is closed with a logged reason; nothing else is affected.

use std::time::Duration;

use hopmq::ApiError;
use hopmq::protocol::{
    ClientFrame, FrameError, HELLO_BYTES_MAX, PROTOCOL_VERSION, SOCKET_BUFFER_BYTES, ServerFrame,
    Welcome, encode_event_into, encode_into, read_frame, read_frame_within, reset_write_buffer,
    write_frame,
};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::manager::outbox::{self, Outgoing};
use crate::manager::{Command, ToClient};

/// How long a new connection may take to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many frames a writer sends before flushing, so one busy connection is fair to others.
const FRAMES_PER_FLUSH_MAX: usize = 256;
/// Bytes a writer gathers into one write at most (one frame may be larger).
const WRITE_BYTES_MAX: usize = 1024 * 1024;

/// What the API server needs to know of its manager.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The manager's name, for the welcome.
    pub manager: String,
    /// Connections served at once (`max_connections`).
    pub connections_max: usize,
}

/// Accepts connections until `shutdown` fires. Every connection's writer holds a clone of
/// `writers` until it has written all the core gave it, so the daemon can wait for the last
/// replies to go out before it exits. Past `limits.connections_max` live connections, a new
/// one is refused at once.
pub(crate) async fn serve(
    listener: UnixListener,
    commands: mpsc::Sender<Command>,
    limits: Limits,
    writers: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_connection = 0u64;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_connection += 1;
                    let Ok(permit) = std::sync::Arc::clone(&permits).try_acquire_owned() else {
                        warn!(connection = next_connection, limit = limits.connections_max, "refusing a client: too many connections");
                        tokio::spawn(refuse(stream, limits.connections_max));
                        continue;
                    };
                    let (commands, manager, writers) = (commands.clone(), limits.manager.clone(), writers.clone());
                    tokio::spawn(async move {
                        connection(stream, next_connection, commands, manager, writers).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // EMFILE and friends: log and go on; the listener itself is fine.
                    warn!(%error, "accepting a client failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(
    stream: UnixStream,
    id: u64,
    commands: mpsc::Sender<Command>,
    manager: String,
    writers: mpsc::Sender<()>,
) {
    let uid = stream.peer_cred().ok().map(|cred| cred.uid());
    let (reader, writer) = stream.into_split();
    // Buffered both ways: a busy client sends and receives many frames per syscall.
    let mut reader = BufReader::with_capacity(SOCKET_BUFFER_BYTES, reader);
    let mut writer = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, writer);
    let Some(welcome) = handshake(&mut reader, &mut writer, id, manager).await else {
        return;
    };
    if send_and_flush(&mut writer, &welcome).await.is_err() {
        return;
    }
    let (frames, outgoing) = outbox::channel();
    if commands
        .send(Command::Connected {
            connection: id,
            frames,
            uid,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer_task = tokio::spawn(write_loop(writer, outgoing, writers));
    read_loop(&mut reader, &commands, id).await;
    // The core drops its sender for this connection on Disconnected, which ends the writer.
    let _ = commands
        .send(Command::Disconnected { connection: id })
        .await;
    if let Ok(backlog_bytes_max) = writer_task.await {
        release_after_spike(id, backlog_bytes_max);
    }
    debug!(connection = id, "connection closed");
}

/// Reads the client's hello and returns the welcome to send, or `None` (having logged why, and
/// told a client of another version) when the connection is to be closed.
async fn handshake(
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut BufWriter<OwnedWriteHalf>,
    id: u64,
    manager: String,
) -> Option<ServerFrame> {
    // Nothing larger than a hello is read before the handshake.
    let hello = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        read_frame_within::<ClientFrame, _>(reader, HELLO_BYTES_MAX),
    )
    .await;
    match hello {
        Ok(Ok(ClientFrame::Hello(hello))) if hello.protocol_version == PROTOCOL_VERSION => {
            debug!(connection = id, client = %hello.client_name, "handshake");
            Some(ServerFrame::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                manager,
                server_version: env!("CARGO_PKG_VERSION").to_owned(),
            }))
        }
        Ok(Ok(ClientFrame::Hello(hello))) => {
            warn!(connection = id, client = %hello.client_name, version = hello.protocol_version, "refusing a client with another protocol version");
            let refusal = ServerFrame::Refused(ApiError::VersionMismatch {
                client: hello.protocol_version,
                server: PROTOCOL_VERSION,
            });
            let _ = send_and_flush(writer, &refusal).await;
            None
        }
        Ok(Ok(ClientFrame::Request(_))) => {
            warn!(
                connection = id,
                "closing a client that sent a request before its hello"
            );
            None
        }
        Ok(Err(FrameError::Closed)) => None,
        Ok(Err(error)) => {
            warn!(connection = id, %error, "closing a client: bad handshake frame");
            None
        }
        Err(_) => {
            warn!(
                connection = id,
                "closing a client that sent no hello within {HANDSHAKE_TIMEOUT:?}"
            );
            None
        }
    }
}

/// Passes the client's requests to the core until the client closes, breaks the protocol or
/// the core stops.
async fn read_loop(
    reader: &mut BufReader<OwnedReadHalf>,
    commands: &mpsc::Sender<Command>,
    id: u64,
) {
    loop {
        match read_frame::<ClientFrame, _>(reader).await {
            Ok(ClientFrame::Request(request)) => {
                let command = Command::Request {
                    connection: id,
                    id: request.id,
                    operation: request.operation,
                };
                if commands.send(command).await.is_err() {
                    break;
                }
            }
            Ok(ClientFrame::Hello(_)) => {
                warn!(connection = id, "closing a client that said hello twice");
                break;
            }
            Err(FrameError::Closed) => break,
            Err(error) => {
                warn!(connection = id, %error, "closing a client");
                break;
            }
        }
    }
}

/// A client that fell far behind left memory free in this runtime's heaps: give it back to
/// the system rather than keep the spike's size for good.
fn release_after_spike(id: u64, backlog_bytes_max: usize) {
    if backlog_bytes_max >= SPIKE_BYTES_MIN {
        info!(
            connection = id,
            backlog_bytes_max, "a client's backlog was large; releasing free memory"
        );
        crate::allocator::release_free_memory();
    }
}

/// Tells a client over the connection limit why it is turned away (after its hello, so that
/// it reads the answer rather than a closed socket), and closes.
async fn refuse(stream: UnixStream, limit: usize) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let _ = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        read_frame_within::<ClientFrame, _>(&mut reader, HELLO_BYTES_MAX),
    )
    .await;
    let mut writer = BufWriter::new(writer);
    let refusal = ServerFrame::Refused(ApiError::TooManyConnections {
        limit: limit as u64,
    });
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, send_and_flush(&mut writer, &refusal)).await;
}

async fn send_and_flush(
    writer: &mut BufWriter<OwnedWriteHalf>,
    frame: &ServerFrame,
) -> Result<(), FrameError> {
    write_frame(writer, frame).await?;
    writer.flush().await?;
    Ok(())
}

/// A connection whose frames waiting to be written reached this many bytes left a spike of
/// memory behind it (see [`crate::manager::outbox::CONNECTION_BYTES_MAX`]).
const SPIKE_BYTES_MIN: usize = 8 * 1024 * 1024;

/// Writes the core's frames to the client until the core drops its end; returns the most
/// bytes that ever waited.
async fn write_loop(
    mut writer: BufWriter<OwnedWriteHalf>,
    mut outgoing: Outgoing,
    _writing: mpsc::Sender<()>,
) -> usize {
    // One buffer for every write, so encoding a frame does not grow a new one copy by copy.
    let mut buffer = Vec::new();
    while let Some(frame) = outgoing.recv().await {
        reset_write_buffer(&mut buffer);
        if let Err(error) = append(frame, &mut buffer) {
            info!(%error, "a reply to a client could not be encoded; closing its connection");
            return outgoing.peak_bytes();
        }
        // Batch whatever else is ready into the same write and flush, up to a bound: the
        // frames taken are no longer counted against the connection's limit.
        let mut written = 1;
        while written < FRAMES_PER_FLUSH_MAX && buffer.len() < WRITE_BYTES_MAX {
            let Ok(frame) = outgoing.try_recv() else {
                break;
            };
            if append(frame, &mut buffer).is_err() {
                return outgoing.peak_bytes();
            }
            written += 1;
        }
        if let Err(error) = writer.write_all(&buffer).await {
            info!(%error, "a client's connection failed while writing");
            return outgoing.peak_bytes();
        }
        if writer.flush().await.is_err() {
            return outgoing.peak_bytes();
        }
    }
    let _ = writer.shutdown().await;
    outgoing.peak_bytes()
}

/// Adds `frame`, encoded, to the bytes of the next write.
fn append(frame: ToClient, buffer: &mut Vec<u8>) -> Result<(), FrameError> {
    match frame {
        ToClient::Frame(frame) => encode_into(&frame, buffer),
        // The first frame of a write becomes its buffer: a reply of many messages is not
        // copied once more.
        ToClient::Encoded(bytes) if buffer.is_empty() => {
            *buffer = bytes;
            Ok(())
        }
        ToClient::Encoded(bytes) => {
            buffer.extend_from_slice(&bytes);
            Ok(())
        }
        ToClient::Event {
            subscription,
            message,
        } => encode_event_into(subscription, &message, buffer),
    }
}
