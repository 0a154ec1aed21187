//! JNI entry points for the Kotlin wrapper (`kotlin/dev/mvmm/bridge/`).
//!
//! Native methods of `dev.mvmm.bridge.NativeBridge` (a Kotlin `object` with
//! `@JvmStatic external` functions, i.e. static native methods). A session
//! is a `long` handle; failures throw `dev.mvmm.bridge.MvmmException` whose
//! message is `"<code>:<text>"`, `code` being the C ABI's [`MvmmResult`]
//! number. jni 0.22: every method upgrades its `EnvUnowned` with `with_env`,
//! which also keeps panics from unwinding into the JVM.

use std::sync::Mutex;

use jni::EnvUnowned;
use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JByteArray, JClass, JString};
use jni::strings::JNIString;
use jni::sys::jlong;
use jni::{Env, jni_str};
use protocol::{CREDENTIAL_ID_LEN, NONCE_LEN};

use crate::ffi::MvmmResult;
use crate::{Bridge, BridgeError, DeviceKey, PaymentRequest, Transport};

type JniResult<T> = Result<T, jni::errors::Error>;

/// What a handle points to: the bridge, locked per call (Java may call from
/// any thread).
type Handle = Mutex<Bridge>;

/// Throws `MvmmException("<code>:<message>")`.
fn throw(env: &mut Env<'_>, code: MvmmResult, message: &str) -> JniResult<()> {
    let text = JNIString::from(format!("{}:{message}", code as i32));
    env.throw_new(jni_str!("dev/mvmm/bridge/MvmmException"), text)
}

fn throw_bridge(env: &mut Env<'_>, e: &BridgeError) -> JniResult<()> {
    let code = crate::ffi::code_of(e);
    throw(env, code, &e.to_string())
}

fn string(env: &mut Env<'_>, s: &JString<'_>, what: &str) -> JniResult<Option<String>> {
    match s.try_to_string(env) {
        Ok(s) => Ok(Some(s)),
        Err(_) => {
            throw(
                env,
                MvmmResult::MvmmInvalidArgument,
                &format!("{what} is null"),
            )?;
            Ok(None)
        }
    }
}

fn fixed<const N: usize>(
    env: &mut Env<'_>,
    array: &JByteArray<'_>,
    what: &str,
) -> JniResult<Option<[u8; N]>> {
    let bytes = env.convert_byte_array(array).unwrap_or_default();
    match <[u8; N]>::try_from(bytes.as_slice()) {
        Ok(b) => Ok(Some(b)),
        Err(_) => {
            let message = format!("{what} must be {N} bytes, got {}", bytes.len());
            throw(env, MvmmResult::MvmmInvalidArgument, &message)?;
            Ok(None)
        }
    }
}

/// Runs `f` on the bridge behind `handle`.
/// `None` when it threw.
fn with_bridge<T>(
    env: &mut Env<'_>,
    handle: jlong,
    f: impl FnOnce(&mut Bridge) -> Result<T, BridgeError>,
) -> JniResult<Option<T>> {
    if handle == 0 {
        throw(env, MvmmResult::MvmmTransportClosed, "the bridge is closed")?;
        return Ok(None);
    }
    // SAFETY: a non-zero handle comes from `connect` (Box::into_raw) and the
    // Kotlin wrapper never passes it after `close` (it zeroes its copy under
    // a lock before calling close). The Mutex serialises concurrent calls.
    let cell: &Handle = unsafe { &*(handle as *const Handle) };
    let mut bridge = match cell.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    match f(&mut bridge) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            drop(bridge);
            throw_bridge(env, &e)?;
            Ok(None)
        }
    }
}

