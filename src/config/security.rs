//! Settings that decide who may write to the receiver and how much: TLS on
//! the OTLP listeners, sender authentication, and request limits.
//!
//! [`validate`] checks the combinations at start-up, so that a receiver
//! never runs with an authentication mode its TLS settings cannot serve.

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::receiver::convert::AttributeLimits;

/// TLS on the OTLP listeners.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain, leaf first
    /// (`AGENT_LEDGER_TLS_CERT`). Without it the listeners speak plain TCP.
    pub cert: Option<PathBuf>,
    /// PEM file with the server's private key (`AGENT_LEDGER_TLS_KEY`).
    pub key: Option<PathBuf>,
    /// PEM file with the CA certificates that sign client certificates
    /// (`AGENT_LEDGER_TLS_CLIENT_CA`); enables mutual TLS.
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether the listeners serve TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// What authenticates a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthRequire {
    /// Every request is accepted; the sender is recorded as empty.
    None,
    /// A bearer token from the token file.
    Token,
    /// A client certificate signed by `tls.client_ca`.
    Certificate,
    /// A token or a client certificate.
    Either,
    /// A token and a client certificate.
    Both,
}

impl AuthRequire {
    /// The setting's spelling.
    pub fn name(self) -> &'static str {
        match self {
            AuthRequire::None => "none",
            AuthRequire::Token => "token",
            AuthRequire::Certificate => "certificate",
            AuthRequire::Either => "either",
            AuthRequire::Both => "both",
        }
    }

    fn needs_tokens(self) -> bool {
        matches!(
            self,
            AuthRequire::Token | AuthRequire::Either | AuthRequire::Both
        )
    }

    fn needs_client_ca(self) -> bool {
        matches!(
            self,
            AuthRequire::Certificate | AuthRequire::Either | AuthRequire::Both
        )
    }
}

/// Sender authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// YAML list of `{name, sha256}` entries (`AGENT_LEDGER_AUTH_TOKENS_FILE`);
    /// reloaded when it changes.
    pub tokens_file: Option<PathBuf>,
    /// What authenticates a request. Unset, it follows from what is
    /// configured: `none` without a token file and client CA, `token` or
    /// `certificate` with one of them, `both` with both.
    pub require: Option<AuthRequire>,
}

impl AuthConfig {
    /// The mode in force, explicit or derived from the configured files.
    pub fn effective_require(&self, tls: &TlsConfig) -> AuthRequire {
        if let Some(require) = self.require {
            return require;
        }
        match (self.tokens_file.is_some(), tls.client_ca.is_some()) {
            (false, false) => AuthRequire::None,
            (true, false) => AuthRequire::Token,
            (false, true) => AuthRequire::Certificate,
            (true, true) => AuthRequire::Both,
        }
    }
}

/// Default maximum of open OTLP connections: far more than a fleet of
/// collectors needs, and well below a default file descriptor limit.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default maximum of requests handled at once; each may hold up to
/// `otlp.max_request_size` of decoded spans in memory.
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

/// Connection, request and attribute limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Maximum open connections per OTLP listener; more are closed at once.
    pub max_connections: usize,
    /// Maximum requests handled at once; more are answered `UNAVAILABLE`
    /// with `RetryInfo` (HTTP 503).
    pub max_concurrent_requests: usize,
    /// Requests per second allowed to each sender; `0` turns the limit off.
    /// Requests above it are answered `RESOURCE_EXHAUSTED` with `RetryInfo`
    /// (HTTP 429 with `Retry-After`).
    pub sender_requests_per_second: u32,
    /// Requests a sender may send at once above its rate; `0` means one
    /// second's worth.
    pub sender_burst: u32,
    /// Maximum attributes of one span, resource, event or link; later ones
    /// are dropped and counted in `agent_ledger.dropped_attributes_count`.
    pub max_span_attributes: usize,
    /// Maximum size of one attribute value; a longer value is truncated
    /// and its original length stored in `agent_ledger.truncated.<key>`.
    pub max_attribute_value_size: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let attributes = AttributeLimits::default();
        LimitsConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            sender_requests_per_second: 0,
            sender_burst: 0,
            max_span_attributes: attributes.max_attributes,
            max_attribute_value_size: ByteSize::b(attributes.max_value_bytes as u64),
        }
    }
}

