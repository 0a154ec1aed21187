package dev.mvmm;

/** The payment app's state, safe to show to the rich VM. */
parcelable DeviceStatus {
    int protocolVersion;
    int credentials;
    boolean pinSet;
    boolean locked;
    boolean busy;
    long transactionCounter;
}
