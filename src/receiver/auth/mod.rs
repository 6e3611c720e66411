//! Sender authentication: decides who sent a request from its
//! `authorization` header (gRPC metadata or HTTP header) and the client
//! certificate of its connection.
//!
//! [`Authenticator::authenticate`] returns the sender's name, which goes
//! into `Sender` of every row of the request. It is the token's name, or the
//! client certificate's subject common name (its whole subject without
//! one). Under `both` it is `token-name (certificate-name)`, and it is empty
//! when authentication is off. A refused request maps to `UNAUTHENTICATED` or
//! HTTP 401 ([`AuthError::to_status`], [`AuthError::http_status`]); error
//! messages never repeat the presented token.

pub mod tokens;

use std::sync::Arc;

use crate::config::AuthRequire;
use crate::receiver::tls::PeerIdentity;

pub use tokens::TokenStore;

/// The reason a request was not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send the header `authorization: Bearer <token>`")]
    MissingToken,
    #[error("malformed authorization header: expected `Bearer <token>`")]
    MalformedHeader,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error(
        "missing client certificate: connect with a certificate signed by the receiver's client CA"
    )]
    MissingCertificate,
    #[error("missing credentials: send a bearer token or connect with a client certificate")]
    MissingCredentials,
}

impl AuthError {
    /// A bounded label for metrics.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::MalformedHeader => "malformed_header",
            AuthError::InvalidToken => "invalid_token",
            AuthError::MissingCertificate => "missing_certificate",
            AuthError::MissingCredentials => "missing_credentials",
        }
    }

    /// The gRPC status: `UNAUTHENTICATED`, which OTLP clients do not retry.
    pub fn to_status(self) -> tonic::Status {
        tonic::Status::unauthenticated(self.to_string())
    }

    /// The HTTP status: 401. Send `WWW-Authenticate: Bearer` with it.
    pub fn http_status(self) -> http::StatusCode {
        http::StatusCode::UNAUTHORIZED
    }
}

/// Checks the credentials of each request.
pub struct Authenticator {
    require: AuthRequire,
    tokens: Option<Arc<TokenStore>>,
}

impl Authenticator {
    /// An authenticator for `require`; `tokens` must be given when the mode
    /// accepts tokens (configuration validation makes sure of that).
    pub fn new(require: AuthRequire, tokens: Option<Arc<TokenStore>>) -> Authenticator {
        Authenticator { require, tokens }
    }

    /// The mode in force.
    pub fn require(&self) -> AuthRequire {
        self.require
    }

    /// Authenticates one request from its `authorization` header and the
    /// client certificate of its connection; returns the sender's name.
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Arc<str>, AuthError> {
        match self.require {
            AuthRequire::None => Ok(Arc::from("")),
            AuthRequire::Token => self.token(authorization),
            AuthRequire::Certificate => certificate(peer),
            AuthRequire::Either => match (authorization, peer) {
                (None, Some(peer)) => Ok(peer.subject.clone()),
                (None, None) => Err(AuthError::MissingCredentials),
                (Some(_), _) => self.token(authorization),
            },
            AuthRequire::Both => {
                let name = self.token(authorization)?;
                let subject = certificate(peer)?;
                Ok(Arc::from(format!("{name} ({subject})")))
            }
        }
    }

    fn token(&self, authorization: Option<&http::HeaderValue>) -> Result<Arc<str>, AuthError> {
        let header = authorization.ok_or(AuthError::MissingToken)?;
        let token = bearer_token(header)?;
        self.tokens
            .as_ref()
            .and_then(|tokens| tokens.find(token))
            .ok_or(AuthError::InvalidToken)
    }
}

fn certificate(peer: Option<&PeerIdentity>) -> Result<Arc<str>, AuthError> {
    peer.map(|peer| peer.subject.clone())
        .ok_or(AuthError::MissingCertificate)
}

