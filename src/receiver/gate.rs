//! The check every OTLP request passes before its body is decoded:
//! authentication, then the request limits.
//!
//! A listener calls [`Gate::check`] with the request's headers and its
//! connection's [`ConnectionInfo`], keeps the returned [`Pass`] until the
//! request is answered, and gives `pass.sender` to
//! [`Receiver::export`](super::Receiver::export). A [`Refusal`] maps to the
//! gRPC status or HTTP status the OTLP specification prescribes; each
//! refusal is counted and logged at debug level, with a rate-limited
//! warning.

use std::sync::Arc;
use std::time::Duration;

use super::auth::{AuthError, Authenticator};
use super::limit::{LimitError, RequestLimiter, RequestPermit};
use super::throttle::Throttle;
use super::tls::ConnectionInfo;
use crate::metrics::{CodeLabel, LimitLabel, Metrics, ReasonLabel};

/// An admitted request: the authenticated sender and a concurrency slot.
#[derive(Debug)]
pub struct Pass {
    /// The sender's name for the `Sender` column.
    pub sender: Arc<str>,
    _permit: RequestPermit,
}

/// Why a request was refused before its body was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Unauthenticated(AuthError),
    #[error(transparent)]
    Limited(LimitError),
}

impl Refusal {
    /// A bounded label for the request metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::Limited(error) => error.code(),
        }
    }

    /// The gRPC status.
    pub fn to_status(self) -> tonic::Status {
        match self {
            Refusal::Unauthenticated(error) => error.to_status(),
            Refusal::Limited(error) => error.to_status(),
        }
    }

    /// The HTTP status: 401, 429 or 503.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            Refusal::Unauthenticated(error) => error.http_status(),
            Refusal::Limited(error) => error.http_status(),
        }
    }

    /// The delay for `Retry-After`, for limits; `None` for authentication,
    /// which a retry cannot fix.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Refusal::Unauthenticated(_) => None,
            Refusal::Limited(error) => Some(error.retry_after()),
        }
    }
}

/// Authentication and limits of one receiver, shared by its listeners.
pub struct Gate {
    authenticator: Authenticator,
    limiter: RequestLimiter,
    metrics: Arc<Metrics>,
    refused: Throttle,
}

impl Gate {
    /// A gate from its parts.
    pub fn new(
        authenticator: Authenticator,
        limiter: RequestLimiter,
        metrics: Arc<Metrics>,
    ) -> Gate {
        Gate {
            authenticator,
            limiter,
            metrics,
            refused: Throttle::default(),
        }
    }

    /// Authenticates and admits one request.
    pub fn check(
        &self,
        headers: &http::HeaderMap,
        connection: Option<&ConnectionInfo>,
    ) -> Result<Pass, Refusal> {
        let authorization = headers.get(http::header::AUTHORIZATION);
        let peer = connection.and_then(|connection| connection.peer.as_ref());
        let sender = self
            .authenticator
            .authenticate(authorization, peer)
            .map_err(|error| self.unauthenticated(error, connection))?;
        let permit = self
            .limiter
            .admit(&sender)
            .map_err(|error| self.limited(error, &sender))?;
        Ok(Pass {
            sender,
            _permit: permit,
        })
    }

    fn unauthenticated(&self, error: AuthError, connection: Option<&ConnectionInfo>) -> Refusal {
        let refusal = Refusal::Unauthenticated(error);
        self.count(refusal);
        self.metrics
            .unauthenticated
            .get_or_create(&ReasonLabel {
                reason: error.code().to_owned(),
            })
            .inc();
        let remote_addr = connection.map(|connection| connection.remote_addr.to_string());
        let remote_addr = remote_addr.as_deref().unwrap_or("unknown");
        tracing::debug!(
            remote_addr,
            reason = error.code(),
            "request refused: not authenticated"
        );
        if let Some(count) = self.refused.hit() {
            tracing::warn!(
                remote_addr,
                reason = error.code(),
                count,
                "requests refused as unauthenticated; check the senders' tokens and client certificates"
            );
        }
        refusal
    }

    fn limited(&self, error: LimitError, sender: &str) -> Refusal {
        let refusal = Refusal::Limited(error);
        self.count(refusal);
        self.metrics
            .limited
            .get_or_create(&LimitLabel {
                limit: error.code().to_owned(),
            })
            .inc();
        tracing::debug!(
            sender,
            limit = error.code(),
            "request refused by a limit; the client retries"
        );
        refusal
    }

    fn count(&self, refusal: Refusal) {
        self.metrics
            .requests
            .get_or_create(&CodeLabel {
                code: refusal.code().to_owned(),
            })
            .inc();
    }
}
