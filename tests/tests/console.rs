//! The console as a person uses it: `cargo xtask run`'s QEMU command line on
//! a pseudo-terminal, typed into and pasted into, and judged by what a
//! terminal emulator shows.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use mvmm_tests::{Console, Images, RichSource, load_test_board, prepare_rich_boot, qemu_command};
use nix::pty::openpty;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);
/// Rows of the emulated terminal: enough that nothing scrolls away.
const ROWS: u16 = 2000;

/// QEMU on a pseudo-terminal, and everything it wrote.
struct Terminal {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Boots Linux in the rich VM with an interactive shell, exactly as
    /// `cargo xtask run` does (quiet console), on a fresh pseudo-terminal.
    fn boot(work: &str) -> Terminal {
        let (board, qemu) = load_test_board().unwrap();
        let dir = Images::dir_from_env();
        let rich = prepare_rich_boot(
            &board,
            &qemu,
            &dir,
            &RichSource::built(&dir),
            None,
            &dir.join("work").join(work),
        )
        .unwrap();
        let mut cmd = qemu_command(
            &board,
            &qemu,
            &Images::with_rich_linux(&dir, &rich),
            Console::Terminal { verbose: false },
        );
        let pty = openpty(None, None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        cmd.stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        let child = cmd.spawn().expect("cannot start QEMU");
        drop(pty.slave);
        let master = File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            master,
            output,
        }
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }

    /// Types like a person: one key at a time.
    fn type_slowly(&mut self, text: &[u8]) {
        for &b in text {
            self.type_bytes(&[b]);
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The screen's rows as a terminal of 80 columns shows them.
    fn rows(&self) -> Vec<String> {
        let n = |v: u16| std::num::NonZero::new(v).unwrap();
        let mut parser = vt100::Parser::new(n(ROWS), n(80), 0);
        parser.process(&self.output.lock().unwrap());
        parser
            .screen()
            .rows(0, 80)
            .map(|r| r.trim_end().to_string())
            .collect()
    }

    /// Waits until `count` rows of the screen satisfy `wanted`.
    fn wait_rows(
        &mut self,
        what: &str,
        count: usize,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.rows();
            if rows.iter().filter(|r| wanted(r)).count() >= count {
                return;
            }
            if Instant::now() > deadline {
                let raw = self.output.lock().unwrap().len();
                eprintln!(
                    "{raw} bytes from QEMU; exited: {:?}",
                    self.child.try_wait().ok()
                );
                panic!(
                    "no {count} row(s) {what} on the screen after {timeout:?}; screen:\n{}",
                    rows.iter()
                        .filter(|r| !r.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn pasting_typing_and_line_editing_work_on_the_console() {
    let mut t = Terminal::boot("console-pty");
    t.wait_rows(
        "with the shell prompt",
        1,
        |r| r.starts_with("[rich] rich:") && r.ends_with('#'),
        BOOT,
    );

    // A paste of 4 KiB arrives at once: every byte reaches the shell.
    let lines: Vec<String> = (0..64)
        .map(|i| format!("{i:02}-{}", "abcdefghij0123456789".repeat(3)))
        .collect();
    let body = lines.join("\n") + "\n";
    assert!(
        body.len() >= 4096 - 100 && body.len() <= 4096,
        "{}",
        body.len()
    );
    let paste = format!("cat > /tmp/pasted <<'END'\n{body}END\nwc -c < /tmp/pasted\n");
    t.type_bytes(paste.as_bytes());
    let size = body.len().to_string();
    t.wait_rows(
        &format!("with the pasted size {size}"),
        1,
        |r| r == format!("[rich] {size}"),
        STEP,
    );
    t.type_bytes(b"sha256sum /tmp/pasted\n");
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    t.wait_rows(
        "with the pasted file's SHA-256",
        1,
        |r| r.contains(&digest),
        STEP,
    );

    // History: the up arrow brings the last command back.
    t.type_slowly(b"echo history-$((40+2))\r");
    t.wait_rows("with history-42", 1, |r| r == "[rich] history-42", STEP);
    t.type_slowly(b"\x1b[A\r");
    t.wait_rows(
        "with history-42 twice",
        2,
        |r| r == "[rich] history-42",
        STEP,
    );

    // Line editing: two left arrows, a character inserted.
    t.type_slowly(b"echo abc\x1b[D\x1b[DX\r");
    t.wait_rows("with the edited line", 1, |r| r == "[rich] aXbc", STEP);

    // The README's commands, pasted together, enroll a card and ask to pay;
    // the user answers the trusted prompt with y and Enter.
    t.type_bytes(
        b"mvmm-pay enroll --label 'My card'\n\
          mvmm-pay request --amount 12.50 --currency EUR --merchant 'Corner Cafe'\n",
    );
    t.wait_rows(
        "with the enrolled label",
        1,
        |r| r == "[rich] label: My card",
        STEP,
    );
    t.wait_rows(
        "with the trusted prompt",
        1,
        |r| r.starts_with("[TRUSTED secure] ") && r.contains("Approve? [y/n]"),
        STEP,
    );
    std::thread::sleep(mvmm_tests::payment::READ_TIME);
    t.type_slowly(b"y\r");
    t.wait_rows(
        "with the approved payment",
        1,
        |r| r == "[rich] counter: 1",
        STEP,
    );
    t.wait_rows(
        "with the merchant",
        1,
        |r| r == "[rich] merchant: Corner Cafe",
        STEP,
    );

    let rows = t.rows();
    let screen = rows.join("\n");
    // busybox's cursor-position query is never shown in part.
    assert!(!screen.contains("[6n"), "{screen}");
    assert!(!screen.contains('\u{1b}'), "{screen}");
    // Quiet by default: no heartbeat of the secure VM among the shell's rows.
    assert!(!screen.contains("heartbeat"), "{screen}");
    // Every row belongs to a writer.
    for row in rows.iter().filter(|r| !r.is_empty()) {
        assert!(
            ["[rich]", "[mvmm]", "[secure]", "[TRUSTED secure]"]
                .iter()
                .any(|p| row.starts_with(p)),
            "row without a writer's prefix: {row:?}"
        );
    }
    t.type_bytes(b"poweroff -f\n");
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = t.child.try_wait() {
            assert!(status.success(), "QEMU exit status {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("QEMU did not exit after poweroff");
}
