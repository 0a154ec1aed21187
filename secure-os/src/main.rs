//! secure-os: the secure VM's image. Prints its banner, then a heartbeat
//! every five seconds of virtual-timer time, idling in WFI between ticks.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "secure-os runs only in the secure VM of mVMM: build it with --target aarch64-unknown-none"
    );
    std::process::exit(1);
}

#[cfg(target_os = "none")]
mod image {
    use secure_os::{println, rt};

    secure_os::entry!(main);

    /// Seconds between heartbeat lines.
    const HEARTBEAT_SECONDS: u64 = 5;

    fn main() -> ! {
        let frequency = rt::timer_frequency();
        println!(
            "secure-os: ready (v{}, EL{}, timer {} Hz)",
            env!("CARGO_PKG_VERSION"),
            rt::current_el(),
            frequency
        );
        // One tick per second; the heartbeat counts ticks.
        rt::start_tick(frequency);
        let mut seen = 0;
        let mut beats = 0u64;
        loop {
            rt::wait_for_interrupt();
            let ticks = rt::ticks();
            while seen < ticks {
                seen += 1;
                if seen % HEARTBEAT_SECONDS == 0 {
                    beats += 1;
                    println!("secure-os: heartbeat {beats}");
                }
            }
        }
    }
}
