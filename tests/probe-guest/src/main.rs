//! probe-guest: a test guest for the rich VM's slot. Prints `probe: ready`,
//! then answers one command per console line (see the `probe_guest` library
//! for the language), polling the console every 10 ms of timer time and
//! sleeping in WFI in between.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "probe-guest runs only as a guest of mVMM: build it with --target aarch64-unknown-none"
    );
    std::process::exit(1);
}

#[cfg(target_os = "none")]
mod image {
    use probe_guest::{Command, MAX_LINE, parse};
    use secure_os::println;
    use secure_os::rt::{self, WriteError};
    use secure_os::text::{LineBuffer, LineEvent};

    secure_os::entry!(main);

    /// Console polls per second.
    const POLLS_PER_SECOND: u64 = 100;
    /// Most bytes taken from the console per poll (each read traps).
    const BYTES_PER_POLL: usize = 32;
    /// The vCPU `cpu-on` starts (its MPIDR).
    const SECONDARY_VCPU: u64 = 1;

    fn main() -> ! {
        println!("probe: ready");
        rt::start_tick((rt::timer_frequency() / POLLS_PER_SECOND).max(1));
        let mut line = LineBuffer::<MAX_LINE>::new();
        loop {
            rt::wait_for_interrupt();
            for _ in 0..BYTES_PER_POLL {
                let Some(byte) = rt::console_read_byte() else {
                    break;
                };
                match line.push(byte) {
                    LineEvent::Pending => {}
                    LineEvent::Complete => run(parse(line.line())),
                    LineEvent::TooLong => {
                        println!("probe: line too long (at most {MAX_LINE} bytes), ignored")
                    }
                }
            }
        }
    }

    fn run(command: Command<'_>) {
        match command {
            Command::Empty => {}
            Command::Peek { address } => match rt::peek32(address) {
                Ok(value) => println!("probe: peek {address:#x} = {value:#x}"),
                Err(abort) => report_abort(abort),
            },
            Command::Poke { address, value } => match rt::poke32(address, value) {
                Ok(()) => println!("probe: poke {address:#x} = {value:#x}"),
                Err(WriteError::Abort(abort)) => report_abort(abort),
                Err(WriteError::OwnImage) => {
                    println!("probe: poke {address:#x} refused: inside the probe image")
                }
            },
            Command::PsciVersion => {
                let v = rt::psci_version();
                println!("probe: psci version {v:#x} ({}.{})", v >> 16, v & 0xffff);
            }
            Command::Focus => {
                let status = rt::console_focus(true);
                println!("probe: focus returned {status:#x}");
            }
            Command::Display => {
                let status = rt::display(true);
                println!("probe: display returned {status:#x}");
            }
            Command::CpuOn { target } => {
                let status = rt::cpu_on(target, secondary);
                if target == SECONDARY_VCPU {
                    println!("probe: cpu-on vcpu {SECONDARY_VCPU} returned {status}");
                } else {
                    println!("probe: cpu-on mpidr {target:#x} returned {status}");
                }
            }
            Command::ResetBoth => {
                println!("probe: system reset from both vcpus");
                let _ = rt::cpu_on(SECONDARY_VCPU, secondary_reset);
                let status = rt::system_reset();
                println!("probe: SYSTEM_RESET failed: {status}");
            }
            Command::ResetFromSecondary => {
                println!("probe: system reset from vcpu 1");
                let _ = rt::cpu_on(SECONDARY_VCPU, secondary_reset);
                // Wait to be stopped by the reset.
                loop {
                    rt::wait_for_interrupt();
                }
            }
            Command::Off => {
                println!("probe: system off");
                let status = rt::system_off();
                println!("probe: SYSTEM_OFF failed: {status}");
            }
            Command::Reset => {
                println!("probe: system reset");
                let status = rt::system_reset();
                println!("probe: SYSTEM_RESET failed: {status}");
            }
            Command::PhysicalTimer => {
                let hz = rt::timer_frequency();
                let before = rt::physical_fired();
                let start = rt::now();
                rt::arm_physical(u32::try_from(hz / 100).unwrap_or(u32::MAX));
                while rt::physical_fired() == before && rt::now() - start < hz {
                    rt::wait_for_interrupt();
                }
                let waited_us = (rt::now() - start) * 1_000_000 / hz.max(1);
                if rt::physical_fired() > before {
                    println!("probe: physical timer fired after {waited_us} us");
                } else {
                    println!("probe: physical timer never fired ({waited_us} us)");
                }
            }
            Command::IrqState => {
                let [before, acked, ended, iar] = irq_state();
                println!(
                    "probe: irqstate ptimer before ack {} after ack {} after eoi {} (iar {iar})",
                    state_text(before),
                    state_text(acked),
                    state_text(ended)
                );
            }
            Command::Monitors => {
                let m = monitors();
                println!(
                    "probe: monitors pmcr {:#x} cycles {:#x}..{:#x} mdscr {:#x}",
                    m.pmcr, m.before, m.after, m.mdscr
                );
            }
            Command::Usage(usage) => println!("probe: usage: {usage}"),
            Command::Unknown(word) => println!("probe: unknown command '{}'", word.escape_debug()),
        }
    }

    fn report_abort(abort: rt::Abort) {
        println!(
            "probe: abort: ESR_EL1={:#x} FAR_EL1={:#x}",
            abort.esr, abort.far
        );
        println!("probe: alive after abort");
    }

