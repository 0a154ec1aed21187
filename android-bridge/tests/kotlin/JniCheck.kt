// Drives every JNI entry point of NativeBridge against a simulator:
//   JniCheck TRANSPORT KEY_HEX FORGED_KEY_HEX
// Compiled with the wrapper (same module, so it may call the internal
// NativeBridge) by android-bridge/tests/kotlin.rs, which checks the output.
package dev.mvmm.bridge.check

import dev.mvmm.bridge.MvmmException
import dev.mvmm.bridge.NativeBridge
import java.util.HexFormat

private fun expectFailure(what: String, call: () -> Unit) {
    try {
        call()
        println("$what error none")
    } catch (e: MvmmException) {
        println("$what error ${e.code} ${e.message}")
    }
}

fun main(args: Array<String>) {
    val (transport, key, forged) = args
    val hex = HexFormat.of()
    val handle = NativeBridge.connect(transport, key)
    println("status ${NativeBridge.status(handle)}")
    val id = NativeBridge.enroll(handle, "Visa ending 4242")
    println("enrolled ${hex.formatHex(id)}")
    println("credentials ${NativeBridge.listCredentials(handle).size / 16}")
    val nonce = ByteArray(32) { 0x42 }
    val token = NativeBridge.requestPayment(handle, id, "12.50", "EUR", "Corner Cafe", nonce)
    println("token ${hex.formatHex(token)}")
    // The attestation evidence is an EAT: a tagged COSE_Sign1 (CBOR tag 18,
    // first byte 0xd2 = 210).
    println("eat tag ${NativeBridge.attest(handle, nonce)[0].toInt() and 0xff}")
    expectFailure("amount") {
        NativeBridge.requestPayment(handle, id, "12.505", "EUR", "Corner Cafe", nonce)
    }
    expectFailure("id") {
        NativeBridge.requestPayment(handle, ByteArray(3), "1", "EUR", "Corner Cafe", nonce)
    }
    expectFailure("nonce") { NativeBridge.attest(handle, ByteArray(31)) }
    NativeBridge.deleteCredential(handle, id)
    println("after delete ${NativeBridge.listCredentials(handle).size / 16}")
    NativeBridge.close(handle)
    expectFailure("closed") { NativeBridge.status(0) }
    expectFailure("forged") { NativeBridge.connect(transport, forged) }
    expectFailure("transport") { NativeBridge.connect("tcp:1.2.3.4", key) }
    println("done")
}
