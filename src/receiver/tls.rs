//! The OTLP listeners' connections: TLS with certificates reloaded while
//! running, mutual TLS, and the connection limit.
//!
//! [`listen`] takes a bound TCP listener and returns a [`Listener`] that
//! yields [`Connection`]s, each carrying a [`ConnectionInfo`] with the peer's
//! address and, under mutual TLS, the identity of its client certificate.
//! Handshakes run concurrently, each bounded by [`HANDSHAKE_TIMEOUT`], so a
//! slow client never holds up the others. A connection over
//! `limits.max_connections` is closed at once. A failed handshake is logged
//! at debug level, warned about at most once a minute, and counted. No
//! request exists yet, so no status is sent.
//!
//! Any listener can serve these connections: tonic through
//! [`Listener::into_stream`] and `serve_with_incoming` (the connection info
//! is in each request's extensions), axum through its `Listener` trait and
//! `into_make_service_with_connect_info::<ConnectionInfo>()`.
//!
//! The server configuration is rebuilt whenever the certificate, key or
//! client CA files change (see [`super::reload`]); each new handshake uses
//! the newest configuration, and established connections keep theirs.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::reload::Reloadable;
use super::throttle::Throttle;
use crate::metrics::{Metrics, ReasonLabel};

/// Time a client has to complete the TLS handshake; long enough for a slow
/// network, short enough that idle sockets do not pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handed over but not yet taken by the server; beyond it the
/// accept loop waits, which leaves new clients in the kernel's backlog.
const HANDOVER_QUEUE: usize = 64;

/// Protocols offered in ALPN: HTTP/2 for gRPC, HTTP/1.1 for OTLP/HTTP.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS setting that cannot be loaded; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {setting} file {path}: {source}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{setting} file {path} holds no PEM {expected}")]
    Empty {
        setting: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("invalid {setting} file {path}: {message}")]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// The files TLS is served from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates that sign client certificates; enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Whether the handshake fails without a client certificate; when false,
    /// a client certificate is optional but must be valid if presented.
    /// `serve` requires one whenever a client CA is set, except under
    /// `auth.require: either`, where a token may stand in for it.
    pub require_client_certificate: bool,
}

/// The current TLS server configuration, rebuilt when its files change.
pub struct ServerTls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Loads the certificate, key and client CA.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let config = server_config(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            config: ArcSwap::from_pointee(config),
        }))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }
}

impl Reloadable for ServerTls {
    fn kind(&self) -> &'static str {
        "tls"
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.files.cert.clone(), self.files.key.clone()];
        files.extend(self.files.client_ca.clone());
        files
    }

    fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files).map_err(|error| error.to_string())?;
        self.config.store(Arc::new(config));
        Ok(())
    }
}

/// The crypto provider of every TLS configuration here. `ring` builds with
/// a C compiler alone, where `aws-lc-rs` may also need cmake.
// NOTE: rustls 0.23.48 deprecates the ring provider because it offers no
// post-quantum key exchange (X25519MLKEM768); aws-lc-rs does.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = load_certificates("tls.cert", &files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid("tls.cert", &files.cert, error))?;
    let builder = match &files.client_ca {
        Some(path) => builder
            .with_client_cert_verifier(client_verifier(path, files.require_client_certificate)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| invalid("tls.key", &files.key, error))?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|name| name.to_vec()).collect();
    Ok(config)
}

fn client_verifier(
    path: &Path,
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates("tls.client_ca", path)? {
        roots
            .add(certificate)
            .map_err(|error| invalid("tls.client_ca", path, error))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider());
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|error| invalid("tls.client_ca", path, error))
}

fn invalid(setting: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        setting,
        path: path.to_owned(),
        message: error.to_string(),
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate of a PEM file.
pub fn load_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(setting, path, error))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            setting,
            path: path.to_owned(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certificates)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("tls.key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            setting: "tls.key",
            path: path.to_owned(),
            expected: "PRIVATE KEY block",
        },
        error => invalid("tls.key", path, error),
    })
}

/// The identity of a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name, or the whole subject when it has none.
    pub subject: Arc<str>,
}

impl PeerIdentity {
    /// Reads the subject of a DER certificate; a certificate that does not
    /// parse (the verifier accepted it, so this does not happen) is named by
    /// its SHA-256 fingerprint.
    pub fn from_certificate(der: &[u8]) -> PeerIdentity {
        use sha2::{Digest, Sha256};
        let subject = match x509_parser::parse_x509_certificate(der) {
            Ok((_, certificate)) => subject_name(certificate.subject()),
            Err(_) => None,
        };
        let subject =
            subject.unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(der))));
        PeerIdentity {
            subject: Arc::from(subject),
        }
    }
}

fn subject_name(subject: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .filter(|name| !name.is_empty());
    match common_name {
        Some(name) => Some(name.to_owned()),
        None => Some(subject.to_string()).filter(|text| !text.is_empty()),
    }
}

