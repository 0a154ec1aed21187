//! probe-guest: the command language of the probe test guest.
//!
//! The probe stands in the rich VM's slot in QEMU tests until Linux runs
//! there. Tests type one command per line on its console; this module turns
//! a line into a [`Command`]. The image (`main.rs`) carries them out.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use guest_rt::text::{parse_hex_u32, parse_hex_u64};

/// Longest command line accepted, in bytes.
pub const MAX_LINE: usize = 64;

/// One parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// An empty or blank line: ignored.
    Empty,
    /// `peek <hexaddr>`: read 32 bits.
    Peek { address: u64 },
    /// `poke <hexaddr> <hexvalue>`: write 32 bits.
    Poke { address: u64, value: u32 },
    /// `psci-version`.
    PsciVersion,
    /// `cpu-on [<hexmpidr>]`: start vCPU 1 (or the CPU with that MPIDR,
    /// which may not be this VM's).
    CpuOn { target: u64 },
    /// `reset-both`: vCPU 1 and vCPU 0 call SYSTEM_RESET at the same time.
    ResetBoth,
    /// `reset-1`: vCPU 1 calls SYSTEM_RESET while vCPU 0 waits.
    ResetFromSecondary,
    /// `focus`: ask mvmm for console input focus (only a secure VM may).
    Focus,
    /// `display`: ask mvmm for the display (only a secure VM may).
    Display,
    /// `off`: PSCI SYSTEM_OFF.
    Off,
    /// `reset`: PSCI SYSTEM_RESET.
    Reset,
    /// `ptimer`: arm the EL1 physical timer for 10 ms and wait for its
    /// interrupt (up to a second of counter time).
    PhysicalTimer,
    /// `irqstate`: with interrupts masked, let the physical timer fire, and
    /// read its pending and active bits back through the redistributor
    /// before the acknowledge, after it and after the end of interrupt.
    IrqState,
    /// `monitors`: try to make the cycle counter count at EL2 around a
    /// hypercall and to enable debug exceptions; print what reads back.
    Monitors,
    /// `bench`: the microbenchmarks (hypercall, trapped MMIO reads, SGI
    /// round trip between vCPU 0 and 1, virtual timer latency), each line
    /// `probe: bench <name> <ns> ns/op`, then `probe: bench done`.
    Bench,
    /// A known command with wrong arguments; holds its usage text.
    Usage(&'static str),
    /// Not a command; holds the first word (or the whole line if it is not
    /// text).
    Unknown(&'a str),
}

/// Parses one line (without its line ending).
pub fn parse(line: &[u8]) -> Command<'_> {
    let Ok(text) = core::str::from_utf8(line) else {
        return Command::Unknown("<not UTF-8>");
    };
    let mut words = text.split_ascii_whitespace();
    let Some(name) = words.next() else {
        return Command::Empty;
    };
    let args: [Option<&str>; 3] = [words.next(), words.next(), words.next()];
    match (name, args) {
        ("peek", [Some(a), None, None]) => match parse_hex_u64(a) {
            Some(address) => Command::Peek { address },
            None => Command::Usage(PEEK_USAGE),
        },
        ("peek", _) => Command::Usage(PEEK_USAGE),
        ("poke", [Some(a), Some(v), None]) => match (parse_hex_u64(a), parse_hex_u32(v)) {
            (Some(address), Some(value)) => Command::Poke { address, value },
            _ => Command::Usage(POKE_USAGE),
        },
        ("poke", _) => Command::Usage(POKE_USAGE),
        ("psci-version", [None, ..]) => Command::PsciVersion,
        ("cpu-on", [None, ..]) => Command::CpuOn { target: 1 },
        ("cpu-on", [Some(t), None, None]) => match parse_hex_u64(t) {
            Some(target) => Command::CpuOn { target },
            None => Command::Usage(CPU_ON_USAGE),
        },
        ("cpu-on", _) => Command::Usage(CPU_ON_USAGE),
        ("reset-both", [None, ..]) => Command::ResetBoth,
        ("reset-1", [None, ..]) => Command::ResetFromSecondary,
        ("focus", [None, ..]) => Command::Focus,
        ("display", [None, ..]) => Command::Display,
        ("off", [None, ..]) => Command::Off,
        ("reset", [None, ..]) => Command::Reset,
        ("monitors", [None, ..]) => Command::Monitors,
        ("ptimer", [None, ..]) => Command::PhysicalTimer,
        ("irqstate", [None, ..]) => Command::IrqState,
        ("bench", [None, ..]) => Command::Bench,
        (
            "psci-version" | "focus" | "display" | "off" | "reset" | "reset-both" | "reset-1"
            | "monitors" | "ptimer" | "irqstate" | "bench",
            _,
        ) => Command::Usage(NO_ARGS_USAGE),
        (other, _) => Command::Unknown(other),
    }
}

