//! A network of real managers on loopback: a topology written with free UDP ports, the
//! development certificates from `qmgr certs init`, and one [`Manager`] per name, each with
//! its own folder, socket and log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Manager, SOON, qmgr, wait_until};

/// A link of a [`Spec`]: two managers and a cost.
pub type LinkSpec = (&'static str, &'static str, u32);

/// What a network looks like.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub managers: Vec<&'static str>,
    pub links: Vec<LinkSpec>,
    /// `(queue, home)`.
    pub queues: Vec<(&'static str, &'static str)>,
}

impl Spec {
    /// alpha–bravo–delta costs 2, alpha–charlie–delta costs 4: traffic for `orders`, homed
    /// on delta, goes via bravo.
    pub fn diamond() -> Spec {
        Spec {
            managers: vec!["alpha", "bravo", "charlie", "delta"],
            links: vec![
                ("alpha", "bravo", 1),
                ("bravo", "delta", 1),
                ("alpha", "charlie", 2),
                ("charlie", "delta", 2),
            ],
            queues: vec![("orders", "delta")],
        }
    }

    /// `names[0] - names[1] - ...`, cost 1 each, with `queue` homed on the last.
    pub fn line(names: &[&'static str], queue: &'static str) -> Spec {
        Spec {
            managers: names.to_vec(),
            links: names.windows(2).map(|w| (w[0], w[1], 1)).collect(),
            queues: vec![(queue, names[names.len() - 1])],
        }
    }
}

/// How long a port handed out by [`free_udp_port`] stays claimed: ample time for its test to
/// start the manager that binds it.
const PORT_CLAIM: Duration = Duration::from_secs(120);

/// A free UDP port on 127.0.0.1: free when asked, and bound by a manager moments later. Between
/// the two, the kernel may hand the same port to another test's `bind(0)` (tests run as
/// parallel processes), so each port is also claimed with a file that every test of this
/// machine checks: no two tests are given the same port within [`PORT_CLAIM`].
pub fn free_udp_port() -> u16 {
    let claims = std::env::temp_dir().join("hopmq-test-ports");
    // Without the folder, ports are merely free, as before.
    let _ = fs::create_dir_all(&claims);
    loop {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket binds");
        let port = socket.local_addr().expect("it has an address").port();
        let claim = claims.join(port.to_string());
        let stale = fs::metadata(&claim)
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > PORT_CLAIM));
        if stale {
            let _ = fs::remove_file(&claim);
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            _ => return port,
        }
    }
}

/// Running managers of one topology.
pub struct Network {
    dir: tempfile::TempDir,
    ports: BTreeMap<&'static str, u16>,
    managers: BTreeMap<&'static str, Manager>,
}

impl Network {
    /// Writes the topology and certificates and starts every manager of `spec`.
    #[track_caller]
    pub fn start(spec: &Spec) -> Network {
        let mut network = Network::prepare(spec);
        for name in spec.managers.clone() {
            network.start_manager(name);
        }
        network
    }

    /// Writes the topology and certificates without starting anything.
    #[track_caller]
    pub fn prepare(spec: &Spec) -> Network {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let ports = spec
            .managers
            .iter()
            .map(|&name| (name, free_udp_port()))
            .collect();
        let network = Network {
            dir,
            ports,
            managers: BTreeMap::new(),
        };
        network.write_topology(spec);
        network
    }

    /// The topology file every manager reads.
    pub fn topology(&self) -> PathBuf {
        self.dir.path().join("topology.toml")
    }

