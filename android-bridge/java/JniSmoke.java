// Drives the JNI entry points against a simulator: JniSmoke TRANSPORT KEY_HEX FORGED_KEY_HEX
import dev.mvmm.bridge.MvmmException;
import dev.mvmm.bridge.NativeBridge;
import java.util.Arrays;
import java.util.HexFormat;

public class JniSmoke {
    public static void main(String[] args) {
        String transport = args[0];
        long handle = NativeBridge.connect(transport, args[1]);
        System.out.println("status " + NativeBridge.status(handle));
        byte[] id = NativeBridge.enroll(handle, "Visa ending 4242");
        System.out.println("enrolled " + HexFormat.of().formatHex(id));
        byte[] ids = NativeBridge.listCredentials(handle);
        System.out.println("credentials " + ids.length / 16);
        byte[] nonce = new byte[32];
        Arrays.fill(nonce, (byte) 0x42);
        byte[] token = NativeBridge.requestPayment(handle, id, "12.50", "EUR", "Corner Cafe", nonce);
        System.out.println("token " + HexFormat.of().formatHex(token));
        System.out.println("eat tag " + (NativeBridge.attest(handle, nonce)[0] & 0xff));
        try {
            NativeBridge.requestPayment(handle, id, "12.505", "EUR", "Corner Cafe", nonce);
        } catch (MvmmException e) {
            System.out.println("amount error " + e.code + " " + e.getMessage());
        }
        try {
            NativeBridge.requestPayment(handle, new byte[3], "1", "EUR", "Corner Cafe", nonce);
        } catch (MvmmException e) {
            System.out.println("id error " + e.code + " " + e.getMessage());
        }
        NativeBridge.deleteCredential(handle, id);
        NativeBridge.close(handle);
        try {
            NativeBridge.connect(transport, args[2]);
        } catch (MvmmException e) {
            System.out.println("forged error " + e.code + " " + e.getMessage());
        }
        System.out.println("done");
    }
}
