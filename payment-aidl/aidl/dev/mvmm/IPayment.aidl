/*
 * The payment HAL of the rich VM: a system service that fronts the secure
 * VM's payment app (the shape of Android's KeyMint and ConfirmationUI HALs in
 * front of Trusty). Served over binder by `mvmm-payment-hal`.
 *
 * Every failure is a service-specific error whose code is an ErrorCode and
 * whose message says what went wrong; binder transport failures come as
 * binder's own status codes, and a caller the HAL does not serve gets
 * EX_SECURITY.
 */
package dev.mvmm;

import dev.mvmm.Credential;
import dev.mvmm.DeviceStatus;
import dev.mvmm.Enrollment;
import dev.mvmm.PaymentRequest;

interface IPayment {
    /**
     * Shows the payment on the trusted display and waits for the user's
     * answer (up to the HAL's approval timeout, two minutes by default).
     * Returns the COSE_Sign1 (ES256) authorization token, whose claims are
     * the request's fields, a transaction counter and the text shown.
     */
    byte[] requestPayment(in PaymentRequest request);

    /** Creates a credential (a P-256 key pair inside the secure VM). */
    Enrollment enroll(String label);

    /** Every enrolled credential. */
    Credential[] listCredentials();

    /** Deletes a credential (16 bytes) and its private key. */
    void deleteCredential(in byte[] credential);

    /** Attestation evidence (an EAT, tagged COSE_Sign1) bound to a 32-byte nonce. */
    byte[] attest(in byte[] nonce);

    /** The payment app's state (no PIN, no keys). */
    DeviceStatus status();
}