impl LimitsConfig {
    /// The per-span limits applied while converting spans.
    pub fn attribute_limits(&self) -> AttributeLimits {
        AttributeLimits {
            max_attributes: self.max_span_attributes,
            max_value_bytes: self.max_attribute_value_size.as_u64() as usize,
        }
    }
}

/// Smallest accepted maximum value size: room for the truncation marker
/// and a readable prefix.
const MIN_ATTRIBUTE_VALUE_SIZE: u64 = 64;

/// Checks the TLS, authentication and limit settings together.
pub fn validate(
    tls: &TlsConfig,
    auth: &AuthConfig,
    limits: &LimitsConfig,
) -> Result<(), ConfigError> {
    validate_tls(tls)?;
    validate_auth(tls, auth)?;
    validate_limits(limits)
}

fn invalid(setting: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        setting,
        message: message.into(),
    })
}

fn validate_tls(tls: &TlsConfig) -> Result<(), ConfigError> {
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            return invalid(
                "tls.key",
                "is missing while tls.cert is set; set AGENT_LEDGER_TLS_KEY to the PEM file of the server's private key",
            );
        }
        (None, Some(_)) => {
            return invalid(
                "tls.cert",
                "is missing while tls.key is set; set AGENT_LEDGER_TLS_CERT to the PEM file of the server certificate",
            );
        }
        _ => {}
    }
    if tls.client_ca.is_some() && tls.cert.is_none() {
        return invalid(
            "tls.client_ca",
            "needs TLS: set tls.cert and tls.key as well, because client certificates are only checked in a TLS handshake",
        );
    }
    Ok(())
}

fn validate_auth(tls: &TlsConfig, auth: &AuthConfig) -> Result<(), ConfigError> {
    let require = auth.effective_require(tls);
    let name = require.name();
    if require.needs_tokens() && auth.tokens_file.is_none() {
        return invalid(
            "auth.require",
            format!(
                "is {name}, which needs auth.tokens_file (AGENT_LEDGER_AUTH_TOKENS_FILE); create one with `agent-ledger token add NAME --file FILE`"
            ),
        );
    }
    if require.needs_client_ca() && tls.client_ca.is_none() {
        return invalid(
            "auth.require",
            format!(
                "is {name}, which needs tls.client_ca (AGENT_LEDGER_TLS_CLIENT_CA), the CA that signs client certificates"
            ),
        );
    }
    if require == AuthRequire::None && auth.tokens_file.is_some() {
        return invalid(
            "auth.require",
            "is none although auth.tokens_file is set; set auth.require to token (or remove the token file) so that tokens are not silently ignored",
        );
    }
    if require == AuthRequire::None && tls.client_ca.is_some() {
        return invalid(
            "auth.require",
            "is none although tls.client_ca is set; set auth.require to certificate (or remove the client CA)",
        );
    }
    Ok(())
}

