//! Writes mvmm's view of the board file (`mvmm_core::config::codegen`):
//! its constants and, for the EL2 target, the linker memory map and EL2
//! page tables. A board file that breaks a partition rule stops the build
//! here with a message naming the file and the offending entry.

use mvmm_core::config::ConfigError;
use mvmm_core::config::codegen::{self, Target};
use std::path::PathBuf;
use std::{env, fs, process};

/// Stack bytes per physical CPU (shared with the boot assembly through the
/// linker script, which reserves them for mvmm_core::partition::MAX_CPUS).
const STACK_SIZE: u64 = 32 * 1024;

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let (board_file, _, board) = mvmm_core::config::load_for_build(&root.join(".."))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            process::exit(1);
        });
    println!("cargo:rerun-if-changed=src/arch/aarch64/sections.ld");

    let fail = |msg: String| -> ! {
        eprintln!("error: board file {}: {msg}", board_file.display());
        process::exit(1);
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let write = |name: &str, text: Result<String, ConfigError>| {
        let text = text.unwrap_or_else(|e| fail(e.to_string()));
        fs::write(out.join(name), text)
            .unwrap_or_else(|e| fail(format!("cannot write {name}: {e}")));
    };
    write("board.rs", codegen::constants(&board, Target::Mvmm));
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        write("memory.ld", codegen::mvmm_memory(&board, STACK_SIZE));
        // mvmm's EL2 page tables, built by the linker (mvmm_core::el2_map).
        write("el2_tables.ld", codegen::mvmm_el2_tables(&board));
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
