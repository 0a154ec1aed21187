//! Turns the board file into constants and, for the EL2 target, a linker
//! memory map. A board file that breaks a partition rule stops the build
//! here with a message naming the offending entry.

use std::path::PathBuf;
use std::{env, fs, process};

/// Stack bytes per physical CPU (shared with the boot assembly through the
/// linker script).
const STACK_SIZE: u64 = 32 * 1024;
/// Most CPUs mvmm reserves stacks for (mvmm_core::partition::MAX_CPUS).
const MAX_CPUS: u64 = 8;

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let (board_file, text, parsed) = mvmm_core::config::load_for_build(&root.join(".."))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            process::exit(1);
        });
    println!("cargo:rerun-if-changed=src/arch/aarch64/sections.ld");

    let fail = |msg: String| -> ! {
        eprintln!("error: board file {}: {msg}", board_file.display());
        process::exit(1);
    };
    let source = mvmm_core::config::generate(&text).unwrap_or_else(|e| fail(e.to_string()));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("board.rs"), source)
        .unwrap_or_else(|e| fail(format!("cannot write board.rs: {e}")));

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        // QEMU puts its DTB at the start of RAM when the image leaves room:
        // the image starts 2 MiB into mvmm's reservation, the boot options
        // word in the page below it.
        let mvmm = &parsed.board.mvmm;
        let image = mvmm.base + mvmm_core::boot_options::IMAGE_OFFSET;
        let memory = format!(
            "MEMORY {{ RAM : ORIGIN = {image:#x}, LENGTH = {:#x} }}\n\
             STACK_SIZE = {STACK_SIZE:#x};\nMAX_CPUS = {MAX_CPUS};\n",
            mvmm.base + mvmm.size - image
        );
        fs::write(out.join("memory.ld"), memory)
            .unwrap_or_else(|e| fail(format!("cannot write memory.ld: {e}")));
        // mvmm's EL2 page tables, built by the linker (mvmm_core::el2_map).
        let range =
            |r: &mvmm_core::config::RangeEntry| mvmm_core::partition::MemRange::new(r.base, r.size);
        let layout = mvmm_core::el2_map::El2Layout {
            mvmm: range(mvmm),
            image_store: parsed.board.image_store.as_ref().map(range),
            vm_ram: parsed
                .vms
                .iter()
                .flat_map(|vm| vm.ram.iter().map(range))
                .collect(),
        };
        let tables = layout
            .linker_tables()
            .unwrap_or_else(|e| fail(e.to_string()));
        fs::write(out.join("el2_tables.ld"), tables)
            .unwrap_or_else(|e| fail(format!("cannot write el2_tables.ld: {e}")));
        println!("cargo:rustc-link-search={}", out.display());
        println!(
            "cargo:rustc-link-arg=-T{}",
            root.join("src/arch/aarch64/sections.ld").display()
        );
    }
    println!("cargo:rustc-env=MVMM_STACK_SIZE={STACK_SIZE}");

    // The boot authority: the public key whose signature a secure VM's
    // image must carry (`cargo xtask build` passes the development key it
    // keeps under target/). Without it every signed image is refused.
    println!("cargo:rerun-if-env-changed={AUTHORITY_VAR}");
    let authority = match env::var(AUTHORITY_VAR) {
        Ok(hex) => parse_public_key(&hex).unwrap_or_else(|| {
            fail(format!(
                "{AUTHORITY_VAR}={hex:?} is not a SEC1 compressed P-256 key in hex (66 digits)"
            ))
        }),
        Err(_) => [0; 33],
    };
    fs::write(
        out.join("boot_authority.rs"),
        format!(
            "/// The boot authority's public key (SEC1 compressed; all zero: none).\n\
             pub const BOOT_AUTHORITY: [u8; 33] = {authority:?};\n"
        ),
    )
    .unwrap_or_else(|e| fail(format!("cannot write boot_authority.rs: {e}")));
}

/// The environment variable naming the boot authority's public key.
const AUTHORITY_VAR: &str = "MVMM_BOOT_AUTHORITY";

fn parse_public_key(hex: &str) -> Option<[u8; 33]> {
    let hex = hex.trim();
    if hex.len() != 66 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 33];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    matches!(key[0], 2 | 3).then_some(key)
}
