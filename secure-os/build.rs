//! The secure-os image's view of the board file: the devices of the VM
//! that boots it (`image = "secure-os"`) as constants, and its link script.
//!
//! `guest-rt`'s build script writes `vm-<name>.ld` for every VM and puts it
//! on the link path; this one finds the VM whose image is secure-os, links
//! the image with its `-Tvm-<name>.ld`, and writes `board.rs` with that VM's
//! devices (vsock, input, framebuffer, flash; see
//! `mvmm_core::config::codegen`), which `arch::board` adds to the
//! runtime's board constants.

use mvmm_core::config::Image;
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
    let fail = |msg: String| -> ! {
        eprintln!("error: board file {}: {msg}", board_file.display());
        process::exit(1);
    };

    let vm = board
        .vm_running(Image::SecureOs)
        .unwrap_or_else(|e| fail(e.to_string()));
    let source =
        codegen::constants(&board, Target::Vm(&vm.name)).unwrap_or_else(|e| fail(e.to_string()));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("board.rs"), source)
        .unwrap_or_else(|e| fail(format!("cannot write board.rs: {e}")));

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Tvm-{}.ld", vm.name);
    }
}
