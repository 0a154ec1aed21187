//! insn-report: reads insn-profile's output, names the blocks after the
//! functions they start in, and compares one phase of two profiles.
//!
//! ```text
//! insn-report phases PROFILE
//! insn-report compare [--syms [LABEL=]FILE]... [--top N] BASE@PHASE OTHER@PHASE
//! ```
//!
//! `phases` lists a profile's phases with their instruction totals per vCPU
//! (to pick the workload's phase: the marks are wherever the profile was cut).
//! `compare` aggregates each phase's blocks by function and prints, as
//! Markdown tables, the instructions per region (each symbol file's label,
//! or `user` for an unnamed address below the kernel's half) and vCPU, then
//! the functions whose instruction counts differ most, then the blocks.
//! A symbol file is `nm`'s format, one `ADDRESS TYPE NAME [MODULE]` a line,
//! as /proc/kallsyms and `llvm-nm -n` print it; only text symbols (t, T, w,
//! W) are used. Its label defaults to `kernel`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

/// One phase of a profile: instructions per block start and vCPU.
#[derive(Debug, Default, PartialEq)]
struct Phase {
    mark_vcpu: Option<u32>,
    per_vcpu: Vec<u64>,
    blocks: Vec<(u64, Vec<u64>)>,
}

impl Phase {
    fn total(&self) -> u64 {
        self.per_vcpu.iter().sum()
    }
}

/// Parses a whole profile.
fn parse_profile(text: &str) -> Result<Vec<Phase>, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty profile")?;
    let vcpus: usize = header
        .strip_prefix("insn-profile 1 vcpus ")
        .ok_or_else(|| format!("not an insn-profile file (header {header:?})"))?
        .parse()
        .map_err(|e| format!("header {header:?}: {e}"))?;
    let mut phases: Vec<Phase> = Vec::new();
    for (n, line) in lines.enumerate() {
        let at = || format!("line {}", n + 2);
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"phase") {
            // phase K mark-vcpu V total T vcpu C0 C1 ...
            if words.len() != 7 + vcpus || words[6] != "vcpu" {
                return Err(format!("{}: malformed phase line", at()));
            }
            let mark_vcpu = words[3].parse().ok();
            let per_vcpu = parse_counts(&words[7..]).map_err(|e| format!("{}: {e}", at()))?;
            phases.push(Phase {
                mark_vcpu,
                per_vcpu,
                blocks: Vec::new(),
            });
        } else {
            let phase = phases
                .last_mut()
                .ok_or_else(|| format!("{}: a block before any phase", at()))?;
            if words.len() != 2 + vcpus {
                return Err(format!("{}: malformed block line", at()));
            }
            let pc = parse_hex(words[0]).map_err(|e| format!("{}: {e}", at()))?;
            let counts = parse_counts(&words[2..]).map_err(|e| format!("{}: {e}", at()))?;
            phase.blocks.push((pc, counts));
        }
    }
    Ok(phases)
}

fn parse_counts(words: &[&str]) -> Result<Vec<u64>, String> {
    words
        .iter()
        .map(|w| w.parse().map_err(|e| format!("{w:?}: {e}")))
        .collect()
}

fn parse_hex(word: &str) -> Result<u64, String> {
    u64::from_str_radix(word.trim_start_matches("0x"), 16).map_err(|e| format!("{word:?}: {e}"))
}

/// Text symbols of one or more files, sorted by address.
#[derive(Default)]
struct Symbols {
    /// (address, label, name), sorted by address.
    list: Vec<(u64, String, String)>,
}

/// How far past the last symbol of a file an address still belongs to it.
const TAIL: u64 = 0x1_0000;

impl Symbols {
    /// Adds the text symbols of `text` (nm format) under `label`.
    fn add(&mut self, label: &str, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = parse_hex(addr) else { continue };
            // A module's symbols carry `[module]`: keep it in the name.
            let name = match words.next() {
                Some(module) => format!("{name} {module}"),
                None => name.to_string(),
            };
            self.list.push((addr, label.to_string(), name));
        }
        self.list.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    }

    /// The label and function `pc` is in, or `None`.
    fn find(&self, pc: u64) -> Option<(&str, &str, u64)> {
        let i = self.list.partition_point(|s| s.0 <= pc).checked_sub(1)?;
        let (addr, label, name) = &self.list[i];
        // Past the last symbol of its file by more than TAIL: not this file.
        let next_same_file = self.list[i + 1..].iter().find(|s| &s.1 == label);
        if next_same_file.is_none() && pc - addr > TAIL {
            return None;
        }
        Some((label, name, pc - addr))
    }

    /// The region and function a block is counted under.
    fn function(&self, pc: u64) -> (String, String) {
        match self.find(pc) {
            Some((label, name, _)) => (label.to_string(), name.to_string()),
            None if pc < 0xffff_0000_0000_0000 => ("user".into(), "(user)".into()),
            None => ("unknown".into(), format!("{pc:#x}")),
        }
    }

    fn describe(&self, pc: u64) -> String {
        match self.find(pc) {
            Some((label, name, off)) => format!("{label}:{name}+{off:#x}"),
            None if pc < 0xffff_0000_0000_0000 => format!("user {pc:#x}"),
            None => format!("{pc:#x}"),
        }
    }
}

