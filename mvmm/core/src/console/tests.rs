use super::*;
use proptest::prelude::*;

const PREFIXES: &[&str] = &["[mvmm] ", "[rich] ", "[secure] "];
const MVMM: usize = 0;
const RICH: usize = 1;
const SECURE: usize = 2;

/// Writes each step's bytes, then flushes that writer (as mvmm does when a
/// VM goes idle).
fn run(steps: &[(usize, &[u8])]) -> String {
    String::from_utf8_lossy(&run_bytes(steps)).into_owned()
}

fn run_bytes(steps: &[(usize, &[u8])]) -> Vec<u8> {
    let mut mux = ConsoleMux::new(PREFIXES);
    let mut out = Vec::new();
    for (source, bytes) in steps {
        for b in *bytes {
            mux.write(*source, *b, &mut |o| out.push(o));
        }
        mux.flush(*source, &mut |o| out.push(o));
    }
    out
}

/// A terminal emulator of `rows` rows and [`WIDTH`] columns.
fn terminal(rows: u16) -> vt100::Parser {
    use core::num::NonZero;
    let n = |v: u16| NonZero::new(v).expect("non-zero size");
    vt100::Parser::new(n(rows), n(WIDTH), 0)
}

/// The rows a terminal of `WIDTH` columns shows for `bytes`.
fn screen(bytes: &[u8]) -> Vec<String> {
    let mut parser = terminal(48);
    parser.process(bytes);
    parser
        .screen()
        .rows(0, WIDTH)
        .map(|r| r.trim_end().to_string())
        .collect()
}

#[test]
fn lines_written_at_the_same_time_do_not_interleave() {
    let mut mux = ConsoleMux::new(PREFIXES);
    let mut out = Vec::new();
    let (a, b) = (b"probe: ready\n", b"secure-os: ready\n");
    for (i, &y) in b.iter().enumerate() {
        if let Some(&x) = a.get(i) {
            mux.write(RICH, x, &mut |o| out.push(o));
        }
        mux.write(SECURE, y, &mut |o| out.push(o));
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[rich] probe: ready\r\n[secure] secure-os: ready\r\n"
    );
}

#[test]
fn a_full_buffer_is_shown_without_a_newline() {
    let mut mux = ConsoleMux::new(PREFIXES);
    let mut out = Vec::new();
    for _ in 0..LINE_BUFFER {
        mux.write(RICH, b'x', &mut |o| out.push(o));
    }
    let shown = screen(&out);
    // 160 columns of text wrap into rows of the multiplexer's own.
    assert_eq!(shown[0], format!("[rich] {}", "x".repeat(73)));
    assert_eq!(shown[1], format!("[rich] {}", "x".repeat(73)));
    assert_eq!(shown[2], format!("[rich] {}", "x".repeat(14)));
}

#[test]
fn lines_get_their_writers_prefix() {
    assert_eq!(
        run(&[(RICH, b"hello\n"), (SECURE, b"ready\n")]),
        "[rich] hello\r\n[secure] ready\r\n"
    );
    assert_eq!(run(&[(RICH, b"\n")]), "[rich] \r\n");
}

#[test]
fn an_interrupted_line_is_broken_and_reprefixed() {
    assert_eq!(
        run(&[(RICH, b"/ # "), (SECURE, b"tick\n"), (RICH, b"ls\n")]),
        "[rich] / # \r\n[secure] tick\r\n[rich] ls\r\n"
    );
}

