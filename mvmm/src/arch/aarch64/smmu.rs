//! The SMMUv3, driven as hardware is: mvmm's stream table, context
//! descriptors and DMA tables in its own memory, the command queue to make
//! the SMMU read them, the event queue to hear about faults.
//!
//! What goes into the tables is decided by `mvmm_core::smmu`; this module
//! only moves it into memory and registers. No VM maps the SMMU (the board
//! validator keeps it out of every stage-2 map). The registers are a
//! `safe-mmio` block ([`Registers`]); the tables and queues are ordinary
//! memory the SMMU reads and writes, accessed with volatile operations.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};
use mvmm_core::partition::{Board, MAX_STREAMS, MAX_VMS, MemRange};
use mvmm_core::smmu::{
    self, CD_SIZE, Cd, Command, EventRecord, INVALIDATE_ALL, QueueIndex, STE_SIZE,
    STREAM_TABLE_LOG2, Ste, StreamConfig,
};
use mvmm_core::stage2::{ENTRIES, Table};
use safe_mmio::fields::{ReadPure, ReadPureWrite};
use safe_mmio::{UniqueMmioPointer, field};
/// Its locks yield while they wait, as mvmm's do (see [`super::Yield`]).
type Mutex<T> = spin::mutex::Mutex<T, super::Yield>;

/// The SMMU's registers that mvmm uses (SMMUv3 spec, "Register map"):
/// page 0, and the event queue's indices in page 1.
#[repr(C, align(8))]
struct Registers {
    idr0: ReadPure<u32>,
    idr1: ReadPure<u32>,
    _idr2_to_0x1c: [u32; 6],
    cr0: ReadPureWrite<u32>,
    cr0ack: ReadPure<u32>,
    cr1: ReadPureWrite<u32>,
    cr2: ReadPureWrite<u32>,
    _0x30_to_0x40: [u32; 5],
    gbpa: ReadPureWrite<u32>,
    _0x48_to_0x4c: [u32; 2],
    irq_ctrl: ReadPureWrite<u32>,
    irq_ctrlack: ReadPure<u32>,
    _0x58_to_0x5c: [u32; 2],
    gerror: ReadPure<u32>,
    gerrorn: ReadPureWrite<u32>,
    _0x68_to_0x7c: [u32; 6],
    strtab_base: ReadPureWrite<u64>,
    strtab_base_cfg: ReadPureWrite<u32>,
    _0x8c: u32,
    cmdq_base: ReadPureWrite<u64>,
    cmdq_prod: ReadPureWrite<u32>,
    cmdq_cons: ReadPureWrite<u32>,
    evtq_base: ReadPureWrite<u64>,
    _0xa8_to_page1: [u32; (0x1_00a8 - 0xa8) / 4],
    evtq_prod: ReadPureWrite<u32>,
    evtq_cons: ReadPureWrite<u32>,
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Registers, cr0) == 0x20);
    assert!(offset_of!(Registers, gbpa) == 0x44);
    assert!(offset_of!(Registers, irq_ctrl) == 0x50);
    assert!(offset_of!(Registers, gerror) == 0x60);
    assert!(offset_of!(Registers, strtab_base) == 0x80);
    assert!(offset_of!(Registers, cmdq_base) == 0x90);
    assert!(offset_of!(Registers, evtq_base) == 0xa0);
    assert!(offset_of!(Registers, evtq_prod) == 0x1_00a8);
    assert!(offset_of!(Registers, evtq_cons) == 0x1_00ac);
};