/// `static native long connect(String transport, String deviceKeyHex)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_connect<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    transport: JString<'local>,
    device_key_hex: JString<'local>,
) -> jlong {
    unowned
        .with_env(|env| -> JniResult<jlong> {
            let Some(transport) = string(env, &transport, "transport")? else {
                return Ok(0);
            };
            let Some(key) = string(env, &device_key_hex, "deviceKeyHex")? else {
                return Ok(0);
            };
            let transport: Transport = match transport.parse() {
                Ok(t) => t,
                Err(e) => {
                    throw(env, MvmmResult::MvmmInvalidArgument, &e)?;
                    return Ok(0);
                }
            };
            let connected = DeviceKey::from_hex(&key).and_then(|k| Bridge::connect(&transport, &k));
            match connected {
                Ok(bridge) => Ok(Box::into_raw(Box::new(Mutex::new(bridge))) as jlong),
                Err(e) => {
                    throw_bridge(env, &e)?;
                    Ok(0)
                }
            }
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native void close(long handle)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_close<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    unowned
        .with_env(|_env| -> JniResult<()> {
            if handle != 0 {
                // SAFETY: made by Box::into_raw in `connect`; the wrapper
                // calls close once per handle and never uses it again.
                drop(unsafe { Box::from_raw(handle as *mut Handle) });
            }
            Ok(())
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native byte[] enroll(long handle, String label)`: the credential id.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_enroll<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    label: JString<'local>,
) -> JByteArray<'local> {
    unowned
        .with_env(|env| -> JniResult<JByteArray<'local>> {
            let Some(label) = string(env, &label, "label")? else {
                return Ok(JByteArray::default());
            };
            match with_bridge(env, handle, |b| b.enroll(&label).map(|r| r.credential))? {
                Some(id) => env.byte_array_from_slice(&id),
                None => Ok(JByteArray::default()),
            }
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native byte[] listCredentials(long handle)`: the ids, 16 bytes each.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_listCredentials<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> JByteArray<'local> {
    unowned
        .with_env(|env| -> JniResult<JByteArray<'local>> {
            let ids = with_bridge(env, handle, |b| {
                Ok(b.list_credentials()?
                    .iter()
                    .flat_map(|c| c.credential)
                    .collect::<Vec<u8>>())
            })?;
            match ids {
                Some(ids) => env.byte_array_from_slice(&ids),
                None => Ok(JByteArray::default()),
            }
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native void deleteCredential(long handle, byte[] credential)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_deleteCredential<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    credential: JByteArray<'local>,
) {
    unowned
        .with_env(|env| -> JniResult<()> {
            let Some(id) = fixed::<CREDENTIAL_ID_LEN>(env, &credential, "credential")? else {
                return Ok(());
            };
            with_bridge(env, handle, |b| b.delete_credential(&id)).map(|_| ())
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native byte[] requestPayment(long handle, byte[] credential,
/// String amount, String currency, String merchant, byte[] nonce)`: the
/// COSE_Sign1 token. Blocks until the user answers.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "the JNI signature")]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_requestPayment<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    credential: JByteArray<'local>,
    amount: JString<'local>,
    currency: JString<'local>,
    merchant: JString<'local>,
    nonce: JByteArray<'local>,
) -> JByteArray<'local> {
    unowned
        .with_env(|env| -> JniResult<JByteArray<'local>> {
            let empty = JByteArray::default;
            let Some(id) = fixed::<CREDENTIAL_ID_LEN>(env, &credential, "credential")? else {
                return Ok(empty());
            };
            let Some(nonce) = fixed::<NONCE_LEN>(env, &nonce, "nonce")? else {
                return Ok(empty());
            };
            let (Some(amount), Some(currency), Some(merchant)) = (
                string(env, &amount, "amount")?,
                string(env, &currency, "currency")?,
                string(env, &merchant, "merchant")?,
            ) else {
                return Ok(empty());
            };
            let token = with_bridge(env, handle, |b| {
                let request = PaymentRequest::new(id, &amount, &currency, &merchant, nonce)?;
                b.request_payment(&request).map(|a| a.token)
            })?;
            match token {
                Some(token) => env.byte_array_from_slice(&token),
                None => Ok(empty()),
            }
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native byte[] attest(long handle, byte[] nonce)`: the
/// attestation evidence (EAT, tagged COSE_Sign1) for the backend.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_attest<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    nonce: JByteArray<'local>,
) -> JByteArray<'local> {
    unowned
        .with_env(|env| -> JniResult<JByteArray<'local>> {
            let Some(nonce) = fixed::<NONCE_LEN>(env, &nonce, "nonce")? else {
                return Ok(JByteArray::default());
            };
            match with_bridge(env, handle, |b| b.attest(&nonce).map(|a| a.eat.to_vec()))? {
                Some(eat) => env.byte_array_from_slice(&eat),
                None => Ok(JByteArray::default()),
            }
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `static native String status(long handle)`:
/// `"protocol=1 credentials=N pin_set=B locked=B busy=B counter=N"`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_mvmm_bridge_NativeBridge_status<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> JString<'local> {
    unowned
        .with_env(|env| -> JniResult<JString<'local>> {
            let text = with_bridge(env, handle, |b| {
                let s = b.status()?;
                Ok(format!(
                    "protocol={} credentials={} pin_set={} locked={} busy={} counter={}",
                    s.protocol_version,
                    s.credentials,
                    s.pin_set,
                    s.locked,
                    s.busy,
                    s.transaction_counter
                ))
            })?;
            match text {
                Some(text) => env.new_string(text),
                None => Ok(JString::default()),
            }
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}