/// The token of a `Bearer` header; the scheme is case-insensitive.
fn bearer_token(header: &http::HeaderValue) -> Result<&str, AuthError> {
    let text = header.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(name: &str) -> (tempfile::TempDir, Arc<TokenStore>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let token = tokens::add(&path, name).unwrap();
        let store = TokenStore::load(&path).unwrap();
        (dir, store, token)
    }

    fn header(text: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(text).unwrap()
    }

    fn peer(name: &str) -> PeerIdentity {
        PeerIdentity {
            subject: Arc::from(name),
        }
    }

    #[test]
    fn authenticate_by_mode() {
        let (_dir, store, token) = store_with("collector");
        let good = header(&format!("Bearer {token}"));
        let lower = header(&format!("bearer {token}"));
        let wrong = header("Bearer not-the-token");
        let basic = header("Basic dXNlcjpwYXNz");
        let bare = header(&token);
        let client = peer("agent-7");
        type Case<'a> = (
            &'a str,
            AuthRequire,
            Option<&'a http::HeaderValue>,
            Option<&'a PeerIdentity>,
            Result<&'a str, AuthError>,
        );
        let cases: Vec<Case> = vec![
            ("none", AuthRequire::None, None, None, Ok("")),
            (
                "token",
                AuthRequire::Token,
                Some(&good),
                None,
                Ok("collector"),
            ),
            (
                "lower-case scheme",
                AuthRequire::Token,
                Some(&lower),
                None,
                Ok("collector"),
            ),
            (
                "token missing",
                AuthRequire::Token,
                None,
                Some(&client),
                Err(AuthError::MissingToken),
            ),
            (
                "token wrong",
                AuthRequire::Token,
                Some(&wrong),
                None,
                Err(AuthError::InvalidToken),
            ),
            (
                "basic scheme",
                AuthRequire::Token,
                Some(&basic),
                None,
                Err(AuthError::MalformedHeader),
            ),
            (
                "no scheme",
                AuthRequire::Token,
                Some(&bare),
                None,
                Err(AuthError::MalformedHeader),
            ),
            (
                "certificate",
                AuthRequire::Certificate,
                Some(&wrong),
                Some(&client),
                Ok("agent-7"),
            ),
            (
                "certificate missing",
                AuthRequire::Certificate,
                Some(&good),
                None,
                Err(AuthError::MissingCertificate),
            ),
            (
                "either by token",
                AuthRequire::Either,
                Some(&good),
                None,
                Ok("collector"),
            ),
            (
                "either by certificate",
                AuthRequire::Either,
                None,
                Some(&client),
                Ok("agent-7"),
            ),
            (
                "either with a wrong token",
                AuthRequire::Either,
                Some(&wrong),
                Some(&client),
                Err(AuthError::InvalidToken),
            ),
            (
                "either without both",
                AuthRequire::Either,
                None,
                None,
                Err(AuthError::MissingCredentials),
            ),
            (
                "both",
                AuthRequire::Both,
                Some(&good),
                Some(&client),
                Ok("collector (agent-7)"),
            ),
            (
                "both without certificate",
                AuthRequire::Both,
                Some(&good),
                None,
                Err(AuthError::MissingCertificate),
            ),
            (
                "both without token",
                AuthRequire::Both,
                None,
                Some(&client),
                Err(AuthError::MissingToken),
            ),
        ];
        for (name, require, authorization, peer, expected) in cases {
            let authenticator = Authenticator::new(require, Some(store.clone()));

            let result = authenticator.authenticate(authorization, peer);

            assert_eq!(result.as_deref(), expected.as_deref(), "case {name}");
        }
    }

    #[test]
    fn errors_never_repeat_token() {
        let (_dir, store, token) = store_with("collector");
        let authenticator = Authenticator::new(AuthRequire::Token, Some(store));
        let almost = format!("Bearer {token}x");

        let error = authenticator
            .authenticate(Some(&header(&almost)), None)
            .expect_err("wrong token");

        let status = error.to_status();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "gRPC code");
        assert_eq!(
            error.http_status(),
            http::StatusCode::UNAUTHORIZED,
            "HTTP status"
        );
        assert!(
            !status.message().contains(&token),
            "message: {}",
            status.message()
        );
    }
}
