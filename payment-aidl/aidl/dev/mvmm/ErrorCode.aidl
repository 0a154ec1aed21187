package dev.mvmm;

/** The service-specific error codes of IPayment (binder's EX_SERVICE_SPECIFIC). */
@Backing(type="int")
enum ErrorCode {
    /** The user pressed Decline on the trusted display. */
    DECLINED = 1,
    /** The user did not answer the trusted display in time. */
    APPROVAL_TIMED_OUT = 2,
    /** Another approval (or another call to the HAL) is in progress. */
    BUSY = 3,
    /** The amount is above the per-transaction limit. */
    LIMIT_PER_TRANSACTION = 4,
    /** The amount would pass the daily limit. */
    LIMIT_DAILY = 5,
    /** Too many wrong PINs: payments are disabled. */
    LOCKED = 6,
    /** No credential has this id. */
    UNKNOWN_CREDENTIAL = 7,
    /** An argument is malformed or out of range (the message names it). */
    INVALID_ARGUMENT = 8,
    /** No room for another credential. */
    STORAGE_FULL = 9,
    /** The secure VM's storage failed; nothing changed. */
    STORAGE_FAILURE = 10,
    /** The secure VM did not answer in time. */
    TIMED_OUT = 11,
    /** The HAL cannot reach the secure VM (connect error, connection closed). */
    SECURE_VM_UNREACHABLE = 12,
    /** The secure VM failed authentication, or speaks another protocol version. */
    AUTHENTICATION_FAILED = 13,
    /** Anything else (the message says what). */
    INTERNAL = 14,
}
