// A sample wallet: asks the secure VM to approve a payment through the Kotlin
// ConfirmationPrompt and reports what the user decided.
//
//   Wallet TRANSPORT DEVICE_KEY_HEX AMOUNT
//
// On a phone the transport is "vsock:4:7100" and the key comes from the system
// image; android-bridge/tests/kotlin.rs runs this on the JVM against mvmm-sim.
// Prints the credential it enrolled (if any) and the nonce, then one line per outcome: "confirmed <token hex>", "dismissed",
// "canceled" or "error <code> <message>"; exits 0 once the callback ran.
package dev.mvmm.examples.wallet

import dev.mvmm.bridge.ConfirmationCallback
import dev.mvmm.bridge.ConfirmationPrompt
import dev.mvmm.bridge.MvmmException
import dev.mvmm.bridge.SecureVm
import java.security.SecureRandom
import java.util.HexFormat
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess

fun main(args: Array<String>) {
    require(args.size == 3) { "usage: Wallet TRANSPORT DEVICE_KEY_HEX AMOUNT" }
    val vm = SecureVm(transport = args[0], deviceKeyHex = args[1])
    if (!ConfirmationPrompt.isSupported(vm)) {
        println("unsupported: no secure VM with that device key")
        exitProcess(3)
    }
    if (vm.credentials().isEmpty()) {
        println("enrolled ${HexFormat.of().formatHex(vm.enroll("Visa ending 4242"))}")
    }

    // The backend's fresh nonce; a random one stands in for it here.
    val nonce = ByteArray(32).also { SecureRandom().nextBytes(it) }
    println("nonce ${HexFormat.of().formatHex(nonce)}")
    val prompt = ConfirmationPrompt.Builder()
        .setPromptText("Pay Corner Cafe")
        .setAmount(args[2])
        .setCurrency("EUR")
        .setMerchant("Corner Cafe")
        .setNonce(nonce)
        .setSecureVm(vm)
        .build()

    // The app's "main thread": callbacks arrive here, never on the worker.
    val main = Executors.newSingleThreadExecutor { Thread(it, "wallet-main") }
    val answered = CountDownLatch(1)
    prompt.presentPrompt(main, object : ConfirmationCallback() {
        override fun onConfirmed(token: ByteArray) = report("confirmed ${HexFormat.of().formatHex(token)}")
        override fun onDismissed() = report("dismissed")
        override fun onCanceled() = report("canceled")
        override fun onError(e: Throwable) =
            report("error ${(e as? MvmmException)?.code ?: -1} ${e.message}")

        private fun report(line: String) {
            println("$line (on ${Thread.currentThread().name})")
            answered.countDown()
        }
    })
    val done = answered.await(150, TimeUnit.SECONDS)
    main.shutdown()
    if (!done) {
        println("no answer")
        exitProcess(2)
    }
}
