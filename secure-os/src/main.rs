//! secure-os: the secure VM's image. Prints its banner, brings up the heap,
//! entropy, the device key and the vsock device, then serves the payment app
//! (vsock port 7100) and an echo service (7101), runs the text-mode trusted
//! prompt on the console, and prints a heartbeat every five seconds of
//! virtual-timer time. See docs/secure-os.md.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "secure-os runs only in the secure VM of mVMM: build it with --target aarch64-unknown-none"
    );
    std::process::exit(1);
}

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use guest_rt::arch::heap;
    use guest_rt::{println, rt};
    use payment_app::service::Outcome;
    use payment_app::{BootState, PaymentApp, Policy, Service, Storage, StorageError};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng as _, SeedableRng};
    use secure_os::arch::flash::{CfiFlash, ProbeError};
    use secure_os::arch::hypercall::HypercallLink;
    use secure_os::arch::virtio::{
        self, Input, Kind, SocketError, Vsock, VsockAddr, VsockEventType,
    };
    use secure_os::arch::{entropy, framebuffer, hypercall, provision};
    use secure_os::keys::{self, SecurityWord};
    use secure_os::prompt::{self, ConsoleGate, Prompt, SetupPrompt, SetupStep, Step};
    use secure_os::rollback::{RollbackCounter, StoreCounter};
    use secure_os::screen::{self, Framebuffer};
    use secure_os::server::{Approval, ECHO_PORT, Endpoint, PAYMENT_PORT, Stats, Switchboard, Ui};
    use secure_os::touch::{Effect, Session};
    use secure_store::{RecordError, SlotState, Store, slot_name};
    use sha2::{Digest, Sha256};
    use trusted_ui::guard::{Ending, PromptLimiter};
    use zeroize::Zeroize as _;

    guest_rt::entry!(main);

    /// Seconds between heartbeat lines.
    const HEARTBEAT_SECONDS: u64 = 5;
    /// Timer interrupts per second (the idle polling rate).
    const TICK_HZ: u64 = 100;

    // The vsock device and the virtual GIC distributor come from the board
    // file (boards/<board>/board.toml).
    use secure_os::arch::board::{GICD_BASE, INPUT_BASE, INPUT_INTID, VSOCK_BASE, VSOCK_INTID};
    /// One virtio-mmio register window.
    const VSOCK_SIZE: usize = mvmm_core::partition::VIRTIO_MMIO_SLOT as usize;
    /// Receive buffer per vsock connection (our credit to the peer).
    const CONNECTION_BUFFER: u32 = 64 * 1024;
    /// Largest payload per vsock packet we send (fits a 4 KiB RX buffer
    /// with its 44-byte header).
    const MAX_SEND_CHUNK: usize = 4096 - 64;
    /// Device events handled per loop iteration.
    const EVENTS_PER_ROUND: usize = 64;
    /// Console bytes read per loop iteration during a prompt.
    const KEYS_PER_ROUND: usize = 16;
    /// Input events read per loop iteration.
    const INPUT_PER_ROUND: usize = 64;

    fn main() -> ! {
        let frequency = rt::timer_frequency();
        println!(
            "secure-os: ready (v{}, EL{}, timer {} Hz)",
            env!("CARGO_PKG_VERSION"),
            rt::current_el(),
            frequency
        );
        rt::start_tick((frequency / TICK_HZ).max(1));
        let clock = Clock { frequency };
        let mut services = boot();

        let period = frequency.saturating_mul(HEARTBEAT_SECONDS).max(1);
        let mut next_beat = rt::now().wrapping_add(period);
        let mut beats = 0u64;
        let mut last_stats = Stats::default();
        loop {
            let now = rt::now();
            let active = services.as_mut().is_some_and(|s| s.run_once(clock.ms(now)));
            while rt::now() >= next_beat {
                next_beat = next_beat.wrapping_add(period);
                beats += 1;
                // Debug level (`<7>`): mvmm's console shows it only when
                // verbose (`cargo xtask run --verbose`, the tests).
                println!("<7>secure-os: heartbeat {beats}");
                if let Some(s) = services.as_ref() {
                    let stats = s.board.stats();
                    if stats != last_stats {
                        last_stats = stats;
                        println!(
                            "<7>secure-os: vsock stats: accepted {}, refused {}, frames {}, closed for violations {}, evicted {}, idle {}",
                            stats.accepted,
                            stats.refused,
                            stats.frames,
                            stats.violations,
                            stats.evicted,
                            stats.idle
                        );
                    }
                }
            }
            // Work done: look again at once. Otherwise sleep until the next
            // interrupt: the tick, or the vsock device when a packet arrives
            // (the trusted prompt reads keys on ticks).
            if !active {
                rt::wait_for_interrupt();
            }
        }
    }

    /// Converts counter ticks.
    #[derive(Clone, Copy)]
    struct Clock {
        frequency: u64,
    }

    impl Clock {
        fn ms(&self, ticks: u64) -> u64 {
            (u128::from(ticks) * 1000 / u128::from(self.frequency.max(1))) as u64
        }
    }

    /// Everything the payment service runs on.
    struct Services {
        vsock: Vsock,
        board: Switchboard<FlashStorage>,
        entropy: Entropy,
        rng: ChaCha20Rng,
        word: SecurityWord,
        prompt: Option<Prompt>,
        /// The arming and quiet-before-release rules of the prompt on
        /// screen, or of a cancelled one that waits for quiet input.
        gate: Option<ConsoleGate>,
        /// Backs prompts off after unanswered ones.
        limiter: PromptLimiter,
        focus_held: bool,
        /// The private framebuffer the approval screen is drawn into, when
        /// the board has a display.
        screen: Option<Framebuffer<'static>>,
        display_held: bool,
        /// The trusted path's keyboard and touch screen (mvmm routes events
        /// here only while this VM holds the path).
        input: Option<Input>,
        /// The input rules of the approval on the display.
        session: Option<Session>,
        /// The counter when the last request's bytes were read (for the
        /// prompt-to-pixels figure).
        request_arrived: u64,
        /// When the user's approval was taken and how long signing and
        /// storing it took (counter ticks), until its response is sent:
        /// the bench's breakdown of an approval.
        answered: Option<(u64, u64)>,
        /// The setup on screen: the words offered and the console's keys.
        setup: Option<(payment_app::SetupWords, SetupPrompt)>,
        recv_buf: Box<[u8]>,
    }

    /// Brings up heap, entropy, device key and vsock; `None` (with the
    /// reason printed) when the payment service must stay off.
    fn boot() -> Option<Services> {
        let (heap_base, heap_size) = heap::init();
        println!("secure-os: heap {} KiB at {heap_base:#x}", heap_size / 1024);
        let mut ok = true;

        let mut entropy = Entropy::probe();
        let seed = entropy.as_mut().and_then(Entropy::fresh);
        match (&entropy, &seed) {
            (Some(e), Some(_)) => println!("secure-os: entropy from {}", e.describe()),
            (Some(e), None) => {
                println!(
                    "secure-os: entropy source {} gave no usable output: payment service disabled",
                    e.describe()
                );
                ok = false;
            }
            (None, _) => ok = false,
        }

        let page = provision::page_address();
        // The storage root secret: what the sealing key and the rollback
        // counter's key derive from (CDI_Seal); wiped once the store is open.
        let mut storage_root = [0u8; 32];
        let identity = match provision::take_handover() {
            Ok(secrets) => {
                // The device key follows this exact image (CDI_Attest); the
                // security word and the storage stay with the device and
                // the authority (CDI_Seal).
                let key = keys::derive_device_key(&secrets.cdi_attest);
                let word = keys::security_word(&secrets.cdi_seal);
                storage_root.copy_from_slice(&secrets.cdi_seal[..]);
                println!(
                    "secure-os: measured boot: security version {}, board {}",
                    secrets.measurements.security_version, secrets.measurements.board
                );
                match key {
                    Ok(key) => {
                        println!("secure-os: device key {}", keys::compressed_hex(&key));
                        Some((key, word, secrets.measurements))
                    }
                    Err(_) => {
                        println!(
                            "secure-os: no valid device key from the CDI: payment service disabled"
                        );
                        None
                    }
                }
            }
            Err(why) => {
                println!("secure-os: no hand-over at {page:#x} ({why}): payment service disabled");
                None
            }
        };
        println!("secure-os: hand-over page {page:#x} zeroed");

        let vsock = match virtio::probe_mmio(VSOCK_BASE, VSOCK_SIZE, Kind::Socket) {
            Ok(transport) => match virtio::VsockDriver::new(transport) {
                Ok(driver) => {
                    let mut vsock = Vsock::new_with_capacity(driver, CONNECTION_BUFFER);
                    vsock.listen(PAYMENT_PORT);
                    vsock.listen(ECHO_PORT);
                    println!("secure-os: vsock guest cid {}", vsock.guest_cid());
                    // Packets wake the idle loop through the device's
                    // interrupt instead of waiting for the next tick.
                    rt::enable_spi(GICD_BASE, VSOCK_INTID);
                    Some(vsock)
                }
                Err(e) => {
                    println!(
                        "secure-os: vsock device at {VSOCK_BASE:#010x} failed to start ({e}): payment service disabled"
                    );
                    None
                }
            },
            Err(e) => {
                println!(
                    "secure-os: vsock device missing at {VSOCK_BASE:#010x}: payment service disabled ({e})"
                );
                None
            }
        };

        let input = open_input();

        let (Some(vsock), Some((key, word, measurements)), Some(mut entropy), Some(seed), true) =
            (vsock, identity, entropy, seed, ok)
        else {
            storage_root.zeroize();
            return None;
        };
        let storage = match entropy.fresh() {
            Some(store_seed) => open_storage(&storage_root, store_seed),
            None => {
                println!(
                    "secure-os: storage: no entropy for record nonces: payment service disabled"
                );
                None
            }
        };
        storage_root.zeroize();
        let storage = storage?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut app = match PaymentApp::new(key.clone(), storage, Policy::default()) {
            Ok(app) => app,
            Err(e) => {
                println!(
                    "secure-os: payment app failed to start ({e:?}): payment service disabled"
                );
                return None;
            }
        };
        let status = app.status();
        println!(
            "secure-os: storage: {} credential(s), transaction counter {}, PIN {}{}",
            status.credentials,
            status.transaction_counter,
            if status.pin_set { "set" } else { "not set" },
            if status.locked {
                ", LOCKED (too many wrong PINs)"
            } else {
                ""
            }
        );
        // What mvmm measured (its own code and this image) is what the
        // attestation states.
        app.set_boot_state(BootState::Measured(measurements));
        // The word the user chose at setup replaces the device's own.
        let word = match app
            .security_word()
            .and_then(|w| SecurityWord::try_from(w).ok())
        {
            Some(chosen) => {
                println!("secure-os: the user's security word is set (chosen at setup)");
                chosen
            }
            None => word,
        };
        let board = Switchboard::new(Service::new(app, key));
        // Mix once more so the seed never equals raw device output.
        let mut first = [0u8; 32];
        rng.fill_bytes(&mut first);
        let rng = ChaCha20Rng::from_seed(Sha256::digest(first).into());
        println!("secure-os: payment service listening on vsock port {PAYMENT_PORT}");
        println!("secure-os: echo service listening on vsock port {ECHO_PORT}");
        Some(Services {
            vsock,
            board,
            entropy,
            rng,
            word,
            prompt: None,
            gate: None,
            limiter: PromptLimiter::new(),
            focus_held: false,
            screen: framebuffer::take().and_then(|(pixels, width, height)| {
                println!(
                    "secure-os: private framebuffer {width}x{height} at {:#x}",
                    pixels.as_ptr() as usize
                );
                Framebuffer::new(pixels, width, height)
            }),
            display_held: false,
            input,
            session: None,
            request_arrived: 0,
            answered: None,
            setup: None,
            recv_buf: alloc::vec![0u8; 4096].into_boxed_slice(),
        })
    }

    /// The secure VM's input device, when the board gives it one.
    fn open_input() -> Option<Input> {
        if INPUT_BASE == 0 {
            return None;
        }
        let size = mvmm_core::partition::VIRTIO_MMIO_SLOT as usize;
        match virtio::probe_mmio(INPUT_BASE, size, Kind::Input)
            .map_err(|e| format!("{e}"))
            .and_then(|t| Input::new(t).map_err(|e| format!("{e}")))
        {
            Ok(device) => {
                rt::enable_spi(GICD_BASE, INPUT_INTID);
                println!("secure-os: keyboard and touch screen at {INPUT_BASE:#x} (virtio-input)");
                Some(device)
            }
            Err(e) => {
                println!(
                    "secure-os: no input device at {INPUT_BASE:#x} ({e}): approvals from the console only"
                );
                None
            }
        }
    }

    type FlashStore = Store<CfiFlash, StoreCounter<HypercallLink, ChaCha20Rng>, ChaCha20Rng>;

    /// The payment app's storage: the sealed record store on the secure
    /// VM's flash, with every commit timed and every failure logged.
    struct FlashStorage {
        store: FlashStore,
    }

    impl Storage for FlashStorage {
        fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
            self.store.load(buf)
        }

        fn store(&mut self, blob: &[u8]) -> Result<(), StorageError> {
            let next = self.store.generation() + 1;
            // Debug level: the power-cut test aims its cuts with it.
            println!(
                "<7>secure-os: storage: writing generation {next} ({} bytes)",
                blob.len()
            );
            let started = rt::now();
            let result = self.store.commit(blob);
            let us = micros(rt::now().wrapping_sub(started));
            match &result {
                Ok(()) => println!("<7>secure-os: storage: generation {next} committed in {us} us"),
                Err(e) => println!("secure-os: storage: writing generation {next} failed: {e}"),
            }
            result.map_err(|_| StorageError)
        }
    }

    fn micros(ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000 / u128::from(rt::timer_frequency().max(1))) as u64
    }

    /// What a slot held, for the boot line.
    fn slot_text(state: SlotState) -> String {
        match state {
            SlotState::Valid { generation, .. } => format!("generation {generation}"),
            SlotState::Invalid(RecordError::Blank) => "blank".into(),
            SlotState::Invalid(e) => format!("unusable ({e})"),
        }
    }

    /// Opens the sealed store on the board's flash; `None` (with the reason
    /// printed) when the payment service must stay off.
    fn open_storage(root: &[u8; 32], seed: [u8; 32]) -> Option<FlashStorage> {
        let flash = match CfiFlash::take() {
            Ok(flash) => flash,
            Err(ProbeError::NotOnBoard) => {
                println!(
                    "secure-os: storage: the board gives this VM no secure-storage device: payment service disabled"
                );
                return None;
            }
            Err(ProbeError::NoCfiAnswer { base, got }) => {
                println!(
                    "secure-os: storage: no CFI flash answers at {base:#x} (query read {got:08x?}): payment service disabled"
                );
                return None;
            }
        };
        let base = flash.base();
        let started = rt::now();
        // The rollback counter mvmm keeps under this image's sealing key;
        // its read nonces come from a generator of their own.
        let nonces =
            ChaCha20Rng::from_seed(Sha256::digest([&seed[..], b"rpmb nonces"].concat()).into());
        let counter = StoreCounter::new(RollbackCounter::new(HypercallLink, root), nonces);
        let store = match Store::open(flash, counter, ChaCha20Rng::from_seed(seed), root) {
            Ok(store) => store,
            Err(e) => {
                println!(
                    "secure-os: storage: cannot open the store: {e}: payment service disabled"
                );
                return None;
            }
        };
        let us = micros(rt::now().wrapping_sub(started));
        let report = *store.report();
        let [a, b] = report.slots.map(slot_text);
        match report.current {
            Some((slot, generation, rollback)) => println!(
                "secure-os: storage: generation {generation} (slot {}, rollback value {rollback}, {} bytes) on flash at {base:#x}; slot A {a}, slot B {b}; opened in {us} us",
                slot_name(slot),
                report.payload_len
            ),
            None => println!(
                "secure-os: storage: generation 0 (nothing stored yet: the first write creates it) on flash at {base:#x}; slot A {a}, slot B {b}; opened in {us} us"
            ),
        }
        if report.erased_after_use {
            println!(
                "secure-os: storage: no record, yet the rollback counter is at {}: the storage was erased; starting empty",
                report.counter
            );
        }
        if report.counter_caught_up {
            println!(
                "secure-os: storage: the rollback counter caught up to {} (power was lost before its last update)",
                report.counter
            );
        }
        if !report.rollback_protected {
            println!(
                "secure-os: storage: NOT rollback-protected: no counter outside the flash yet, an older copy of the flash would be accepted"
            );
        }
        Some(FlashStorage { store })
    }

    /// The entropy sources: RNDR and/or mvmm's TRNG (Arm's SMCCC TRNG
    /// interface, backed by the entropy device mvmm drives: a DMA-capable
    /// virtio-rng no VM may own without an IOMMU).
    struct Entropy {
        rndr: bool,
        trng: bool,
    }

    impl Entropy {
        /// Finds the sources; prints why and returns `None` when there is none.
        fn probe() -> Option<Entropy> {
            let rndr = entropy::rndr_available();
            let trng = match hypercall::trng_version() {
                Some(version) => {
                    println!(
                        "secure-os: mvmm TRNG version {}.{}",
                        version >> 16,
                        version & 0xffff
                    );
                    true
                }
                None => false,
            };
            if !rndr && !trng {
                println!(
                    "secure-os: no entropy source (no RNDR on this CPU, no TRNG from mvmm): payment service disabled"
                );
                return None;
            }
            Some(Entropy { rndr, trng })
        }

        fn describe(&self) -> &'static str {
            match (self.rndr, self.trng) {
                (true, true) => "RNDR and mvmm's TRNG",
                (true, false) => "RNDR",
                _ => "mvmm's TRNG",
            }
        }

        /// 64 bytes from every source, hashed into a 32-byte seed; `None`
        /// when no source delivered or the output looks stuck.
        fn fresh(&mut self) -> Option<[u8; 32]> {
            let mut hash = Sha256::new();
            let mut got = false;
            if self.rndr {
                let mut words = [0u64; 8];
                let mut n = 0;
                for _ in 0..64 {
                    if n == words.len() {
                        break;
                    }
                    if let Some(w) = entropy::rndr() {
                        words[n] = w;
                        n += 1;
                    }
                }
                if n == words.len() && !stuck_words(&words) {
                    for w in words {
                        hash.update(w.to_le_bytes());
                    }
                    got = true;
                }
                words.zeroize();
            }
            if self.trng {
                // Three calls of 192 bits: 72 bytes.
                let mut words = [0u64; 9];
                let mut filled = 0;
                for _ in 0..8 {
                    if filled == words.len() {
                        break;
                    }
                    if let Some(three) = hypercall::trng_rnd64() {
                        words[filled..filled + 3].copy_from_slice(&three);
                        filled += 3;
                    }
                }
                if filled == words.len() && !stuck_words(&words) {
                    for w in words {
                        hash.update(w.to_le_bytes());
                    }
                    got = true;
                }
                words.zeroize();
            }
            got.then(|| hash.finalize().into())
        }
    }

    fn stuck_words(words: &[u64]) -> bool {
        words.windows(2).all(|w| w[0] == w[1])
    }

    impl Services {
        /// One round of work; true when anything happened on vsock.
        fn run_once(&mut self, now_ms: u64) -> bool {
            let mut activity = self.poll_device(now_ms);
            activity |= self.pull_input(now_ms);
            activity |= self.flush_output(now_ms);
            self.board.expire_idle(now_ms);
            for endpoint in self.board.take_doomed() {
                let _ = self.vsock.force_close(peer(endpoint), endpoint.local_port);
                activity = true;
            }
            if self.gate.is_some() {
                self.read_keys(now_ms);
            }
            activity |= self.read_input(now_ms);
            if let Some(effect) = self.session.as_mut().map(|s| s.tick(now_ms)) {
                self.touch_effect(effect, now_ms);
            }
            let touch_quiet = self.session.as_ref().is_none_or(|s| s.quiet(now_ms));
            if touch_quiet && self.gate.is_some_and(|g| g.closing() && g.quiet(now_ms)) {
                println!("secure-os: input quiet, trusted path released");
                self.end_prompt();
            }
            if let Some(outcome) = self.board.poll(now_ms) {
                self.finish(Some(outcome));
            }
            activity
        }

        fn poll_device(&mut self, now_ms: u64) -> bool {
            let mut activity = false;
            for _ in 0..EVENTS_PER_ROUND {
                let event = match self.vsock.poll() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    // A bad packet (e.g. a peer overrunning its credit) is
                    // dropped by the driver; keep going.
                    Err(_) => {
                        activity = true;
                        continue;
                    }
                };
                activity = true;
                let endpoint = Endpoint {
                    peer_cid: event.source.cid,
                    peer_port: event.source.port,
                    local_port: event.destination.port,
                };
                match event.event_type {
                    VsockEventType::ConnectionRequest => {
                        if self.board.accept(endpoint, now_ms).is_err() {
                            let _ = self.vsock.force_close(event.source, endpoint.local_port);
                        } else if endpoint.local_port == PAYMENT_PORT {
                            self.reseed();
                        }
                    }
                    VsockEventType::Disconnected { .. } => {
                        // Let the driver drop what the peer left unread.
                        while matches!(
                            self.vsock.recv(event.source, endpoint.local_port, &mut self.recv_buf),
                            Ok(n) if n > 0
                        ) {}
                        if self.board.closed(endpoint) {
                            println!("secure-os: payment cancelled (connection closed)");
                            self.rich_cancelled(now_ms);
                        }
                    }
                    _ => {}
                }
            }
            activity
        }

        fn pull_input(&mut self, now_ms: u64) -> bool {
            let mut activity = false;
            let endpoints: Vec<Endpoint> = self.board.endpoints().collect();
            for endpoint in endpoints {
                while self.board.wants_input(endpoint) {
                    let n = match self.vsock.recv(
                        peer(endpoint),
                        endpoint.local_port,
                        &mut self.recv_buf,
                    ) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(_) => {
                            if self.board.closed(endpoint) {
                                println!("secure-os: payment cancelled (connection closed)");
                                self.rich_cancelled(now_ms);
                            }
                            break;
                        }
                    };
                    activity = true;
                    let bytes = &self.recv_buf[..n];
                    let arrived = rt::now();
                    match self.board.receive(endpoint, bytes, &mut self.rng, now_ms) {
                        Some(Ui::Payment(ui)) => {
                            self.request_arrived = arrived;
                            self.start_prompt(&ui, now_ms);
                        }
                        Some(Ui::Setup(words)) => self.start_setup(words, now_ms),
                        None => {}
                    }
                }
            }
            activity
        }

        fn flush_output(&mut self, now_ms: u64) -> bool {
            let mut activity = false;
            let endpoints: Vec<Endpoint> = self.board.endpoints().collect();
            for endpoint in endpoints {
                loop {
                    let out = self.board.outbox(endpoint);
                    if out.is_empty() {
                        break;
                    }
                    let chunk = &out[..out.len().min(MAX_SEND_CHUNK)];
                    let len = chunk.len();
                    match self.vsock.send(peer(endpoint), endpoint.local_port, chunk) {
                        Ok(()) => {
                            self.board.sent(endpoint, len);
                            activity = true;
                            if let Some((at, stored)) = self.answered.take() {
                                println!(
                                    "<7>secure-os: approval: signed and stored in {} us, response sent {} us after the answer",
                                    micros(stored),
                                    micros(rt::now().wrapping_sub(at))
                                );
                            }
                        }
                        Err(virtio::Error::SocketDeviceError(
                            SocketError::InsufficientBufferSpaceInPeer,
                        )) => break,
                        Err(_) => {
                            let _ = self.vsock.force_close(peer(endpoint), endpoint.local_port);
                            if self.board.closed(endpoint) {
                                println!("secure-os: payment cancelled (connection lost)");
                                self.rich_cancelled(now_ms);
                            }
                            break;
                        }
                    }
                }
            }
            activity
        }

        fn reseed(&mut self) {
            if let Some(fresh) = self.entropy.fresh() {
                let mut current = [0u8; 32];
                self.rng.fill_bytes(&mut current);
                let seed: [u8; 32] = Sha256::new()
                    .chain_update(current)
                    .chain_update(fresh)
                    .finalize()
                    .into();
                self.rng = ChaCha20Rng::from_seed(seed);
            }
        }

        /// Shows the setup: the words offered (on the screen and the
        /// console), then the new PIN.
        fn start_setup(&mut self, words: payment_app::SetupWords, now_ms: u64) {
            if self.gate.is_some() {
                println!("secure-os: setup declined (the previous prompt is still closing)");
                self.refuse();
                return;
            }
            let status = hypercall::console_focus(true);
            if status != 0 {
                println!(
                    "secure-os: console focus unavailable (hvc {:#x} returned {:#x}): declining the setup",
                    hypercall::CONSOLE_FOCUS,
                    status
                );
                self.refuse();
                return;
            }
            self.focus_held = true;
            drain_console();
            let texts = [words[0].as_str(), words[1].as_str(), words[2].as_str()];
            if let Some(fb) = self.screen.as_mut() {
                match trusted_ui::draw_choose_word(fb, texts) {
                    Ok(_) => {
                        framebuffer::publish(fb.pixels());
                        let size = embedded_graphics::geometry::OriginDimensions::size(fb);
                        if hypercall::display(true) == 0 {
                            self.display_held = true;
                            self.drain_input();
                            self.session = Some(Session::setup(size, self.clock_ms()));
                            println!("secure-os: setup screen on the display");
                        }
                    }
                    Err(e) => println!("secure-os: setup screen not drawn ({e:?}); console only"),
                }
            }
            for line in prompt::setup_lines(&texts) {
                println!("{line}");
            }
            self.setup = Some((words, SetupPrompt::new()));
            self.gate = Some(ConsoleGate::new(self.clock_ms().max(now_ms)));
        }

        /// The user chose word `choice` and `pin` in the setup.
        fn complete_setup(&mut self, choice: usize, pin: &trusted_ui::Pin) {
            let chosen = self
                .setup
                .as_ref()
                .and_then(|(words, _)| words.get(choice).cloned());
            let text = prompt::pin_text(pin);
            match self.board.finish_setup(choice, &text, &mut self.rng) {
                Approval::Done(Outcome::Approved) => {
                    if let Some(word) = chosen {
                        self.word = word;
                    }
                    println!("secure-os: trusted path set up (security word chosen, PIN set)");
                }
                Approval::Done(outcome) => println!("secure-os: setup failed ({outcome:?})"),
                _ => println!("secure-os: setup ended"),
            }
            self.end_prompt();
        }

        /// The user cancelled the setup.
        fn cancel_setup(&mut self) {
            let _ = self.board.decline();
            println!("secure-os: setup cancelled");
            self.end_prompt();
        }

        fn start_prompt(&mut self, ui: &payment_app::service::UiPrompt, now_ms: u64) {
            if self.gate.is_some() {
                // A cancelled prompt still waits for quiet input: the user
                // is typing, so no new prompt appears under their keys.
                println!("secure-os: payment declined (the previous prompt is still closing)");
                self.refuse();
                return;
            }
            if let Err(wait_ms) = self.limiter.check(now_ms) {
                println!(
                    "secure-os: payment declined ({} unanswered prompts in a row; next prompt in {wait_ms} ms)",
                    self.limiter.unanswered()
                );
                self.refuse();
                return;
            }
            let status = hypercall::console_focus(true);
            if status != 0 {
                println!(
                    "secure-os: console focus unavailable (hvc {:#x} returned {:#x}): declining payment",
                    hypercall::CONSOLE_FOCUS,
                    status
                );
                let outcome = match self.board.decline() {
                    Approval::Done(outcome) => Some(outcome),
                    _ => None,
                };
                self.finish(outcome);
                return;
            }
            self.focus_held = true;
            drain_console();
            self.show_screen(ui);
            for line in prompt::prompt_lines(ui, &self.word) {
                println!("{line}");
            }
            self.prompt = Some(Prompt::new(ui.prompt.pin_required));
            // Armed from the moment the whole prompt is out: the screen and
            // the question line are both shown by now.
            self.gate = Some(ConsoleGate::new(self.clock_ms().max(now_ms)));
        }

        /// Declines a request without showing it (rate limit, or a prompt
        /// still closing). It does not count as another unanswered prompt.
        fn refuse(&mut self) {
            let _ = self.board.decline();
        }

        /// Milliseconds of the same clock as `run_once`'s `now_ms`.
        fn clock_ms(&self) -> u64 {
            (u128::from(rt::now()) * 1000 / u128::from(rt::timer_frequency().max(1))) as u64
        }

        /// The rich side closed the connection of the prompt on screen: the
        /// payment is cancelled, but the path goes back only once the user
        /// has stopped typing.
        fn rich_cancelled(&mut self, now_ms: u64) {
            self.prompt = None;
            let Some(gate) = self.gate.as_mut() else {
                self.end_prompt();
                return;
            };
            if gate.closing() {
                return;
            }
            self.limiter.ended(now_ms, Ending::Unanswered);
            let console_quiet = gate.rich_cancel(now_ms);
            let touch_quiet = match self.session.as_mut() {
                Some(session) => matches!(session.rich_cancel(now_ms), Effect::Closed),
                None => true,
            };
            if console_quiet && touch_quiet {
                self.end_prompt();
            } else {
                gate.hold_open();
                println!("{}", prompt::CLOSING_NOTICE);
                self.draw(|fb| trusted_ui::draw_notice(fb, prompt::CLOSING_NOTICE).map(|_| ()));
            }
        }

        /// Draws the approval screen into the private framebuffer and asks
        /// mvmm to scan it out. Without a display the text prompt alone
        /// shows the approval (same keys, same rules).
        fn show_screen(&mut self, ui: &payment_app::service::UiPrompt) {
            let Some(fb) = self.screen.as_mut() else {
                return;
            };
            let started = rt::now();
            if let Err(e) = screen::draw_prompt(fb, ui, &self.word) {
                println!("secure-os: approval screen not drawn ({e:?}); text prompt only");
                return;
            }
            framebuffer::publish(fb.pixels());
            let size = embedded_graphics::geometry::OriginDimensions::size(fb);
            let drawn = rt::now().wrapping_sub(started);
            match hypercall::display(true) {
                0 => {
                    self.display_held = true;
                    // Events queued before the screen was up are dropped:
                    // they were typed at something else.
                    self.drain_input();
                    self.session =
                        Some(Session::new(size, ui.prompt.pin_required, self.clock_ms()));
                    // Prompt to pixels: from the request's bytes to the
                    // scan-out showing the screen (the hypercall returns
                    // once mvmm has pointed it here).
                    let shown = rt::now().wrapping_sub(self.request_arrived);
                    println!(
                        "secure-os: approval screen on the display (drawn in {} us; prompt to pixels {} us)",
                        micros(drawn),
                        micros(shown)
                    );
                }
                status => println!(
                    "secure-os: display unavailable (hvc {:#x} returned {status:#x}); text prompt only",
                    hypercall::DISPLAY
                ),
            }
        }

        /// Takes the input device's events: into the approval's input
        /// rules while one is on the display, else dropped. True when any
        /// came.
        fn read_input(&mut self, now_ms: u64) -> bool {
            let Some(device) = self.input.as_mut() else {
                return false;
            };
            let _ = device.ack_interrupt();
            let mut events = heapless::Vec::<trusted_ui::evdev::Event, INPUT_PER_ROUND>::new();
            while let Some(e) = device.pop_pending_event() {
                let event = trusted_ui::evdev::Event {
                    kind: e.event_type,
                    code: e.code,
                    value: e.value,
                };
                if events.push(event).is_err() {
                    break;
                }
            }
            let any = !events.is_empty();
            for event in events {
                // Without an approval on the display the event is dropped;
                // a decision ends the session and drops the rest.
                let Some(session) = self.session.as_mut() else {
                    break;
                };
                let effect = session.event(now_ms, event);
                self.touch_effect(effect, now_ms);
            }
            any
        }

        /// Drops every event the device holds.
        fn drain_input(&mut self) {
            if let Some(device) = self.input.as_mut() {
                let _ = device.ack_interrupt();
                for _ in 0..256 {
                    if device.pop_pending_event().is_none() {
                        break;
                    }
                }
            }
        }

        /// Draws into the private framebuffer and makes it visible.
        fn draw(
            &mut self,
            paint: impl FnOnce(
                &mut Framebuffer<'static>,
            )
                -> Result<(), trusted_ui::DrawError<core::convert::Infallible>>,
        ) {
            if !self.display_held {
                return;
            }
            let Some(fb) = self.screen.as_mut() else {
                return;
            };
            if let Err(e) = paint(fb) {
                println!("secure-os: screen not redrawn ({e:?})");
            }
            framebuffer::publish(fb.pixels());
        }

        /// Carries out what the approval's input rules decided.
        fn touch_effect(&mut self, effect: Effect, now_ms: u64) {
            match effect {
                Effect::None | Effect::Closed => {}
                Effect::Hold(permille) => {
                    self.draw(|fb| trusted_ui::draw_hold(fb, permille));
                }
                Effect::Pin => self.draw_pin(None),
                Effect::SetupDone { choice, pin } => self.complete_setup(choice, &pin),
                Effect::Decline if self.setup.is_some() => self.cancel_setup(),
                Effect::Decline => {
                    println!("secure-os: declined on the touch screen");
                    let outcome = match self.board.decline() {
                        Approval::Done(outcome) => Some(outcome),
                        _ => None,
                    };
                    self.finish(outcome);
                }
                Effect::Approve(pin) => {
                    println!("secure-os: approved on the touch screen");
                    let text = pin.as_ref().map(prompt::pin_text);
                    let started = rt::now();
                    let approval = self.board.approve(text.as_deref(), now_ms);
                    self.answered = Some((started, rt::now().wrapping_sub(started)));
                    match approval {
                        Approval::Done(outcome) => self.finish(Some(outcome)),
                        Approval::WrongPin { remaining } => {
                            println!("Wrong PIN, {remaining} tries left");
                            let shown = self.clock_ms();
                            if let Some(session) = self.session.as_mut() {
                                session.retry_pin(shown);
                            }
                            self.draw_pin(Some(remaining));
                        }
                        Approval::NothingPending => self.finish(None),
                    }
                }
            }
        }

        /// Shows the PIN screen as the session's entry is.
        fn draw_pin(&mut self, tries_left: Option<u8>) {
            let Some(session) = self.session.as_ref() else {
                return;
            };
            let Some(entry) = session.pin_entry() else {
                return;
            };
            if !self.display_held {
                return;
            }
            let Some(fb) = self.screen.as_mut() else {
                return;
            };
            let drawn = if session.is_setup() {
                trusted_ui::draw_pin_setup(fb, entry)
            } else {
                trusted_ui::draw_pin_entry(fb, entry, tries_left)
            };
            if let Err(e) = drawn {
                println!("secure-os: PIN screen not drawn ({e:?})");
            }
            framebuffer::publish(fb.pixels());
        }

        fn read_keys(&mut self, now_ms: u64) {
            for _ in 0..KEYS_PER_ROUND {
                let Some(byte) = rt::console_read_byte() else {
                    return;
                };
                // Too early, or the prompt is closing: the byte is dropped.
                if !self.gate.as_mut().is_some_and(|g| g.admit(now_ms)) {
                    continue;
                }
                if let Some((_, setup)) = self.setup.as_mut() {
                    match setup.key(byte) {
                        SetupStep::Nothing => {}
                        SetupStep::Selected(n) => println!("> {}", n + 1),
                        SetupStep::AskPin => println!("{}", prompt::SETUP_PIN_QUESTION),
                        SetupStep::TooShort => {
                            println!("At least 4 digits");
                            println!("{}", prompt::SETUP_PIN_QUESTION);
                        }
                        SetupStep::Done { choice, pin } => {
                            self.complete_setup(choice, &pin);
                            return;
                        }
                        SetupStep::Cancel => {
                            self.cancel_setup();
                            return;
                        }
                    }
                    continue;
                }
                let Some(prompt) = self.prompt.as_mut() else {
                    continue;
                };
                match prompt.key(byte) {
                    Step::Nothing => {}
                    Step::Selected(yes) => println!("> {}", if yes { "y" } else { "n" }),
                    Step::Cleared => println!("> (cleared)"),
                    Step::AskPin => println!("{}", prompt::PIN_QUESTION),
                    Step::Decline => {
                        let outcome = match self.board.decline() {
                            Approval::Done(outcome) => Some(outcome),
                            _ => None,
                        };
                        self.finish(outcome);
                    }
                    Step::Approve(pin) => {
                        let text = pin.as_ref().map(prompt::pin_text);
                        if let Some(text) = &text {
                            let mut stars = heapless::String::<16>::new();
                            for _ in 0..text.len() {
                                let _ = stars.push('*');
                            }
                            println!("PIN: {stars}");
                        }
                        let started = rt::now();
                        let approval = self.board.approve(text.as_deref(), now_ms);
                        self.answered = Some((started, rt::now().wrapping_sub(started)));
                        match approval {
                            Approval::Done(outcome) => self.finish(Some(outcome)),
                            Approval::WrongPin { remaining } => {
                                println!("Wrong PIN, {remaining} tries left");
                                prompt.retry_pin();
                                println!("{}", prompt::PIN_QUESTION);
                            }
                            Approval::NothingPending => self.finish(None),
                        }
                    }
                }
            }
        }

        /// Reports how the approval ended and closes the prompt.
        fn finish(&mut self, outcome: Option<Outcome>) {
            let ending = match outcome {
                Some(Outcome::Approved) => Ending::Approved,
                _ => Ending::Unanswered,
            };
            self.limiter.ended(self.clock_ms(), ending);
            match outcome {
                Some(Outcome::Approved) => println!("secure-os: payment approved"),
                Some(Outcome::Declined) => println!("secure-os: payment declined"),
                Some(Outcome::TimedOut) => println!("secure-os: payment timed out"),
                Some(Outcome::Locked) => {
                    println!("secure-os: payment declined (PIN locked after too many wrong PINs)")
                }
                Some(Outcome::Failed(code)) => println!("secure-os: payment failed ({code:?})"),
                None => println!("secure-os: payment ended"),
            }
            self.end_prompt();
        }

        /// Closes the prompt and gives the console back.
        fn end_prompt(&mut self) {
            self.prompt = None;
            self.gate = None;
            self.session = None;
            self.setup = None;
            if self.display_held {
                self.display_held = false;
                let status = hypercall::display(false);
                if status != 0 {
                    println!("secure-os: releasing the display returned {status:#x}");
                }
            }
            if self.focus_held {
                drain_console();
                self.focus_held = false;
                let status = hypercall::console_focus(false);
                if status != 0 {
                    println!("secure-os: releasing console focus returned {status:#x}");
                }
            }
        }
    }

    fn peer(endpoint: Endpoint) -> VsockAddr {
        VsockAddr {
            cid: endpoint.peer_cid,
            port: endpoint.peer_port,
        }
    }

    /// Drops type-ahead: keys typed before the prompt was shown never answer it.
    fn drain_console() {
        for _ in 0..256 {
            if rt::console_read_byte().is_none() {
                break;
            }
        }
    }
}