#[test]
fn escape_sequences_are_dropped_whole() {
    // busybox asks for the cursor position at every prompt: nothing of the
    // query is shown.
    assert_eq!(run(&[(RICH, b"/ # \x1b[6n")]), "[rich] / # ");
    for sequence in [
        &b"\x1b[2J\x1b[H"[..],  // clear screen, home
        b"\x1b[5A",             // cursor up
        b"\x1b[10;1H",          // cursor position
        b"\x1b]0;title\x07",    // window title, BEL-ended
        b"\x1b]2;title\x1b\\",  // window title, ST-ended
        b"\x1bP+q544e\x1b\\",   // DCS query
        b"\x1b[?1049h",         // alternate screen
        b"\x1b[31m",            // colour
        b"\x1b7\x1b8",          // save and restore cursor
        b"\x1b#8",              // screen alignment test
        b"\xc2\x9b2J",          // C1 CSI in UTF-8
        b"\xc2\x9d0;t\xc2\x9c", // C1 OSC
        b"\x1b[1K\x1b[2K",      // erase the start of the row
    ] {
        let mut line = b"a".to_vec();
        line.extend_from_slice(sequence);
        line.extend_from_slice(b"b\n");
        assert_eq!(run(&[(RICH, &line)]), "[rich] ab\r\n", "{sequence:x?}");
    }
    // A sequence split across writes is still dropped whole.
    assert_eq!(
        run(&[(RICH, b"a\x1b["), (RICH, b"3"), (RICH, b"8;5;1mb\n")]),
        "[rich] ab\r\n"
    );
    // CAN aborts a sequence; what follows is text again.
    assert_eq!(run(&[(RICH, b"\x1b[12\x18x\n")]), "[rich] x\r\n");
}

#[test]
fn line_editing_stays_inside_the_writers_row() {
    // Cursor left is clamped to the text; carriage return re-prints the
    // prefix; erase to end of row and cursor right are kept.
    let out = run_bytes(&[(RICH, b"/ # lsx\x1b[D\x1b[K\x1b[20D\x1b[C\n")]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[rich] / # lsx\x1b[1D\x1b[K\x1b[6D\x1b[1C\r\n"
    );
    assert_eq!(screen(&out)[0], "[rich] / # ls");
    // A shell redrawing its line from history: \r, prompt, text, ESC[J.
    let out = run_bytes(&[(RICH, b"/ # echo one\r/ # echo two\x1b[J\n")]);
    assert_eq!(screen(&out)[0], "[rich] / # echo two");
    // Backspace works inside one's own row, but not past its start.
    assert_eq!(
        run(&[(RICH, b"ab\x08\x08\x08c\n")]),
        "[rich] ab\x08\x08c\r\n"
    );
    // Once another writer's row came in between, nothing moves back.
    let out = run_bytes(&[
        (RICH, b"/ # "),
        (SECURE, b"tick\n"),
        (RICH, b"\x08\x08\rX\n"),
    ]);
    assert_eq!(
        screen(&out)[..3],
        ["[rich] / #", "[secure] tick", "[rich] X"]
    );
}

#[test]
fn a_guest_cannot_start_a_row_with_another_prefix() {
    for attack in [
        &b"\r[secure] pay?\n"[..],
        b"\x1b[2K\r\x08\x08[secure] x\n",
        // Exactly filling a row, then the fake prefix on the wrapped row.
        &[b"x".repeat(73), b"[secure] Wrong PIN, try again\n".to_vec()].concat(),
        // Bytes that take no column, counted by a naive filter.
        &[
            "\u{200b}".repeat(10).into_bytes(),
            b"x".repeat(70),
            b"[TRUSTED secure] ok\n".to_vec(),
        ]
        .concat(),
        // Wide characters.
        &["\u{4e2d}".repeat(40).into_bytes(), b"[secure] x\n".to_vec()].concat(),
        // Right-to-left override.
        "\u{202e}] eruces[ x\n".as_bytes(),
    ] {
        let rows = screen(&run_bytes(&[(RICH, attack)]));
        for row in rows.iter().filter(|r| !r.is_empty()) {
            assert!(row.starts_with("[rich] "), "{row:?} from {attack:x?}");
        }
    }
}

#[test]
fn utf8_text_passes_through_and_bad_utf8_shows_as_question_marks() {
    assert_eq!(
        run(&[(SECURE, "Caf\u{e9} 12,50 \u{20ac}\n".as_bytes())]),
        "[secure] Caf\u{e9} 12,50 \u{20ac}\r\n"
    );
    assert_eq!(run(&[(RICH, b"a\xff\xc3b\xe2\x82\n")]), "[rich] a??b?\r\n");
}