/// Instructions of `phase` per key, per vCPU.
fn aggregate<K: Ord>(phase: &Phase, key: impl Fn(u64) -> K) -> BTreeMap<K, Vec<u64>> {
    let mut out: BTreeMap<K, Vec<u64>> = BTreeMap::new();
    for (pc, counts) in &phase.blocks {
        let e = out.entry(key(*pc)).or_insert_with(|| vec![0; counts.len()]);
        for (a, c) in e.iter_mut().zip(counts) {
            *a += c;
        }
    }
    out
}

fn per_vcpu(counts: &[u64]) -> String {
    counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `FILE@PHASE` (PHASE may be negative: counted from the last).
fn load_phase(spec: &str) -> Result<(String, Phase), String> {
    let (file, phase) = spec
        .rsplit_once('@')
        .ok_or_else(|| format!("{spec:?}: expected FILE@PHASE"))?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let mut phases = parse_profile(&text).map_err(|e| format!("{file}: {e}"))?;
    let index: i64 = phase
        .parse()
        .map_err(|e| format!("{spec:?}: phase {phase:?}: {e}"))?;
    let len = phases.len() as i64;
    let i = if index < 0 { len + index } else { index };
    if !(0..len).contains(&i) {
        return Err(format!("{file}: no phase {index} ({len} phases)"));
    }
    Ok((spec.to_string(), phases.swap_remove(i as usize)))
}

fn phases_command(file: &str) -> Result<String, String> {
    let mut out = String::new();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let phases = parse_profile(&text).map_err(|e| format!("{file}: {e}"))?;
    let _ = writeln!(
        out,
        "| phase | mark vCPU | instructions | per vCPU | blocks |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (i, p) in phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {i} | {} | {} | {} | {} |",
            p.mark_vcpu.map_or("-".into(), |v| v.to_string()),
            p.total(),
            per_vcpu(&p.per_vcpu),
            p.blocks.len()
        );
    }
    Ok(out)
}

/// The rows of a comparison: key, base per vCPU, other per vCPU, sorted by
/// the absolute difference of the totals, largest first.
/// One table row: the label, both totals with their per-vCPU split, and the
/// difference.
fn row(out: &mut String, label: &str, base: &[u64], other: &[u64], diff: i128) {
    let _ = writeln!(
        out,
        "| {label} | {} ({}) | {} ({}) | {diff:+} |",
        base.iter().sum::<u64>(),
        per_vcpu(base),
        other.iter().sum::<u64>(),
        per_vcpu(other)
    );
}

fn differences<K: Ord + Clone>(
    base: &BTreeMap<K, Vec<u64>>,
    other: &BTreeMap<K, Vec<u64>>,
) -> Vec<(K, Vec<u64>, Vec<u64>, i128)> {
    let mut keys: Vec<&K> = base.keys().chain(other.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let b = base.get(k).cloned().unwrap_or_default();
            let o = other.get(k).cloned().unwrap_or_default();
            let diff = o.iter().sum::<u64>() as i128 - b.iter().sum::<u64>() as i128;
            (k.clone(), b, o, diff)
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.3.abs()));
    rows
}

