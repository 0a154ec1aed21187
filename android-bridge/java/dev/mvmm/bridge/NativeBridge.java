// Java mirror of the Kotlin `internal object NativeBridge` (same class, same
// static native methods), for the host JNI test: kotlinc is not available here.
package dev.mvmm.bridge;

public final class NativeBridge {
    static {
        String path = System.getProperty("mvmm.bridge.lib");
        if (path != null) {
            System.load(path);
        } else {
            System.loadLibrary("android_bridge");
        }
    }

    private NativeBridge() {}

    public static native long connect(String transport, String deviceKeyHex);
    public static native void close(long handle);
    public static native byte[] enroll(long handle, String label);
    public static native byte[] listCredentials(long handle);
    public static native void deleteCredential(long handle, byte[] credential);
    public static native byte[] requestPayment(long handle, byte[] credential, String amount,
            String currency, String merchant, byte[] nonce);
    public static native byte[] attest(long handle, byte[] nonce);
    public static native String status(long handle);
}
