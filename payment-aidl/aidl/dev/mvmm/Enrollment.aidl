package dev.mvmm;

/** A new credential, signed by the device key (the issuer checks it). */
parcelable Enrollment {
    /** 16 bytes. */
    byte[] credential;
    String label;
    /** SEC1 uncompressed P-256 point, 65 bytes. */
    byte[] publicKey;
    /** ES256 signature (r || s, 64 bytes) by the device key over the enrollment statement. */
    byte[] signature;
}
