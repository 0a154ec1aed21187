//! virtio devices mvmm emulates (filled in by the vsock work).
