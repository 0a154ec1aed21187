//! The secure VM's vsock address, for both ends: the payment service
//! (secure-os) and the wallet's bridge (android-bridge). The numbers are
//! mvmm's ABI, defined once in `mvmm_abi::vsock`; the board's channel policy
//! (`[[vsock_allow]] service = "payment"`) names the same services.

pub use mvmm_abi::vsock::{ECHO_PORT, PAYMENT_PORT, SECURE_VM_CID};
