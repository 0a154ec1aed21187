package dev.mvmm;

/** One enrolled credential. */
parcelable Credential {
    /** 16 bytes. */
    byte[] credential;
    String label;
    /** SEC1 uncompressed P-256 point, 65 bytes. */
    byte[] publicKey;
}
