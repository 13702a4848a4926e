//! Real components for tests and benchmarks (feature `testkit`): a `redis-server` and a
//! `tansu` Kafka broker (in-memory storage), each on a free port of 127.0.0.1, stopped when
//! dropped, plus a producer that sends one record per batch.
//!
//! Binaries: `redis-server` from `INFERD_REDIS_SERVER` or `PATH`; `tansu` from `TANSU_BIN`,
//! else `$INFERD_CACHE/tansu/bin/tansu` (default cache `~/.cache/inferd`), where
//! `scripts/setup.sh` installs it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_until(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` with append-only persistence (fsync always) in a temporary directory, so
/// [`Redis::restart`] keeps the data, as a production Redis would.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        r.spawn();
        r
    }

    fn bin() -> String {
        std::env::var("INFERD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let child = Command::new(Self::bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .arg("--logfile")
            .arg(self.log())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install redis-server (scripts/setup.sh does)",
                    Self::bin()
                )
            });
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server", &self.log(), || ping(port));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGKILL; every write was already fsynced).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// The tansu binary `scripts/setup.sh` installs.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let cache = std::env::var_os("INFERD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/inferd")))
        .expect("INFERD_CACHE or HOME");
    cache.join("tansu/bin/tansu")
}

/// A tansu broker with in-memory storage, advertising 127.0.0.1.
pub struct Tansu {
    child: Child,
    /// Where it listens.
    pub port: u16,
    /// Where it tells clients to connect: its own port, or a front the test runs.
    advertised: u16,
    /// librdkafka properties of the clients made here (e.g. TLS to the front).
    client_options: Vec<(String, String)>,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Tansu {
    pub fn start() -> Tansu {
        Self::start_with(None, &[])
    }

    /// A broker that advertises `front` (a proxy the test runs, e.g. one that speaks TLS,
    /// which tansu does not) instead of its own port: every client, after its first metadata
    /// answer, connects there. The clients made here use `client_options`.
    pub fn behind(front: u16, client_options: &[(&str, &str)]) -> Tansu {
        Self::start_with(Some(front), client_options)
    }

    fn start_with(front: Option<u16>, client_options: &[(&str, &str)]) -> Tansu {
        let bin = tansu_bin();
        assert!(
            bin.exists(),
            "the tansu broker is not installed at {} (run scripts/setup.sh, or set TANSU_BIN)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("tansu.log");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = front.unwrap_or(port);
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        // Run in the temp dir: tansu reads a `.env` from its working directory.
        let child = Command::new(&bin)
            .current_dir(dir.path())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised_url])
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        wait_until("tansu", &log, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Tansu {
            child,
            port,
            advertised,
            client_options: client_options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dir: dir,
            log,
        }
    }

    /// The bootstrap address clients are given: the advertised one.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers());
        for (k, v) in &self.client_options {
            c.set(k, v);
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates topics (tansu 0.6 creates none by itself).
    pub async fn create_topics(&self, topics: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .expect("create topics");
        for r in results {
            if let Err((t, e)) = r {
                panic!("creating topic {t}: {e}\n{}", self.log());
            }
        }
    }

    /// A producer that sends each record in its own batch: tansu 0.6's in-memory engine can
    /// leave a consumer polling empty when its committed offset falls inside a batch.
    pub fn producer(&self) -> FutureProducer {
        self.client_config()
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one message and waits for its acknowledgement.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
}
