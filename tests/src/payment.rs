//! A payment through the whole product, as the QEMU tests and `cargo xtask
//! demo` drive it: `mvmm-pay` in the rich VM enrolls a credential and asks
//! for an approval over the VMM channel; the user answers the trusted prompt
//! on the console (typed, through mvmm's focus switch); the token that comes
//! back is checked the way a payment backend would.

use crate::{ConsoleError, Machine};
use mvmm_verify::{Expected, parse_public_key, parse_token, verify_token};
use protocol::Currency;
use serde_json::Value;
use std::thread;
use std::time::Duration;

pub const LABEL: &str = "Visa ending 4242";
pub const AMOUNT: &str = "12.50";
pub const AMOUNT_MINOR: u64 = 1250;
pub const CURRENCY: &str = "EUR";
pub const MERCHANT: &str = "Corner Cafe";
/// The last line of the trusted prompt secure-os prints.
pub const PROMPT: &str = "Approve? [y/n]";

/// The rich VM's shell command: enroll, then request the payment; both
/// print JSON lines, and the request's exit status is reported.
pub fn script(then: &str) -> String {
    script_with_nonce(None, then)
}

/// [`script`] with the relying party's nonce (hex) when it issued one.
pub fn script_with_nonce(nonce: Option<&str>, then: &str) -> String {
    let nonce = nonce.map(|n| format!(" --nonce {n}")).unwrap_or_default();
    format!(
        "mvmm-pay enroll --label '{LABEL}' --json; \
         mvmm-pay request --amount {AMOUNT} --currency {CURRENCY} --merchant '{MERCHANT}'{nonce} --json; \
         echo \"mvmm-pay request exited with $?\"; {then}"
    )
}

/// What secure-os prints when the rich side cancels a prompt while the user
/// is typing.
pub const CLOSING_NOTICE: &str = trusted_ui::guard::CLOSING_NOTICE;

/// How long after the prompt appears a person starts typing: past the
/// trusted path's arming delay (keys in the first
/// `trusted_ui::guard::ARM_DELAY_MS` are discarded), with a margin.
pub const READ_TIME: Duration = Duration::from_millis(trusted_ui::guard::ARM_DELAY_MS + 400);

/// Waits for the trusted prompt, reads it for [`READ_TIME`] and types `keys`
/// one at a time, the way a person at the console would.
/// The centre of `button` on the approval screen of a `size` display, as
/// trusted-ui lays it out (the layout secure-os hit-tests touches against).
pub fn button_centre(size: (u32, u32), button: trusted_ui::Button) -> (u32, u32) {
    use embedded_graphics::prelude::{Point, Size};
    let area =
        embedded_graphics::primitives::Rectangle::new(Point::zero(), Size::new(size.0, size.1));
    let layout = trusted_ui::Layout::new(area);
    layout
        .buttons(trusted_ui::Screen::Approval)
        .iter()
        .find(|(b, _)| *b == button)
        .map_or((size.0 / 2, size.1 / 2), |(_, rect)| {
            let c = rect.center();
            (c.x.max(0) as u32, c.y.max(0) as u32)
        })
}

pub fn answer(m: &mut Machine, keys: &str, timeout: Duration) -> Result<String, ConsoleError> {
    let prompt = m.expect(PROMPT, timeout)?;
    thread::sleep(READ_TIME);
    for key in keys.chars() {
        thread::sleep(Duration::from_millis(150));
        m.send(&key.to_string());
    }
    Ok(prompt)
}

/// The JSON objects `mvmm-pay --json` printed on the console, in order.
pub fn json_lines(transcript: &str) -> Vec<Value> {
    // The rich VM's rows in order. A long line can be cut in two: the
    // console multiplexer shows what a writer holds when its line buffer
    // fills, and another writer's line (or a kernel message of the rich VM
    // itself) may come before the rest. A row that starts an object which
    // does not parse is joined with the rich VM's next rows until it does.
    let rows: Vec<&str> = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("[rich] "))
        .collect();
    let mut values = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        if rows[i].starts_with('{') {
            let mut text = rows[i].to_string();
            let mut next = i + 1;
            loop {
                if let Some(value) = whole_object(&text) {
                    values.push(value);
                    i = next - 1;
                    break;
                }
                let Some(row) = rows.get(next).filter(|_| next - i <= MAX_CUTS) else {
                    break;
                };
                if !is_kernel_message(row) {
                    text.push_str(row);
                }
                next += 1;
            }
        }
        i += 1;
    }
    values
}

