// The Kotlin face of android-bridge, shaped like android.security.ConfirmationPrompt.
//
// Compiled with kotlinc and run on the JVM against the simulator, through the
// real libandroid_bridge.so, by android-bridge/tests/kotlin.rs (the sample
// wallet in examples/wallet/ and the entry-point check in tests/kotlin/).
// See docs/android-integration.md.
package dev.mvmm.bridge

import java.util.concurrent.Executor
import java.util.concurrent.atomic.AtomicBoolean

/** A failure of the secure VM call; [code] is the C ABI's MvmmResult number. */
class MvmmException(raw: String) : Exception(raw.substringAfter(':', raw)) {
    val code: Int = raw.substringBefore(':', "").toIntOrNull() ?: 16

    companion object {
        const val DECLINED_BY_USER = 1
        const val APPROVAL_TIMED_OUT = 2
        const val TIMEOUT = 3
        const val BUSY = 4
        const val LIMIT_EXCEEDED = 5
        const val LOCKED = 6
        const val UNKNOWN_CREDENTIAL = 7
        const val INVALID_ARGUMENT = 8
        const val TRANSPORT_CLOSED = 10
        const val CONNECT_FAILED = 11
        const val AUTHENTICATION_FAILED = 12
        const val VERSION_MISMATCH = 13
    }
}

/** The JNI entry points of libandroid_bridge.so (static native methods). */
internal object NativeBridge {
    init {
        System.loadLibrary("android_bridge")
    }

    @JvmStatic external fun connect(transport: String, deviceKeyHex: String): Long
    @JvmStatic external fun close(handle: Long)
    @JvmStatic external fun enroll(handle: Long, label: String): ByteArray
    @JvmStatic external fun listCredentials(handle: Long): ByteArray
    @JvmStatic external fun deleteCredential(handle: Long, credential: ByteArray)
    @JvmStatic external fun requestPayment(
        handle: Long, credential: ByteArray, amount: String, currency: String,
        merchant: String, nonce: ByteArray,
    ): ByteArray
    @JvmStatic external fun attest(handle: Long, nonce: ByteArray): ByteArray
    @JvmStatic external fun status(handle: Long): String
}

/** Where the secure VM listens and which device key it must prove it holds. */
data class SecureVm(
    val transport: String = "vsock:4:7100",
    val deviceKeyHex: String,
) {
    /**
     * Enrolls a payment credential labelled [label] (its key pair is made
     * inside the secure VM); returns its 16-byte id. Blocking: call it off
     * the UI thread.
     */
    fun enroll(label: String): ByteArray = session { NativeBridge.enroll(it, label) }

    /** The ids (16 bytes each) of the enrolled credentials. Blocking. */
    fun credentials(): List<ByteArray> = session { handle ->
        val ids = NativeBridge.listCredentials(handle)
        (0 until ids.size / CREDENTIAL_ID_LEN).map {
            ids.copyOfRange(it * CREDENTIAL_ID_LEN, (it + 1) * CREDENTIAL_ID_LEN)
        }
    }

    private fun <T> session(call: (Long) -> T): T {
        val handle = NativeBridge.connect(transport, deviceKeyHex)
        try {
            return call(handle)
        } finally {
            NativeBridge.close(handle)
        }
    }

    companion object {
        const val CREDENTIAL_ID_LEN = 16
    }
}

/** Like android.security.ConfirmationCallback. */
abstract class ConfirmationCallback {
    /** The user approved: [token] is the COSE_Sign1 authorization for the backend. */
    open fun onConfirmed(token: ByteArray) {}
    /** The user declined on the trusted display. */
    open fun onDismissed() {}
    /** [ConfirmationPrompt.cancelPrompt] was called. */
    open fun onCanceled() {}
    /** Anything else: [MvmmException.code] says what (timeout, busy, limit, locked...). */
    open fun onError(e: Throwable) {}
}

/**
 * A payment approval on the trusted display.
 *
 * The trusted display shows (and the token signs) the canonical statement
 * built from amount, currency, merchant and the credential's label; the
 * prompt text is for the app's own UI and logs, like Android's promptText.
 */
