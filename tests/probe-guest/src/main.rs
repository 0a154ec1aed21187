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
            Command::CpuOn => {
                let status = rt::cpu_on(SECONDARY_VCPU, secondary);
                println!("probe: cpu-on vcpu {SECONDARY_VCPU} returned {status}");
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

    /// Runs on the vCPU started by `cpu-on`.
    extern "C" fn secondary(cpu: u64) -> ! {
        println!("probe: vcpu {cpu} up");
        let status = rt::cpu_off();
        println!("probe: vcpu {cpu}: CPU_OFF failed: {status}");
        rt::halt()
    }
}
