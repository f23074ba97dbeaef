//! The channel endpoint and what it is built from: the UDP socket, mutual TLS, the transport
//! settings every link shares (one stream, keep-alive, idle timeout, windows, path MTU,
//! congestion control), and
//! stateless-reset keys that survive a restart. Shared with the transport bench, which must
//! measure the links the managers use.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use tracing::warn;

use super::{
    HANDSHAKES_MAX, IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL, QuicError, RECEIVE_WINDOW_BYTES,
    SOCKET_BUFFER_BYTES, UDP_PAYLOAD_BYTES_MAX,
};
use crate::config::LinkCongestion;
use crate::tls::LinkTls;

/// Stateless resets and connection ids keyed by `secret`, stable across restarts: a
/// restarted manager recognises the connection ids its previous run issued and resets those
/// connections, so a peer of a `kill -9`ed manager notices the restart at its first packet
/// instead of after [`IDLE_TIMEOUT`].
fn endpoint_config(secret: &[u8; 32]) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    let cid_key = u64::from_le_bytes([
        secret[24], secret[25], secret[26], secret[27], secret[28], secret[29], secret[30],
        secret[31],
    ]);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    // What this endpoint accepts (and tells peers): discovery never probes past it.
    config
        .max_udp_payload_size(UDP_PAYLOAD_BYTES_MAX)
        .unwrap_or_else(|e| {
            unreachable!("{UDP_PAYLOAD_BYTES_MAX} is a valid UDP payload size: {e}")
        });
    config
}

/// A channel endpoint bound to `bind`, accepting links, and the configuration it dials with:
/// mutual TLS from `tls`, [`transport_config`], [`udp_socket`]. Must be called inside a tokio
/// runtime, which then drives the endpoint.
pub fn bind_endpoint(
    tls: &LinkTls,
    bind: SocketAddr,
    congestion: LinkCongestion,
) -> Result<(Endpoint, quinn::ClientConfig), QuicError> {
    let transport = Arc::new(transport_config(congestion));
    let server_crypto = QuicServerConfig::try_from(tls.server.clone())
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server
        .transport_config(transport.clone())
        .max_incoming(HANDSHAKES_MAX)
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(HANDSHAKES_MAX as u64 * 64 * 1024)
        .migration(false);
    let client_crypto = QuicClientConfig::try_from(tls.client.clone())
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    let socket = udp_socket(bind).map_err(|error| QuicError::Bind {
        address: bind,
        error,
    })?;
    let endpoint = Endpoint::new(
        endpoint_config(&tls.reset_secret),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|error| QuicError::Bind {
        address: bind,
        error,
    })?;
    Ok((endpoint, client))
}

fn transport_config(congestion: LinkCongestion) -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                .unwrap_or_else(|e| unreachable!("{IDLE_TIMEOUT:?} is a valid idle timeout: {e}")),
        ))
        .stream_receive_window(VarInt::from_u32(RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW_BYTES))
        .send_window(u64::from(RECEIVE_WINDOW_BYTES));
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(UDP_PAYLOAD_BYTES_MAX);
    transport.mtu_discovery_config(Some(discovery));
    match congestion {
        LinkCongestion::Model => {
            transport.congestion_controller_factory(Arc::new(super::congestion::PathModelConfig));
        }
        LinkCongestion::Cubic => {
            transport
                .congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()));
        }
    }
    transport
}

fn udp_socket(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // The kernel caps these at net.core.[rw]mem_max; a smaller buffer still works.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(error = %e, "cannot enlarge the UDP send buffer");
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}
