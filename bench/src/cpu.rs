//! CPU time the process has used, for costs per call that the machine's other load does not
//! blur as much as call rates: every thread's time on a CPU, summed from
//! `/proc/self/task/*/schedstat` (nanoseconds).

use std::time::Duration;

/// CPU time used so far by every thread of this process that still runs (threads are the
/// runtime's workers and blocking pool, which live as long as the process here).
pub(crate) fn process_cpu() -> Duration {
    cpu_of("self")
}

/// The same for the process `pid` (`self` for this one).
pub(crate) fn cpu_of(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