    /// "pending" / "active" / "both" / "idle".
    fn state_text(bits: u32) -> &'static str {
        match bits {
            0b01 => "pending",
            0b10 => "active",
            0b11 => "both",
            _ => "idle",
        }
    }

    /// The physical timer's PPI (30) as the guest's redistributor reports
    /// it (bit 0 pending, bit 1 active): after it fired with interrupts
    /// masked, after the guest acknowledged it, after its end of
    /// interrupt; and the INTID the acknowledge returned.
    fn irq_state() -> [u32; 4] {
        use core::arch::asm;
        use secure_os::arch::board::GICR_BASE;
        const SGI_FRAME: usize = 0x1_0000;
        const PPI: u32 = 30;
        let read = |offset: usize| {
            // SAFETY: vCPU 0's redistributor SGI frame (board data): mvmm
            // traps and emulates every access; reading has no side effect.
            unsafe { core::ptr::read_volatile((GICR_BASE + SGI_FRAME + offset) as *const u32) }
        };
        let state = || (read(0x200) >> PPI & 1) | (read(0x300) >> PPI & 1) << 1;
        let hz = rt::timer_frequency();
        let tick: u64;
        // SAFETY: masks IRQs at this vCPU (PSTATE.I) and the probe's own
        // tick (the virtual timer's IMASK) so that only the physical timer
        // is acknowledged below; no memory is touched.
        unsafe {
            asm!("msr daifset, #2", "mrs {t}, cntv_ctl_el0", "orr {m}, {t}, #2", "msr cntv_ctl_el0, {m}", "isb",
                t = out(reg) tick, m = out(reg) _, options(nomem, nostack))
        };
        rt::arm_physical(u32::try_from(hz / 1000).unwrap_or(1).max(1));
        let start = rt::now();
        while rt::now() - start < hz / 100 {
            core::hint::spin_loop();
        }
        // The timer's condition off again (IMASK): only the fired interrupt
        // remains.
        // SAFETY: CNTP_CTL_EL0 only controls this vCPU's physical timer.
        unsafe { asm!("msr cntp_ctl_el0, {}", "isb", in(reg) 0b11u64, options(nomem, nostack)) };
        let before = state();
        let mut iar: u64 = 1023;
        // A tick that fired before it was masked may come first: end it
        // (the tick stays masked, so it does not come back) and take the
        // next one.
        for _ in 0..4 {
            // SAFETY: acknowledging the highest-priority interrupt (IRQs
            // stay masked, so the handler does not run); ended here or below.
            unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nomem, nostack)) };
            if iar & 0xff_ffff == u64::from(PPI) || iar & 0xff_ffff >= 1020 {
                break;
            }
            // SAFETY: ends the interrupt just acknowledged.
            unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar, options(nomem, nostack)) };
        }
        let acked = state();
        // SAFETY: ends the interrupt acknowledged above (EOImode 0: drop
        // and deactivate), then turns the timer off.
        unsafe {
            asm!(
                "msr icc_eoir1_el1, {iar}",
                "isb",
                "msr cntp_ctl_el0, xzr",
                iar = in(reg) iar,
                options(nomem, nostack)
            )
        };
        let ended = state();
        // SAFETY: restores the tick's control and unmasks IRQs at this
        // vCPU again.
        unsafe {
            asm!("msr cntv_ctl_el0, {}", "isb", "msr daifclr, #2", in(reg) tick, options(nomem, nostack))
        };
        [before, acked, ended, (iar & 0xff_ffff) as u32]
    }

    /// What the performance monitors and debug control read back.
    struct Monitors {
        pmcr: u64,
        before: u64,
        after: u64,
        mdscr: u64,
    }

    /// Asks the cycle counter to count at every exception level, EL2
    /// included (PMCCFILTR_EL0.NSH), reads it around a hypercall, and sets
    /// MDSCR_EL1.MDE (debug exceptions on). On hardware without a
    /// hypervisor's traps the counter moves and the bits stick; under mvmm
    /// every one of these registers reads as zero.
    fn monitors() -> Monitors {
        use core::arch::asm;
        let (pmcr, before, after, mdscr): (u64, u64, u64, u64);
        // SAFETY: these registers only configure and read the performance
        // monitors and the debug control of this vCPU; no memory is touched.
        unsafe {
            asm!(
                "msr pmccfiltr_el0, {nsh}",
                "msr pmcntenset_el0, {c}",
                "msr pmcr_el0, {e}",
                "isb",
                "mrs {before}, pmccntr_el0",
                nsh = in(reg) 1u64 << 27,
                c = in(reg) 1u64 << 31,
                e = in(reg) 0b101u64,
                before = out(reg) before,
                options(nostack),
            )
        };
        let _ = rt::psci_version();
        // SAFETY: as above.
        unsafe {
            asm!(
                "mrs {after}, pmccntr_el0",
                "mrs {pmcr}, pmcr_el0",
                "msr mdscr_el1, {mde}",
                "isb",
                "mrs {mdscr}, mdscr_el1",
                mde = in(reg) 1u64 << 15,
                after = out(reg) after,
                pmcr = out(reg) pmcr,
                mdscr = out(reg) mdscr,
                options(nostack),
            )
        };
        Monitors {
            pmcr,
            before,
            after,
            mdscr,
        }
    }

    /// Runs on vCPU 1 for `reset-both`: resets the VM at once, racing
    /// vCPU 0's own SYSTEM_RESET.
    extern "C" fn secondary_reset(_cpu: u64) -> ! {
        let status = rt::system_reset();
        println!("probe: vcpu 1: SYSTEM_RESET failed: {status}");
        rt::halt()
    }

    /// Runs on the vCPU started by `cpu-on`.
    extern "C" fn secondary(cpu: u64) -> ! {
        println!("probe: vcpu {cpu} up");
        let status = rt::cpu_off();
        println!("probe: vcpu {cpu}: CPU_OFF failed: {status}");
        rt::halt()
    }
}
