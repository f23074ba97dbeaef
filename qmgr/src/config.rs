//! A manager's settings, layered with the `config` crate: built-in defaults < the settings file
//! (`--config`, `QMGR_CONFIG`, else `qmgr.toml` if present) < `QMGR_*` environment variables
//! (`QMGR_TLS__CA` for nested keys) < command-line flags.
//!
//! Invariant: a [`Settings`] value is complete and validated; every setting has a working
//! default, so `qmgr run` with no file and no flag starts a standalone manager.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::store::format::RECORD_PAYLOAD_BYTES_MAX;
use hopmq::ManagerName;

/// The largest `max_message_bytes`: a journal record holds one message with room for its
/// envelope (headers, addresses, trace).
pub const MESSAGE_BYTES_LIMIT: u64 = RECORD_PAYLOAD_BYTES_MAX - 1024 * 1024;
/// The smallest `segment_bytes` accepted: small segments are for tests.
pub const SEGMENT_BYTES_MIN: u64 = 1024 * 1024;
/// The largest `segment_bytes`: recovery reads a whole segment at once.
pub const SEGMENT_BYTES_MAX: u64 = crate::store::format::SEGMENT_BYTES_MAX;

const _: () = assert!(MESSAGE_BYTES_LIMIT as usize <= hopmq::protocol::MESSAGE_BYTES_MAX);
use serde::{Deserialize, Serialize};

/// The longest `http_token` accepted.
pub const HTTP_TOKEN_BYTES_MAX: usize = 256;

/// Whether an acknowledged write has reached stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `fdatasync` before acknowledging: the default, and the only safe choice.
    Always,
    /// Never sync: UNSAFE, a crash of the machine loses acknowledged messages. For tests and
    /// for measuring.
    Never,
}

impl SyncMode {
    /// The name used in settings and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// How a link's QUIC connection paces itself to its path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LinkCongestion {
    /// A model of the path (its bandwidth and its round trip without queues), in the spirit of
    /// BBR: random loss does not slow it, and it keeps little more in flight than the path
    /// holds. The default.
    #[default]
    Model,
    /// CUBIC, the loss-based controller most TCP stacks use: fair to other CUBIC flows on a
    /// shared link, but every loss cuts its rate, so long lossy links carry little.
    Cubic,
}

impl LinkCongestion {
    /// The name used in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Cubic => "cubic",
        }
    }
}

/// TLS files for the links between managers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// The CA that signs every manager's certificate.
    pub ca: Option<PathBuf>,
    /// This manager's certificate.
    pub cert: Option<PathBuf>,
    /// This manager's private key.
    pub key: Option<PathBuf>,
}

