//! The payment HAL's binder interface, `dev.mvmm.IPayment`, generated at
//! build time by rsbinder-aidl from `aidl/dev/mvmm/*.aidl`.
//!
//! The `.aidl` files are the contract: an Android client would compile the
//! same files with AOSP's `aidl` (Java, C++ or NDK backend) and talk to
//! `mvmm-payment-hal` unchanged, since rsbinder's parcels are libbinder's.
//! Failures are binder service-specific errors whose code is an
//! [`ErrorCode`] (see `ErrorCode.aidl`).
//!
//! This crate holds only the interface; the service (`mvmm-payment-hal`) and
//! the client (`mvmm-pay --binder`) are in `android-bridge`.

rsbinder::include_aidl!("payment_aidl");

pub use dev::mvmm::Credential::Credential;
pub use dev::mvmm::DeviceStatus::DeviceStatus;
pub use dev::mvmm::Enrollment::Enrollment;
pub use dev::mvmm::ErrorCode::ErrorCode;
pub use dev::mvmm::IPayment::{BnPayment, BpPayment, IPayment};
pub use dev::mvmm::PaymentRequest::PaymentRequest;

rsbinder::impl_service_specific_error!(ErrorCode);

/// The interface descriptor every transaction carries.
pub const DESCRIPTOR: &str = "dev.mvmm.IPayment";

/// The name the HAL would register under with Android's servicemanager
/// (`<descriptor>/<instance>`, the convention of AIDL HALs). In the rich VM
/// there is no servicemanager: the HAL is the binder context manager
/// (handle 0) itself; see docs/android.md.
pub const SERVICE_NAME: &str = "dev.mvmm.IPayment/default";

#[cfg(test)]
mod tests {
    use super::*;
    use rsbinder::{ServiceSpecificError, Status};

    #[test]
    fn the_generated_descriptor_is_the_aidl_name() {
        assert_eq!(<BpPayment as rsbinder::Proxy>::descriptor(), DESCRIPTOR);
        assert_eq!(<BnPayment as rsbinder::Remotable>::descriptor(), DESCRIPTOR);
        assert!(SERVICE_NAME.starts_with(DESCRIPTOR));
    }

    #[test]
    fn error_codes_cross_a_status_and_come_back() {
        for code in ErrorCode::enum_values() {
            let status = Status::service_specific(code, Some("why"));
            assert_eq!(status.service_error::<ErrorCode>(), Some(code));
        }
        // A code from a newer .aidl is not mistaken for a known one.
        let status = Status::new_service_specific_error(99, None);
        assert_eq!(status.service_error::<ErrorCode>(), None);
        assert_eq!(ErrorCode::from_code(1), Some(ErrorCode::DECLINED));
    }

    #[test]
    fn a_parcelable_survives_its_parcel_and_rejects_truncation() {
        let request = PaymentRequest {
            credential: vec![7; 16],
            amountMinor: 1250,
            currency: "EUR".into(),
            merchant: "Corner Cafe".into(),
            nonce: vec![0x5a; 32],
        };
        let bytes = rsbinder::to_bytes(&request).expect("encodes");
        let back: PaymentRequest = rsbinder::from_bytes(&bytes).expect("decodes");
        // The generated parcelables derive Debug, not PartialEq.
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                rsbinder::from_bytes::<PaymentRequest>(&bytes[..cut]).is_err(),
                "{cut} of {} bytes decoded",
                bytes.len()
            );
        }
    }
}
