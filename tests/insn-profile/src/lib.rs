//! insn-profile: a QEMU TCG plugin that counts the guest instructions each
//! translated block executes, per vCPU, and writes them out when QEMU exits.
//!
//! Load it with `-plugin <path>/libinsn_profile.so,out=FILE[,mark=ADDR][,top=N]`:
//!
//! - `out=FILE` (required): where the profile goes.
//! - `mark=ADDR` (hex, `0x` optional): a guest virtual address; every time a
//!   block starting there runs (on any vCPU), the profile is cut into a new
//!   phase. With a kernel function as the mark (the Linux bench uses
//!   `devkmsg_write`, which every `echo ... > /dev/kmsg` marker calls), each
//!   step of a workload gets a phase of its own.
//! - `top=N`: write only the N blocks with the most instructions per phase
//!   (default 0: every block that ran in the phase).
//!
//! # The output
//!
//! Plain text, one section per phase (phase 0 runs from the start to the
//! first mark, the last one from the last mark to QEMU's exit):
//!
//! ```text
//! insn-profile 1 vcpus 3
//! phase 0 mark-vcpu - total 123456 vcpu 100000 20000 3456
//! 0xffff800008010000 5000 5000 0 0
//! ...
//! ```
//!
//! A block line is the block's start address, its instructions in the phase
//! summed over vCPUs, then per vCPU. Instructions are counted when a block is
//! entered, as whole blocks: a block left early by an exception counts all
//! its instructions (rare next to the totals that matter here).
//!
//! # The QEMU interface
//!
//! QEMU 7.2's plugin API, version 1 (include/qemu/qemu-plugin.h and
//! docs/devel/tcg-plugins.rst of that release): QEMU looks up the exported
//! `qemu_plugin_version` and `qemu_plugin_install`, and the plugin calls
//! back into the `qemu_plugin_*` functions the QEMU binary exports, declared
//! below with the signatures that API documents. Nothing here changes guest
//! state, so `-icount` figures are the same with or without the plugin.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The plugin API version this plugin is written against: QEMU 7.2's.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static qemu_plugin_version: c_int = 1;

/// QEMU's handle for this plugin.
type PluginId = u64;

/// Opaque: a block being translated (valid only during the translation
/// callback).
#[repr(C)]
struct TranslationBlock {
    _opaque: [u8; 0],
}

/// QEMU's description of the machine, handed to `qemu_plugin_install`
/// (`qemu_info_t`): the target's name, the API versions QEMU supports,
/// whether this is system emulation and, if so, the vCPU counts.
#[repr(C)]
pub struct QemuInfo {
    target_name: *const c_char,
    version_min: c_int,
    version_cur: c_int,
    system_emulation: bool,
    smp_vcpus: c_int,
    max_vcpus: c_int,
}

/// `QEMU_PLUGIN_CB_NO_REGS`: the callback reads no guest register.
const CB_NO_REGS: c_int = 0;

type TranslateCallback = extern "C" fn(PluginId, *mut TranslationBlock);
type VcpuCallback = extern "C" fn(c_uint, *mut c_void);
type ExitCallback = extern "C" fn(PluginId, *mut c_void);

// The QEMU binary exports these; the dynamic loader resolves them when QEMU
// loads the plugin.
unsafe extern "C" {
    /// Calls `cb` each time a block is translated.
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TranslateCallback);
    /// During translation: calls `cb(vcpu, userdata)` each time the block
    /// runs.
    fn qemu_plugin_register_vcpu_tb_exec_cb(
        tb: *mut TranslationBlock,
        cb: VcpuCallback,
        flags: c_int,
        userdata: *mut c_void,
    );
    /// During translation: the block's instruction count.
    fn qemu_plugin_tb_n_insns(tb: *const TranslationBlock) -> usize;
    /// During translation: the guest virtual address the block starts at.
    fn qemu_plugin_tb_vaddr(tb: *const TranslationBlock) -> u64;
    /// Calls `cb(id, userdata)` when QEMU exits.
    fn qemu_plugin_register_atexit_cb(id: PluginId, cb: ExitCallback, userdata: *mut c_void);
    /// Prints a line through QEMU's log (stderr by default).
    fn qemu_plugin_outs(text: *const c_char);
}

/// One translated block start (address and length): its instructions per
/// vCPU. Leaked: QEMU keeps a pointer to it for as long as the translation
/// may run, which is until exit.
struct Block {
    pc: u64,
    insns: u64,
    per_vcpu: Box<[AtomicU64]>,
}

