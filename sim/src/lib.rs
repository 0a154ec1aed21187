//! The host simulator of the secure VM: the real payment service, payment
//! app and trusted UI, served on a Unix socket.
//!
//! What runs is the code the secure OS runs ([`payment_app::service::Service`],
//! [`payment_app::PaymentApp`], the [`trusted_ui`] screens); only the edges
//! are simulated: a Unix socket instead of virtio-vsock, a file instead of
//! secure storage, PNG files instead of the scan-out, and the terminal (or a
//! scripted answer) instead of the trusted input device.
//!
//! Files under the state directory (`target/sim/` for `mvmm-sim`):
//! - `device.key` / `device.pub`: the device key (secret, and public hex
//!   SEC1: what `mvmm-pay --device-key` pins);
//! - `state.bin`: the payment app's persistent state (credentials, counter);
//! - `credentials/<id>.pub`: each enrolled credential's public key (hex SEC1,
//!   what `mvmm-verify --key` reads; on a real device the issuer gets it from
//!   the enrollment record);
//! - `screens/NNNN-<screen>.png`: every trusted-UI screen shown.

mod screen;
mod storage;
mod ui;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use payment_app::service::{
    ApproveStep, Completion, ConnectionId, FrameReader, Output, Service, encode_frame_header,
};
use payment_app::{PaymentApp, Policy};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub use screen::{DISPLAY, FrameBuffer};
pub use storage::{FileStorage, device_key, write_atomic};
pub use ui::{Answer, Input};

/// How the simulator runs.
#[derive(Debug)]
pub struct Config {
    /// State directory (keys, app state, credential keys, screens).
    pub dir: PathBuf,
    /// The Unix socket to listen on (a stale one is replaced).
    pub socket: PathBuf,
    /// Where the user's answers come from.
    pub input: Input,
    /// Save every screen as a PNG under `dir/screens/`.
    pub save_screens: bool,
    /// Limits and the approval timeout.
    pub policy: Policy,
    /// The user's security word, drawn on every approval screen.
    pub security_word: String,
    /// Set this PIN through the trusted UI at start when none is set.
    pub pin_if_unset: Option<String>,
}

impl Config {
    /// Defaults for `dir`: socket `dir/mvmm.sock`, auto-approve, no PNGs.
    pub fn new(dir: &Path) -> Self {
        Config {
            dir: dir.to_path_buf(),
            socket: dir.join("mvmm.sock"),
            input: Input::Auto(Answer::Approve),
            save_screens: false,
            policy: Policy::default(),
            security_word: "LIGHTHOUSE".into(),
            pin_if_unset: None,
        }
    }
}

/// A running simulator. Dropping it stops the service.
pub struct Running {
    /// The socket it listens on.
    pub socket: PathBuf,
    /// `dir/device.pub`: the device public key file to pin.
    pub device_key_file: PathBuf,
    /// Hex of the device public key (SEC1 uncompressed).
    pub device_key_hex: String,
    screens: Arc<Mutex<Vec<PathBuf>>>,
    stop: Arc<AtomicBool>,
    service: Option<thread::JoinHandle<()>>,
}

