//! The runtime's clock: the system's in service; in tests, one moved by
//! hand ([`ManualClock`]), so that an hour of a ticket system being down
//! passes in a moment. What the runtime decides on the time — leases,
//! timers, freezes, write-back retries, the times in audit records — reads
//! it here. Ids keep the system's time: they need only be unique and
//! roughly ordered.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

/// Where the runtime reads the time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Mutex<Timestamp>>>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => Timestamp::now(),
            Some(time) => *time.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }
}

/// A clock that stands still until it is moved on.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn starting_at(start: Timestamp) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// The clock to give the runtime: it reads this one's time.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(Arc::clone(&self.0)),
        }
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut time = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *time += by;
    }
}
