//! HTTPS to ClickHouse: a rustls connector (the `ring` provider, as for the
//! OTLP listeners) trusting `clickhouse.ca_file` when it is set, and the
//! system's trust store otherwise.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;

use super::StoreError;
use crate::config::ClickhouseConfig;

/// Idle time after which a pooled connection is closed: below the 3 s
/// keep-alive timeout of older ClickHouse servers, so the client never
/// reuses a connection the server is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP keep-alive of connections to ClickHouse.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The HTTPS connector for an `https://` URL; `None` for `http://`.
pub fn https_connector(
    config: &ClickhouseConfig,
) -> Result<Option<HttpsConnector<HttpConnector>>, StoreError> {
    if !config.url.starts_with("https://") {
        return Ok(None);
    }
    let roots = match &config.ca_file {
        Some(path) => file_roots(path)?,
        None => system_roots()?,
    };
    let tls = rustls::ClientConfig::builder_with_provider(crate::receiver::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| ca_error(config, error))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(Some(connector))
}

fn ca_error(config: &ClickhouseConfig, error: impl std::fmt::Display) -> StoreError {
    StoreError::CaFile {
        path: config.ca_file.clone().unwrap_or_default(),
        message: error.to_string(),
    }
}

fn file_roots(path: &std::path::Path) -> Result<RootCertStore, StoreError> {
    let invalid = |message: String| StoreError::CaFile {
        path: path.to_owned(),
        message,
    };
    let certificates = crate::receiver::tls::load_certificates("clickhouse.ca_file", path)
        .map_err(|error| invalid(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(StoreError::CaFile {
            path: "(system trust store)".into(),
            message: "no CA certificates found; install the system's CA certificates or set clickhouse.ca_file".to_owned(),
        });
    }
    Ok(roots)
}