fn validate_limits(limits: &LimitsConfig) -> Result<(), ConfigError> {
    if limits.max_connections == 0 {
        return invalid("limits.max_connections", "must be at least 1");
    }
    if limits.max_concurrent_requests == 0 {
        return invalid("limits.max_concurrent_requests", "must be at least 1");
    }
    if limits.max_span_attributes == 0 {
        return invalid("limits.max_span_attributes", "must be at least 1");
    }
    if limits.max_attribute_value_size.as_u64() < MIN_ATTRIBUTE_VALUE_SIZE {
        return invalid("limits.max_attribute_value_size", "must be at least 64B");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(cert: bool, client_ca: bool) -> TlsConfig {
        TlsConfig {
            cert: cert.then(|| PathBuf::from("server.pem")),
            key: cert.then(|| PathBuf::from("server.key")),
            client_ca: client_ca.then(|| PathBuf::from("ca.pem")),
        }
    }

    fn auth(tokens: bool, require: Option<AuthRequire>) -> AuthConfig {
        AuthConfig {
            tokens_file: tokens.then(|| PathBuf::from("tokens.yaml")),
            require,
        }
    }

    #[test]
    fn effective_require_defaults() {
        let cases = [
            ("nothing configured", false, false, AuthRequire::None),
            ("tokens only", true, false, AuthRequire::Token),
            ("client CA only", false, true, AuthRequire::Certificate),
            ("tokens and client CA", true, true, AuthRequire::Both),
        ];
        for (name, tokens, client_ca, expected) in cases {
            let require = auth(tokens, None).effective_require(&tls(true, client_ca));

            assert_eq!(require, expected, "case {name}");
        }
    }

    #[test]
    fn validate_accepts_combinations() {
        let cases = [
            ("plain, no auth", tls(false, false), auth(false, None)),
            ("plain with tokens", tls(false, false), auth(true, None)),
            (
                "TLS with tokens",
                tls(true, false),
                auth(true, Some(AuthRequire::Token)),
            ),
            (
                "mTLS",
                tls(true, true),
                auth(false, Some(AuthRequire::Certificate)),
            ),
            (
                "either",
                tls(true, true),
                auth(true, Some(AuthRequire::Either)),
            ),
            ("both", tls(true, true), auth(true, Some(AuthRequire::Both))),
            (
                "token over mTLS",
                tls(true, true),
                auth(true, Some(AuthRequire::Token)),
            ),
        ];
        for (name, tls, auth) in cases {
            let result = validate(&tls, &auth, &LimitsConfig::default());

            assert!(result.is_ok(), "case {name}: {result:?}");
        }
    }

    #[test]
    fn validate_rejects_combinations() {
        let only_cert = TlsConfig {
            key: None,
            ..tls(true, false)
        };
        let only_key = TlsConfig {
            cert: None,
            ..tls(true, false)
        };
        let cases = [
            (
                "cert without key",
                only_cert,
                auth(false, None),
                "tls.key",
                "AGENT_LEDGER_TLS_KEY",
            ),
            (
                "key without cert",
                only_key,
                auth(false, None),
                "tls.cert",
                "AGENT_LEDGER_TLS_CERT",
            ),
            (
                "client CA without TLS",
                tls(false, true),
                auth(false, None),
                "tls.client_ca",
                "tls.cert",
            ),
            (
                "certificate without client CA",
                tls(true, false),
                auth(false, Some(AuthRequire::Certificate)),
                "auth.require",
                "tls.client_ca",
            ),
            (
                "token without token file",
                tls(true, false),
                auth(false, Some(AuthRequire::Token)),
                "auth.require",
                "auth.tokens_file",
            ),
            (
                "either without client CA",
                tls(true, false),
                auth(true, Some(AuthRequire::Either)),
                "auth.require",
                "tls.client_ca",
            ),
            (
                "both without token file",
                tls(true, true),
                auth(false, Some(AuthRequire::Both)),
                "auth.require",
                "auth.tokens_file",
            ),
            (
                "none with a token file",
                tls(false, false),
                auth(true, Some(AuthRequire::None)),
                "auth.require",
                "tokens_file",
            ),
            (
                "none with a client CA",
                tls(true, true),
                auth(false, Some(AuthRequire::None)),
                "auth.require",
                "client_ca",
            ),
        ];
        for (name, tls, auth, setting, hint) in cases {
            let error = validate(&tls, &auth, &LimitsConfig::default()).expect_err(name);

            let ConfigError::Invalid { setting: found, .. } = &error else {
                panic!("case {name}: expected an invalid setting, got {error:?}");
            };
            assert_eq!(*found, setting, "case {name}: setting");
            assert!(
                error.to_string().contains(hint),
                "case {name}: message names {hint}: {error}"
            );
        }
    }

    #[test]
    fn validate_rejects_limits() {
        type Change = fn(&mut LimitsConfig);
        let cases: [(&str, Change, &str); 4] = [
            (
                "no connections",
                |limits| limits.max_connections = 0,
                "limits.max_connections",
            ),
            (
                "no requests",
                |limits| limits.max_concurrent_requests = 0,
                "limits.max_concurrent_requests",
            ),
            (
                "no attributes",
                |limits| limits.max_span_attributes = 0,
                "limits.max_span_attributes",
            ),
            (
                "tiny values",
                |limits| limits.max_attribute_value_size = ByteSize::b(10),
                "limits.max_attribute_value_size",
            ),
        ];
        for (name, change, setting) in cases {
            let mut limits = LimitsConfig::default();
            change(&mut limits);

            let error = validate(&tls(false, false), &auth(false, None), &limits).expect_err(name);

            assert!(
                matches!(error, ConfigError::Invalid { setting: found, .. } if found == setting),
                "case {name}: {error:?}"
            );
        }
    }
}