/// Everything a manager is configured with. Serialized (for the web console's manager page)
/// without its secret, `http_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The manager's name in the topology.
    pub name: String,
    /// The topology file; `None` for a standalone manager.
    pub topology: Option<PathBuf>,
    /// Where the journal lives.
    pub data_dir: PathBuf,
    /// The local API socket; default `<data_dir>/qmgr.sock`.
    pub api_socket: Option<PathBuf>,
    /// Where the channel endpoint binds; `None`: this manager's address in the topology.
    /// For a manager behind NAT or port forwarding (or a relay), which its neighbours reach at
    /// the topology's address while it binds another. Needs a topology file.
    pub listen: Option<SocketAddr>,
    /// Where to serve Prometheus metrics; off by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the web console, its JSON API and the metrics; off by default.
    pub http_listen: Option<SocketAddr>,
    /// When set, the console's JSON API and metrics on `http_listen` need
    /// `Authorization: Bearer <token>`. A secret: never serialized.
    #[serde(skip_serializing)]
    pub http_token: Option<String>,
    /// When acknowledged writes are synced.
    pub sync: SyncMode,
    /// The links' congestion control.
    pub link_congestion: LinkCongestion,
    /// Whether a link also sends its small batches as datagrams while it carries little, so a
    /// lost packet does not hold up what follows it.
    pub link_early_copies: bool,
    /// The largest message body accepted at put.
    pub max_message_bytes: u64,
    /// The depth limit of queues that do not declare one.
    pub max_depth: u64,
    /// Deliveries of a leased message before it goes to the dead-letter queue.
    pub max_deliveries: u32,
    /// Whether a put to an undeclared local queue creates it (a read never does).
    pub auto_create_queues: bool,
    /// The size of a journal segment.
    pub segment_bytes: u64,
    /// A cap on the journal's disk use: past it puts fail as on a full disk. Off by default.
    pub disk_bytes_max: Option<u64>,
    /// Bodies kept in memory for fast gets, in bytes.
    pub cache_bytes: u64,
    /// Hops a message may take before it is dead-lettered (a loop's backstop).
    pub max_hops: u32,
    /// A neighbour not heard for this long (milliseconds) is dead: routes leave its link out
    /// until it is heard again. At least [`crate::channel::adjacency::DEAD_INTERVAL_MIN`].
    pub link_dead_interval_ms: u64,
    /// How long (milliseconds) this manager's own message waits for its destination's
    /// confirmation before it is sent again (if the way it went broke) or the destination is
    /// asked. `None`: twice `link_dead_interval_ms`.
    pub custody_timeout_ms: Option<u64>,
    /// Local client connections served at once; more are refused at their handshake.
    pub max_connections: u64,
    /// Threads of the manager's async runtime (its core, connections and channels; the
    /// journal writer has its own). `None`: one per core. Managers sharing a host do better
    /// with fewer each, as `scripts/cluster` and the benches run them.
    pub runtime_threads: Option<usize>,
    /// TLS files, required once a manager has links.
    #[serde(default)]
    pub tls: TlsSettings,
    /// The settings file itself (read from `QMGR_CONFIG`; not a setting).
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// The most runtime threads a manager may ask for.
pub const RUNTIME_THREADS_MAX: usize = 256;

/// Default values, shown by `qmgr run --help` and in the README.
pub mod defaults {
    /// `name`.
    pub const NAME: &str = "local";
    /// `data_dir`.
    pub const DATA_DIR: &str = "./qmgr-data";
    /// `max_message_bytes`: 16 MiB.
    pub const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
    /// `max_depth`.
    pub const MAX_DEPTH: u64 = 10_000_000;
    /// `max_deliveries`.
    pub const MAX_DELIVERIES: u32 = 5;
    /// `segment_bytes`: 32 MiB, the journal's default.
    pub const SEGMENT_BYTES: u64 = crate::store::format::SEGMENT_BYTES_DEFAULT;
    /// `cache_bytes`: 64 MiB.
    pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;
    /// `max_hops`.
    pub const MAX_HOPS: u32 = 32;
    /// `max_connections`: each may hold up to 64 MiB of frames its client has not read yet,
    /// so the worst case stays a bounded multiple of that.
    pub const MAX_CONNECTIONS: u64 = 1024;
    /// `link_dead_interval_ms`: as long as QUIC's idle timeout, twelve missed heartbeats.
    pub const LINK_DEAD_INTERVAL_MS: u64 = 3000;
}

// The default segment is small, but not so small that it lowers the default message limit.
const _: () = assert!(defaults::MAX_MESSAGE_BYTES <= defaults::SEGMENT_BYTES / 2);

/// Settings given as flags to `qmgr run`; `None` leaves the lower layers in force.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--name`.
    pub name: Option<String>,
    /// `--topology`.
    pub topology: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--socket`.
    pub api_socket: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--http`.
    pub http_listen: Option<SocketAddr>,
    /// `--sync`.
    pub sync: Option<SyncMode>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `config` crate refused a layer.
    #[error("invalid settings: {0}")]
    Layer(config::ConfigError),
    /// A value is out of range or invalid.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

// Not `#[from]`, which would make the cause the `source` too: the message states it already.
impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        Self::Layer(error)
    }
}

