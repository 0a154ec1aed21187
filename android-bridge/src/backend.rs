//! A client of the payment backend's HTTP API (`mvmm-verify serve`,
//! docs/verifier-service.md): what a wallet does with a token once the
//! secure VM has signed it.
//!
//! The rich VM reaches the backend over its own network (the NIC behind
//! mvmm's SMMU, docs/dma.md); the secure VM has no network at all, so the
//! token it signs leaves the phone only through here. The client is plain
//! HTTP/1.1 over `std::net` with JSON bodies (no TLS, no redirects, one
//! request per connection): the sample backend speaks plain HTTP and is
//! meant for localhost or behind a TLS terminator. A real wallet would use
//! its platform's HTTPS stack; nothing here is trusted by the backend anyway,
//! which checks every token's signature against the enrolled key.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};

use crate::EnrollmentRecord;
use crate::device_key::DeviceKey;

/// Largest answer read (the backend's bodies are small JSON objects).
const MAX_REPLY: u64 = 256 * 1024;

/// What went wrong talking to the backend (not its verdict: a refusal is an
/// [`Answer`] with an error status).
#[derive(Debug)]
pub enum BackendError {
    /// The URL is not `http://HOST:PORT[/PREFIX]`.
    BadUrl(String),
    /// No connection, or the connection failed mid-request.
    Unreachable { url: String, reason: String },
    /// The answer is not HTTP with a JSON body.
    BadAnswer { url: String, reason: String },
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::BadUrl(url) => write!(
                f,
                "backend URL {url:?} is not http://HOST:PORT[/PREFIX] (plain HTTP only)"
            ),
            BackendError::Unreachable { url, reason } => {
                write!(f, "cannot reach the backend at {url}: {reason}")
            }
            BackendError::BadAnswer { url, reason } => {
                write!(
                    f,
                    "the backend at {url} answered something else than JSON over HTTP: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for BackendError {}

/// The backend's answer: the HTTP status and the JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// A 2xx status.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The backend's error code (`replay`, `mismatch`, ...), if any.
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// `{"status": 200, "body": {...}}`, as `mvmm-pay` prints it.
    pub fn to_json(&self) -> Value {
        json!({ "status": self.status, "body": self.body })
    }
}

/// What the backend is asked to check a token against: the payment the
/// wallet asked for, not what the token claims.
#[derive(Clone, Debug)]
pub struct TokenCheck<'a> {
    /// The token, base64 of the tagged COSE_Sign1.
    pub token_base64: &'a str,
    pub amount_minor: u64,
    pub currency: &'a str,
    pub merchant: &'a str,
    /// The credential id (hex), when the wallet names it.
    pub credential: Option<&'a str>,
}

/// The payment backend at one base URL.
#[derive(Clone, Debug)]
pub struct Backend {
    url: String,
    /// `host:port`, as given.
    authority: String,
    /// The path prefix, without a trailing slash ("" for none).
    prefix: String,
    timeout: Duration,
}

impl Backend {
    /// Parses `http://HOST:PORT[/PREFIX]` (the port is required: the sample
    /// backend has no well-known one).
    pub fn new(url: &str, timeout: Duration) -> Result<Backend, BackendError> {
        let bad = || BackendError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        Ok(Backend {
            url: url.trim_end_matches('/').to_string(),
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            timeout,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /health`.
    pub fn health(&self) -> Result<Answer, BackendError> {
        self.call("GET", "/health", None)
    }

    /// `POST /v1/nonces`: a fresh single-use nonce from the backend.
    pub fn nonce(&self) -> Result<[u8; 32], BackendError> {
        let answer = self.call("POST", "/v1/nonces", None)?;
        let nonce = answer
            .body
            .get("nonce")
            .and_then(Value::as_str)
            .and_then(|n| hex::decode(n).ok())
            .and_then(|n| <[u8; 32]>::try_from(n).ok());
        match nonce {
            Some(nonce) if answer.accepted() => Ok(nonce),
            _ => Err(BackendError::BadAnswer {
                url: format!("{}/v1/nonces", self.url),
                reason: format!(
                    "status {}, {} (expected 201 and a 64-hex-digit nonce)",
                    answer.status, answer.body
                ),
            }),
        }
    }

    /// `POST /v1/credentials`: enrolls a credential the secure VM created,
    /// for the device whose key is `device` (which the backend must have
    /// pinned: it checks the record's signature with it).
    pub fn enroll(
        &self,
        device: &DeviceKey,
        record: &EnrollmentRecord,
    ) -> Result<Answer, BackendError> {
        let key = protocol::PublicKeyBytes::from_slice(&device.sec1()).unwrap_or_default();
        let device_id = protocol::eat::ueid(&key);
        let body = json!({
            "device_id": hex::encode(device_id),
            "credential": hex::encode(record.credential),
            "label": record.label.as_str(),
            "public_key": hex::encode(record.public_key.0),
            "signature": hex::encode(record.signature.0),
        });
        self.call("POST", "/v1/credentials", Some(&body))
    }

    /// `POST /v1/tokens/verify`: the backend's verdict on a token.
    pub fn verify(&self, check: &TokenCheck<'_>) -> Result<Answer, BackendError> {
        let mut body = json!({
            "token": check.token_base64,
            "amount_minor": check.amount_minor,
            "currency": check.currency,
            "merchant": check.merchant,
        });
        if let Some(credential) = check.credential {
            body["credential"] = json!(credential);
        }
        self.call("POST", "/v1/tokens/verify", Some(&body))
    }

    /// One request on a fresh connection.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, BackendError> {
        let url = format!("{}{path}", self.url);
        let unreachable = |reason: String| BackendError::Unreachable {
            url: url.clone(),
            reason,
        };
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable(format!("{} resolves to no address", self.authority)))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| unreachable(e.to_string()))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| unreachable(e.to_string()))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.prefix,
            self.authority,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| unreachable(e.to_string()))?;
        let mut reply = Vec::new();
        stream
            .take(MAX_REPLY)
            .read_to_end(&mut reply)
            .map_err(|e| unreachable(e.to_string()))?;
        parse_reply(&reply).map_err(|reason| BackendError::BadAnswer { url, reason })
    }
}

/// Status and JSON body of an HTTP/1.x answer read to the connection's end.
fn parse_reply(reply: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", reply.len()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("status line {status_line:?} is not HTTP/1.x"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    let body = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).map_err(|e| format!("status {status}, body {body:?}: {e}"))?
    };
    Ok(Answer { status, body })
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| format!("chunk without a size line: {body:?}"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("chunk size {size:?} is not hex"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| format!("chunk of {size} bytes cut short"))?;
        out.push_str(chunk);
        body = rest[size..].trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_http_a_host_and_a_port() {
        let t = Duration::from_secs(1);
        let b = Backend::new("http://10.0.2.2:8470", t).unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("10.0.2.2:8470", "")
        );
        let b = Backend::new("http://h:1/api/", t).unwrap();
        assert_eq!((b.authority.as_str(), b.prefix.as_str()), ("h:1", "/api"));
        assert_eq!(b.url(), "http://h:1/api");
        for bad in [
            "https://h:1",
            "10.0.2.2:8470",
            "http://10.0.2.2",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://h:x/",
        ] {
            let e = Backend::new(bad, t).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn replies_parse_plain_and_chunked() {
        let a =
            parse_reply(b"HTTP/1.1 409 Conflict\r\nX: y\r\n\r\n{\"error\":\"replay\"}").unwrap();
        assert_eq!(a.status, 409);
        assert_eq!(a.error(), Some("replay"));
        assert!(!a.accepted());
        let a = parse_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, json!({"a": 1}));
        assert!(a.accepted());
        assert!(parse_reply(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn an_unreachable_backend_names_its_url() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = Backend::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let e = b.health().unwrap_err();
        assert!(matches!(e, BackendError::Unreachable { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!("127.0.0.1:{port}/health")),
            "{e}"
        );
    }

    #[test]
    fn the_verifier_service_answers_health_and_nonces() {
        let server = mvmm_verify::server::start("127.0.0.1:0", Default::default()).unwrap();
        let b = Backend::new(
            &format!("http://{}", server.addr()),
            Duration::from_secs(10),
        )
        .unwrap();
        let health = b.health().unwrap();
        assert_eq!(health.status, 200);
        assert_eq!(health.body["status"], "ok");
        assert_ne!(b.nonce().unwrap(), b.nonce().unwrap());
        let refused = b
            .verify(&TokenCheck {
                token_base64: "AAAA",
                amount_minor: 1,
                currency: "EUR",
                merchant: "m",
                credential: None,
            })
            .unwrap();
        assert!(!refused.accepted(), "{refused:?}");
        assert!(refused.error().is_some(), "{refused:?}");
    }
}
