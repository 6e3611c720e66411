//! Processes for the durability tests: embedded ClickHouse endpoints the test
//! can stop, and the real `agent-ledger` binary it can kill.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http_get;

/// A free loopback port; the listener is closed before the port is used.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An embedded ClickHouse endpoint owned by one test.
pub struct Endpoint {
    child: Option<Child>,
    pub port: u16,
    data: PathBuf,
}

impl Endpoint {
    /// Starts an endpoint on a free port with its data in `data`.
    pub async fn start(data: &Path) -> Endpoint {
        let mut endpoint = Endpoint {
            child: None,
            port: free_port(),
            data: data.to_owned(),
        };
        endpoint.restart().await;
        endpoint
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the endpoint again on the same port and data.
    pub async fn restart(&mut self) {
        let python = std::env::var("AGENT_LEDGER_TEST_PYTHON")
            .expect("AGENT_LEDGER_TEST_PYTHON is not set: run the tests with scripts/test");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chdb_http_server.py");
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let child = Command::new(python)
            .arg(script)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--port")
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the endpoint starts");
        self.child = Some(child);
        wait_until_answers(&format!("{}/ping", self.url()), Duration::from_secs(60)).await;
    }

    /// Stops the endpoint with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `agent-ledger serve` binary, run with environment settings.
pub struct ReceiverProcess {
    child: Option<Child>,
    pub grpc_port: u16,
    pub admin_port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl ReceiverProcess {
    /// Starts the receiver with `env` and waits until it is ready.
    pub async fn start(env: Vec<(String, String)>, log: PathBuf) -> ReceiverProcess {
        let mut process = ReceiverProcess {
            child: None,
            grpc_port: free_port(),
            admin_port: free_port(),
            env,
            log,
        };
        process.restart().await;
        process
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Starts the binary again with the same settings and ports.
    pub async fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agent-ledger"))
            .arg("serve")
            .envs(self.env.iter().cloned())
            .env(
                "AGENT_LEDGER_OTLP_GRPC_ADDR",
                format!("127.0.0.1:{}", self.grpc_port),
            )
            .env(
                "AGENT_LEDGER_ADMIN_ADDR",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent-ledger starts");
        self.child = Some(child);
        wait_until_answers(
            &format!("{}/healthz", self.admin_url()),
            Duration::from_secs(60),
        )
        .await;
    }

    /// Kills the receiver with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the receiver with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.child.take().map(|mut child| terminate(&mut child))
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) with a pid this test spawned and has not reaped yet.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    child.wait().expect("the child exits")
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Waits until `url` answers 200, for at most `timeout`.
pub async fn wait_until_answers(url: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answered = tokio::time::timeout(Duration::from_secs(2), try_get(url)).await;
        if matches!(answered, Ok(Some(200))) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn try_get(url: &str) -> Option<u16> {
    let host = url.strip_prefix("http://")?.split('/').next()?;
    tokio::net::TcpStream::connect(host).await.ok()?;
    Some(http_get(url).await.0)
}