/// What a listener knows about one connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub remote_addr: SocketAddr,
    /// The verified client certificate, under mutual TLS.
    pub peer: Option<PeerIdentity>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, plain or TLS. It holds one of the listener's
/// connection slots until it is dropped.
pub struct Connection {
    stream: Stream,
    info: ConnectionInfo,
    _slot: Slot,
}

impl Connection {
    /// The peer's address and certificate identity.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

/// A connection slot; frees itself and updates the gauge when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Slot {
        metrics.open_connections.inc();
        Slot {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Accepted connections of one listener, in the order their handshakes
/// completed. Dropping it closes the listening socket.
pub struct Listener {
    connections: mpsc::Receiver<Connection>,
    local_addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection; `None` once the accept loop has stopped.
    pub async fn next(&mut self) -> Option<Connection> {
        self.connections.recv().await
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = io::Result<Connection>> {
        futures_util::stream::unfold(self, |mut listener| async move {
            let connection = listener.next().await?;
            Some((Ok(connection), listener))
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = ConnectionInfo;

    async fn accept(&mut self) -> (Connection, ConnectionInfo) {
        match self.next().await {
            Some(connection) => {
                let info = connection.info.clone();
                (connection, info)
            }
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<ConnectionInfo> {
        Ok(ConnectionInfo {
            remote_addr: self.local_addr,
            peer: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for ConnectionInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> ConnectionInfo {
        stream.remote_addr().clone()
    }
}

/// Shared state of one accept loop.
struct Acceptor {
    tls: Option<Arc<ServerTls>>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    handover: mpsc::Sender<Connection>,
    refused: Throttle,
    failed_handshakes: Throttle,
}

/// Accepts connections on `tcp`, with TLS when `tls` is given, keeping at
/// most `max_connections` open.
pub fn listen(
    tcp: TcpListener,
    tls: Option<Arc<ServerTls>>,
    max_connections: usize,
    metrics: Arc<Metrics>,
) -> io::Result<Listener> {
    let local_addr = tcp.local_addr()?;
    let (handover, connections) = mpsc::channel(HANDOVER_QUEUE);
    let acceptor = Arc::new(Acceptor {
        tls,
        slots: Arc::new(Semaphore::new(max_connections)),
        metrics,
        handover,
        refused: Throttle::default(),
        failed_handshakes: Throttle::default(),
    });
    let accept_task = tokio::spawn(accept_loop(tcp, acceptor));
    Ok(Listener {
        connections,
        local_addr,
        accept_task,
    })
}

async fn accept_loop(tcp: TcpListener, acceptor: Arc<Acceptor>) {
    loop {
        let (stream, remote_addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is the usual cause; a short
                // pause lets connections close instead of spinning.
                tracing::warn!(%error, "accepting a connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = acceptor.slots.clone().try_acquire_owned() else {
            acceptor.refuse(remote_addr);
            continue;
        };
        let slot = Slot::new(permit, acceptor.metrics.clone());
        tokio::spawn(acceptor.clone().establish(stream, remote_addr, slot));
    }
}

impl Acceptor {
    fn refuse(&self, remote_addr: SocketAddr) {
        self.metrics.connections_refused.inc();
        tracing::debug!(%remote_addr, "connection closed: limits.max_connections reached");
        if let Some(count) = self.refused.hit() {
            tracing::warn!(%remote_addr, count, "connections closed because limits.max_connections is reached; raise it or add receivers");
        }
    }

    /// Runs the TLS handshake, if any, and hands the connection over.
    async fn establish(self: Arc<Self>, stream: TcpStream, remote_addr: SocketAddr, slot: Slot) {
        let established = match &self.tls {
            None => Some((Stream::Plain(stream), None)),
            Some(tls) => self.handshake(tls, stream, remote_addr).await,
        };
        let Some((stream, peer)) = established else {
            return;
        };
        let connection = Connection {
            stream,
            info: ConnectionInfo { remote_addr, peer },
            _slot: slot,
        };
        let _ = self.handover.send(connection).await;
    }

    async fn handshake(
        &self,
        tls: &ServerTls,
        stream: TcpStream,
        remote_addr: SocketAddr,
    ) -> Option<(Stream, Option<PeerIdentity>)> {
        let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await;
        match accepted {
            Ok(Ok(stream)) => {
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| PeerIdentity::from_certificate(leaf));
                Some((Stream::Tls(Box::new(stream)), peer))
            }
            Ok(Err(error)) => {
                self.handshake_failed(remote_addr, "error", &error.to_string());
                None
            }
            Err(_) => {
                self.handshake_failed(remote_addr, "timeout", "the handshake timed out");
                None
            }
        }
    }

    fn handshake_failed(&self, remote_addr: SocketAddr, reason: &str, error: &str) {
        self.metrics
            .tls_handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
        tracing::debug!(%remote_addr, error, "TLS handshake failed");
        if let Some(count) = self.failed_handshakes.hit() {
            tracing::warn!(%remote_addr, error, count, "TLS handshakes failed; clients may use a wrong CA, an expired or unsigned client certificate, or plain TCP");
        }
    }
}