class ConfirmationPrompt private constructor(
    val promptText: String,
    val amount: String,
    val currency: String,
    val merchant: String,
    val nonce: ByteArray,
    val credential: ByteArray?,
    val secureVm: SecureVm,
) {
    private val canceled = AtomicBoolean(false)

    class Builder {
        private var promptText = ""
        private var amount: String? = null
        private var currency: String? = null
        private var merchant: String? = null
        private var nonce: ByteArray? = null
        private var credential: ByteArray? = null
        private var secureVm: SecureVm? = null

        fun setPromptText(text: CharSequence) = apply { promptText = text.toString() }
        /** Decimal amount in the currency's unit, e.g. "12.50" (never a float). */
        fun setAmount(amount: String) = apply { this.amount = amount }
        /** ISO 4217 code, e.g. "EUR". */
        fun setCurrency(code: String) = apply { currency = code }
        fun setMerchant(name: String) = apply { merchant = name }
        /** The relying party's 32-byte nonce (Android's extraData). */
        fun setNonce(nonce: ByteArray) = apply { this.nonce = nonce.copyOf() }
        /** A 16-byte credential id; default: the first enrolled credential. */
        fun setCredential(id: ByteArray) = apply { credential = id.copyOf() }
        fun setSecureVm(vm: SecureVm) = apply { secureVm = vm }

        fun build(): ConfirmationPrompt = ConfirmationPrompt(
            promptText,
            requireNotNull(amount) { "amount is required" },
            requireNotNull(currency) { "currency is required" },
            requireNotNull(merchant) { "merchant is required" },
            requireNotNull(nonce) { "nonce is required" }.also {
                require(it.size == 32) { "nonce must be 32 bytes, got ${it.size}" }
            },
            credential,
            requireNotNull(secureVm) { "secure VM (transport, device key) is required" },
        )
    }

    /**
     * Connects, authenticates the secure VM, shows the approval on the trusted
     * display and reports the answer on [executor]. Returns at once.
     */
    fun presentPrompt(executor: Executor, callback: ConfirmationCallback) {
        Thread {
            // Decide on the worker thread, report on the caller's executor.
            // (A lambda must not start a line after `val x = call()`: Kotlin
            // reads it as a trailing lambda passed to the call.)
            val result: () -> Unit = try {
                val token = run()
                if (canceled.get()) {
                    { callback.onCanceled() }
                } else {
                    { callback.onConfirmed(token) }
                }
            } catch (e: MvmmException) {
                when {
                    canceled.get() -> ({ callback.onCanceled() })
                    e.code == MvmmException.DECLINED_BY_USER -> ({ callback.onDismissed() })
                    else -> ({ callback.onError(e) })
                }
            } catch (e: Throwable) {
                ({ callback.onError(e) })
            }
            executor.execute(result)
        }.start()
    }

    /**
     * Stops waiting: the callback gets onCanceled(). The trusted display keeps
     * its prompt until the user answers or it times out; no token is delivered.
     */
    fun cancelPrompt() {
        canceled.set(true)
    }

    private fun run(): ByteArray {
        val handle = NativeBridge.connect(secureVm.transport, secureVm.deviceKeyHex)
        try {
            val id = credential ?: NativeBridge.listCredentials(handle).let {
                if (it.size < SecureVm.CREDENTIAL_ID_LEN) {
                    throw MvmmException("${MvmmException.UNKNOWN_CREDENTIAL}:no credential enrolled")
                }
                it.copyOfRange(0, SecureVm.CREDENTIAL_ID_LEN)
            }
            return NativeBridge.requestPayment(handle, id, amount, currency, merchant, nonce)
        } finally {
            NativeBridge.close(handle)
        }
    }

    companion object {
        /** Whether the bridge library loads and the secure VM answers with [vm]'s key. */
        @JvmStatic
        fun isSupported(vm: SecureVm): Boolean = try {
            val handle = NativeBridge.connect(vm.transport, vm.deviceKeyHex)
            NativeBridge.close(handle)
            true
        } catch (e: Throwable) {
            false
        }
    }
}
