//! The board-file validator: arbitrary TOML text, and structured mutations
//! of the real board file (values replaced, lines dropped, duplicated or
//! moved), through parsing, partition validation, code generation and the
//! VMs' device trees.
//!
//! Invariants:
//! - the answer is `Ok` or an error with a message, never a panic;
//! - a board that validates keeps its promises: every VM has CPUs and RAM,
//!   no CPU is given twice or lies beyond the board's, VM RAM is well
//!   formed, inside the board's RAM, clear of mvmm and of every other VM's
//!   RAM, and each VM's entry lies in its RAM;
//! - every VM of a valid board gets a device tree (or a clear error).

use arbitrary::{Arbitrary, Unstructured};
use mvmm_core::config::{BoardFile, generate};
use mvmm_core::devicetree::{BootParams, vm_device_tree};
use mvmm_core::partition::Board;

/// The board mvmm ships: the starting point of the structured mutations.
pub const REAL_BOARD: &str = include_str!("../../boards/qemu-virt/board.toml");

#[derive(Arbitrary, Debug)]
enum Value {
    Int(u64),
    /// Near the real values: a page-aligned address or size.
    Page(u32),
    Small(u8),
    Name(u8),
    Text(String),
    Ints(Vec<u8>),
    Bool(bool),
    /// A range table `{ base = .., size = .. }`.
    Range(u32, u32),
}

const NAMES: &[&str] = &[
    "rich",
    "secure",
    "net0",
    "rtc",
    "rng0",
    "flash1",
    "uart",
    "pl031",
    "virtio-mmio",
    "",
];

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Int(v) => format!("{v:#x}"),
            Value::Page(p) => format!("{:#x}", u64::from(*p) << 12),
            Value::Small(v) => v.to_string(),
            Value::Name(i) => format!("{:?}", NAMES[usize::from(*i) % NAMES.len()]),
            Value::Text(s) => format!("{s:?}"),
            Value::Ints(v) => format!("{v:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Range(b, s) => format!(
                "{{ base = {:#x}, size = {:#x} }}",
                u64::from(*b) << 12,
                u64::from(*s) << 12
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    /// Replace the value of the `key = value` line `line`.
    Set {
        line: u8,
        value: Value,
    },
    Drop {
        line: u8,
    },
    Duplicate {
        line: u8,
    },
    Swap {
        a: u8,
        b: u8,
    },
    /// Insert a raw line.
    Insert {
        line: u8,
        text: String,
    },
}

#[derive(Arbitrary, Debug)]
enum Input {
    Mutate(Vec<Mutation>),
    Text(String),
}

fn mutate(mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = REAL_BOARD.lines().map(str::to_owned).collect();
    for m in mutations {
        let n = lines.len().max(1);
        match m {
            Mutation::Set { line, value } => {
                // The `line`-th assignment of the file.
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&i| {
                        !lines[i].trim_start().starts_with('#') && lines[i].contains(" = ")
                    })
                    .collect();
                if let Some(&i) = assignments.get(usize::from(*line) % assignments.len().max(1)) {
                    let key = lines[i].split(" = ").next().unwrap_or("").to_owned();
                    lines[i] = format!("{key} = {}", value.render());
                }
            }
            Mutation::Drop { line } => {
                if !lines.is_empty() {
                    lines.remove(usize::from(*line) % n);
                }
            }
            Mutation::Duplicate { line } => {
                if let Some(l) = lines.get(usize::from(*line) % n).cloned() {
                    lines.insert(usize::from(*line) % n, l);
                }
            }
            Mutation::Swap { a, b } => {
                if !lines.is_empty() {
                    lines.swap(usize::from(*a) % n, usize::from(*b) % n);
                }
            }
            Mutation::Insert { line, text } => {
                lines.insert(usize::from(*line) % (lines.len() + 1), text.clone())
            }
        }
    }
    lines.join("\n")
}

/// What [`Board::validate`] promises of a board it accepts.
fn promises(board: &Board<'_>) {
    let mut owner = vec![None; board.cpu_count];
    for vm in board.vms {
        assert!(!vm.cpus.is_empty() && !vm.ram.is_empty(), "vm {}", vm.name);
        for &cpu in vm.cpus {
            assert!(cpu < board.cpu_count, "vm {}: CPU {cpu}", vm.name);
            assert!(owner[cpu].is_none(), "CPU {cpu} given twice");
            owner[cpu] = Some(vm.name);
        }
        for r in vm.ram {
            assert!(
                r.size > 0 && r.base % 4096 == 0 && r.size % 4096 == 0,
                "{r:?}"
            );
            assert!(r.base.checked_add(r.size).is_some(), "{r:?} wraps");
            assert!(
                board.ram.contains_range(r.base, r.size),
                "{r:?} outside RAM"
            );
            assert!(!r.overlaps(&board.mvmm), "{r:?} overlaps mvmm");
            for other in board.vms.iter().filter(|o| o.name != vm.name) {
                assert!(other.ram.iter().all(|o| !o.overlaps(r)), "{r:?} shared");
            }
        }
        assert!(
            vm.ram.iter().any(|r| r.contains(vm.entry)),
            "vm {} entry {:#x} outside its RAM",
            vm.name,
            vm.entry
        );
    }
    assert!(board.ram.contains_range(board.mvmm.base, board.mvmm.size));
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let text = match &input {
        Input::Mutate(m) => mutate(m),
        Input::Text(t) => t.clone(),
    };
    let generated = generate(&text);
    let parsed = BoardFile::parse(&text);
    match (&generated, &parsed) {
        (Ok(code), Ok(file)) => {
            assert!(code.contains("pub const BOARD"));
            let valid = file.with_board(promises);
            assert!(valid.is_ok(), "generate accepted what with_board refused");
            let boot = BootParams {
                cmdline: "console=ttyAMA0",
                initrd_size: Some(0x1000),
                cpu_compatible: "arm,cortex-a57",
            };
            for vm in &file.vms {
                if let Err(e) = vm_device_tree(file, &vm.name, &boot) {
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        (Err(e), _) => assert!(!e.to_string().trim().is_empty(), "an empty error"),
        (Ok(_), Err(e)) => panic!("generate accepted a file parse refuses: {e}"),
    }
}
