//! Request limits shared by every listener: the number of requests handled
//! at once, and an optional request rate per sender (a token bucket per
//! sender name, from the `governor` crate).
//!
//! The statuses follow the OTLP specification: a receiver at its
//! concurrency limit is overloaded, which is `UNAVAILABLE` with `RetryInfo`
//! (HTTP 503 with `Retry-After`); a sender over its rate is throttled, which
//! is `RESOURCE_EXHAUSTED` with `RetryInfo` (HTTP 429 with `Retry-After`).
//! OTLP clients retry both after the suggested delay.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;

/// Delay suggested when the receiver is at its concurrency limit: requests
/// usually finish within milliseconds, so a short delay suffices.
pub const OVERLOAD_RETRY_DELAY: Duration = Duration::from_secs(1);

type SenderLimiter =
    RateLimiter<Arc<str>, governor::state::keyed::DefaultKeyedStateStore<Arc<str>>, DefaultClock>;

/// The limit that rejected a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the receiver is handling its maximum of concurrent requests; retry later")]
    Overloaded,
    #[error("the sender is over its request rate; retry after the suggested delay")]
    RateLimited { retry_after: Duration },
}

impl LimitError {
    /// A bounded label for metrics.
    pub fn code(self) -> &'static str {
        match self {
            LimitError::Overloaded => "overloaded",
            LimitError::RateLimited { .. } => "rate_limited",
        }
    }

    /// The delay to suggest before a retry.
    pub fn retry_after(self) -> Duration {
        match self {
            LimitError::Overloaded => OVERLOAD_RETRY_DELAY,
            LimitError::RateLimited { retry_after } => retry_after,
        }
    }

    /// The gRPC status, with `RetryInfo`.
    pub fn to_status(self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let code = match self {
            LimitError::Overloaded => tonic::Code::Unavailable,
            LimitError::RateLimited { .. } => tonic::Code::ResourceExhausted,
        };
        tonic::Status::with_error_details(
            code,
            self.to_string(),
            ErrorDetails::with_retry_info(Some(self.retry_after())),
        )
    }

    /// The HTTP status; send `Retry-After` with [`retry_after_seconds`].
    pub fn http_status(self) -> http::StatusCode {
        match self {
            LimitError::Overloaded => http::StatusCode::SERVICE_UNAVAILABLE,
            LimitError::RateLimited { .. } => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A delay in whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_seconds(delay: Duration) -> u64 {
    delay.as_secs_f64().ceil().max(1.0) as u64
}

/// A request slot; the request counts against the concurrency limit until
/// it is dropped.
#[derive(Debug)]
pub struct RequestPermit {
    _permit: OwnedSemaphorePermit,
}

/// The limits of every listener of one receiver.
pub struct RequestLimiter {
    slots: Arc<Semaphore>,
    senders: Option<SenderLimiter>,
}

impl RequestLimiter {
    /// Limits from the configuration.
    pub fn new(config: &LimitsConfig) -> RequestLimiter {
        let senders = NonZeroU32::new(config.sender_requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.sender_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        RequestLimiter {
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            senders,
        }
    }

    /// Admits one request of `sender`, checking its rate first so that a
    /// throttled sender takes no slot.
    pub fn admit(&self, sender: &Arc<str>) -> Result<RequestPermit, LimitError> {
        if let Some(senders) = &self.senders
            && let Err(not_until) = senders.check_key(sender)
        {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(LimitError::RateLimited { retry_after });
        }
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| LimitError::Overloaded)?;
        Ok(RequestPermit { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(concurrent: usize, rate: u32, burst: u32) -> RequestLimiter {
        RequestLimiter::new(&LimitsConfig {
            max_concurrent_requests: concurrent,
            sender_requests_per_second: rate,
            sender_burst: burst,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn admit_holds_concurrency_slots() {
        let limiter = limiter(2, 0, 0);
        let sender: Arc<str> = Arc::from("agent");

        let first = limiter.admit(&sender).expect("first slot");
        let second = limiter.admit(&sender).expect("second slot");
        let third = limiter.admit(&sender);
        drop(first);
        let after_release = limiter.admit(&sender);

        assert_eq!(third.unwrap_err(), LimitError::Overloaded, "no slot left");
        assert!(after_release.is_ok(), "a released slot is reused");
        drop(second);
    }

    #[test]
    fn admit_limits_rate_per_sender() {
        let limiter = limiter(100, 1, 2);
        let busy: Arc<str> = Arc::from("busy");
        let quiet: Arc<str> = Arc::from("quiet");

        let burst: Vec<bool> = (0..3).map(|_| limiter.admit(&busy).is_ok()).collect();
        let other = limiter.admit(&quiet);

        assert_eq!(burst, vec![true, true, false], "burst of 2, then throttled");
        assert!(other.is_ok(), "another sender has its own bucket");
        match limiter.admit(&busy) {
            Err(LimitError::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO, "a delay is suggested");
                assert!(
                    retry_after <= Duration::from_secs(1),
                    "at most one token interval: {retry_after:?}"
                );
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[test]
    fn statuses_follow_otlp() {
        let throttled = LimitError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };

        let cases = [
            (LimitError::Overloaded, tonic::Code::Unavailable, 503),
            (throttled, tonic::Code::ResourceExhausted, 429),
        ];
        for (error, code, http) in cases {
            use tonic_types::StatusExt;
            let status = error.to_status();

            assert_eq!(status.code(), code, "{error:?}: gRPC code");
            assert_eq!(error.http_status().as_u16(), http, "{error:?}: HTTP status");
            let retry = status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay);
            assert_eq!(retry, Some(error.retry_after()), "{error:?}: RetryInfo");
        }
        assert_eq!(
            retry_after_seconds(Duration::from_millis(1500)),
            2,
            "rounded up"
        );
        assert_eq!(
            retry_after_seconds(Duration::from_millis(10)),
            1,
            "at least one second"
        );
    }
}
