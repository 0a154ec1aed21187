//! C ABI (to do).
