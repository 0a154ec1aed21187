//! How packets reach the secure VM: framed byte streams over AF_VSOCK (the
//! rich VM) or a Unix socket (the host simulator).
//!
//! Each packet travels as `u32 BE length || packet`, length at most
//! [`protocol::framing::MAX_FRAME_LEN`] (the framing both sides use).
//! No `unsafe` here: AF_VSOCK comes from the `vsock` crate.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use protocol::framing::{FRAME_HEADER_LEN, decode_frame_header, encode_frame_header};

use crate::BridgeError;

/// The secure VM's vsock context id and the payment app's port (mvmm's
/// ABI, `protocol::ports`, shared with secure-os and the board's policy).
pub use protocol::ports::{PAYMENT_PORT, SECURE_VM_CID};

/// Why a channel operation failed.
#[derive(Debug)]
pub enum ChannelError {
    /// The peer closed the connection (or an earlier failure closed it).
    Closed,
    /// Nothing (or not all of it) arrived before the timeout.
    TimedOut,
    /// The peer announced a frame above the bound.
    FrameTooLong(u32),
    /// Any other I/O error.
    Io(io::Error),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Closed => f.write_str("closed"),
            ChannelError::TimedOut => f.write_str("timed out"),
            ChannelError::FrameTooLong(len) => write!(f, "frame of {len} bytes announced"),
            ChannelError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Carries whole packets to the secure side and back.
pub trait Channel: Send {
    /// Sends one packet.
    fn send(&mut self, packet: &[u8], timeout: Duration) -> Result<(), ChannelError>;
    /// Waits at most `timeout` for the next packet.
    fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, ChannelError>;
}

/// A byte stream that can time out its reads and writes.
pub trait Stream: Read + Write + Send {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, timeout)
    }
}

#[cfg(target_os = "linux")]
impl Stream for vsock::VsockStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        vsock::VsockStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        vsock::VsockStream::set_write_timeout(self, timeout)
    }
}

/// A [`Channel`] over a framed byte stream.
///
/// # Invariants
/// When `broken` is set the stream is out of step (a frame was cut by a
/// timeout or an error) and every later call fails with `Closed`.
pub struct StreamChannel<S: Stream> {
    stream: S,
    broken: bool,
}

impl<S: Stream> StreamChannel<S> {
    pub fn new(stream: S) -> Self {
        StreamChannel {
            stream,
            broken: false,
        }
    }

    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), ChannelError> {
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::TimedOut);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(ChannelError::Io)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ChannelError::TimedOut);
                }
                Err(e) => return Err(closed_or(e)),
            }
        }
        Ok(())
    }
}

fn closed_or(e: io::Error) -> ChannelError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::NotConnected => ChannelError::Closed,
        _ => ChannelError::Io(e),
    }
}

impl<S: Stream> Channel for StreamChannel<S> {
    fn send(&mut self, packet: &[u8], timeout: Duration) -> Result<(), ChannelError> {
        if self.broken {
            return Err(ChannelError::Closed);
        }
        let header = encode_frame_header(packet.len()).ok_or(ChannelError::FrameTooLong(
            u32::try_from(packet.len()).unwrap_or(u32::MAX),
        ))?;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + packet.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(packet);
        let result = self
            .stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| self.stream.write_all(&frame))
            .and_then(|()| self.stream.flush());
        result.map_err(|e| {
            self.broken = true;
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ChannelError::TimedOut,
                _ => closed_or(e),
            }
        })
    }

    fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, ChannelError> {
        if self.broken {
            return Err(ChannelError::Closed);
        }
        let deadline = Instant::now() + timeout;
        let result = (|| {
            let mut header = [0u8; FRAME_HEADER_LEN];
            self.read_exact_by(&mut header, deadline)?;
            let len = decode_frame_header(header).map_err(|e| ChannelError::FrameTooLong(e.len))?;
            let mut packet = vec![0u8; len];
            self.read_exact_by(&mut packet, deadline)?;
            Ok(packet)
        })();
        if result.is_err() {
            self.broken = true;
        }
        result
    }
}