impl Settings {
    /// Loads the layers. `environment` replaces the process environment (for tests).
    pub fn load(
        overrides: &Overrides,
        environment: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let env_config = environment.as_ref().map_or_else(
            || std::env::var("QMGR_CONFIG").ok(),
            |env| env.get("QMGR_CONFIG").cloned(),
        );
        let (file, required) = match (&overrides.config, env_config) {
            (Some(path), _) => (path.clone(), true),
            (None, Some(path)) => (PathBuf::from(path), true),
            (None, None) => (PathBuf::from("qmgr.toml"), false),
        };
        let path_string = |p: &Path| p.to_string_lossy().into_owned();
        let builder = config::Config::builder()
            .set_default("name", defaults::NAME)?
            .set_default("data_dir", defaults::DATA_DIR)?
            .set_default("sync", "always")?
            .set_default("link_congestion", LinkCongestion::default().as_str())?
            .set_default("link_early_copies", true)?
            .set_default("max_message_bytes", defaults::MAX_MESSAGE_BYTES)?
            .set_default("max_depth", defaults::MAX_DEPTH)?
            .set_default("max_deliveries", defaults::MAX_DELIVERIES)?
            .set_default("auto_create_queues", true)?
            .set_default("segment_bytes", defaults::SEGMENT_BYTES)?
            .set_default("cache_bytes", defaults::CACHE_BYTES)?
            .set_default("max_hops", defaults::MAX_HOPS)?
            .set_default("max_connections", defaults::MAX_CONNECTIONS)?
            .set_default("link_dead_interval_ms", defaults::LINK_DEAD_INTERVAL_MS)?
            .add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(required),
            )
            .add_source(
                config::Environment::with_prefix("QMGR")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(environment),
            )
            .set_override_option("name", overrides.name.clone())?
            .set_override_option("topology", overrides.topology.as_deref().map(path_string))?
            .set_override_option("data_dir", overrides.data_dir.as_deref().map(path_string))?
            .set_override_option(
                "api_socket",
                overrides.api_socket.as_deref().map(path_string),
            )?
            .set_override_option("listen", overrides.listen.map(|a| a.to_string()))?
            .set_override_option(
                "metrics_listen",
                overrides.metrics_listen.map(|a| a.to_string()),
            )?
            .set_override_option("http_listen", overrides.http_listen.map(|a| a.to_string()))?
            .set_override_option("sync", overrides.sync.map(|s| s.as_str()))?;
        let settings: Self = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ManagerName::new(self.name.as_str()).map_err(|e| ConfigError::Invalid {
            key: "name",
            reason: e.to_string(),
        })?;
        if self.max_message_bytes == 0 || self.max_message_bytes > MESSAGE_BYTES_LIMIT {
            return Err(ConfigError::Invalid {
                key: "max_message_bytes",
                reason: format!(
                    "{} is not between 1 and {MESSAGE_BYTES_LIMIT}",
                    self.max_message_bytes
                ),
            });
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(ConfigError::Invalid {
                key: "segment_bytes",
                reason: format!(
                    "{} is not between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            });
        }
        for (key, value) in [
            ("max_depth", self.max_depth),
            ("max_deliveries", u64::from(self.max_deliveries)),
            ("max_hops", u64::from(self.max_hops)),
            ("max_connections", self.max_connections),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be at least 1".into(),
                });
            }
        }
        self.validate_listen()?;
        if let Some(threads) = self.runtime_threads {
            if !(1..=RUNTIME_THREADS_MAX).contains(&threads) {
                return Err(ConfigError::Invalid {
                    key: "runtime_threads",
                    reason: format!("{threads} is not between 1 and {RUNTIME_THREADS_MAX}"),
                });
            }
        }
        if let Some(token) = &self.http_token {
            let printable = token.bytes().all(|b| b.is_ascii_graphic());
            if token.is_empty() || token.len() > HTTP_TOKEN_BYTES_MAX || !printable {
                return Err(ConfigError::Invalid {
                    key: "http_token",
                    reason: format!(
                        "must be 1 to {HTTP_TOKEN_BYTES_MAX} printable ASCII characters, no spaces"
                    ),
                });
            }
        }
        let dead_min = crate::channel::adjacency::DEAD_INTERVAL_MIN.as_millis() as u64;
        if !(dead_min..=3_600_000).contains(&self.link_dead_interval_ms) {
            return Err(ConfigError::Invalid {
                key: "link_dead_interval_ms",
                reason: format!(
                    "{} is not between {dead_min} and 3600000",
                    self.link_dead_interval_ms
                ),
            });
        }
        if let Some(timeout) = self.custody_timeout_ms {
            if !(dead_min..=86_400_000).contains(&timeout) {
                return Err(ConfigError::Invalid {
                    key: "custody_timeout_ms",
                    reason: format!("{timeout} is not between {dead_min} and 86400000"),
                });
            }
        }
        Ok(())
    }

    /// `listen` replaces where the topology address would have the channel endpoint bind, so
    /// a standalone manager, which has no endpoint, has no use for it.
    fn validate_listen(&self) -> Result<(), ConfigError> {
        if self.listen.is_some() && self.topology.is_none() {
            return Err(ConfigError::Invalid {
                key: "listen",
                reason: "needs a topology file: it replaces where this manager's topology \
                         address would have the channel endpoint bind"
                    .into(),
            });
        }
        Ok(())
    }

    /// How long a kept message waits for its confirmation: `custody_timeout_ms`, or twice the
    /// dead interval.
    pub fn custody_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.custody_timeout_ms
                .unwrap_or(2 * self.link_dead_interval_ms),
        )
    }

    /// The largest body a put accepts: `max_message_bytes`, lowered when small segments could
    /// not hold such a message with its envelope.
    pub fn message_bytes_limit(&self) -> u64 {
        self.max_message_bytes.min(self.segment_bytes / 2)
    }

    /// The manager's validated name.
    pub fn manager_name(&self) -> ManagerName {
        // `load` validated it; a hand-built Settings with a bad name is a bug.
        ManagerName::new(self.name.as_str()).unwrap_or_else(|e| unreachable!("validated name: {e}"))
    }

    /// The local API socket in force.
    pub fn socket_path(&self) -> PathBuf {
        self.api_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("qmgr.sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_alone_make_a_standalone_manager() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        // An explicit missing file is an error; the implicit qmgr.toml is optional. Use the
        // environment layer to point at a folder without one.
        assert!(
            Settings::load(
                &Overrides {
                    config: Some(missing),
                    ..Default::default()
                },
                env(&[])
            )
            .is_err()
        );
        let settings = Settings::load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(settings.name, "local");
        assert_eq!(settings.topology, None);
        assert_eq!(settings.data_dir, PathBuf::from("./qmgr-data"));
        assert_eq!(
            settings.socket_path(),
            PathBuf::from("./qmgr-data/qmgr.sock")
        );
        assert_eq!(settings.sync, SyncMode::Always);
        assert_eq!(settings.link_congestion, LinkCongestion::Model);
        assert!(settings.link_early_copies);
        assert_eq!(settings.max_message_bytes, 16 * 1024 * 1024);
        assert!(settings.auto_create_queues);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("qmgr.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\ndata_dir = \"/file\"\nmax_deliveries = 9\n[tls]\nca = \"/ca.pem\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(file.clone()),
            data_dir: Some("/flag".into()),
            ..Default::default()
        };
        let settings = Settings::load(
            &overrides,
            env(&[
                ("QMGR_NAME", "from-env"),
                ("QMGR_DATA_DIR", "/env"),
                ("QMGR_TLS__KEY", "/k.pem"),
                ("QMGR_SYNC", "never"),
                ("QMGR_LINK_CONGESTION", "cubic"),
                ("QMGR_LINK_EARLY_COPIES", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.link_congestion, LinkCongestion::Cubic);
        assert!(!settings.link_early_copies);
        assert_eq!(settings.name, "from-env"); // env beats file
        assert_eq!(settings.data_dir, PathBuf::from("/flag")); // flag beats env
        assert_eq!(settings.max_deliveries, 9); // file beats default
        assert_eq!(settings.tls.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(settings.tls.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(settings.sync, SyncMode::Never);
        let via_env = Settings::load(
            &Overrides::default(),
            env(&[("QMGR_CONFIG", file.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(via_env.name, "from-file");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let bad = |pairs: &[(&str, &str)]| {
            Settings::load(&Overrides::default(), env(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&[("QMGR_NAME", "no spaces")]).contains("`name`"));
        assert!(bad(&[("QMGR_MAX_MESSAGE_BYTES", "0")]).contains("`max_message_bytes`"));
        assert!(bad(&[("QMGR_SYNC", "sometimes")]).contains("sync"));
        assert!(bad(&[("QMGR_LINK_CONGESTION", "reno")]).contains("link_congestion"));
        assert!(bad(&[("QMGR_MAX_DEPTH", "0")]).contains("`max_depth`"));
        assert!(bad(&[("QMGR_RUNTIME_THREADS", "0")]).contains("`runtime_threads`"));
        assert!(bad(&[("QMGR_RUNTIME_THREADS", "100000")]).contains("`runtime_threads`"));
        let threads = Settings::load(&Overrides::default(), env(&[("QMGR_RUNTIME_THREADS", "1")]));
        assert_eq!(threads.unwrap().runtime_threads, Some(1));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.toml");
        std::fs::write(&file, "nmae = \"typo\"\n").unwrap();
        let error = Settings::load(
            &Overrides {
                config: Some(file),
                ..Default::default()
            },
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("nmae"), "{error}");
    }

    #[test]
    fn listen_defaults_to_the_topology_address_and_needs_a_topology() {
        let off = Settings::load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(off.listen, None);
        let topology = [("QMGR_TOPOLOGY", "/etc/hopmq/topology.toml")];
        let via_env = Settings::load(
            &Overrides::default(),
            env(&[topology[0], ("QMGR_LISTEN", "0.0.0.0:7401")]),
        )
        .unwrap();
        assert_eq!(via_env.listen, Some("0.0.0.0:7401".parse().unwrap()));
        let via_flag = Settings::load(
            &Overrides {
                listen: Some("127.0.0.1:7402".parse().unwrap()),
                ..Default::default()
            },
            env(&[topology[0], ("QMGR_LISTEN", "0.0.0.0:7401")]),
        )
        .unwrap();
        assert_eq!(via_flag.listen, Some("127.0.0.1:7402".parse().unwrap())); // flag beats env
        let bad = |pairs: &[(&str, &str)]| {
            Settings::load(&Overrides::default(), env(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&[("QMGR_LISTEN", "0.0.0.0:7401")]).contains("`listen`: needs a topology"));
        assert!(bad(&[topology[0], ("QMGR_LISTEN", "somewhere")]).contains("listen"));
    }

    #[test]
    fn the_console_settings_load_and_the_token_is_never_serialized() {
        let settings = Settings::load(
            &Overrides {
                http_listen: Some("127.0.0.1:8081".parse().unwrap()),
                ..Default::default()
            },
            env(&[("QMGR_HTTP_TOKEN", "s3cret-token")]),
        )
        .unwrap();
        assert_eq!(
            settings.http_listen,
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(settings.http_token.as_deref(), Some("s3cret-token"));
        let json = serde_json::to_string(&settings).unwrap();
        assert!(
            json.contains("\"http_listen\":\"127.0.0.1:8081\""),
            "{json}"
        );
        assert!(
            !json.contains("s3cret") && !json.contains("http_token"),
            "{json}"
        );
        let bad = Settings::load(&Overrides::default(), env(&[("QMGR_HTTP_TOKEN", "a b")]));
        assert!(bad.unwrap_err().to_string().contains("`http_token`"));
        let off = Settings::load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!((off.http_listen, off.http_token), (None, None));
    }
}
