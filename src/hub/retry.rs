//! How long to wait before trying a failed Hub or CAS request again: short enough that many
//! attempts fit in a read's deadline (a reset or a 5xx is usually over at once), growing so
//! a server that stays down is not hammered, and jittered so many readers spread out.

use std::time::Duration;

/// The first wait; each next one doubles, up to [`RETRY_MAX_DELAY`].
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(25);
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

/// The wait before attempt `attempt + 1`: between half of and the whole of
/// `RETRY_BASE_DELAY × 2^attempt` (capped).
pub fn retry_delay(attempt: u32) -> Duration {
    let full = RETRY_BASE_DELAY.saturating_mul(1 << attempt.min(10)).min(RETRY_MAX_DELAY);
    let half = full / 2;
    half + half.mul_f64(unit_random())
}

/// A number in [0, 1) that differs between calls and threads (no need for a real generator).
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_tens_of_milliseconds_with_jitter_and_a_cap() {
        for attempt in 0..20 {
            let full = RETRY_BASE_DELAY.saturating_mul(1 << attempt.min(10)).min(RETRY_MAX_DELAY);
            let d = retry_delay(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(retry_delay(0) <= Duration::from_millis(25));
        assert!(retry_delay(30) <= RETRY_MAX_DELAY);
        let spread: std::collections::HashSet<_> = (0..20).map(|_| retry_delay(4)).collect();
        assert!(spread.len() > 1, "jittered");
    }
}