const IDR0_S1P: u32 = 1 << 1;
/// IDR0.TTF (bits 3:2): 0b10 AArch64 tables, 0b11 both.
const IDR0_TTF_AARCH64: u32 = 0b10 << 2;
const IDR1_SIDSIZE: u32 = 0x3f;
const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;
/// CR1: tables and queues read and written write-back cacheable, inner
/// shareable (mvmm's memory is normal write-back at EL2).
const CR1_WB_ISH: u32 = 3 << 10 | 1 << 8 | 1 << 6 | 3 << 4 | 1 << 2 | 1;
/// CR2: RECINVSID (record events for invalid stream ids), PTM (no
/// broadcast TLB maintenance), E2H 0.
const CR2_RECINVSID_PTM: u32 = 1 << 1 | 1 << 2;
/// GBPA: abort incoming transactions while the SMMU is disabled (QEMU 7.2
/// has no GBPA: it lets them bypass, which is why mvmm enables the SMMU
/// before any VM runs).
const GBPA_UPDATE: u32 = 1 << 31;
const GBPA_ABORT: u32 = 1 << 20;
const IRQ_CTRL_GERROR: u32 = 1 << 0;
const IRQ_CTRL_EVENTQ: u32 = 1 << 2;
/// Read-allocate / write-allocate hints of the table and queue bases.
const BASE_RA_WA: u64 = 1 << 62;
const QUEUE_ADDR_MASK: u64 = 0x000f_ffff_ffff_ffe0;
const CMDQ_CONS_ERR: u32 = 0x7f << 24;
const EVTQ_PROD_OVFLG: u32 = 1 << 31;

/// log2 of the queues' entry counts.
const CMDQ_LOG2: u32 = 5;
const EVTQ_LOG2: u32 = 5;
/// Stage-1 DMA tables for all VMs together.
const DMA_TABLES: usize = 8;
/// Polls of an acknowledge register before giving up.
const POLLS: u32 = 1_000_000;

#[repr(C, align(16384))]
struct StreamTable([Ste; MAX_STREAMS as usize]);
#[repr(C, align(64))]
struct ContextDescriptors([Cd; MAX_VMS]);
#[repr(C, align(4096))]
struct DmaTables([Table; DMA_TABLES]);
#[repr(C, align(512))]
struct CommandQueue([Command; 1 << CMDQ_LOG2]);
#[repr(C, align(1024))]
struct EventQueue([EventRecord; 1 << EVTQ_LOG2]);

const _: () = assert!(size_of::<Ste>() == STE_SIZE && size_of::<Cd>() == CD_SIZE);
const _: () = assert!(size_of::<StreamTable>() == 16384);

static STREAM_TABLE: Mutex<StreamTable> = Mutex::new(StreamTable([[0; 8]; MAX_STREAMS as usize]));
static CDS: Mutex<ContextDescriptors> = Mutex::new(ContextDescriptors([[0; 8]; MAX_VMS]));
static DMA: Mutex<DmaTables> = Mutex::new(DmaTables([[0; ENTRIES]; DMA_TABLES]));
static CMDQ: Mutex<CommandQueue> = Mutex::new(CommandQueue([[0; 2]; 1 << CMDQ_LOG2]));
static EVTQ: Mutex<EventQueue> = Mutex::new(EventQueue([[0; 4]; 1 << EVTQ_LOG2]));

/// Set by the first [`Smmu::start`]: one driver, so one pointer to the
/// registers.
static STARTED: AtomicBool = AtomicBool::new(false);

/// The SMMU's registers.
pub struct Smmu {
    regs: UniqueMmioPointer<'static, Registers>,
}

