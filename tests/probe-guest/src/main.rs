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
    use guest_rt::println;
    use guest_rt::rt::{self, WriteError};
    use guest_rt::text::{LineBuffer, LineEvent};
    use mvmm_abi::hypercall::{CONSOLE_FOCUS, DISPLAY};
    use probe_guest::{Command, MAX_LINE, parse};

    guest_rt::entry!(main);

    /// Console polls per second.
    const POLLS_PER_SECOND: u64 = 100;
    /// Most bytes taken from the console per poll (each read traps).
    const BYTES_PER_POLL: usize = 32;
    /// The vCPU `cpu-on` starts (its MPIDR).
    const SECONDARY_VCPU: u64 = 1;

    fn main() -> ! {
        // The GIC as bare hardware needs it (on bare QEMU, for `bench`'s
        // baseline): distributor on, vCPU 0's redistributor awake, the tick
        // enabled. Under mvmm these are emulated registers.
        micro::prepare_gic();
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

    /// One of mvmm's vendor hypercalls that takes a flag and touches no
    /// memory (console focus, display; only the secure VM may have them):
    /// returns mvmm's answer, x0.
    fn mvmm_call(function: u64, take: bool) -> u64 {
        // SAFETY: for CONSOLE_FOCUS and DISPLAY mvmm only changes its console
        // routing or its scan-out (or refuses); it touches no memory of this VM.
        let [status, ..] = unsafe { guest_rt::arch::smccc::hvc(function, [u64::from(take), 0, 0]) };
        status
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
                let status = mvmm_call(CONSOLE_FOCUS, true);
                println!("probe: focus returned {status:#x}");
            }
            Command::Display => {
                let status = mvmm_call(DISPLAY, true);
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
            Command::Bench => micro::run(),
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
        use guest_rt::arch::board::GICR_BASE;
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

    /// The microbenchmarks of `bench`: what one exit of each common kind
    /// costs the guest, measured on its virtual counter with interrupts
    /// masked (pending interrupts are taken by polling the CPU interface,
    /// so no handler runs). The same image runs on bare QEMU (Linux's
    /// place, EL1, no hypervisor) for the baseline: `cargo xtask bench`.
    mod micro {
        use core::arch::asm;
        use core::sync::atomic::{AtomicBool, Ordering};
        use guest_rt::arch::board::{GICD_BASE, GICR_BASE, GICR_STRIDE, UART_BASE};
        use guest_rt::println;
        use guest_rt::rt;

        /// Calls or reads per trapped-access figure.
        const CALLS: u64 = 2000;
        /// SGI round trips, timer shots.
        const ROUND_TRIPS: u64 = 200;
        const SHOTS: u64 = 100;
        /// The SGI the two vCPUs send each other.
        const SGI: u32 = 3;
        const VIRTUAL_TIMER: u32 = 27;
        /// The EL1 physical timer: the watchdog of every wait.
        const PHYSICAL_TIMER: u32 = 30;
        /// Redistributor registers (RD frame, then the SGI frame).
        const GICR_WAKER: usize = 0x14;
        const SGI_FRAME: usize = 0x1_0000;
        const GICR_IGROUPR0: usize = SGI_FRAME + 0x080;
        const GICR_ISENABLER0: usize = SGI_FRAME + 0x100;
        const GICD_TYPER: usize = 0x4;
        const UART_FR: usize = 0x18;

        static RESPONDER_UP: AtomicBool = AtomicBool::new(false);
        static STOP: AtomicBool = AtomicBool::new(false);

        pub fn run() {
            let hz = rt::timer_frequency().max(1);
            // SAFETY: masks IRQs at this vCPU (PSTATE.I) and turns its tick
            // (the virtual timer) off; restored at the end. No memory.
            unsafe {
                asm!(
                    "msr daifset, #2",
                    "msr cntv_ctl_el0, xzr",
                    "isb",
                    options(nomem, nostack)
                )
            };
            for vcpu in 0..2 {
                enable_ppi_or_sgi(vcpu, SGI);
            }
            enable_ppi_or_sgi(0, PHYSICAL_TIMER);

            let start = rt::now();
            for _ in 0..CALLS {
                let _ = rt::psci_version();
            }
            report("hvc", rt::now() - start, hz, CALLS);
            let start = rt::now();
            for _ in 0..CALLS {
                read32(GICD_BASE + GICD_TYPER);
            }
            report("mmio_read_gicd", rt::now() - start, hz, CALLS);
            let start = rt::now();
            for _ in 0..CALLS {
                read32(UART_BASE + UART_FR);
            }
            report("mmio_read_uart", rt::now() - start, hz, CALLS);

            match sgi_round_trips(hz) {
                Some(ticks) => report("sgi_round_trip", ticks, hz, ROUND_TRIPS),
                None => println!("probe: bench sgi_round_trip failed (no answer from vcpu 1)"),
            }
            match timer_latency(hz) {
                Some(ticks) => report("vtimer_latency", ticks, hz, SHOTS),
                None => println!("probe: bench vtimer_latency failed (the timer never fired)"),
            }
            // The tick again, interrupts on.
            rt::start_tick((hz / 100).max(1));
            // SAFETY: unmasks IRQs at this vCPU again. No memory.
            unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
            println!("probe: bench done");
        }

        /// Turns the distributor on (affinity routing, group 1), wakes vCPU
        /// 0's redistributor and enables its virtual timer interrupt.
        pub fn prepare_gic() {
            const GICD_CTLR: usize = 0;
            const ARE_GROUP1: u32 = 1 << 4 | 1 << 1;
            // SAFETY: the (virtual) distributor's control register (board
            // data, device memory): affinity routing and group 1 on.
            unsafe { core::ptr::write_volatile((GICD_BASE + GICD_CTLR) as *mut u32, ARE_GROUP1) };
            enable_ppi_or_sgi(0, VIRTUAL_TIMER);
        }

        /// `probe: bench <name> <ns> ns/op`, one decimal.
        fn report(name: &str, ticks: u64, hz: u64, ops: u64) {
            let tenths =
                u128::from(ticks) * 10_000_000_000 / u128::from(hz) / u128::from(ops.max(1));
            println!("probe: bench {name} {}.{} ns/op", tenths / 10, tenths % 10);
        }

        fn read32(address: usize) -> u32 {
            // SAFETY: `address` is a register of the (virtual) GIC or
            // PL011, board data mapped as device memory; reading it has no
            // side effect (TYPER, FR).
            unsafe { core::ptr::read_volatile(address as *const u32) }
        }

        fn write32(address: usize, value: u32) {
            // SAFETY: a redistributor register of this VM's (virtual) GIC
            // (board data, device memory): the writes below only wake the
            // redistributor and group and enable one private interrupt.
            unsafe { core::ptr::write_volatile(address as *mut u32, value) }
        }

        /// Wakes vCPU `vcpu`'s redistributor and enables private interrupt
        /// `intid` there as group 1.
        fn enable_ppi_or_sgi(vcpu: usize, intid: u32) {
            let rd = GICR_BASE + vcpu * GICR_STRIDE;
            write32(rd + GICR_WAKER, 0);
            let groups = read32(rd + GICR_IGROUPR0);
            write32(rd + GICR_IGROUPR0, groups | 1 << intid);
            write32(rd + GICR_ISENABLER0, 1 << intid);
        }

        /// Sends the SGI to the vCPU whose affinity 0 is `aff0`.
        fn send_sgi(aff0: u32) {
            let value = u64::from(SGI) << 24 | 1u64 << aff0;
            // SAFETY: ICC_SGI1R_EL1 sends an SGI to a vCPU of this VM. No
            // memory is touched.
            unsafe { asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nomem, nostack)) };
        }

        /// Waits in WFI for `intid` (acknowledged, not yet ended: the
        /// caller ends it with [`end`]) and the counter when it came; `None`
        /// at `deadline` (the EL1 physical timer as a watchdog). Any other
        /// interrupt is ended at once. WFI, not a spin: a waiting vCPU
        /// idles, as Linux's does, and under -icount QEMU runs the other
        /// vCPU at once instead of at the end of a time slice.
        fn wait(intid: u32, deadline: u64) -> Option<u64> {
            use guest_rt::arch::gic;
            // SAFETY: arms this vCPU's EL1 physical timer at `deadline`.
            unsafe {
                asm!("msr cntp_cval_el0, {}", "msr cntp_ctl_el0, {}", "isb",
                    in(reg) deadline, in(reg) 1u64, options(nomem, nostack))
            };
            let came = loop {
                let taken = gic::acknowledge();
                if taken == intid {
                    break Some(rt::now());
                }
                if gic::is_spurious(taken) {
                    idle();
                    continue;
                }
                if taken == PHYSICAL_TIMER {
                    break None;
                }
                gic::end_of_interrupt(taken);
            };
            // SAFETY: turns the watchdog off again.
            unsafe { asm!("msr cntp_ctl_el0, xzr", "isb", options(nomem, nostack)) };
            if came.is_none() {
                gic::end_of_interrupt(PHYSICAL_TIMER);
            }
            came
        }

        fn end(intid: u32) {
            guest_rt::arch::gic::end_of_interrupt(intid);
        }

        /// WFI with interrupts kept masked: a pending interrupt wakes it and
        /// stays for the acknowledge (the runtime's `wait_for_interrupt`
        /// would let its handler take it).
        fn idle() {
            // SAFETY: waits for an interrupt; no state changes.
            unsafe { asm!("wfi", options(nomem, nostack)) };
        }

        /// vCPU 1 answers each SGI with one to vCPU 0; the counter ticks of
        /// all round trips from vCPU 0.
        fn sgi_round_trips(hz: u64) -> Option<u64> {
            STOP.store(false, Ordering::SeqCst);
            RESPONDER_UP.store(false, Ordering::SeqCst);
            if rt::cpu_on(1, responder) != 0 {
                return None;
            }
            let deadline = rt::now() + hz;
            while !RESPONDER_UP.load(Ordering::SeqCst) && rt::now() < deadline {
                core::hint::spin_loop();
            }
            let start = rt::now();
            let mut answered = true;
            for _ in 0..ROUND_TRIPS {
                send_sgi(1);
                if wait(SGI, rt::now() + hz).is_none() {
                    answered = false;
                    break;
                }
                end(SGI);
            }
            let ticks = rt::now() - start;
            STOP.store(true, Ordering::SeqCst);
            // One more SGI, so that a responder waiting in the CPU
            // interface sees the stop.
            send_sgi(1);
            let deadline = rt::now() + hz;
            while RESPONDER_UP.load(Ordering::SeqCst) && rt::now() < deadline {
                core::hint::spin_loop();
            }
            answered.then_some(ticks)
        }

        /// Runs on vCPU 1 during `bench`: answers every SGI until told to
        /// stop, then powers itself off.
        extern "C" fn responder(_cpu: u64) -> ! {
            guest_rt::arch::gic::init_cpu_interface();
            RESPONDER_UP.store(true, Ordering::SeqCst);
            while !STOP.load(Ordering::SeqCst) {
                let taken = guest_rt::arch::gic::acknowledge();
                if guest_rt::arch::gic::is_spurious(taken) {
                    idle();
                    continue;
                }
                guest_rt::arch::gic::end_of_interrupt(taken);
                if taken == SGI && !STOP.load(Ordering::SeqCst) {
                    send_sgi(0);
                }
            }
            RESPONDER_UP.store(false, Ordering::SeqCst);
            let status = rt::cpu_off();
            println!("probe: vcpu 1: CPU_OFF failed: {status}");
            rt::halt()
        }

        /// Arms the virtual timer 100 us ahead [`SHOTS`] times; the counter
        /// ticks from each deadline to the interrupt's acknowledge, summed.
        fn timer_latency(hz: u64) -> Option<u64> {
            let ahead = (hz / 10_000).max(1);
            let mut late = 0;
            for _ in 0..SHOTS {
                let deadline = rt::now() + ahead;
                // SAFETY: programs this vCPU's virtual timer (deadline,
                // enabled, unmasked). No memory.
                unsafe {
                    asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
                        in(reg) deadline, in(reg) 1u64, options(nomem, nostack))
                };
                let at = wait(VIRTUAL_TIMER, deadline + hz);
                // SAFETY: turns this vCPU's virtual timer off again (its
                // condition would raise the interrupt again).
                unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nomem, nostack)) };
                end(VIRTUAL_TIMER);
                late += at?.saturating_sub(deadline);
            }
            Some(late)
        }
    }
}
