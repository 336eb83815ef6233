//! Object stores for the tests: moto's S3 server on loopback (credentials
//! and signatures checked as it checks them), a TCP proxy in front of it
//! that can cut or stall the connection mid-upload, and the relation data
//! the s3-integrator charm writes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{deps_dir, free_port, repo};

pub const BUCKET: &str = "etcd-backups";

fn moto_bin(name: &str) -> PathBuf {
    let p = deps_dir().join("moto/bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing; run ./charm deps (./charm test does)",
        p.display()
    );
    p
}

/// `[{"key", "size"}]` as the admin scripts print listings.
fn keys_and_sizes(listing: &Value) -> Vec<(String, u64)> {
    listing
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap_or_default().to_string(),
                o["size"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Waits until something accepts on 127.0.0.1:`port` (bounded).
pub fn wait_listening(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// moto's S3 server, with a user whose keys the charm gets and a bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub access: String,
    pub secret: String,
}

impl S3Server {
    pub fn start(dir: &Path) -> S3Server {
        let port = free_port(&["127.0.0.1"]);
        let log = std::fs::File::create(dir.join("moto.log")).expect("moto log");
        let child = Command::new(moto_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // The first three calls (the user, its key, its policy) go
            // unchecked; every later one must be signed with a real key.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .env("MOTO_CALL_RESET_API", "false")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        wait_listening(port, Duration::from_secs(60));
        let mut s = S3Server {
            child,
            port,
            access: "testing".into(),
            secret: "testing".into(),
        };
        let keys = s.admin(&["setup"]);
        s.access = keys["access"].as_str().expect("access key").to_string();
        s.secret = keys["secret"].as_str().expect("secret key").to_string();
        s.admin(&["create-bucket", BUCKET]);
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs s3admin.py with the user's keys; its JSON output.
    pub fn admin(&self, args: &[&str]) -> Value {
        let out = self.admin_raw(args);
        assert!(
            out.status.success(),
            "s3admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("s3admin json")
    }

    pub fn admin_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new(moto_bin("python"))
            .arg(repo().join("tests/support/s3admin.py"))
            .arg(self.endpoint())
            .args(args)
            .env("AK", &self.access)
            .env("SK", &self.secret)
            .output()
            .expect("s3admin")
    }

    /// Object keys (and sizes) under `prefix` in the bucket.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        keys_and_sizes(&self.admin(&["list", BUCKET, prefix]))
    }

    /// Keys of the multipart uploads not completed nor aborted.
    pub fn uploads(&self) -> Vec<String> {
        self.admin(&["uploads", BUCKET])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The relation data s3-integrator's leader writes in its application
    /// databag for `endpoint` (its option values, all strings).
    pub fn integrator_data(&self, endpoint: &str, path: &str) -> BTreeMap<String, String> {
        [
            ("access-key", self.access.as_str()),
            ("secret-key", self.secret.as_str()),
            ("bucket", BUCKET),
            ("endpoint", endpoint),
            ("path", path),
            ("region", "us-east-1"),
            ("s3-uri-style", "path"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PASS: u8 = 0;
const STALL: u8 = 1;
const CUT: u8 = 2;

/// A TCP proxy on loopback in front of `upstream`: passes bytes through,
/// or (after `cut_after` bytes towards the server) drops every connection
/// and refuses new ones as a dead server would, or stalls: holds every
/// connection open and moves nothing.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    cut_after: Arc<AtomicU64>,
    /// What happens at `cut_after`: CUT or STALL.
    then: Arc<AtomicU8>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let cut_after = Arc::new(AtomicU64::new(u64::MAX));
        let then = Arc::new(AtomicU8::new(CUT));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, c, th, s, st, cs) = (
            mode.clone(),
            cut_after.clone(),
            then.clone(),
            sent.clone(),
            stop.clone(),
            conns.clone(),
        );
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if m.load(Ordering::SeqCst) == CUT {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut all) = cs.lock() {
                        all.push(a);
                        all.push(b);
                    }
                }
                pipe(
                    client.try_clone(),
                    server.try_clone(),
                    (&m, &c, &th, &s, &cs),
                    true,
                );
                pipe(
                    server.try_clone(),
                    client.try_clone(),
                    (&m, &c, &th, &s, &cs),
                    false,
                );
            }
        });
        Proxy {
            port,
            mode,
            cut_after,
            then,
            sent,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection once `bytes` more have gone to the server.
    pub fn cut_after(&self, bytes: u64) {
        self.then.store(CUT, Ordering::SeqCst);
        self.cut_after
            .store(self.sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
    }

    /// Stalls once `bytes` more have gone to the server.
    pub fn stall_after(&self, bytes: u64) {
        self.then.store(STALL, Ordering::SeqCst);
        self.cut_after
            .store(self.sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
    }

    /// From now on nothing moves, and connections stay open.
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
    }

    /// The server is back.
    pub fn restore(&self) {
        self.cut_after.store(u64::MAX, Ordering::SeqCst);
        self.mode.store(PASS, Ordering::SeqCst);
    }

    pub fn is_stalled(&self) -> bool {
        self.mode.load(Ordering::SeqCst) == STALL
    }

    pub fn is_cut(&self) -> bool {
        self.mode.load(Ordering::SeqCst) == CUT
    }
}

type Shared<'a> = (
    &'a Arc<AtomicU8>,
    &'a Arc<AtomicU64>,
    &'a Arc<AtomicU8>,
    &'a Arc<AtomicU64>,
    &'a Arc<Mutex<Vec<TcpStream>>>,
);

fn cut_all(conns: &Mutex<Vec<TcpStream>>) {
    if let Ok(mut all) = conns.lock() {
        for c in all.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` on a thread of its own until either end closes.
fn pipe(
    from: std::io::Result<TcpStream>,
    to: std::io::Result<TcpStream>,
    (mode, cut_after, then, sent, conns): Shared,
    upstream: bool,
) {
    let (Ok(mut from), Ok(mut to)) = (from, to) else {
        return;
    };
    let (mode, cut_after, then, sent, conns) = (
        mode.clone(),
        cut_after.clone(),
        then.clone(),
        sent.clone(),
        conns.clone(),
    );
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if upstream {
                let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                if total >= cut_after.load(Ordering::SeqCst) {
                    cut_after.store(u64::MAX, Ordering::SeqCst);
                    mode.store(then.load(Ordering::SeqCst), Ordering::SeqCst);
                    if then.load(Ordering::SeqCst) == CUT {
                        cut_all(&conns);
                        break;
                    }
                }
            }
            // Stalled: hold the bytes (bounded: the test ends the stall).
            let deadline = Instant::now() + Duration::from_secs(300);
            while mode.load(Ordering::SeqCst) == STALL && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if mode.load(Ordering::SeqCst) == CUT {
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.mode.store(CUT, Ordering::SeqCst);
        cut_all(&self.conns);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

pub const CONTAINER: &str = "etcd-backups";
/// Azurite's one account and its documented development key.
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's Blob service on loopback (shared-key signatures checked),
/// with a container.
pub struct AzureServer {
    child: Child,
    pub port: u16,
}

impl AzureServer {
    pub fn start(dir: &Path) -> AzureServer {
        let bin = deps_dir().join("azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.is_file(),
            "{} is missing; run ./charm deps",
            bin.display()
        );
        let port = free_port(&["127.0.0.1"]);
        let data = dir.join("azurite");
        std::fs::create_dir_all(&data).expect("azurite dir");
        let log = std::fs::File::create(dir.join("azurite.log")).expect("azurite log");
        let child = Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&data)
            .args([
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--disableTelemetry",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start azurite");
        wait_listening(port, Duration::from_secs(60));
        let s = AzureServer { child, port };
        s.admin(&["create-container", CONTAINER]);
        s
    }

    /// The account's Blob endpoint, as an operator would set it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURE_ACCOUNT}", self.port)
    }

    pub fn admin(&self, args: &[&str]) -> Value {
        let out = Command::new(moto_bin("python"))
            .arg(repo().join("tests/support/azadmin.py"))
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("azadmin");
        assert!(
            out.status.success(),
            "azadmin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("azadmin json")
    }

    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        keys_and_sizes(&self.admin(&["list", CONTAINER, prefix]))
    }

    /// What azure-storage-integrator's leader writes for protocol http and
    /// an endpoint set (its option values).
    pub fn integrator_data(&self, endpoint: &str, key: &str) -> BTreeMap<String, String> {
        [
            ("container", CONTAINER),
            ("storage-account", AZURE_ACCOUNT),
            ("secret-key", key),
            ("connection-protocol", "http"),
            ("endpoint", &format!("{endpoint}/{CONTAINER}")),
            ("path", "etcd-team"),
            ("version", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for AzureServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
