//! The anti-rollback counter: a monotonic value kept outside the secure VM's
//! flash (by mVMM, in the manner of eMMC RPMB), against which every record's
//! sealed rollback value is checked.
//!
//! The store only needs two operations. Every committed record carries a
//! rollback value greater than the counter's value at the time; once the
//! record is on flash and verified the counter is advanced to it. A record
//! whose value is below the counter is an older copy put back: refused.

use core::fmt;

/// Why the counter could not be read or advanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterError {
    /// The counter's keeper is not there or refused the call (`code` is its
    /// own error code, e.g. a hypercall status).
    Unavailable { code: u64 },
    /// The answer failed its authentication (a replayed or forged frame).
    Unauthenticated,
    /// The counter cannot go that far (it would wrap or is worn out).
    Exhausted,
}

impl fmt::Display for CounterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CounterError::Unavailable { code } => {
                write!(f, "the rollback counter is unavailable (code {code:#x})")
            }
            CounterError::Unauthenticated => {
                write!(f, "the rollback counter's answer failed authentication")
            }
            CounterError::Exhausted => write!(f, "the rollback counter is exhausted"),
        }
    }
}

/// A monotonic counter that survives power loss and that the secure VM's
/// flash cannot roll back.
pub trait RollbackCounter {
    /// The current value (0 on a new device).
    fn read(&mut self) -> Result<u64, CounterError>;
    /// Raises the counter to `value`. A `value` at or below the current one
    /// leaves it unchanged; the counter never goes down.
    fn advance_to(&mut self, value: u64) -> Result<(), CounterError>;
    /// Whether this counter really survives power loss outside the flash.
    /// The store's boot report says so when it does not.
    fn protects_against_rollback(&self) -> bool {
        true
    }
}

impl<C: RollbackCounter + ?Sized> RollbackCounter for &mut C {
    fn read(&mut self) -> Result<u64, CounterError> {
        (**self).read()
    }
    fn advance_to(&mut self, value: u64) -> Result<(), CounterError> {
        (**self).advance_to(value)
    }
    fn protects_against_rollback(&self) -> bool {
        (**self).protects_against_rollback()
    }
}

/// NOT rollback protection: a counter in RAM that starts at 0 at every boot.
///
/// Stands in until mVMM keeps the real counter. With it an older copy of
/// the flash is accepted after a restart (only a rollback within one boot
/// is caught); [`RollbackCounter::protects_against_rollback`] says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoRollbackProtection {
    value: u64,
}

impl RollbackCounter for NoRollbackProtection {
    fn read(&mut self) -> Result<u64, CounterError> {
        Ok(self.value)
    }

    fn advance_to(&mut self, value: u64) -> Result<(), CounterError> {
        self.value = self.value.max(value);
        Ok(())
    }

    fn protects_against_rollback(&self) -> bool {
        false
    }
}

/// A test double: a counter whose value outlives the store (keep it across
/// simulated reboots) and whose calls can be made to fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestCounter {
    pub value: u64,
    /// When set, `read` fails.
    pub fail_read: bool,
    /// When set, `advance_to` fails and leaves the value alone.
    pub fail_advance: bool,
    /// How many times the value went up.
    pub advances: u64,
}

impl RollbackCounter for TestCounter {
    fn read(&mut self) -> Result<u64, CounterError> {
        if self.fail_read {
            return Err(CounterError::Unavailable { code: 1 });
        }
        Ok(self.value)
    }

    fn advance_to(&mut self, value: u64) -> Result<(), CounterError> {
        if self.fail_advance {
            return Err(CounterError::Unavailable { code: 2 });
        }
        if value > self.value {
            self.value = value;
            self.advances += 1;
        }
        Ok(())
    }
}
