//! Rate-limited warnings for events that a hostile or broken client can
//! repeat at will (failed handshakes, refused tokens, closed connections):
//! each is logged at debug level every time, and at warn level at most once
//! per interval with the number of repeats since the last warning.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Interval between two warnings of one kind: often enough to notice an
/// attack or a misconfigured sender, rarely enough not to flood the log.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Decides when a repeated event is worth a warning.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// Records one event; returns the number of events since the last
    /// warning (this one included) when a warning is due now.
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&self, now: Instant) -> Option<u64> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let due = last.is_none_or(|previous| now.duration_since(previous) >= WARN_INTERVAL);
        if !due {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_warns_once_per_interval() {
        let throttle = Throttle::default();
        let start = Instant::now();

        let first = throttle.hit_at(start);
        let repeats: Vec<Option<u64>> = (1..=3)
            .map(|second| throttle.hit_at(start + Duration::from_secs(second)))
            .collect();
        let next = throttle.hit_at(start + WARN_INTERVAL);

        assert_eq!(first, Some(1), "the first event warns");
        assert_eq!(
            repeats,
            vec![None, None, None],
            "repeats within the interval"
        );
        assert_eq!(next, Some(4), "the next warning counts the repeats");
    }
}
