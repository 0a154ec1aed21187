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
    use guest_rt::arch::heap;
    use guest_rt::{println, rt};
    use payment_app::{BootState, PaymentApp, Policy, Service, Storage, StorageError};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng as _, SeedableRng};
    use secure_os::arch::flash::{CfiFlash, ProbeError};
    use secure_os::arch::hypercall::HypercallLink;
    use secure_os::arch::virtio::{
        self, Input, Kind, SocketError, Vsock, VsockAddr, VsockEventType,
    };
    use secure_os::arch::{entropy, framebuffer, hypercall, provision};
    use secure_os::event_loop::{Console, Devices, EventLoop, Heartbeat};
    use secure_os::keys::{self, SecurityWord};
    use secure_os::rollback::{RollbackCounter, StoreCounter};
    use secure_os::screen::Framebuffer;
    use secure_os::server::{ECHO_PORT, Endpoint, PAYMENT_PORT, Switchboard};
    use secure_store::{RecordError, SlotState, Store, slot_name};
    use sha2::{Digest, Sha256};
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

        let period = frequency.saturating_mul(HEARTBEAT_SECONDS);
        let mut heartbeat = Heartbeat::new(rt::now(), period);
        loop {
            let now = rt::now();
            let active = services.as_mut().is_some_and(|s| s.run_once(clock.ms(now)));
            let stats = services.as_ref().map(|s| s.events.stats());
            heartbeat.run(rt::now(), stats, &mut Uart);
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
        /// Every decision of the loop.
        events: EventLoop<'static, FlashStorage>,
        devices: SecureDevices,
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
        let screen = framebuffer::take().and_then(|(pixels, width, height)| {
            println!(
                "secure-os: private framebuffer {width}x{height} at {:#x}",
                pixels.as_ptr() as usize
            );
            Framebuffer::new(pixels, width, height)
        });
        Some(Services {
            events: EventLoop::new(board, rng, word, screen),
            devices: SecureDevices {
                vsock,
                input,
                entropy,
            },
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

    /// What the event loop asks of the devices, carried out on the real
    /// ones: the vsock device, the input device, the entropy sources, the
    /// console, mvmm's hypercalls and the framebuffer's cache maintenance.
    struct SecureDevices {
        vsock: Vsock,
        /// The trusted path's keyboard and touch screen (mvmm routes events
        /// here only while this VM holds the path).
        input: Option<Input>,
        entropy: Entropy,
    }

    impl Console for SecureDevices {
        fn print(&mut self, line: core::fmt::Arguments<'_>) {
            Uart.print(line);
        }
    }

    impl Devices for SecureDevices {
        fn now_us(&mut self) -> u64 {
            micros(rt::now())
        }

        fn console_focus(&mut self, take: bool) -> u64 {
            hypercall::console_focus(take)
        }

        fn display(&mut self, take: bool) -> u64 {
            hypercall::display(take)
        }

        fn drain_console(&mut self) {
            for _ in 0..256 {
                if rt::console_read_byte().is_none() {
                    break;
                }
            }
        }

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

        fn publish(&mut self, pixels: &[u32]) {
            framebuffer::publish(pixels);
        }

        fn reset(&mut self, endpoint: Endpoint) {
            let _ = self.vsock.force_close(peer(endpoint), endpoint.local_port);
        }

        fn entropy(&mut self) -> Option<[u8; 32]> {
            self.entropy.fresh()
        }
    }

    /// The console alone (the heartbeat prints on it whether or not the
    /// payment service runs).
    struct Uart;

    impl Console for Uart {
        fn print(&mut self, line: core::fmt::Arguments<'_>) {
            println!("{line}");
        }
    }

    impl Services {
        /// One round of work: the devices are read, the event loop decides.
        /// True when anything happened on vsock or the input device.
        fn run_once(&mut self, now_ms: u64) -> bool {
            let mut activity = self.poll_device(now_ms);
            activity |= self.pull_input(now_ms);
            activity |= self.flush_output(now_ms);
            activity |= self.events.reap(&mut self.devices, now_ms);
            for _ in 0..KEYS_PER_ROUND {
                if !self.events.wants_keys() {
                    break;
                }
                let Some(byte) = rt::console_read_byte() else {
                    break;
                };
                self.events.key(&mut self.devices, byte, now_ms);
            }
            activity |= self.read_input(now_ms);
            self.events.tick(&mut self.devices, now_ms);
            activity
        }

        /// The vsock device's connection events.
        fn poll_device(&mut self, now_ms: u64) -> bool {
            let mut activity = false;
            for _ in 0..EVENTS_PER_ROUND {
                let event = match self.devices.vsock.poll() {
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
                        self.events
                            .connection_request(&mut self.devices, endpoint, now_ms);
                    }
                    VsockEventType::Disconnected { .. } => {
                        // Let the driver drop what the peer left unread.
                        while matches!(
                            self.devices.vsock.recv(event.source, endpoint.local_port, &mut self.recv_buf),
                            Ok(n) if n > 0
                        ) {}
                        self.events
                            .disconnected(&mut self.devices, endpoint, now_ms);
                    }
                    _ => {}
                }
            }
            activity
        }

        /// Every connection's input, as far as the event loop wants it.
        fn pull_input(&mut self, now_ms: u64) -> bool {
            let mut activity = false;
            for endpoint in self.events.endpoints() {
                while self.events.wants_input(endpoint) {
                    let n = match self.devices.vsock.recv(
                        peer(endpoint),
                        endpoint.local_port,
                        &mut self.recv_buf,
                    ) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(_) => {
                            self.events
                                .disconnected(&mut self.devices, endpoint, now_ms);
                            break;
                        }
                    };
                    activity = true;
                    let bytes = &self.recv_buf[..n];
                    self.events
                        .received(&mut self.devices, endpoint, bytes, now_ms);
                }
            }
            activity
        }

        /// Every connection's pending output, as far as the peers' credit
        /// allows.
        fn flush_output(&mut self, now_ms: u64) -> bool {
            let mut activity = false;
            for endpoint in self.events.endpoints() {
                loop {
                    let out = self.events.outbox(endpoint);
                    if out.is_empty() {
                        break;
                    }
                    let chunk = &out[..out.len().min(MAX_SEND_CHUNK)];
                    let len = chunk.len();
                    match self
                        .devices
                        .vsock
                        .send(peer(endpoint), endpoint.local_port, chunk)
                    {
                        Ok(()) => {
                            self.events.sent(&mut self.devices, endpoint, len);
                            activity = true;
                        }
                        Err(virtio::Error::SocketDeviceError(
                            SocketError::InsufficientBufferSpaceInPeer,
                        )) => break,
                        Err(_) => {
                            self.events.send_failed(&mut self.devices, endpoint, now_ms);
                            break;
                        }
                    }
                }
            }
            activity
        }

        /// The input device's events, into the event loop. True when any
        /// came.
        fn read_input(&mut self, now_ms: u64) -> bool {
            let Some(device) = self.devices.input.as_mut() else {
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
                self.events.touch(&mut self.devices, event, now_ms);
            }
            any
        }
    }

    fn peer(endpoint: Endpoint) -> VsockAddr {
        VsockAddr {
            cid: endpoint.peer_cid,
            port: endpoint.peer_port,
        }
    }
}
