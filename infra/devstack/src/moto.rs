//! Runs `moto_server` from the repo's virtualenv on a loopback port.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running moto server; killed when dropped, and by the kernel if this process dies.
pub struct MotoServer {
    pid: u32,
    port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error("{0} not found: run `bash infra/bootstrap.sh` (make dev / make test do) to create the virtualenv")]
    NotInstalled(PathBuf),
    #[error("could not start moto_server: {0}")]
    Spawn(io::Error),
    #[error("moto_server did not accept connections on 127.0.0.1:{0} within 60 s")]
    NotReady(u16),
}

/// A port the OS considers free right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out an ephemeral port")
}

impl MotoServer {
    /// Starts `moto_server` on `port` (a free one when `None`) and waits until it listens.
    pub fn start(workspace: &Path, port: Option<u16>) -> Result<MotoServer, MotoError> {
        let binary = workspace.join(".venv/bin/python");
        if !workspace.join(".venv/bin/moto_server").exists() {
            return Err(MotoError::NotInstalled(workspace.join(".venv/bin/moto_server")));
        }
        let script = workspace.join("infra/moto_server.py");
        let port = port.unwrap_or_else(free_port);
        // Spawned from a thread that lives as long as the process, because PDEATHSIG fires
        // when the *thread* that forked exits: moto must outlive short-lived test threads.
        let (tx, rx) = mpsc::channel::<io::Result<u32>>();
        std::thread::Builder::new()
            .name(format!("moto-{port}"))
            .spawn(move || {
                let spawned = spawn_child(&binary, &script, port);
                let child = match spawned {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(child.id()));
                let mut child = child;
                let _ = child.wait();
            })
            .map_err(MotoError::Spawn)?;
        let pid = rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("spawner thread ended")))
            .map_err(MotoError::Spawn)?;
        let server = MotoServer { pid, port };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) -> Result<(), MotoError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(MotoError::NotReady(self.port))
    }
}

fn spawn_child(binary: &Path, script: &Path, port: u16) -> io::Result<Child> {
    let mut cmd = Command::new(binary);
    cmd.arg(script);
    // MOTO_LOG=<file> keeps moto's own log (its tracebacks explain a 500).
    let log =
        std::env::var_os("MOTO_LOG").and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map(Stdio::from).unwrap_or_else(Stdio::null));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the child we started.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
    }
}
