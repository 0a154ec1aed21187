//! The secure VM's flash image seen from the host: open the sealed store
//! the way secure-os does, and put a state into it (a PIN, which nothing in
//! the product can set yet).
//!
//! Both need the storage root secret; today that is the provisioned device
//! secret of the image directory (see [`storage_root_secret`]).

use payment_app::{PaymentApp, PersistentState, Policy};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use secure_store::{OpenReport, SimFlash, Store, TestCounter};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The erase block of the board's flash (QEMU virt's pflash).
pub const ERASE_BLOCK: usize = 256 * 1024;
/// Bytes of the image the store uses: its two slots.
const STORE_BYTES: usize = 2 * ERASE_BLOCK;

/// The secret secure-os seals its storage under, for image directory
/// `dir`: its image's CDI_Seal, derived here exactly as mvmm derives it
/// (see `boot_image::provision`).
pub fn storage_root_secret(dir: &Path) -> Result<[u8; 32], String> {
    let (board, _) = crate::load_test_board()?;
    Ok(crate::provision(dir, &board)?.storage_root)
}

fn read_slots(image: &Path) -> Result<SimFlash, String> {
    let mut file = fs::File::open(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let mut bytes = vec![0u8; STORE_BYTES];
    file.read_exact(&mut bytes)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    Ok(SimFlash::with_contents(bytes, ERASE_BLOCK, 4))
}

fn write_slots(image: &Path, flash: &SimFlash) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(flash.bytes()))
        .map_err(|e| format!("{}: {e}", image.display()))
}

/// Opens the store in `image` as secure-os would (no rollback counter):
/// what open found, and the payment app's state if one is stored.
pub fn read_state(
    image: &Path,
    root: &[u8; 32],
) -> Result<(OpenReport, Option<PersistentState>), String> {
    let mut flash = read_slots(image)?;
    let store = Store::open(
        &mut flash,
        TestCounter::default(),
        ChaCha20Rng::from_seed([0; 32]),
        root,
    )
    .map_err(|e| format!("{}: {e}", image.display()))?;
    let state = match store.payload() {
        None => None,
        Some(blob) => Some(
            postcard::from_bytes::<PersistentState>(blob)
                .map_err(|e| format!("stored state does not decode: {e}"))?,
        ),
    };
    Ok((*store.report(), state))
}

/// Sets the PIN in the store of `image` through the payment app itself,
/// as the trusted UI would.
pub fn set_pin(image: &Path, root: &[u8; 32], pin: &str) -> Result<(), String> {
    let mut flash = read_slots(image)?;
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    {
        let store = Store::open(
            &mut flash,
            TestCounter::default(),
            ChaCha20Rng::from_seed(seed),
            root,
        )
        .map_err(|e| format!("{}: {e}", image.display()))?;
        // The device key only signs; any key will do to edit the state.
        let key = p256::ecdsa::SigningKey::from_slice(&[1; 32]).map_err(|e| e.to_string())?;
        let mut app = PaymentApp::new(key, store, Policy::default())
            .map_err(|e| format!("stored state: {e:?}"))?;
        seed[0] ^= 1;
        app.set_pin(pin, &mut ChaCha20Rng::from_seed(seed))
            .map_err(|e| format!("set_pin: {e:?}"))?;
    }
    write_slots(image, &flash)
}