/// Where the secure VM's payment app listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// AF_VSOCK stream to `cid:port` (inside the rich VM).
    Vsock { cid: u32, port: u32 },
    /// A Unix stream socket (the host simulator).
    Unix(PathBuf),
}

impl Transport {
    /// The payment app in the secure VM (`vsock:4:7100` on every board).
    pub fn secure_vm() -> Transport {
        Transport::Vsock {
            cid: SECURE_VM_CID,
            port: PAYMENT_PORT,
        }
    }

    /// Connects. AF_VSOCK connects time out after the kernel's default (2 s).
    pub fn open(&self) -> Result<Box<dyn Channel>, BridgeError> {
        let connect = |error| BridgeError::Connect {
            target: self.to_string(),
            error,
        };
        match self {
            Transport::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(connect)?;
                Ok(Box::new(StreamChannel::new(stream)))
            }
            #[cfg(target_os = "linux")]
            Transport::Vsock { cid, port } => {
                let stream =
                    vsock::VsockStream::connect_with_cid_port(*cid, *port).map_err(connect)?;
                Ok(Box::new(StreamChannel::new(stream)))
            }
            #[cfg(not(target_os = "linux"))]
            Transport::Vsock { .. } => Err(connect(io::Error::new(
                io::ErrorKind::Unsupported,
                "AF_VSOCK needs Linux",
            ))),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Transport::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for Transport {
    type Err = String;

    /// `vsock:CID:PORT` or `unix:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: unix: needs a socket path"));
            }
            return Ok(Transport::Unix(path.into()));
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            let (cid, port) = rest
                .split_once(':')
                .ok_or_else(|| format!("{s:?}: expected vsock:CID:PORT"))?;
            let number = |what: &str, v: &str| {
                v.parse::<u32>()
                    .map_err(|e| format!("{s:?}: {what} {v:?} is not a number: {e}"))
            };
            return Ok(Transport::Vsock {
                cid: number("CID", cid)?,
                port: number("port", port)?,
            });
        }
        Err(format!(
            "{s:?}: expected vsock:CID:PORT or unix:PATH (the secure VM is vsock:{SECURE_VM_CID}:{PAYMENT_PORT})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse() {
        assert_eq!("vsock:4:7100".parse(), Ok(Transport::secure_vm()));
        assert_eq!("unix:/tmp/s".parse(), Ok(Transport::Unix("/tmp/s".into())));
        for bad in ["", "tcp:1", "vsock:4", "vsock:x:1", "unix:"] {
            assert!(bad.parse::<Transport>().is_err(), "{bad}");
        }
        assert_eq!(Transport::secure_vm().to_string(), "vsock:4:7100");
    }

    #[test]
    fn a_frame_cut_by_the_peer_closes_the_channel() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let mut channel = StreamChannel::new(a);
        b.write_all(&[0, 0, 0, 5, 1, 2]).expect("write");
        drop(b);
        assert!(matches!(
            channel.recv(Duration::from_secs(1)),
            Err(ChannelError::Closed)
        ));
        assert!(matches!(
            channel.send(&[1], Duration::from_secs(1)),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn oversized_frames_and_silence_are_refused() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let mut channel = StreamChannel::new(a);
        assert!(matches!(
            channel.recv(Duration::from_millis(20)),
            Err(ChannelError::TimedOut)
        ));
        let (a, _keep) = UnixStream::pair().expect("pair");
        let mut channel = StreamChannel::new(a);
        b.write_all(&u32::MAX.to_be_bytes()).expect("write");
        let (c, mut d) = UnixStream::pair().expect("pair");
        d.write_all(&u32::MAX.to_be_bytes()).expect("write");
        let mut channel2 = StreamChannel::new(c);
        assert!(matches!(
            channel2.recv(Duration::from_secs(1)),
            Err(ChannelError::FrameTooLong(u32::MAX))
        ));
        drop(channel.send(&[], Duration::from_secs(1)));
    }
}
