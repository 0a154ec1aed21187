//! Links every guest at its VM's RAM, as the board file declares it, and
//! hands the runtime the board's addresses; the text comes from
//! `mvmm_core::config::codegen`, the one generator of the board's constants.
//!
//! For each `[[vm]]` of the board this writes `vm-<name>.ld` into OUT_DIR: a
//! `MEMORY` block covering the VM's first RAM range from its entry point,
//! then `INCLUDE guest-sections.ld` (the shared `SECTIONS`, `link/sections.ld`);
//! and the same script as `image-<image>.ld` after the image the VM boots
//! (`image = "…"`). OUT_DIR is put on the link search path, which cargo
//! hands on to every crate depending on this one, so a guest image picks its
//! VM with a single `-T` in its own build script (secure-os: the VM that
//! boots it; the probe guest: `image-linux.ld`, Linux's place). `board.rs`
//! holds the facts every guest's runtime needs (UART, RAM, GIC); an image's
//! own devices are its business (`Target::Vm`).

use mvmm_core::config::ConfigError;
use mvmm_core::config::codegen::{self, Target};
use std::path::PathBuf;
use std::{env, fs, process};

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let (board_file, _, board) = mvmm_core::config::load_for_build(&manifest.join(".."))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            process::exit(1);
        });
    println!("cargo:rerun-if-changed=link/sections.ld");

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
    let sections = fs::read_to_string(manifest.join("link/sections.ld"))
        .unwrap_or_else(|e| fail(format!("cannot read link/sections.ld: {e}")));
    write("guest-sections.ld", Ok(sections));
    write("board.rs", codegen::constants(&board, Target::GuestRuntime));
    for vm in &board.vms {
        let script =
            codegen::vm_link_script(&board, &vm.name).unwrap_or_else(|e| fail(e.to_string()));
        if let Some(image) = &vm.image {
            write(&format!("image-{image}.ld"), Ok(script.clone()));
        }
        write(&format!("vm-{}.ld", vm.name), Ok(script));
    }
    println!("cargo:rustc-link-search=native={}", out.display());
}
