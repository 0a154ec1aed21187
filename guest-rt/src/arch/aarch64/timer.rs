//! The EL1 virtual timer as a periodic tick (PPI 27, delivered by mvmm as a
//! virtual interrupt).

use aarch64_cpu::registers::{
    CNTP_CTL_EL0, CNTP_TVAL_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVCT_EL0, Readable, Writeable,
};
use core::sync::atomic::{AtomicU64, Ordering};

/// INTID of the EL1 virtual timer.
pub const VIRTUAL_TIMER_INTID: u32 = 27;

/// INTID of the EL1 physical timer.
pub const PHYSICAL_TIMER_INTID: u32 = 30;

/// Physical-timer interrupts taken (see [`arm_physical`]).
static PHYSICAL_FIRED: AtomicU64 = AtomicU64::new(0);

/// Counter ticks between interrupts; 0 while the tick is off.
static PERIOD: AtomicU64 = AtomicU64::new(0);
/// Timer interrupts taken since `start_tick`.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Starts a periodic interrupt every `period` counter ticks (see
/// `timer_frequency`). IRQs must still be unmasked to take it.
pub fn start_tick(period: u64) {
    let period = period.max(1);
    PERIOD.store(period, Ordering::Relaxed);
    CNTV_CVAL_EL0.set(CNTVCT_EL0.get().wrapping_add(period));
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

/// Timer interrupts taken so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// The counter's current value.
pub fn now() -> u64 {
    CNTVCT_EL0.get()
}

/// Called from the IRQ path for INTID 27: counts the tick and sets the next
/// deadline one period after the last (or after now, if late).
pub(super) fn on_interrupt() {
    let period = PERIOD.load(Ordering::Relaxed);
    if period == 0 {
        CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
        return;
    }
    TICKS.fetch_add(1, Ordering::Relaxed);
    let now = CNTVCT_EL0.get();
    let mut next = CNTV_CVAL_EL0.get().wrapping_add(period);
    if next <= now {
        next = now.wrapping_add(period);
    }
    CNTV_CVAL_EL0.set(next);
}

/// Arms the EL1 physical timer once, `ticks` counter ticks from now.
pub fn arm_physical(ticks: u32) {
    CNTP_TVAL_EL0.set(u64::from(ticks));
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
}

/// Physical-timer interrupts taken so far.
pub fn physical_fired() -> u64 {
    PHYSICAL_FIRED.load(Ordering::Relaxed)
}

/// Called from the IRQ path for INTID 30: counts it and turns the one-shot
/// timer off (its condition would hold the interrupt high).
pub(super) fn on_physical_interrupt() {
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::CLEAR + CNTP_CTL_EL0::IMASK::SET);
    PHYSICAL_FIRED.fetch_add(1, Ordering::Relaxed);
}