const PEEK_USAGE: &str = "peek <hexaddr>";
const POKE_USAGE: &str = "poke <hexaddr> <hexvalue>";
const CPU_ON_USAGE: &str = "cpu-on [<hexmpidr>]";
const NO_ARGS_USAGE: &str = "psci-version | focus | display | off | reset | reset-both | reset-1 | monitors | ptimer | irqstate | bench take no arguments";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            parse(b"peek 0x41000000"),
            Command::Peek {
                address: 0x4100_0000
            }
        );
        assert_eq!(
            parse(b"  peek   41000000  "),
            Command::Peek {
                address: 0x4100_0000
            }
        );
        assert_eq!(
            parse(b"poke 0x8000000 0xdeadbeef"),
            Command::Poke {
                address: 0x800_0000,
                value: 0xdead_beef
            }
        );
        assert_eq!(parse(b"psci-version"), Command::PsciVersion);
        assert_eq!(parse(b"focus"), Command::Focus);
        assert_eq!(parse(b"display"), Command::Display);
        assert_eq!(parse(b"cpu-on"), Command::CpuOn { target: 1 });
        assert_eq!(parse(b"cpu-on 0x2"), Command::CpuOn { target: 2 });
        assert_eq!(parse(b"cpu-on zz"), Command::Usage(CPU_ON_USAGE));
        assert_eq!(parse(b"reset-both"), Command::ResetBoth);
        assert_eq!(parse(b"reset-1"), Command::ResetFromSecondary);
        assert_eq!(parse(b"off"), Command::Off);
        assert_eq!(parse(b"reset"), Command::Reset);
        assert_eq!(parse(b"monitors"), Command::Monitors);
        assert_eq!(parse(b"ptimer"), Command::PhysicalTimer);
        assert_eq!(parse(b"irqstate"), Command::IrqState);
        assert_eq!(parse(b"bench"), Command::Bench);
        assert_eq!(parse(b"bench 3"), Command::Usage(NO_ARGS_USAGE));
        assert_eq!(parse(b"\toff\t"), Command::Off);
    }

    #[test]
    fn blank_lines_are_empty() {
        assert_eq!(parse(b""), Command::Empty);
        assert_eq!(parse(b"   \t "), Command::Empty);
    }

    #[test]
    fn bad_arguments_give_usage() {
        assert_eq!(parse(b"peek"), Command::Usage(PEEK_USAGE));
        assert_eq!(parse(b"peek zz"), Command::Usage(PEEK_USAGE));
        assert_eq!(parse(b"peek 1 2"), Command::Usage(PEEK_USAGE));
        assert_eq!(parse(b"poke 1"), Command::Usage(POKE_USAGE));
        assert_eq!(parse(b"poke 1 0x100000000"), Command::Usage(POKE_USAGE));
        assert_eq!(parse(b"poke 1 2 3"), Command::Usage(POKE_USAGE));
        assert_eq!(parse(b"off now"), Command::Usage(NO_ARGS_USAGE));
    }

    #[test]
    fn unknown_commands_name_the_word() {
        assert_eq!(parse(b"reboot please"), Command::Unknown("reboot"));
        assert_eq!(parse(b"PEEK 0"), Command::Unknown("PEEK"));
        assert_eq!(parse(&[0xff, 0xfe]), Command::Unknown("<not UTF-8>"));
    }
}