    /// The certificates folder.
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The UDP port of `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    /// Rewrites the topology (same ports for the same names; new names get free ones) and
    /// issues certificates for new managers. Running managers keep their copy in memory.
    #[track_caller]
    pub fn write_topology(&self, spec: &Spec) {
        fs::write(self.topology(), self.topology_text(spec)).expect("the topology is written");
        qmgr(&[
            "certs",
            "init",
            "--topology",
            self.topology().to_str().expect("a UTF-8 path"),
            "--out",
            self.certs().to_str().expect("a UTF-8 path"),
        ])
        .expect_code(0);
    }

    /// The text of `spec` as a topology, with this network's ports.
    pub fn topology_text(&self, spec: &Spec) -> String {
        let mut text = String::new();
        for name in &spec.managers {
            let port = self.ports.get(name).copied().unwrap_or_else(free_udp_port);
            let _ = writeln!(text, "[managers.{name}]\naddress = \"127.0.0.1:{port}\"\n");
        }
        for (a, b, cost) in &spec.links {
            let _ = writeln!(
                text,
                "[[links]]\nbetween = [\"{a}\", \"{b}\"]\ncost = {cost}\n"
            );
        }
        for (queue, home) in &spec.queues {
            let _ = writeln!(text, "[queues.{queue}]\nhome = \"{home}\"\n");
        }
        text
    }

    /// Starts `name` (with the network's topology and its own certificate).
    #[track_caller]
    pub fn start_manager(&mut self, name: &'static str) -> &mut Manager {
        let topology = self.topology();
        self.start_manager_with(name, &topology, &self.certs(), &[])
    }

    /// Starts `name` with a topology file and a certificates folder of the test's choosing
    /// (a manager with its own view of the network, or a certificate from another CA), and
    /// extra environment variables.
    #[track_caller]
    pub fn start_manager_with(
        &mut self,
        name: &'static str,
        topology: &Path,
        certs: &Path,
        env: &[(&str, &str)],
    ) -> &mut Manager {
        let mut builder = Manager::builder();
        for (key, value) in env {
            builder = builder.env(key, value);
        }
        let manager = builder
            .env("QMGR_NAME", name)
            .env("QMGR_TOPOLOGY", topology.display())
            .env("QMGR_TLS__CA", certs.join("ca.pem").display())
            .env(
                "QMGR_TLS__CERT",
                certs.join(format!("{name}.pem")).display(),
            )
            .env("QMGR_TLS__KEY", certs.join(format!("{name}.key")).display())
            .env("RUST_LOG", "info")
            .start();
        self.managers.insert(name, manager);
        self.managers.get_mut(name).expect("just inserted")
    }

    /// The manager called `name`.
    #[track_caller]
    pub fn manager(&mut self, name: &str) -> &mut Manager {
        self.managers
            .get_mut(name)
            .unwrap_or_else(|| panic!("no manager `{name}` in this network"))
    }

    /// `name`'s view of its link to `neighbour`, from `status --json`.
    #[track_caller]
    pub fn link(&mut self, name: &str, neighbour: &str) -> serde_json::Value {
        link_of(&self.manager(name).status(), neighbour)
    }

    /// Waits until `name`'s outgoing channel to `neighbour` is up.
    #[track_caller]
    pub fn wait_link_up(&mut self, name: &str, neighbour: &str) {
        let manager = self.manager(name);
        wait_until(&format!("{name}'s link to {neighbour} up"), SOON, || {
            link_of(&manager.status(), neighbour)["state"] == "up"
        });
    }

    /// Waits until nothing is on its way anywhere: on every running manager, every link's
    /// transmission queue (messages in flight on its channel included) and `hopmq.held` are
    /// empty, on two rounds of status in a row. A sender lets go of a message only once the
    /// next hop acknowledged it stored, so after this every message is in its home queue (or a
    /// dead-letter queue), and a duplicate still on its way would have shown here.
    #[track_caller]
    pub fn wait_drained(&mut self) {
        let start = std::time::Instant::now();
        let mut clean_rounds = 0;
        while clean_rounds < 2 {
            let mut left = None;
            for (name, manager) in &mut self.managers {
                if manager.is_running() {
                    if let Some(waiting) = waiting(&manager.status()) {
                        left = Some(format!("{name}: {waiting}"));
                        break;
                    }
                }
            }
            match left {
                None => clean_rounds += 1,
                Some(left) => {
                    clean_rounds = 0;
                    assert!(
                        start.elapsed() < DELIVERY_DEADLINE,
                        "not drained after {DELIVERY_DEADLINE:?}: {left}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Freezes `receiver` (SIGSTOP), then puts `bodies` at `sender` for `address` (whose next
    /// hop is `receiver`): `sender` sends them to the frozen manager, which neither stores nor
    /// acknowledges them, so they stay in flight on `sender`'s channel. Returns whether all of
    /// them are (the receiver stays frozen). If not, `sender` had stopped counting on the
    /// frozen receiver before the put; the receiver is thawed and the messages go their way.
    #[track_caller]
    pub fn put_in_flight_to_frozen(
        &mut self,
        sender: &str,
        receiver: &str,
        address: &str,
        bodies: &[String],
    ) -> bool {
        let client = self.manager(sender).client();
        let messages = bodies
            .iter()
            .map(|body| (address.to_owned(), hopmq::Message::new(body.as_str())))
            .collect();
        self.manager(receiver).freeze();
        client
            .put_batch(messages)
            .expect("a put at the sender succeeds");
        let count = bodies.len() as u64;
        let manager = self.manager(sender);
        let mut in_flight = 0;
        // A sender gives a channel nothing new once its neighbour was quiet for 750 ms.
        wait_until(
            &format!("{sender} sends the messages to {receiver}"),
            SOON,
            || {
                let link = link_of(&manager.status(), receiver);
                in_flight = link["in_flight"].as_u64().expect("a count");
                in_flight == count || link["heard_ms_ago"].as_u64().is_some_and(|ms| ms > 1_500)
            },
        );
        if in_flight == count {
            return true;
        }
        eprintln!("only {in_flight} of {count} messages went to frozen {receiver}; again");
        self.manager(receiver).thaw();
        false
    }

    /// Ten messages `{tag}{try}-{n}` for `queue` that `sender` sent to `receiver` while
    /// `receiver` was frozen, and holds unacknowledged (see
    /// [`put_in_flight_to_frozen`](Self::put_in_flight_to_frozen)); `receiver` stays frozen.
    /// A try that fails lets its messages through to `queue` at `home`, where they are taken
    /// out of the way.
    #[track_caller]
    pub fn hold_in_flight(
        &mut self,
        (sender, receiver): (&str, &str),
        (queue, home): (&str, &str),
        tag: &str,
    ) -> Vec<String> {
        for attempt in 0..3 {
            let bodies: Vec<String> = (0..10).map(|n| format!("{tag}{attempt}-{n}")).collect();
            if self.put_in_flight_to_frozen(sender, receiver, queue, &bodies) {
                return bodies;
            }
            let through = receive(&self.manager(home).client(), queue, bodies.len());
            let through: Vec<&str> = through.iter().filter_map(|m| m.text()).collect();
            assert_eq!(through, bodies);
            self.wait_drained();
        }
        panic!("{sender} never sent messages to {receiver} while {receiver} was frozen");
    }

    /// Freezes `destination` and waits until `relay` finds it quiet: a relay gives a quiet
    /// neighbour's channel nothing new (else the frozen socket would take the messages in, to
    /// read once it thaws), so what reaches `relay` for it stays there.
    pub fn freeze_behind(&mut self, destination: &str, relay: &str) {
        self.manager(destination).freeze();
        let relay_manager = self.manager(relay);
        wait_until(&format!("{relay} finds {destination} quiet"), SOON, || {
            link_of(&relay_manager.status(), destination)["heard_ms_ago"]
                .as_u64()
                .is_some_and(|ms| ms > 1_000)
        });
    }

    /// Waits until every declared link is up both ways.
    #[track_caller]
    pub fn wait_all_links_up(&mut self, spec: &Spec) {
        for (a, b, _) in &spec.links {
            self.wait_link_up(a, b);
            self.wait_link_up(b, a);
        }
    }
}

/// What still waits or is in flight at the manager of `status`, if anything.
fn waiting(status: &serde_json::Value) -> Option<String> {
    for link in status["links"].as_array().expect("status lists links") {
        if link["transmission_depth"] != 0 || link["in_flight"] != 0 {
            return Some(format!(
                "{} waiting for {} ({} in flight)",
                link["transmission_depth"], link["neighbour"], link["in_flight"]
            ));
        }
    }
    let held = status["queues"]
        .as_array()
        .expect("status lists queues")
        .iter()
        .find(|q| q["name"] == "hopmq.held")
        .map_or(0, |q| q["depth"].as_u64().expect("a depth"));
    (held > 0).then(|| format!("{held} held"))
}

/// `got` is `expected`: all once, in put (or publish) order; else where they part.
#[track_caller]
pub fn assert_in_put_order(got: &[String], expected: &[String]) {
    let length = got.len().max(expected.len());
    if let Some(at) = (0..length).find(|&i| got.get(i) != expected.get(i)) {
        let around = |list: &[String]| list[at.min(list.len())..(at + 3).min(list.len())].to_vec();
        panic!(
            "not all once in put order: {} of {} arrived; from #{at}, {:?} where {:?} was put",
            got.len(),
            expected.len(),
            around(got),
            around(expected)
        );
    }
}

/// Messages `status`'s manager keeps until `destination` confirms them.
pub fn kept_for(status: &serde_json::Value, destination: &str) -> u64 {
    status["custody"]
        .as_array()
        .expect("a status lists custody")
        .iter()
        .find(|kept| kept["destination"] == destination)
        .map_or(0, |kept| kept["messages"].as_u64().expect("a count"))
}

/// The link to `neighbour` in a parsed status.
#[track_caller]
pub fn link_of(status: &serde_json::Value, neighbour: &str) -> serde_json::Value {
    status["links"]
        .as_array()
        .expect("status lists links")
        .iter()
        .find(|l| l["neighbour"] == neighbour)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Long enough for messages to cross a few hops on a loaded machine.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// Takes messages from `queue` until `count` arrived, failing after [`DELIVERY_DEADLINE`]
/// without one for that long.
#[track_caller]
pub fn receive(client: &hopmq::blocking::Client, queue: &str, count: usize) -> Vec<hopmq::Message> {
    let mut all = Vec::with_capacity(count);
    let mut last_progress = std::time::Instant::now();
    while all.len() < count {
        let batch = client
            .get_with(
                queue,
                hopmq::GetOptions {
                    max: 256,
                    timeout: Duration::from_millis(500),
                    ..Default::default()
                },
            )
            .expect("a get succeeds");
        if batch.is_empty() {
            assert!(
                last_progress.elapsed() < DELIVERY_DEADLINE,
                "only {} of {count} messages arrived",
                all.len()
            );
            continue;
        }
        last_progress = std::time::Instant::now();
        all.extend(batch);
    }
    all
}
