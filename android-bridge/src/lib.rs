//! The rich VM's client of the secure VM's payment app.
//!
//! A wallet app asks the secure VM for a payment approval in a few lines:
//!
//! ```no_run
//! use android_bridge::{Bridge, DeviceKey, Transport, PaymentRequest};
//! # fn main() -> Result<(), android_bridge::BridgeError> {
//! let key = DeviceKey::load("/etc/mvmm/device.pub".as_ref())?;
//! let mut bridge = Bridge::connect(&Transport::secure_vm(), &key)?;
//! let card = bridge.list_credentials()?.remove(0).credential;
//! let request = PaymentRequest::new(card, "12.50", "EUR", "Corner Cafe", [7; 32])?;
//! let authorization = bridge.request_payment(&request)?;
//! // send authorization.token to the backend, which checks it with mvmm-verify
//! # Ok(()) }
//! ```
//!
//! - [`Bridge`]: the session with the payment app and one method per request.
//! - [`Transport`], [`Channel`]: AF_VSOCK (rich VM), Unix socket (host simulator).
//! - [`DeviceKey`]: the secure VM's device public key that the client pins.
//! - `hal` (Linux): the payment HAL over Android's binder, `dev.mvmm.IPayment`
//!   served by `mvmm-payment-hal` and called by `mvmm-pay --binder`.
//! - [`backend`]: the payment backend's HTTP API (nonces, enrollment, token
//!   verdicts), reached over the rich VM's network.
//! - [`amount`]: decimal amounts to minor units with the currency's exponent.
//! - [`ffi`]: the C ABI (header in `include/mvmm_bridge.h`); [`jni`] the JNI
//!   entry points behind the Kotlin wrapper.
//!
//! See `docs/android-integration.md`.

pub mod amount;
pub mod backend;
mod bridge;
mod device_key;
mod error;
pub mod ffi;
#[cfg(target_os = "linux")]
pub mod hal;
pub mod jni;
pub mod transport;

pub use bridge::{Authorization, Bridge, PaymentRequest, Timeouts};
pub use device_key::DeviceKey;
pub use error::BridgeError;
pub use protocol::{
    Attestation, CredentialId, CredentialInfo, DeviceStatus, EnrollmentRecord, Limit, Nonce,
};
pub use transport::{Channel, PAYMENT_PORT, SECURE_VM_CID, Transport};