/// The object `text` holds: all of it, or an object with a kernel message
/// of the rich VM glued to its end (the kernel printed between the
/// program's object and its newline).
fn whole_object(text: &str) -> Option<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(value);
    }
    let mut objects = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = objects.next()?.ok()?;
    let rest = &text[objects.byte_offset()..];
    is_kernel_message(rest).then_some(value)
}

/// Rows [`json_lines`] looks at to complete a cut line.
const MAX_CUTS: usize = 16;

/// A kernel log line (`[    4.183212] ...`).
fn is_kernel_message(row: &str) -> bool {
    row.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .is_some_and(|(stamp, _)| {
            let stamp = stamp.trim();
            !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
}

#[cfg(test)]
mod json_tests {
    use super::json_lines;

    #[test]
    fn a_line_cut_by_other_writers_is_put_back_together() {
        let transcript = "[rich] {\"a\":1}\n\
            [secure] secure-os: heartbeat 1\n\
            [rich] {\"eat\":\"0oRD\n\
            [secure] secure-os: vsock stats: accepted 1\n\
            [rich] [    4.183212] random: crng init done\n\
            [rich] pu/x\",\"nonce\":\"5a\"}\n\
            [rich] mvmm-rich: exit status 0\n\
            [rich] {not json\n";
        let values = json_lines(transcript);
        assert_eq!(values.len(), 2, "{values:?}");
        assert_eq!(values[0]["a"], 1);
        assert_eq!(values[1]["eat"], "0oRDpu/x");
        assert_eq!(values[1]["nonce"], "5a");
    }

    #[test]
    fn a_kernel_message_glued_to_an_object_leaves_the_object() {
        // Seen in the power-cut test: the acknowledgement of a delete, and
        // the rich kernel's message before the program's newline.
        let transcript = "[rich] {\"deleted\":\"4fee\"}[    3.878663] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\n\
            [rich] {\"credential\":\"5bdc\"}\n\
            [rich] {\"x\":1} and something else\n";
        let values = json_lines(transcript);
        assert_eq!(values.len(), 2, "{values:?}");
        assert_eq!(values[0]["deleted"], "4fee");
        assert_eq!(values[1]["credential"], "5bdc");
    }
}

/// A verified authorization.
#[derive(Debug)]
pub struct Verified {
    pub credential: String,
    pub counter: u64,
    pub token_base64: String,
    pub public_key: String,
    pub nonce: String,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no string field {name:?} in {v}"))
}

/// Checks the token of the request line against the enrolled public key and
/// the expected payment, as a backend would (mvmm-verify's library).
pub fn verify(enroll: &Value, request: &Value) -> Result<Verified, String> {
    let public_key = field(enroll, "public_key")?;
    let key = parse_public_key(public_key).map_err(|e| format!("enrolled key: {e}"))?;
    let token_base64 = field(request, "token")?;
    let token = parse_token(token_base64.as_bytes()).map_err(|e| format!("token: {e}"))?;
    let nonce_hex = field(request, "nonce")?;
    let mut nonce = [0u8; 32];
    hex_into(nonce_hex, &mut nonce)?;
    let expected = Expected {
        nonce,
        amount_minor: AMOUNT_MINOR,
        currency: Currency::from_code(CURRENCY).ok_or("currency")?,
        merchant: MERCHANT,
        last_counter: 0,
        credential: None,
    };
    let claims =
        verify_token(&token, &key, &expected).map_err(|e| format!("token rejected: {e:?}"))?;
    Ok(Verified {
        credential: field(request, "credential")?.to_string(),
        counter: claims.counter,
        token_base64: token_base64.to_string(),
        public_key: public_key.to_string(),
        nonce: nonce_hex.to_string(),
    })
}

fn hex_into(text: &str, out: &mut [u8]) -> Result<(), String> {
    if text.len() != out.len() * 2 {
        return Err(format!("{text:?} is not {} hex digits", out.len() * 2));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{text:?} is not hex"))?;
    }
    Ok(())
}

/// The host as the rich VM sees it under QEMU's user networking: its
/// 127.0.0.1 is 10.0.2.2 from the guest.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// The rich VM's shell command that pays over the network: enroll the card
/// at the backend (unless `enroll` is false), request the payment with the
/// backend's nonce and send the token there (`mvmm-pay --backend`), then
/// send the same token again (`mvmm-pay submit`). Each step prints a JSON
/// line and its exit status.
pub fn network_script(url: &str, enroll: bool, then: &str) -> String {
    let enroll = if enroll {
        format!("mvmm-pay --backend {url} enroll --label '{LABEL}' --json; ")
    } else {
        String::new()
    };
    let payment = format!("--amount {AMOUNT} --currency {CURRENCY} --merchant '{MERCHANT}'");
    format!(
        "{enroll}mvmm-pay --backend {url} request {payment} --json > /tmp/pay.json; \
         echo \"mvmm-pay request exited with $?\"; cat /tmp/pay.json; \
         token=$(sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p' /tmp/pay.json); \
         mvmm-pay --backend {url} submit --token \"$token\" {payment} --json; \
         echo \"mvmm-pay submit exited with $?\"; {then}"
    )
}

/// A payment backend: `mvmm-verify serve` in this process on 127.0.0.1,
/// spoken to over HTTP as any backend client would.
pub struct Backend {
    server: mvmm_verify::server::Running,
}

impl Backend {
    /// On an ephemeral port of 127.0.0.1.
    pub fn start() -> Result<Backend, String> {
        Backend::listen("127.0.0.1:0")
    }

    /// On `addr` (`127.0.0.1:PORT`; port 0 for any free one).
    pub fn listen(addr: &str) -> Result<Backend, String> {
        let server = mvmm_verify::server::start(addr, Default::default())?;
        Ok(Backend { server })
    }

    /// Its URL on the host.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Its URL from the rich VM (QEMU's user networking): reachable when
    /// it listens on the host's loopback or on all addresses.
    pub fn url_from_guest(&self) -> String {
        format!("http://{HOST_FROM_GUEST}:{}", self.server.addr().port())
    }

    /// Pins the device key (hex SEC1): the operator's act, from the
    /// provisioning record, which lets the backend check enrollment records
    /// the rich VM sends. Returns the device id.
    pub fn pin_device(&self, device_key: &str) -> Result<String, String> {
        let device = self.expect(
            "POST",
            "/v1/devices",
            &serde_json::json!({ "public_key": device_key }),
            201,
        )?;
        field(&device, "device_id").map(str::to_string)
    }

    /// Enrolls the credential of an enrollment record (mvmm-pay's JSON)
    /// for the pinned device `device_id`.
    pub fn enroll(&self, device_id: &str, enroll: &Value) -> Result<Value, String> {
        self.expect(
            "POST",
            "/v1/credentials",
            &serde_json::json!({
                "device_id": device_id,
                "credential": field(enroll, "credential")?,
                "label": field(enroll, "label")?,
                "public_key": field(enroll, "public_key")?,
                "signature": field(enroll, "signature")?,
            }),
            201,
        )
    }

    /// One HTTP request; returns the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value), String> {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut stream = std::net::TcpStream::connect(self.server.addr())
            .map_err(|e| format!("backend {}: {e}", self.server.addr()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{method} {path}: not an HTTP reply: {reply:?}"))?;
        let json = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .filter(|b| !b.trim().is_empty())
            .map_or(Ok(Value::Null), serde_json::from_str)
            .map_err(|e| format!("{method} {path}: {e}: {reply:?}"))?;
        Ok((status, json))
    }

    /// Calls and checks the status.
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        status: u16,
    ) -> Result<Value, String> {
        let (got, json) = self.call(method, path, body)?;
        if got != status {
            return Err(format!(
                "{method} {path}: status {got}, expected {status}: {json}"
            ));
        }
        Ok(json)
    }

    /// A fresh single-use nonce, hex.
    pub fn nonce(&self) -> Result<String, String> {
        let json = self.expect("POST", "/v1/nonces", &Value::Null, 201)?;
        field(&json, "nonce").map(str::to_string)
    }

    /// Pins the device key, enrolls the credential of `enroll` (mvmm-pay's
    /// JSON), verifies the token of `request`, then sends the same token
    /// again and checks the backend refuses it as a replay.
    pub fn accept_once(
        &self,
        device_key: &str,
        enroll: &Value,
        request: &Value,
    ) -> Result<Value, String> {
        let device_id = self.pin_device(device_key)?;
        self.enroll(&device_id, enroll)?;
        let check = serde_json::json!({
            "token": field(request, "token")?,
            "amount_minor": AMOUNT_MINOR,
            "currency": CURRENCY,
            "merchant": MERCHANT,
            "credential": field(request, "credential")?,
        });
        let accepted = self.expect("POST", "/v1/tokens/verify", &check, 200)?;
        let (status, refusal) = self.call("POST", "/v1/tokens/verify", &check)?;
        if status != 409 || refusal.get("error").and_then(Value::as_str) != Some("replay") {
            return Err(format!(
                "the replayed token was not refused as a replay: {status} {refusal}"
            ));
        }
        Ok(accepted)
    }
}