/// What the plugin was told and what it has counted.
struct Profile {
    out: String,
    top: usize,
    mark: Option<u64>,
    vcpus: usize,
    /// Every block seen, in the order first translated (a phase snapshot
    /// is indexed the same way).
    blocks: Mutex<Blocks>,
    /// Cumulative counts at each mark: (the marking vCPU, for each block
    /// then each vCPU the count then).
    marks: Mutex<Vec<(u32, Vec<u64>)>>,
}

#[derive(Default)]
struct Blocks {
    list: Vec<&'static Block>,
    by_start: HashMap<(u64, u64), &'static Block>,
}

static PROFILE: OnceLock<Profile> = OnceLock::new();

/// A lock that a panicking holder did not leave unusable (no callback here
/// panics, but a poisoned lock must not abort QEMU either).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn say(text: &str) {
    let mut bytes: Vec<u8> = text.bytes().filter(|&b| b != 0).collect();
    bytes.extend_from_slice(b"\n\0");
    if let Ok(line) = CStr::from_bytes_with_nul(&bytes) {
        // SAFETY: `line` is a NUL-terminated string that outlives the call;
        // QEMU copies it into its log.
        unsafe { qemu_plugin_outs(line.as_ptr()) };
    }
}

/// The plugin's arguments, `key=value` each.
fn parse_args(args: &[&str]) -> Result<(String, usize, Option<u64>), String> {
    let (mut out, mut top, mut mark) = (None, 0usize, None);
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("argument {arg:?} is not key=value"))?;
        match key {
            "out" => out = Some(value.to_string()),
            "top" => top = value.parse().map_err(|e| format!("top={value}: {e}"))?,
            "mark" => {
                let hex = value.trim_start_matches("0x");
                mark = Some(u64::from_str_radix(hex, 16).map_err(|e| format!("mark={value}: {e}"))?)
            }
            _ => return Err(format!("unknown argument {key:?} (out, mark, top)")),
        }
    }
    Ok((out.ok_or("out=FILE is required")?, top, mark))
}

/// Called by QEMU when it loads the plugin.
///
/// # Safety
///
/// QEMU passes a valid `info` for the duration of the call and `argc`
/// NUL-terminated strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    info: *const QemuInfo,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: QEMU hands a valid qemu_info_t for the duration of this call.
    let info = unsafe { &*info };
    if !info.system_emulation {
        say("insn-profile: system emulation only");
        return 1;
    }
    let mut args = Vec::new();
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: argv holds argc valid pointers to NUL-terminated strings
        // that live as long as the plugin.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
        args.push(arg.to_str().unwrap_or(""));
    }
    let (out, top, mark) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            say(&format!("insn-profile: {e}"));
            return 1;
        }
    };
    let vcpus = usize::try_from(info.max_vcpus.max(info.smp_vcpus))
        .unwrap_or(1)
        .max(1);
    let profile = Profile {
        out,
        top,
        mark,
        vcpus,
        blocks: Mutex::new(Blocks::default()),
        marks: Mutex::new(Vec::new()),
    };
    if PROFILE.set(profile).is_err() {
        say("insn-profile: loaded twice");
        return 1;
    }
    // SAFETY: registering callbacks with the id QEMU gave us; both are
    // `extern "C"` functions with the signatures the API expects.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
        qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    }
    0
}

extern "C" fn on_translate(_id: PluginId, tb: *mut TranslationBlock) {
    let Some(profile) = PROFILE.get() else { return };
    // SAFETY: `tb` is the block QEMU is translating, valid during this
    // callback.
    let (pc, insns) = unsafe { (qemu_plugin_tb_vaddr(tb), qemu_plugin_tb_n_insns(tb) as u64) };
    let block = {
        let mut blocks = lock(&profile.blocks);
        match blocks.by_start.get(&(pc, insns)) {
            Some(b) => *b,
            None => {
                let per_vcpu = (0..profile.vcpus).map(|_| AtomicU64::new(0)).collect();
                let b: &'static Block = Box::leak(Box::new(Block {
                    pc,
                    insns,
                    per_vcpu,
                }));
                blocks.list.push(b);
                blocks.by_start.insert((pc, insns), b);
                b
            }
        }
    };
    if profile.mark == Some(pc) {
        // SAFETY: `tb` is being translated; the callback takes no userdata.
        unsafe {
            qemu_plugin_register_vcpu_tb_exec_cb(tb, on_mark, CB_NO_REGS, std::ptr::null_mut())
        };
    }
    let userdata = std::ptr::from_ref(block).cast_mut().cast::<c_void>();
    // SAFETY: `tb` is being translated; `userdata` points to a leaked Block
    // that lives until QEMU exits.
    unsafe { qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, CB_NO_REGS, userdata) };
}

