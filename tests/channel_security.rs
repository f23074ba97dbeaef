//! Who may open a channel, and what a channel survives: peers from another CA or without a
//! link are refused (the link stays down, the reason is logged); random bytes, an oversize
//! frame or a frame of the wrong kind close that connection and nothing else.
//!
//! The hostile peer is a real QUIC client built here from the development certificates, as
//! any program holding a manager's key could build it.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::network::{Network, Spec, link_of};
use support::{SOON, qmgr, wait_until};

fn receive_one(client: &hopmq::blocking::Client, queue: &str) -> Option<hopmq::Message> {
    client
        .get(queue, support::network::DELIVERY_DEADLINE)
        .expect("a get succeeds")
}

#[test]
fn a_peer_whose_certificate_comes_from_another_ca_is_refused() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    // bravo's files come from a CA of its own: same names, another authority.
    let foreign = network.certs().with_file_name("foreign-certs");
    qmgr(&[
        "certs",
        "init",
        "--topology",
        network.topology().to_str().unwrap(),
        "--out",
        foreign.to_str().unwrap(),
    ])
    .expect_code(0);
    let topology = network.topology();
    network.start_manager_with("bravo", &topology, &foreign, &[]);
    network
        .manager("alpha")
        .cli(&["put", "orders", "stays"])
        .expect_code(0);
    let alpha = network.manager("alpha");
    wait_until("alpha logs the refusal of bravo's channel", SOON, || {
        alpha.log().contains("incoming channel refused")
    });
    let log = alpha.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("incoming channel refused"))
        .expect("a refusal line");
    assert!(
        refusal.to_lowercase().contains("certificate"),
        "the reason names the certificate: {refusal}"
    );
    // Nor does alpha accept bravo's server certificate when it dials.
    wait_until("alpha logs why it cannot connect to bravo", SOON, || {
        alpha.log().contains("cannot connect channel")
    });
    let link = link_of(&alpha.status(), "bravo");
    assert_ne!(link["state"], "up", "{link}");
    assert_eq!(link["inbound"], false, "{link}");
    // The message waits at alpha: for bravo's channel, or held once bravo, never heard, is
    // routed around (after the dead interval, which a first dial to a port not yet bound can
    // outlast). Read twice, the move between the reads can be seen; it happens only once.
    wait_until("the message waits at alpha", SOON, || {
        let queued = link_of(&alpha.status(), "bravo")["transmission_depth"]
            .as_u64()
            .unwrap_or(0);
        queued + alpha.depth("hopmq.held").unwrap_or(0) == 1
    });
    assert!(network.manager("bravo").depth("orders").unwrap_or(0) == 0);
}

#[test]
fn a_valid_certificate_of_a_manager_not_linked_to_this_one_is_refused() {
    // alpha's topology: alpha - bravo, and charlie linked to nobody.
    let mut spec = Spec::line(&["alpha", "bravo"], "orders");
    spec.managers.push("charlie");
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    // charlie's own copy of the topology claims a link to alpha.
    let mut claimed = spec.clone();
    claimed.links.push(("alpha", "charlie", 1));
    let claimed_file = network.topology().with_file_name("charlie-topology.toml");
    std::fs::write(&claimed_file, network.topology_text(&claimed)).unwrap();
    let certs = network.certs();
    network.start_manager_with("charlie", &claimed_file, &certs, &[]);
    let alpha = network.manager("alpha");
    wait_until("alpha logs the refusal of charlie", SOON, || {
        alpha.log().contains("`charlie` has no link to `alpha`")
    });
    assert!(link_of(&alpha.status(), "charlie").is_null());
    let charlie = network.manager("charlie");
    let link = link_of(&charlie.status(), "alpha");
    assert_ne!(link["state"], "up", "{link}");
}

/// A QUIC client presenting `name`'s certificate, as a neighbour would.
fn peer_endpoint(certs: &Path, name: &str) -> (quinn::Endpoint, quinn::ClientConfig) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = CertificateDer::from_pem_file(certs.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let chain = vec![CertificateDer::from_pem_file(certs.join(format!("{name}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("{name}.key"))).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    tls.alpn_protocols = vec![b"hopmq/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint, config)
}

/// Connects as a neighbour, sends `bytes` on the channel stream, and returns how the manager
/// closed the connection.
async fn send_and_wait_for_close(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    to: SocketAddr,
    bytes: &[u8],
) -> quinn::ConnectionError {
    let connection = endpoint
        .connect_with(config.clone(), to, "alpha")
        .unwrap()
        .await
        .expect("the manager accepts a linked neighbour");
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), connection.closed())
        .await
        .expect("the manager closes the connection")
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn garbage_on_a_channel_closes_that_connection_and_nothing_else() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    let alpha_address: SocketAddr = format!("127.0.0.1:{}", network.port("alpha"))
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let (endpoint, config) = peer_endpoint(&network.certs(), "bravo");
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: [(&str, Vec<u8>); 4] = [
        ("random bytes behind a plausible length", frame(&random)),
        ("random bytes", random),
        ("an oversize length prefix", u32::MAX.to_le_bytes().to_vec()),
        // A well-formed `Ack { up_to: 1 }` (tag 3), which only a receiver sends: the wrong
        // kind of frame for the first frame of a sender.
        ("a frame of the wrong kind", frame(&[3, 1])),
    ];
    for (what, bytes) in cases {
        let closed = runtime.block_on(send_and_wait_for_close(
            &endpoint,
            &config,
            alpha_address,
            &bytes,
        ));
        match &closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_ne!(
                    close.error_code,
                    quinn::VarInt::from_u32(0),
                    "{what}: closed as a protocol error: {close:?}"
                );
            }
            other => panic!("{what}: expected the manager to close the connection, got {other}"),
        }
        // The manager serves its applications meanwhile.
        let alpha = network.manager("alpha");
        alpha.cli(&["put", "local", what]).expect_code(0);
        let got = alpha.cli(&["get", "local", "--timeout", "10s"]);
        assert_eq!(got.expect_code(0).stdout.trim(), what);
    }
    let log = network.manager("alpha").log();
    assert!(
        log.matches("closing channel: malformed frame").count() >= 3,
        "{log}"
    );
    assert!(log.contains("exceeds the limit"), "{log}");
    assert!(log.contains("unexpected frame from sender: Ack"), "{log}");

    // The real bravo still gets its channel and its messages.
    network.start_manager("bravo");
    network
        .manager("alpha")
        .cli(&["put", "orders", "after the garbage"])
        .expect_code(0);
    let bravo = network.manager("bravo").client();
    let got = receive_one(&bravo, "orders").expect("the message arrives");
    assert_eq!(got.text(), Some("after the garbage"));
    drop(endpoint);
}
