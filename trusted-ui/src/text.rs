//! The canonical transaction statement lives in the protocol crate
//! (`protocol::signed::approval`): the payment app signs what this crate
//! draws, and neither defines it alone.

pub use protocol::signed::approval::*;
