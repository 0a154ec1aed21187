//! Links the probe at the rich VM's RAM: `vm-rich.ld` comes from
//! guest-rt's build script, whose output directory is on the link path.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Tvm-rich.ld");
    }
}