#[test]
fn lines_above_the_console_level_are_hidden_with_their_marker() {
    let mut mux = ConsoleMux::new(PREFIXES);
    let mut out = Vec::new();
    mux.write_str(
        SECURE,
        "<7>heartbeat 1\n<6>info\nplain <7>\n<x>\n<",
        &mut |o| out.push(o),
    );
    mux.flush(SECURE, &mut |o| out.push(o));
    mux.write_str(SECURE, "4\n", &mut |o| out.push(o));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[secure] info\r\n[secure] plain <7>\r\n[secure] <x>\r\n[secure] <4\r\n"
    );
    mux.set_level(VERBOSE_LEVEL);
    out.clear();
    mux.write_str(SECURE, "<7>heartbeat 2\n", &mut |o| out.push(o));
    assert_eq!(String::from_utf8_lossy(&out), "[secure] heartbeat 2\r\n");
    // A hidden line hides its escape sequences and text alike.
    mux.set_level(DEFAULT_LEVEL);
    out.clear();
    mux.write_str(SECURE, "<7>\x1b]0;t\x07x\nshown\n", &mut |o| out.push(o));
    assert_eq!(String::from_utf8_lossy(&out), "[secure] shown\r\n");
}

#[test]
fn a_changed_prefix_applies_from_the_next_line() {
    let mut mux = ConsoleMux::new(PREFIXES);
    let mut out = Vec::new();
    mux.write_str(SECURE, "a\npartial", &mut |o| out.push(o));
    mux.set_prefix(SECURE, "[secure|TRUSTED] ", &mut |o| out.push(o));
    mux.write_str(SECURE, "Pay 12.50 EUR?\n", &mut |o| out.push(o));
    mux.set_prefix(SECURE, "[secure] ", &mut |o| out.push(o));
    mux.write_str(SECURE, "b\n", &mut |o| out.push(o));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[secure] a\r\n[secure] partial\r\n[secure|TRUSTED] Pay 12.50 EUR?\r\n[secure] b\r\n"
    );
}

#[test]
fn unknown_sources_are_ignored() {
    assert_eq!(run(&[(7, b"x\n")]), "");
}

#[test]
fn the_input_queue_keeps_order_drops_beyond_its_size_and_clears() {
    let mut q = InputQueue::new();
    for i in 0..INPUT_QUEUE + 10 {
        q.push(i as u8);
    }
    assert_eq!(q.len(), INPUT_QUEUE);
    assert_eq!(q.take_dropped(), 10);
    assert_eq!(q.take_dropped(), 0);
    for i in 0..100 {
        assert_eq!(q.pop(), Some(i as u8));
    }
    q.push(0xaa);
    assert_eq!(q.clear(), INPUT_QUEUE - 100 + 1);
    assert_eq!(q.pop(), None);
    assert!(q.is_empty());
}

