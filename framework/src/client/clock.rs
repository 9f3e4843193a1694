//! The client's clock for state kept in atomics (ejections, the retry budget, when a
//! connection last heard from its instance): milliseconds as a `u64`, which an atomic holds
//! where an `Instant` would need a lock.

/// Milliseconds since the first call, never 0, so it fits an atomic where 0 means "unset".
pub(super) fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}