impl Smmu {
    /// Polls until `done` holds.
    fn wait(
        &mut self,
        what: &'static str,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), &'static str> {
        for _ in 0..POLLS {
            if done(self) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(what)
    }

    fn set_cr0(&mut self, value: u32) -> Result<(), &'static str> {
        field!(self.regs, cr0).write(value);
        self.wait("CR0ACK did not follow CR0", |s| {
            field!(s.regs, cr0ack).read() & 0xff == value
        })
    }

    /// Programs the SMMU for `board` and enables it: every stream of a VM's
    /// device confined to that VM's RAM, every other stream aborted, faults
    /// recorded in the event queue (interrupt enabled). On error the SMMU is
    /// left disabled; the caller must not run the VMs whose DMA it confines.
    pub fn start(board: &Board<'_>, mmio: MemRange) -> Result<Smmu, &'static str> {
        if mmio.size < size_of::<Registers>() as u64 {
            return Err("its register range lacks page 1");
        }
        let Some(base) =
            NonNull::new(mmio.base as usize as *mut Registers).filter(|p| p.is_aligned())
        else {
            return Err("its registers are not 8-byte aligned");
        };
        if STARTED.swap(true, Ordering::AcqRel) {
            return Err("it is already started");
        }
        // SAFETY: `base` is the board's SMMU, aligned and large enough for
        // `Registers` (checked above), device memory in EL2's identity map
        // and in no stage-2 map (board validation). Only the first `start`
        // gets here (`STARTED`), so this is the one pointer to these
        // registers, for as long as mvmm runs.
        let regs = unsafe { UniqueMmioPointer::new(base) };
        let mut smmu = Smmu { regs };
        let idr0 = field!(smmu.regs, idr0).read();
        if idr0 & IDR0_S1P == 0 || idr0 & IDR0_TTF_AARCH64 == 0 {
            return Err("no stage-1 translation with AArch64 tables (IDR0)");
        }
        let idr1 = field!(smmu.regs, idr1).read();
        if idr1 & IDR1_SIDSIZE < STREAM_TABLE_LOG2
            || (idr1 >> 21) & 0x1f < CMDQ_LOG2
            || (idr1 >> 16) & 0x1f < EVTQ_LOG2
        {
            return Err("stream ids or queues smaller than mvmm's tables (IDR1)");
        }
        // Off (firmware may have left it on), aborting what comes meanwhile.
        smmu.set_cr0(0)?;
        field!(smmu.regs, gbpa).write(GBPA_UPDATE | GBPA_ABORT);
        smmu.wait("GBPA update did not complete", |s| {
            field!(s.regs, gbpa).read() & GBPA_UPDATE == 0
        })?;
        field!(smmu.regs, irq_ctrl).write(0);
        smmu.wait("IRQ_CTRLACK did not clear", |s| {
            field!(s.regs, irq_ctrlack).read() & 0x7 == 0
        })?;

        // The tables, in mvmm's memory (identity mapped: VA == PA).
        let mut cds = CDS.lock();
        let cds_pa = (&raw const cds.0) as u64;
        let mut dma = DMA.lock();
        let dma_pa = (&raw const dma.0) as u64;
        let mut used = 0;
        for (i, vm) in board.vms.iter().enumerate() {
            cds.0[i] = [0; 8];
            if !smmu::vm_has_streams(board, vm) {
                continue;
            }
            let pool = dma.0.get_mut(used..).ok_or("out of DMA tables")?;
            let (root, tables) =
                smmu::build_dma_tables(vm, pool, dma_pa + (used * size_of::<Table>()) as u64)
                    .map_err(|_| "cannot build a VM's DMA tables")?;
            used += tables;
            cds.0[i] = smmu::context_descriptor(root, vm.vmid);
        }
        let mut stream_table = STREAM_TABLE.lock();
        for (sid, ste) in stream_table.0.iter_mut().enumerate() {
            let config = smmu::stream_config(board, sid as u32);
            let cd_pa = match config {
                StreamConfig::Confined { vm } => cds_pa + (vm * CD_SIZE) as u64,
                StreamConfig::Abort => 0,
            };
            *ste = smmu::ste(config, cd_pa);
        }
        let strtab_pa = (&raw const stream_table.0) as u64;
        drop((stream_table, cds, dma));
        // The SMMU reads the tables from memory: make the writes visible.
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);

        field!(smmu.regs, cr1).write(CR1_WB_ISH);
        field!(smmu.regs, cr2).write(CR2_RECINVSID_PTM);
        field!(smmu.regs, strtab_base).write(BASE_RA_WA | strtab_pa);
        // FMT 0: linear.
        field!(smmu.regs, strtab_base_cfg).write(STREAM_TABLE_LOG2);

        let cmdq_pa = {
            let queue = CMDQ.lock();
            (&raw const queue.0) as u64
        };
        field!(smmu.regs, cmdq_base)
            .write(BASE_RA_WA | (cmdq_pa & QUEUE_ADDR_MASK) | u64::from(CMDQ_LOG2));
        field!(smmu.regs, cmdq_prod).write(0);
        field!(smmu.regs, cmdq_cons).write(0);
        smmu.set_cr0(CR0_CMDQEN)?;
        smmu.run_commands(&INVALIDATE_ALL)?;

        let evtq_pa = {
            let queue = EVTQ.lock();
            (&raw const queue.0) as u64
        };
        field!(smmu.regs, evtq_base)
            .write(BASE_RA_WA | (evtq_pa & QUEUE_ADDR_MASK) | u64::from(EVTQ_LOG2));
        field!(smmu.regs, evtq_prod).write(0);
        field!(smmu.regs, evtq_cons).write(0);
        smmu.set_cr0(CR0_CMDQEN | CR0_EVTQEN)?;
        field!(smmu.regs, irq_ctrl).write(IRQ_CTRL_EVENTQ | IRQ_CTRL_GERROR);
        smmu.wait("IRQ_CTRLACK did not follow", |s| {
            field!(s.regs, irq_ctrlack).read() & 0x7 == IRQ_CTRL_EVENTQ | IRQ_CTRL_GERROR
        })?;
        smmu.set_cr0(CR0_CMDQEN | CR0_EVTQEN | CR0_SMMUEN)?;
        Ok(smmu)
    }

    /// Queues `commands` and waits until the SMMU has consumed them all.
    fn run_commands(&mut self, commands: &[Command]) -> Result<(), &'static str> {
        let mut queue = CMDQ.lock();
        let mut prod = QueueIndex::from_register(CMDQ_LOG2, field!(self.regs, cmdq_prod).read());
        for command in commands {
            let slot = &mut queue.0[prod.slot()];
            // SAFETY: `slot` is an exclusively borrowed entry of the queue;
            // volatile so the writes are not elided before the SMMU reads.
            unsafe { ptr::write_volatile(slot, *command) };
            prod = prod.next();
        }
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
        field!(self.regs, cmdq_prod).write(prod.value);
        for _ in 0..POLLS {
            let cons = field!(self.regs, cmdq_cons).read();
            if cons & CMDQ_CONS_ERR != 0 {
                return Err("the command queue reported an error");
            }
            if QueueIndex::from_register(CMDQ_LOG2, cons) == prod {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err("the command queue did not drain")
    }

    /// Hands every pending event record to `f`, oldest first, and frees its
    /// slot. Returns whether the queue had overflowed (events were lost),
    /// and the global error bits that became active (acknowledged here).
    pub fn drain_events(&mut self, mut f: impl FnMut(&EventRecord)) -> (bool, u32) {
        let queue = EVTQ.lock();
        let prod_reg = field!(self.regs, evtq_prod).read();
        let prod = QueueIndex::from_register(EVTQ_LOG2, prod_reg);
        let cons_reg = field!(self.regs, evtq_cons).read();
        let mut cons = QueueIndex::from_register(EVTQ_LOG2, cons_reg);
        // At most one queue's worth, whatever the registers say.
        for _ in 0..(1u32 << EVTQ_LOG2) {
            if cons == prod {
                break;
            }
            // SAFETY: an entry of the queue; volatile because the SMMU
            // wrote it behind the compiler's back.
            let record = unsafe { ptr::read_volatile(&queue.0[cons.slot()]) };
            f(&record);
            cons = cons.next();
        }
        // Acknowledge an overflow by copying its flag into CONS.
        let overflow = (prod_reg ^ cons_reg) & EVTQ_PROD_OVFLG != 0;
        field!(self.regs, evtq_cons).write(cons.value | (prod_reg & EVTQ_PROD_OVFLG));
        let gerror = field!(self.regs, gerror).read();
        let errors = gerror ^ field!(self.regs, gerrorn).read();
        if errors != 0 {
            field!(self.regs, gerrorn).write(gerror);
        }
        (overflow, errors)
    }
}