/// Bytes a hostile guest might write: plain text, controls, pieces of
/// escape sequences, UTF-8 of every width, and other writers' prefixes.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..8),
        2 => proptest::collection::vec(0x20u8..0x7f, 0..90),
        2 => Just(b"[secure] ".to_vec()),
        1 => Just(b"[TRUSTED secure] ".to_vec()),
        1 => Just(b"[mvmm] ".to_vec()),
        2 => prop_oneof![
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\x08".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"\x1b[".to_vec()),
            Just(b"\x1b]".to_vec()),
            Just(b"\x1b[99D".to_vec()),
            Just(b"\x1b[99C".to_vec()),
            Just(b"\x1b[J".to_vec()),
            Just(b"\x1b[K".to_vec()),
            Just(b"\x1b[A".to_vec()),
            Just(b"\xc2\x9b".to_vec()),
            Just(b"\x1b\\".to_vec()),
        ],
        2 => any::<String>().prop_map(String::into_bytes),
        1 => proptest::collection::vec(
            prop_oneof![
                Just("\u{200b}"), Just("\u{301}"), Just("\u{4e2d}"), Just("\u{1f600}"),
                Just("\u{202e}"), Just("\u{feff}"), Just("\u{e9}"), Just("\u{ff21}"),
            ],
            0..60
        )
        .prop_map(|v| v.concat().into_bytes()),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the rich VM writes, split into writes and flushes however
    /// it likes, every row a terminal shows for it starts with `[rich] `;
    /// and the secure VM's lines written in between come out whole on rows
    /// of their own.
    #[test]
    fn no_rich_vm_output_makes_a_row_that_starts_with_another_prefix(
        chunks in proptest::collection::vec(hostile(), 1..6),
        secure_between in any::<bool>(),
    ) {
        let mut steps: Vec<(usize, &[u8])> = Vec::new();
        for chunk in &chunks {
            steps.push((RICH, chunk));
            if secure_between {
                steps.push((SECURE, b"Pay 12.50 EUR\n"));
            }
        }
        let out = run_bytes(&steps);
        let mut parser = terminal(400);
        parser.process(&out);
        let mut secure_rows = 0;
        for row in parser.screen().rows(0, WIDTH) {
            let row = row.trim_end();
            if row.is_empty() {
                continue;
            }
            if row.starts_with("[secure] ") {
                prop_assert_eq!(row, "[secure] Pay 12.50 EUR");
                secure_rows += 1;
                continue;
            }
            prop_assert!(row.starts_with("[rich] ") || row == "[rich]", "row {:?}", row);
        }
        if secure_between {
            // Each secure line is on a row of its own, none overwritten
            // (rows may scroll off the 400-row screen only for huge input).
            prop_assert!(secure_rows <= chunks.len());
        }
    }

    /// Nothing panics, and every row the multiplexer emits starts with a
    /// prefix, for any writer and any bytes.
    #[test]
    fn any_bytes_from_any_writer_are_handled(
        steps in proptest::collection::vec((0usize..4, proptest::collection::vec(any::<u8>(), 0..200)), 0..10),
        level in 0u8..10,
    ) {
        let mut mux = ConsoleMux::new(PREFIXES);
        mux.set_level(level);
        let mut out = Vec::new();
        for (source, bytes) in &steps {
            for &b in bytes {
                mux.write(*source, b, &mut |o| out.push(o));
            }
            mux.flush(*source, &mut |o| out.push(o));
        }
        for row in screen(&out).iter().filter(|r| !r.is_empty()) {
            prop_assert!(
                PREFIXES.iter().any(|p| row.starts_with(p) || row == p.trim_end()),
                "row {:?}", row
            );
        }
        let _ = MVMM;
    }
}

#[test]
fn crlf_ends_a_row_like_lf_and_a_bare_cr_returns_to_the_prefix() {
    assert_eq!(
        run(&[(RICH, b"one\r\ntwo\r\n")]),
        "[rich] one\r\n[rich] two\r\n"
    );
    assert_eq!(run(&[(RICH, b"abc\rX\n")]), "[rich] abc\r[rich] X\r\n");
    // A return left pending when another writer comes in is dropped with
    // the row.
    assert_eq!(
        run(&[(RICH, b"abc\r"), (SECURE, b"s\n"), (RICH, b"d\n")]),
        "[rich] abc\r\n[secure] s\r\n[rich] d\r\n"
    );
}

#[test]
fn focus_goes_to_the_secure_vm_routed_first_and_back_to_the_rich_vm_routed_after() {
    use crate::partition::tests::BOARD;
    // vm 0 is the rich VM on CPUs 0 and 1, vm 1 the secure VM on CPU 2.
    let take = focus_change(&BOARD, 1, true);
    assert_eq!(
        take,
        FocusChange {
            focus: 1,
            uart_cpu: Some(2),
            route_first: true,
            trusted: true
        }
    );
    let release = focus_change(&BOARD, 1, false);
    assert_eq!(
        release,
        FocusChange {
            focus: 0,
            uart_cpu: Some(0),
            route_first: false,
            trusted: false
        }
    );
    // The rich VM's writer can never print the trusted prefix: its rows
    // start with its own prefix.
    let out = run(&[
        (RICH, TRUSTED_PREFIX.as_bytes()),
        (RICH, b"Approve? [y/n]\n"),
    ]);
    assert!(
        out.lines().all(|l| !l.starts_with(TRUSTED_PREFIX)),
        "{out:?}"
    );
}
