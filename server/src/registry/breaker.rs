//! What the predict path does while the registry database is unreachable: callers
//! holding a stale copy of what they need (a route, a key) use it, and only one
//! request per second goes to the registry to find out whether it is back, so a
//! database outage costs predictions neither errors nor a connect timeout each.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often, while the registry is down, one request asks it again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    down_since: Option<Instant>,
    probe_at: Option<Instant>,
}

impl Breaker {
    /// Whether a caller with a stale copy should use it without asking the
    /// registry: yes while it is known to be down, except for one probe a second.
    pub fn use_stale(&self) -> bool {
        let mut s = self.state.lock().expect("breaker");
        if s.down_since.is_none() {
            return false;
        }
        match s.probe_at {
            Some(at) if at.elapsed() < PROBE_EVERY => true,
            _ => {
                s.probe_at = Some(Instant::now());
                false
            }
        }
    }

    /// Record how a registry call went.
    pub fn record<T>(&self, result: &Result<T>) {
        let mut s = self.state.lock().expect("breaker");
        match result {
            Err(Error::Unavailable(_)) => {
                s.down_since.get_or_insert_with(Instant::now);
            }
            _ => *s = State::default(),
        }
    }

    /// Whether the registry was unreachable at its last call.
    pub fn is_down(&self) -> bool {
        self.state.lock().expect("breaker").down_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_a_second_while_down() {
        let b = Breaker::default();
        assert!(!b.use_stale(), "up: ask the registry");
        b.record::<()>(&Err(Error::Unavailable("down".into())));
        assert!(b.is_down());
        assert!(!b.use_stale(), "the first caller probes");
        assert!(b.use_stale() && b.use_stale(), "the others use what they have");
        b.record::<()>(&Err(Error::Unavailable("still down".into())));
        assert!(b.use_stale(), "no second probe within the second");
        b.record(&Ok(()));
        assert!(!b.is_down() && !b.use_stale(), "back: everyone asks again");
        b.record::<()>(&Err(Error::ModelNotFound("m".into())));
        assert!(!b.is_down(), "other errors mean the registry answered");
    }
}