fn compare_command(args: &[String]) -> Result<String, String> {
    let mut out = String::new();
    let mut symbols = Symbols::default();
    let mut top = 30usize;
    let mut specs = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--syms" => {
                let spec = it.next().ok_or("--syms needs [LABEL=]FILE")?;
                let (label, file) = spec.split_once('=').unwrap_or(("kernel", spec));
                let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                symbols.add(label, &text);
            }
            "--top" => {
                let n = it.next().ok_or("--top needs N")?;
                top = n.parse().map_err(|e| format!("--top {n}: {e}"))?;
            }
            _ => specs.push(arg.clone()),
        }
    }
    let [base, other] = specs.as_slice() else {
        return Err("compare needs BASE@PHASE OTHER@PHASE".into());
    };
    let (base_name, base) = load_phase(base)?;
    let (other_name, other) = load_phase(other)?;
    let _ = writeln!(
        out,
        "base {base_name}: {} instructions (per vCPU {})",
        base.total(),
        per_vcpu(&base.per_vcpu)
    );
    let _ = writeln!(
        out,
        "other {other_name}: {} instructions (per vCPU {})",
        other.total(),
        per_vcpu(&other.per_vcpu)
    );
    out.push('\n');
    let _ = writeln!(
        out,
        "| region | base (per vCPU) | other (per vCPU) | difference |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let by_region = |p: &Phase| aggregate(p, |pc| symbols.function(pc).0);
    for (region, b, o, diff) in differences(&by_region(&base), &by_region(&other)) {
        row(&mut out, &region.to_string(), &b, &o, diff);
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| function | base (per vCPU) | other (per vCPU) | difference |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let by_function = |p: &Phase| aggregate(p, |pc| symbols.function(pc));
    for ((region, name), b, o, diff) in differences(&by_function(&base), &by_function(&other))
        .into_iter()
        .take(top)
    {
        row(&mut out, &format!("{region}:{name}"), &b, &o, diff);
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| block | base (per vCPU) | other (per vCPU) | difference |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let by_block = |p: &Phase| aggregate(p, |pc| pc);
    for (pc, b, o, diff) in differences(&by_block(&base), &by_block(&other))
        .into_iter()
        .take(top)
    {
        row(
            &mut out,
            &format!("{pc:#x} {}", symbols.describe(pc)),
            &b,
            &o,
            diff,
        );
    }
    Ok(out)
}

const USAGE: &str = "usage: insn-report phases PROFILE\n       \
    insn-report compare [--syms [LABEL=]FILE]... [--top N] BASE@PHASE OTHER@PHASE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("phases") if args.len() == 2 => phases_command(&args[1]),
        Some("compare") => compare_command(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("insn-report: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "insn-profile 1 vcpus 2\n\
        phase 0 mark-vcpu 1 total 30 vcpu 20 10\n\
        0xffff800008001000 25 20 5\n\
        0x400000 5 0 5\n\
        phase 1 mark-vcpu - total 7 vcpu 7 0\n\
        0xffff800008001010 7 7 0\n";

    #[test]
    fn parses_phases_and_blocks() {
        let phases = parse_profile(PROFILE).unwrap();
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[0].mark_vcpu, Some(1));
        assert_eq!(phases[0].per_vcpu, vec![20, 10]);
        assert_eq!(phases[0].blocks[1], (0x400000, vec![0, 5]));
        assert_eq!(phases[1].mark_vcpu, None);
        assert_eq!(phases[1].total(), 7);
    }

    #[test]
    fn rejects_malformed_profiles() {
        assert!(parse_profile("").is_err());
        assert!(parse_profile("something else\n").is_err());
        assert!(parse_profile("insn-profile 1 vcpus 2\n0x10 1 1 0\n").is_err());
        assert!(
            parse_profile("insn-profile 1 vcpus 2\nphase 0 mark-vcpu - total 1 vcpu 1\n").is_err()
        );
        assert!(
            parse_profile(
                "insn-profile 1 vcpus 2\nphase 0 mark-vcpu - total 1 vcpu 1 0\nzz 1 1 0\n"
            )
            .is_err()
        );
    }

    #[test]
    fn symbolizes_by_the_nearest_text_symbol_below() {
        let mut s = Symbols::default();
        s.add(
            "kernel",
            "ffff800008001000 T copy_page\nffff800008001008 d data\nffff800008002000 t helper [mod]\n",
        );
        s.add("mvmm", "0000000040200000 T start\n");
        assert_eq!(
            s.function(0xffff800008001010),
            ("kernel".into(), "copy_page".into())
        );
        assert_eq!(
            s.function(0xffff800008002004),
            ("kernel".into(), "helper [mod]".into())
        );
        assert_eq!(s.function(0x40200040), ("mvmm".into(), "start".into()));
        // Far past mvmm's last symbol: not mvmm's.
        assert_eq!(s.function(0x40300000), ("user".into(), "(user)".into()));
        assert_eq!(s.describe(0xffff800008001010), "kernel:copy_page+0x10");
    }

    #[test]
    fn differences_sort_by_size() {
        let phases = parse_profile(PROFILE).unwrap();
        let a = aggregate(&phases[0], |pc| pc);
        let b = aggregate(&phases[1], |pc| pc);
        let rows = differences(&a, &b);
        assert_eq!(rows[0].0, 0xffff800008001000);
        assert_eq!(rows[0].3, -25);
        assert_eq!(rows.last().unwrap().3.abs(), 5);
    }
}
