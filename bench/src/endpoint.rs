//! The bench's local AWS endpoint: moto from the repo's virtualenv, started through the
//! project's launcher `infra/moto_server.py` (the endpoint `make dev` and the tests use; its
//! O(items) transaction rollback keeps a table of tens of thousands of items fast).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalEndpoint {
    child: Child,
    port: u16,
}

impl LocalEndpoint {
    pub fn start(root: &Path) -> io::Result<LocalEndpoint> {
        let python = root.join(".venv/bin/python");
        if !python.exists() {
            return Err(io::Error::other(format!(
                "{} not found: run `bash infra/bootstrap.sh` (make bench does)",
                python.display()
            )));
        }
        let port = devstack::moto::free_port();
        let mut cmd = Command::new(python);
        cmd.arg(root.join("infra/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // MOTO_LOG=<file> keeps moto's request log and tracebacks, as for the project's launcher.
            .stderr(
                std::env::var_os("MOTO_LOG")
                    .and_then(|p| std::fs::File::create(p).ok())
                    .map(Stdio::from)
                    .unwrap_or_else(Stdio::null),
            );
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
        let child = cmd.spawn()?;
        let endpoint = LocalEndpoint { child, port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(endpoint);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::other("moto did not accept connections within 60 s"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A local endpoint provisioned from `template.yaml` (tables, queues, buckets, the app secrets
/// with test values), and a store on its data table.
pub async fn provisioned_store(root: &Path, app_secret: &str) -> (LocalEndpoint, crm_shared::store::DynamoStore) {
    let moto = LocalEndpoint::start(root).expect("local AWS endpoint");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let resources = devstack::template::load(&root.join("template.yaml")).expect("template");
    let secrets = std::collections::BTreeMap::from([
        ("MetaAppSecret".to_owned(), app_secret.to_owned()),
        ("MetaVerifyToken".to_owned(), "verify".to_owned()),
        ("CursorKey".to_owned(), "bench-cursor-key-0123456789abcdef".to_owned()),
    ]);
    let env = crm_shared::config::Env::default();
    let provisioned = devstack::provision::provision_with_secrets(&sdk, &env, &resources, &secrets)
        .await
        .expect("provisioned");
    let table = &provisioned.tables["DataTable"];
    (
        moto,
        crm_shared::store::DynamoStore::new(crm_shared::aws::dynamodb_client(&sdk), table),
    )
}

impl Drop for LocalEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
