// Java mirror of the Kotlin MvmmException: message "<code>:<text>".
package dev.mvmm.bridge;

public class MvmmException extends RuntimeException {
    public final int code;

    public MvmmException(String raw) {
        super(raw.contains(":") ? raw.substring(raw.indexOf(':') + 1) : raw);
        int code = 16;
        try {
            code = Integer.parseInt(raw.substring(0, Math.max(0, raw.indexOf(':'))));
        } catch (NumberFormatException e) {
            // keep 16 (internal)
        }
        this.code = code;
    }
}
