//! A local `nats-server` for `forkring bench export` and the tests: started
//! on 127.0.0.1 on a free port with its own store directory, killed and
//! removed on drop. Never a mock: the real server, as installed by
//! `apt-get install nats-server`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The command that installs the server on Debian and Ubuntu.
pub const INSTALL_HINT: &str = "apt-get install -y nats-server";

/// A running (or killed, restartable) local `nats-server`.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    jetstream: bool,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalServer {
    /// Starts `nats-server` (with JetStream when `jetstream`) and waits
    /// until it accepts connections. The error says how to install it
    /// when it is missing.
    pub fn start(jetstream: bool) -> Result<LocalServer, String> {
        let dir = tempdir()?;
        let port = free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
        let mut s = LocalServer {
            child: None,
            port,
            dir,
            jetstream,
        };
        s.spawn()?;
        Ok(s)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.dir.join("store"));
        }
        cmd.arg("-l").arg(self.log_path());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("nats-server is not installed (needed to test and benchmark the NATS bridge); install it: {INSTALL_HINT}")
            } else {
                format!("cannot start nats-server: {e}")
            }
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "nats-server exited at start ({st}); its log: {}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "nats-server did not listen on port {} within 20 s",
            self.port
        ))
    }

    /// SIGKILLs the server (a crash). Its store is kept.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tempdir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let d: PathBuf = base.join(format!("forkring-nats-{}-{i}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
        }
    }
    Err(format!(
        "cannot create a directory for nats-server under {}",
        Path::new(&base).display()
    ))
}
