//! The words of an App's life that layers below the App name too: its hook stages (an
//! error says at which one a hook failed) and its default stop timings (the
//! config's defaults). The App owns the lifecycle itself; this module only names it, so that
//! `error` and `config` need not depend on `app`.

use std::fmt;
use std::time::Duration;

/// How long an App waits after unregistering before it stops serving, by default.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(1);
/// How long in-flight calls get to finish once serving stops, by default.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// A point in the App's life where hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Before any listener is bound.
    BeforeStart,
    /// Once every server serves and is registered.
    AfterStart,
    /// As stopping begins, before anything is unregistered.
    BeforeStop,
    /// Once every server has stopped and everything the App registered is unregistered.
    AfterStop,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::BeforeStart => "before-start",
            Stage::AfterStart => "after-start",
            Stage::BeforeStop => "before-stop",
            Stage::AfterStop => "after-stop",
        })
    }
}