impl Running {
    /// Every screen saved so far, in order.
    pub fn screens(&self) -> Vec<PathBuf> {
        self.screens.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Blocks until the service stops (never, for the binary).
    pub fn wait(mut self) {
        if let Some(handle) = self.service.take() {
            let _ = handle.join();
        }
    }

    /// Stops accepting and serving.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = UnixStream::connect(&self.socket);
        if let Some(handle) = self.service.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the other threads tell the service thread.
enum Event {
    Connected(u64, UnixStream),
    Packet(u64, Vec<u8>),
    Closed(u64),
    Decision(ui::Decision),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn random_seed() -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("random generator: {e}"))?;
    Ok(seed)
}

/// Starts the simulator in background threads.
pub fn start(config: Config) -> Result<Running, String> {
    let dir = &config.dir;
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let screens_dir = dir.join("screens");
    if config.save_screens {
        std::fs::create_dir_all(&screens_dir).map_err(|e| io(&screens_dir, e))?;
        // Screens are numbered per run: drop the previous run's.
        for entry in std::fs::read_dir(&screens_dir)
            .map_err(|e| io(&screens_dir, e))?
            .flatten()
        {
            if entry.path().extension().is_some_and(|x| x == "png") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let mut rng = ChaCha20Rng::from_seed(random_seed()?);
    let key = device_key(dir, random_seed()?).map_err(|e| io(dir, e))?;
    let device_key_file = dir.join("device.pub");
    let device_key_hex = std::fs::read_to_string(&device_key_file)
        .map_err(|e| io(&device_key_file, e))?
        .trim()
        .to_string();
    let app = PaymentApp::new(
        key.clone(),
        FileStorage::new(dir.join("state.bin")),
        config.policy,
    )
    .map_err(|e| {
        format!(
            "{}: cannot restore the app state: {e:?}",
            dir.join("state.bin").display()
        )
    })?;
    let mut service = Service::new(app, key);
    if let Some(pin) = &config.pin_if_unset
        && !service.app().status().pin_set
    {
        service
            .app_mut()
            .set_pin(pin, &mut rng)
            .map_err(|e| format!("cannot set PIN {pin:?}: {e:?} (4 to 12 digits)"))?;
        eprintln!("[sim] PIN set through the trusted UI");
    }

    if config.socket.exists() {
        std::fs::remove_file(&config.socket).map_err(|e| io(&config.socket, e))?;
    }
    let listener = UnixListener::bind(&config.socket).map_err(|e| io(&config.socket, e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let screens = Arc::new(Mutex::new(Vec::new()));
    let (events, inbox) = mpsc::channel::<Event>();

    let ui_tx = ui::spawn(
        config.input,
        config.save_screens.then_some(screens_dir),
        config.security_word,
        events.clone(),
        Arc::clone(&screens),
    );

    {
        let stop = Arc::clone(&stop);
        let events = events.clone();
        thread::spawn(move || accept_loop(&listener, &events, &stop));
    }
    let credentials_dir = dir.join("credentials");
    let service_stop = Arc::clone(&stop);
    let handle = thread::spawn(move || {
        serve(
            service,
            rng,
            &inbox,
            &ui_tx,
            &service_stop,
            &credentials_dir,
        );
    });
    Ok(Running {
        socket: config.socket,
        device_key_file,
        device_key_hex,
        screens,
        stop,
        service: Some(handle),
    })
}

fn accept_loop(listener: &UnixListener, events: &Sender<Event>, stop: &AtomicBool) {
    let mut next_id = 1u64;
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = next_id;
        next_id += 1;
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        if events.send(Event::Connected(id, writer)).is_err() {
            return;
        }
        let events = events.clone();
        thread::spawn(move || read_loop(id, stream, &events));
    }
}

fn read_loop(id: u64, mut stream: UnixStream, events: &Sender<Event>) {
    let mut reader = FrameReader::new();
    let mut buf = [0u8; 4096];
    'outer: loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reader.push(buf.get(..n).unwrap_or_default()),
        }
        loop {
            match reader.next_frame() {
                Ok(Some(packet)) => {
                    if events.send(Event::Packet(id, packet)).is_err() {
                        break 'outer;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!(
                        "[sim] connection {id}: frame of {} bytes announced; closing",
                        e.len
                    );
                    break 'outer;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = events.send(Event::Closed(id));
}

fn send_packet(writers: &mut HashMap<u64, UnixStream>, id: u64, packet: &[u8]) {
    let Some(stream) = writers.get_mut(&id) else {
        return;
    };
    let Some(header) = encode_frame_header(packet.len()) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(&header)
        .and_then(|()| stream.write_all(packet))
        .is_err()
    {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        writers.remove(&id);
    }
}

fn serve(
    mut service: Service<FileStorage>,
    mut rng: ChaCha20Rng,
    inbox: &Receiver<Event>,
    ui_tx: &Sender<ui::UiMsg>,
    stop: &AtomicBool,
    credentials_dir: &Path,
) {
    let mut writers: HashMap<u64, UnixStream> = HashMap::new();
    let mut known_credentials = usize::MAX;
    let finish = |writers: &mut HashMap<u64, UnixStream>, done: Completion| {
        send_packet(writers, done.connection.0, &done.packet);
        let _ = ui_tx.send(ui::UiMsg::Finished(done.outcome));
    };
    while !stop.load(Ordering::SeqCst) {
        match inbox.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Connected(id, stream)) => {
                writers.insert(id, stream);
            }
            Ok(Event::Packet(id, packet)) => {
                match service.handle(ConnectionId(id), &packet, &mut rng, now_ms()) {
                    Output::Reply(reply) => send_packet(&mut writers, id, &reply),
                    Output::Prompt(prompt) => {
                        let _ = ui_tx.send(ui::UiMsg::Show(Box::new(prompt)));
                    }
                    // The simulator has no setup screen: the setup is
                    // declined (docs/trusted-path.md).
                    Output::Setup(_) => {
                        if let Ok(done) = service.decline() {
                            finish(&mut writers, done);
                        }
                    }
                }
                let count = usize::from(service.app().status().credentials);
                if count != known_credentials {
                    known_credentials = count;
                    publish_credentials(&service, credentials_dir);
                }
            }
            Ok(Event::Closed(id)) => {
                writers.remove(&id);
                if service.close(ConnectionId(id)) {
                    let _ = ui_tx.send(ui::UiMsg::Dismiss);
                }
            }
            Ok(Event::Decision(ui::Decision::Approve(pin))) => {
                match service.approve(pin.as_deref(), now_ms()) {
                    Ok(ApproveStep::Done(done)) => finish(&mut writers, done),
                    Ok(ApproveStep::WrongPin { remaining }) => {
                        let _ = ui_tx.send(ui::UiMsg::WrongPin(remaining));
                    }
                    Err(_) => {}
                }
            }
            Ok(Event::Decision(ui::Decision::Decline)) => {
                if let Ok(done) = service.decline() {
                    finish(&mut writers, done);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(done) = service.poll(now_ms()) {
            finish(&mut writers, done);
        }
    }
}

/// Writes `dir/<credential id>.pub` for every enrolled credential and removes
/// the files of deleted ones.
fn publish_credentials(service: &Service<FileStorage>, dir: &Path) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let credentials = service.app().credentials();
    let keep: Vec<String> = credentials
        .iter()
        .map(|c| format!("{}.pub", hex::encode(c.credential)))
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pub") && !keep.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for (c, name) in credentials.iter().zip(&keep) {
        let _ = write_atomic(
            &dir.join(name),
            format!("{}\n", hex::encode(c.public_key.0)).as_bytes(),
        );
    }
}