extern "C" fn on_block(vcpu: c_uint, userdata: *mut c_void) {
    // SAFETY: registered with a pointer to a leaked (never freed) Block.
    let block = unsafe { &*userdata.cast_const().cast::<Block>() };
    if let Some(count) = block.per_vcpu.get(vcpu as usize) {
        count.fetch_add(block.insns, Ordering::Relaxed);
    }
}

/// Cumulative counts of every block so far, block-major.
fn snapshot(profile: &Profile) -> Vec<u64> {
    let blocks = lock(&profile.blocks);
    let mut counts = Vec::with_capacity(blocks.list.len() * profile.vcpus);
    for b in &blocks.list {
        counts.extend(b.per_vcpu.iter().map(|c| c.load(Ordering::Relaxed)));
    }
    counts
}

extern "C" fn on_mark(vcpu: c_uint, _userdata: *mut c_void) {
    let Some(profile) = PROFILE.get() else { return };
    let counts = snapshot(profile);
    lock(&profile.marks).push((vcpu, counts));
}

extern "C" fn on_exit(_id: PluginId, _userdata: *mut c_void) {
    let Some(profile) = PROFILE.get() else { return };
    let last = snapshot(profile);
    let marks = std::mem::take(&mut *lock(&profile.marks));
    let blocks = lock(&profile.blocks);
    let text = render(profile, &blocks.list, &marks, &last);
    match std::fs::write(&profile.out, text) {
        Ok(()) => say(&format!(
            "insn-profile: {} blocks, {} phases written to {}",
            blocks.list.len(),
            marks.len() + 1,
            profile.out
        )),
        Err(e) => say(&format!("insn-profile: cannot write {}: {e}", profile.out)),
    }
}

/// The profile as text (see the crate's documentation).
fn render(profile: &Profile, blocks: &[&Block], marks: &[(u32, Vec<u64>)], last: &[u64]) -> String {
    let n = profile.vcpus;
    let mut text = format!("insn-profile 1 vcpus {n}\n");
    let mut ends: Vec<(Option<u32>, &[u64])> = marks
        .iter()
        .map(|(v, c)| (Some(*v), c.as_slice()))
        .collect();
    ends.push((None, last));
    let mut before: &[u64] = &[];
    for (phase, (mark_vcpu, after)) in ends.into_iter().enumerate() {
        // Per block: its counts in this phase.
        let mut rows: Vec<(u64, u64, Vec<u64>)> = Vec::new();
        let mut per_vcpu_total = vec![0u64; n];
        for (i, b) in blocks.iter().enumerate() {
            let mut counts = Vec::with_capacity(n);
            for v in 0..n {
                let at = i * n + v;
                let now = after.get(at).copied().unwrap_or(0);
                let then = before.get(at).copied().unwrap_or(0);
                counts.push(now.saturating_sub(then));
            }
            let sum: u64 = counts.iter().sum();
            if sum > 0 {
                for (t, c) in per_vcpu_total.iter_mut().zip(&counts) {
                    *t += c;
                }
                rows.push((b.pc, sum, counts));
            }
        }
        let total: u64 = per_vcpu_total.iter().sum();
        let _ = write!(
            text,
            "phase {phase} mark-vcpu {} total {total} vcpu",
            mark_vcpu.map_or("-".to_string(), |v| v.to_string())
        );
        for t in &per_vcpu_total {
            let _ = write!(text, " {t}");
        }
        text.push('\n');
        // Blocks with the same start but another length (a retranslation)
        // are merged into one line.
        let mut merged: HashMap<u64, (u64, Vec<u64>)> = HashMap::new();
        for (pc, sum, counts) in rows {
            let e = merged.entry(pc).or_insert_with(|| (0, vec![0; n]));
            e.0 += sum;
            for (a, c) in e.1.iter_mut().zip(&counts) {
                *a += c;
            }
        }
        let mut rows: Vec<_> = merged.into_iter().collect();
        rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
        if profile.top > 0 {
            rows.truncate(profile.top);
        }
        for (pc, (sum, counts)) in rows {
            let _ = write!(text, "{pc:#x} {sum}");
            for c in counts {
                let _ = write!(text, " {c}");
            }
            text.push('\n');
        }
        before = after;
    }
    text
}
