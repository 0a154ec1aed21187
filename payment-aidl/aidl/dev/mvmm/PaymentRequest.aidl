package dev.mvmm;

/** A payment to approve: exactly what the trusted display shows and the token signs. */
parcelable PaymentRequest {
    /** Credential id, 16 bytes (see IPayment.listCredentials). */
    byte[] credential;
    /** Amount in the currency's minor unit (cents for EUR); not negative. */
    long amountMinor;
    /** ISO 4217 alphabetic code, e.g. "EUR". */
    String currency;
    /** Merchant name as the user sees it: 1 to 32 printable ASCII characters. */
    String merchant;
    /** The relying party's nonce, 32 bytes, not all zero. */
    byte[] nonce;
}
