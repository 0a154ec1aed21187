//! Generates the Rust side of `aidl/dev/mvmm/*.aidl` with rsbinder-aidl.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=aidl");
    let generated = rsbinder_aidl::Builder::new()
        .source(PathBuf::from("aidl/dev/mvmm"))
        .output(PathBuf::from("payment_aidl.rs"))
        .set_async_support(false)
        .generate();
    if let Err(err) = generated {
        eprintln!("{:?}", miette::Report::new(err));
        std::process::exit(1);
    }
}
