//! Links the probe where the board's Linux image runs (it stands in for
//! Linux in the QEMU tests): `image-linux.ld` comes from guest-rt's build
//! script, whose output directory is on the link path.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Timage-linux.ld");
    }
}
