//! Placeholder: filled in by the payment-core issue.
#![no_std]
