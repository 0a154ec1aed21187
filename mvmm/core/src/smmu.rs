//! The SMMUv3 that confines devices' DMA: what its tables say, and what its
//! events mean.
//!
//! mvmm owns the SMMU (no VM maps it). Its stream table has one entry per
//! stream id below [`MAX_STREAMS`]: the ids of devices a VM owns
//! ([`Dma::Smmu`]) translate through that VM's context descriptor, every
//! other id aborts (and ids beyond the table are refused by the SMMU as
//! `C_BAD_STREAMID`). The arch layer (`mvmm/src/arch/aarch64/smmu.rs`)
//! writes these entries into memory, runs the command queue and reads the
//! event queue; everything here is plain data, tested on the host.
//!
//! # Stage-1 stand-in
//! QEMU 7.2's SMMUv3 implements stage 1 only. So a VM's streams translate
//! with *stage-1* tables that map device addresses 1:1 onto that VM's RAM
//! and nothing else ([`dma_plan`]). That is the same confinement a stage-2
//! translation through the VM's own stage-2 tables gives, because a VM's
//! guest-physical addresses equal physical ones (`Vm::ram`: IPA == PA); a
//! guest's DMA address *is* its IPA. With a stage-2 SMMU the STE would point
//! S2TTB at the VM's stage-2 root with its VMID ([`StreamConfig::Confined`]
//! keeps the VM, not a table, so that swap is local). See docs/dma.md.

use crate::partition::{Board, Dma, MAX_STREAMS, MemRange, Vm};
use crate::stage2::{Stage2Builder, Stage2Error, Table};
use core::fmt;

/// Bytes of one stream table entry (STE).
pub const STE_SIZE: usize = 64;
/// Bytes of one context descriptor (CD).
pub const CD_SIZE: usize = 64;
/// log2 of the number of STEs in mvmm's linear stream table.
pub const STREAM_TABLE_LOG2: u32 = MAX_STREAMS.trailing_zeros();
const _: () = assert!(1 << STREAM_TABLE_LOG2 == MAX_STREAMS);

/// One STE as eight little-endian double words.
pub type Ste = [u64; 8];
/// One CD as eight double words.
pub type Cd = [u64; 8];
/// One command-queue entry.
pub type Command = [u64; 2];
/// One event-queue record.
pub type EventRecord = [u64; 4];

const STE_V: u64 = 1;
/// STE.Config (bits 3:1): 0b000 abort, 0b101 stage 1 translate.
const STE_CONFIG_ABORT: u64 = 0b000 << 1;
const STE_CONFIG_S1: u64 = 0b101 << 1;
const STE_S1CTXPTR_MASK: u64 = 0x000f_ffff_ffff_ffc0;
/// STE double word 1: S1CIR/S1COR write-back (1), S1CSH inner shareable
/// (3): how the SMMU reads the CD.
const STE1_CD_WB_ISH: u64 = 1 << 2 | 1 << 4 | 3 << 6;
/// STE double word 1, SHCFG (bits 45:44) = 1: use the incoming shareability.
const STE1_SHCFG_INCOMING: u64 = 1 << 44;

/// CD double word 0 fields.
const CD_T0SZ: u64 = 64 - crate::stage2::IPA_BITS as u64;
const CD_TG0_4K: u64 = 0 << 6;
const CD_IR0_WB: u64 = 1 << 8;
const CD_OR0_WB: u64 = 1 << 10;
const CD_SH0_ISH: u64 = 3 << 12;
const CD_EPD1: u64 = 1 << 30;
const CD_V: u64 = 1 << 31;
/// IPS (bits 34:32) = 0b010: 40-bit output addresses.
const CD_IPS_40: u64 = 2 << 32;
const CD_AA64: u64 = 1 << 41;
/// R: record faults in the event queue; A: abort (terminate) faulting
/// transactions rather than stall them.
const CD_R: u64 = 1 << 45;
const CD_A: u64 = 1 << 46;
const CD_ASID_SHIFT: u32 = 48;
const CD_TTB_MASK: u64 = 0x000f_ffff_ffff_fff0;
/// MAIR of the CD: attr 0 Device-nGnRE, attr 1 Normal write-back (as EL2).
pub const CD_MAIR: u64 = 0xff << 8 | 0x04;

/// Stage-1 leaf bits of a DMA mapping: access flag, inner shareable,
/// AttrIndx 1 (normal write-back), AP = 0b01 (read/write whatever the
/// transaction's privilege: a PCIe request is unprivileged), never
/// executable (PXN, UXN).
pub const DMA_LEAF_BITS: u64 = 1 << 10 | 3 << 8 | 1 << 2 | 0b01 << 6 | 1 << 53 | 1 << 54;

/// What the stream table does with one stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamConfig {
    /// No VM owns a device with this id: every transaction is aborted.
    Abort,
    /// A device of VM `vm` (index into `Board::vms`): translate through that
    /// VM's context descriptor, which reaches its RAM only.
    Confined { vm: usize },
}

/// The stream table's decision for `stream`.
pub fn stream_config(board: &Board<'_>, stream: u32) -> StreamConfig {
    match board.stream_owner(stream) {
        Some((vm, _)) if stream < MAX_STREAMS => StreamConfig::Confined { vm },
        _ => StreamConfig::Abort,
    }
}

/// True when VM `vm` owns any device behind the SMMU (then it needs a CD
/// and tables, and must not run unless the SMMU is on).
pub fn vm_has_streams(board: &Board<'_>, vm: &Vm<'_>) -> bool {
    vm.devices
        .iter()
        .filter_map(|name| board.device(name))
        .any(|d| matches!(d.dma, Dma::Smmu { .. }))
}

/// The STE for a stream: abort, or stage-1 translation through the CD at
/// physical address `cd_pa` (64-byte aligned).
pub fn ste(config: StreamConfig, cd_pa: u64) -> Ste {
    let mut ste = [0u64; 8];
    match config {
        StreamConfig::Abort => ste[0] = STE_V | STE_CONFIG_ABORT,
        StreamConfig::Confined { .. } => {
            // S1Fmt 0 and S1CDMax 0: one CD, no substreams. STRW 0 (EL1).
            ste[0] = STE_V | STE_CONFIG_S1 | (cd_pa & STE_S1CTXPTR_MASK);
            ste[1] = STE1_CD_WB_ISH | STE1_SHCFG_INCOMING;
        }
    }
    ste
}

/// The context descriptor of a VM's streams: stage-1 tables at `ttb0`
/// ([`IPA_BITS`](crate::stage2::IPA_BITS) of input, 4 KiB granule, walked
/// from level 1), address space `asid`; faults recorded and aborted.
pub fn context_descriptor(ttb0: u64, asid: u16) -> Cd {
    let mut cd = [0u64; 8];
    cd[0] = CD_T0SZ
        | CD_TG0_4K
        | CD_IR0_WB
        | CD_OR0_WB
        | CD_SH0_ISH
        | CD_EPD1
        | CD_V
        | CD_IPS_40
        | CD_AA64
        | CD_R
        | CD_A
        | u64::from(asid) << CD_ASID_SHIFT;
    cd[1] = ttb0 & CD_TTB_MASK;
    cd[3] = CD_MAIR;
    cd
}

/// What a VM's devices may reach by DMA: its RAM, identity mapped, and
/// nothing else (no device registers, no other VM, not mvmm).
pub fn dma_plan<'a>(vm: &'a Vm<'a>) -> impl Iterator<Item = MemRange> + 'a {
    vm.ram.iter().copied()
}

/// Writes a VM's stage-1 DMA tables into `tables` (at physical `pool_pa`);
/// returns the root's address and the tables used.
pub fn build_dma_tables(
    vm: &Vm<'_>,
    tables: &mut [Table],
    pool_pa: u64,
) -> Result<(u64, usize), Stage2Error> {
    let mut b = Stage2Builder::new(tables, pool_pa)?;
    for r in dma_plan(vm) {
        b.map_leaves(r.base, r.base, r.size, DMA_LEAF_BITS)?;
    }
    Ok((b.root_pa(), b.tables_used()))
}

/// Command opcodes.
const CMD_CFGI_ALL: u64 = 0x04;
const CMD_TLBI_NSNH_ALL: u64 = 0x30;
const CMD_SYNC: u64 = 0x46;

/// The commands that make the SMMU forget every cached STE, CD and
/// translation, then wait for that to finish: issued after the tables are
/// written and whenever they change.
pub const INVALIDATE_ALL: [Command; 3] = [
    // CFGI_ALL is CFGI_STE_RANGE with Range 31.
    [CMD_CFGI_ALL, 31],
    [CMD_TLBI_NSNH_ALL, 0],
    // CS = 0: no interrupt, no MSI; completion is seen in CMDQ_CONS.
    [CMD_SYNC, 0],
];

/// The kind of an SMMU event (SMMUv3 spec, "Event records").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    UnsupportedUpstream,
    BadStreamId,
    StreamTableFetch,
    BadSte,
    StreamDisabled,
    TranslationForbidden,
    BadSubstreamId,
    CdFetch,
    BadCd,
    WalkExternalAbort,
    Translation,
    AddressSize,
    Access,
    Permission,
    TlbConflict,
    ConfigConflict,
    /// A type this decoder does not name.
    Other(u8),
}

impl EventKind {
    fn from_code(code: u8) -> EventKind {
        use EventKind::*;
        match code {
            0x01 => UnsupportedUpstream,
            0x02 => BadStreamId,
            0x03 => StreamTableFetch,
            0x04 => BadSte,
            0x06 => StreamDisabled,
            0x07 => TranslationForbidden,
            0x08 => BadSubstreamId,
            0x09 => CdFetch,
            0x0a => BadCd,
            0x0b => WalkExternalAbort,
            0x10 => Translation,
            0x11 => AddressSize,
            0x12 => Access,
            0x13 => Permission,
            0x20 => TlbConflict,
            0x21 => ConfigConflict,
            other => Other(other),
        }
    }

    /// Whether the record carries the transaction's input address.
    const fn has_address(self) -> bool {
        use EventKind::*;
        matches!(
            self,
            UnsupportedUpstream
                | TranslationForbidden
                | WalkExternalAbort
                | Translation
                | AddressSize
                | Access
                | Permission
        )
    }

    /// A fault of a device's DMA (as opposed to a broken configuration,
    /// which is an mvmm bug).
    pub const fn is_dma_fault(self) -> bool {
        self.has_address() || matches!(self, EventKind::BadStreamId | EventKind::StreamDisabled)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventKind::*;
        let name = match self {
            UnsupportedUpstream => "unsupported upstream transaction",
            BadStreamId => "unknown stream id",
            StreamTableFetch => "stream table fetch abort",
            BadSte => "invalid stream table entry",
            StreamDisabled => "stream disabled",
            TranslationForbidden => "translation forbidden",
            BadSubstreamId => "bad substream id",
            CdFetch => "context descriptor fetch abort",
            BadCd => "invalid context descriptor",
            WalkExternalAbort => "table walk abort",
            Translation => "translation fault",
            AddressSize => "address size fault",
            Access => "access flag fault",
            Permission => "permission fault",
            TlbConflict => "TLB conflict",
            ConfigConflict => "configuration cache conflict",
            Other(code) => return write!(f, "event type {code:#04x}"),
        };
        f.write_str(name)
    }
}

/// A decoded event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub stream: u32,
    /// The device's address that faulted, for the kinds that record one.
    pub address: Option<u64>,
    /// A write (false: a read), for the kinds that record an address.
    pub write: bool,
}

impl Event {
    /// Decodes a record as the SMMU wrote it. Any bit pattern decodes.
    pub fn decode(record: &EventRecord) -> Event {
        let kind = EventKind::from_code(record[0] as u8);
        let has_address = kind.has_address();
        Event {
            kind,
            stream: (record[0] >> 32) as u32,
            address: has_address.then_some(record[2]),
            // RnW, bit 35: 1 is a read.
            write: has_address && record[1] & 1 << 35 == 0,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {:#x}: {}", self.stream, self.kind)?;
        if let Some(address) = self.address {
            let what = if self.write { "write" } else { "read" };
            write!(f, ", DMA {what} at {address:#x}")?;
        }
        Ok(())
    }
}

/// Distinct events logged before mvmm only counts them: a guest that makes
/// its device fault in a loop must not flood the console.
pub const EVENT_LOG_LIMIT: u32 = 32;

/// What mvmm does with the events it drains: an event like the one before
/// it (same kind, stream, direction and 4 KiB page: one DMA faulting word
/// by word) is counted; a new one is logged, up to [`EVENT_LOG_LIMIT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventLog {
    /// Events seen.
    pub seen: u32,
    /// Events logged.
    pub logged: u32,
    last: Option<(EventKind, u32, bool, Option<u64>)>,
}

impl EventLog {
    pub const fn new() -> EventLog {
        EventLog {
            seen: 0,
            logged: 0,
            last: None,
        }
    }

    /// Counts one event; true when it should be logged.
    pub fn record(&mut self, event: &Event) -> bool {
        self.seen = self.seen.saturating_add(1);
        let key = (
            event.kind,
            event.stream,
            event.write,
            event.address.map(|a| a >> 12),
        );
        let new = self.last != Some(key);
        self.last = Some(key);
        if new && self.logged < EVENT_LOG_LIMIT {
            self.logged += 1;
            return true;
        }
        false
    }

    /// True once the log limit is reached (later events are only counted).
    pub const fn full(&self) -> bool {
        self.logged >= EVENT_LOG_LIMIT
    }
}

/// A queue index as the SMMU keeps it: `log2` bits of index, then a wrap
/// bit. The queue is empty when producer and consumer are equal, full when
/// only the wrap bits differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueIndex {
    pub log2: u32,
    pub value: u32,
}

impl QueueIndex {
    /// The index and wrap bit of a PROD/CONS register value (other bits,
    /// such as the overflow flag, dropped).
    pub const fn from_register(log2: u32, register: u32) -> QueueIndex {
        QueueIndex {
            log2,
            value: register & ((2 << log2) - 1),
        }
    }

    /// The slot it points at.
    pub const fn slot(self) -> usize {
        (self.value & ((1 << self.log2) - 1)) as usize
    }

    /// The next index (wrapping, with the wrap bit toggled at the end).
    pub const fn next(self) -> QueueIndex {
        QueueIndex {
            log2: self.log2,
            value: (self.value + 1) & ((2 << self.log2) - 1),
        }
    }

    /// Entries between `self` (consumer) and `producer`.
    pub const fn pending(self, producer: QueueIndex) -> u32 {
        producer.value.wrapping_sub(self.value) & ((2 << self.log2) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::{BOARD, DEVICES, VMS};
    use crate::partition::{Device, DeviceClass, StreamIds};
    use crate::stage2::ENTRIES;

    fn board_with_net() -> Board<'static> {
        Board {
            devices: DEVICES,
            vms: VMS,
            ..BOARD
        }
    }

    #[test]
    fn the_rich_vms_streams_translate_every_other_aborts() {
        let b = board_with_net();
        // net0 (ids 8..16) belongs to the rich VM.
        for sid in 8..16 {
            assert_eq!(stream_config(&b, sid), StreamConfig::Confined { vm: 0 });
        }
        for sid in [0, 7, 16, 255, 256, u32::MAX] {
            assert_eq!(stream_config(&b, sid), StreamConfig::Abort, "{sid}");
        }
        assert!(vm_has_streams(&b, &VMS[0]));
        assert!(!vm_has_streams(&b, &VMS[1]));
        // A device behind the SMMU that no VM owns: its ids abort.
        let unowned: &'static [Vm<'static>] = Box::leak(Box::new([
            Vm {
                devices: &["rtc"],
                ..VMS[0]
            },
            VMS[1],
        ]));
        let b = Board { vms: unowned, ..b };
        assert_eq!(stream_config(&b, 8), StreamConfig::Abort);
    }

    #[test]
    fn stes_and_the_cd_carry_what_qemu_and_the_spec_read() {
        let abort = ste(StreamConfig::Abort, 0x4010_0040);
        assert_eq!(
            abort,
            [1, 0, 0, 0, 0, 0, 0, 0],
            "valid, config abort, no CD"
        );
        let s1 = ste(StreamConfig::Confined { vm: 0 }, 0x4010_0040);
        assert_eq!(s1[0] & 1, 1, "V");
        assert_eq!((s1[0] >> 1) & 7, 0b101, "stage 1 translate, stage 2 bypass");
        assert_eq!(s1[0] & STE_S1CTXPTR_MASK, 0x4010_0040);
        assert_eq!((s1[0] >> 4) & 3, 0, "S1Fmt: a single CD");
        assert_eq!(s1[1] >> 59, 0, "S1CDMax 0");
        assert_eq!((s1[1] >> 30) & 3, 0, "STRW: EL1");
        assert_eq!((s1[1] >> 27) & 1, 0, "S1STALLD clear");

        let cd = context_descriptor(0x4020_0000, 1);
        let w0 = cd[0];
        assert_eq!(w0 & 0x3f, 32, "T0SZ: 32-bit input addresses");
        assert_eq!((w0 >> 6) & 3, 0, "TG0 4 KiB");
        assert_eq!((w0 >> 14) & 1, 0, "TTB0 walks");
        assert_eq!((w0 >> 30) & 1, 1, "TTB1 disabled");
        assert_eq!((w0 >> 31) & 1, 1, "V");
        assert_eq!((w0 >> 41) & 1, 1, "AArch64 tables");
        assert_eq!((w0 >> 44) & 1, 0, "no stall");
        assert_eq!((w0 >> 45) & 3, 0b11, "record and abort faults");
        assert_eq!((w0 >> 42) & 3, 0, "no hardware access/dirty flags");
        assert_eq!(w0 >> 48, 1, "ASID");
        assert_eq!(cd[1], 0x4020_0000);
        assert_eq!(cd[3], CD_MAIR);
    }

    #[test]
    fn dma_reaches_the_vms_ram_and_nothing_else() {
        let mut pool = vec![[0u64; ENTRIES]; 8];
        let pa = 0x4010_0000;
        let (root, used) = build_dma_tables(&VMS[0], &mut pool, pa).unwrap();
        assert_eq!(root, pa);
        assert!(used <= 3, "{used} tables");
        let b = Stage2Builder::resume(&mut pool, pa, used);
        for ok in [0x5000_0000u64, 0x6abc_d123, 0x7fff_fffc, 0x7f00_0000] {
            assert_eq!(b.translate(ok).map(|(p, _)| p), Some(ok), "{ok:#x}");
        }
        // Secure RAM, mvmm, the image store, devices, beyond RAM: unmapped.
        for bad in [
            0x4100_0000u64,
            0x42ff_f000,
            0x4000_0000,
            0x4020_0000,
            0x4300_0000,
            0x4fff_ffff,
            0x8000_0000,
            0x0901_0000,
            0x0905_0000,
            0x1000_0000,
            0x3f00_0000,
            0,
            0xffff_ffff,
            1 << 40,
        ] {
            assert_eq!(b.translate(bad), None, "{bad:#x}");
        }
        // Leaves are read/write for any privilege and never executable.
        let l2 = (pool[0][1] & 0x0000_ffff_ffff_f000) - pa;
        let leaf = pool[(l2 / 4096) as usize][(0x5000_0000 >> 21) & 511];
        assert_eq!(leaf & 0b11, 0b01, "a 2 MiB block");
        assert_eq!((leaf >> 6) & 3, 0b01, "AP: RW at EL0 and EL1");
        assert_eq!(leaf & (1 << 10), 1 << 10, "AF");
        assert_eq!((leaf >> 53) & 3, 0b11, "PXN and UXN");
    }

    #[test]
    fn events_decode_with_stream_and_address() {
        // A translation fault: device 0:1.0 (stream 8) writing 0x41000000.
        let write = [0x0000_0008_0000_0010, 0, 0x4100_0000, 0];
        let e = Event::decode(&write);
        assert_eq!(
            e,
            Event {
                kind: EventKind::Translation,
                stream: 8,
                address: Some(0x4100_0000),
                write: true
            }
        );
        assert_eq!(
            e.to_string(),
            "stream 0x8: translation fault, DMA write at 0x41000000"
        );
        let read = [0x0000_0008_0000_0010, 1 << 35, 0x4300_0000, 0];
        assert_eq!(
            Event::decode(&read).to_string(),
            "stream 0x8: translation fault, DMA read at 0x43000000"
        );
        let bad_sid = [0x0001_0000_0000_0002, u64::MAX, u64::MAX, u64::MAX];
        let e = Event::decode(&bad_sid);
        assert_eq!(e.to_string(), "stream 0x10000: unknown stream id");
        assert!(e.kind.is_dma_fault());
        assert!(!EventKind::BadCd.is_dma_fault());
        assert_eq!(
            Event::decode(&[0xee, 0, 0, 0]).to_string(),
            "stream 0x0: event type 0xee"
        );
    }

    #[test]
    fn the_event_log_is_bounded_and_skips_repeats() {
        let event = |address: u64, write: bool| Event {
            kind: EventKind::Translation,
            stream: 8,
            address: Some(address),
            write,
        };
        let mut log = EventLog::new();
        // One DMA faulting word by word: logged once.
        let logged = (0..64)
            .filter(|i| log.record(&event(0x4100_0000 + 4 * i, false)))
            .count();
        assert_eq!(logged, 1);
        // Another direction, page or stream is news.
        assert!(log.record(&event(0x4100_0000, true)));
        assert!(log.record(&event(0x4300_0000, true)));
        assert!(log.record(&Event {
            stream: 9,
            ..event(0x4300_0000, true)
        }));
        // A guest alternating addresses for ever: bounded.
        let more = (0..1000u64)
            .filter(|i| log.record(&event(0x4000_0000 + (i % 2) * 0x10_0000, false)))
            .count();
        assert_eq!(more as u32, EVENT_LOG_LIMIT - 4);
        assert!(log.full());
        assert_eq!(log.seen, 1067);
    }

    #[test]
    fn queue_indices_wrap_with_the_wrap_bit() {
        let log2 = 5;
        let c = QueueIndex::from_register(log2, 31);
        assert_eq!(c.slot(), 31);
        let n = c.next();
        assert_eq!((n.value, n.slot()), (32, 0), "wrap bit set");
        assert_eq!(n.next().slot(), 1);
        let top = QueueIndex::from_register(log2, 63);
        assert_eq!(top.next().value, 0);
        // The overflow flag (bit 31) is not part of the index.
        let p = QueueIndex::from_register(log2, 1 << 31 | 34);
        assert_eq!(p.value, 34);
        assert_eq!(c.pending(p), 3);
        assert_eq!(p.pending(p), 0);
        assert_eq!(
            QueueIndex::from_register(log2, 0).pending(QueueIndex::from_register(log2, 32)),
            32,
            "full"
        );
    }

    #[test]
    fn a_dma_device_of_another_kind_is_confined_the_same_way() {
        let dev = Device {
            name: "gpu",
            class: DeviceClass::Display,
            mmio: MemRange::new(0x0a00_4000, 0x1000),
            irqs: &[],
            dma: Dma::Smmu {
                streams: StreamIds {
                    first: 40,
                    count: 2,
                },
            },
            pcie: None,
        };
        let devices: &'static [Device<'static>] = Box::leak(Box::new([DEVICES[0], dev]));
        let vms: &'static [Vm<'static>] = Box::leak(Box::new([
            VMS[0],
            Vm {
                devices: &["gpu"],
                ..VMS[1]
            },
        ]));
        let vms: &'static [Vm<'static>] = Box::leak(Box::new([
            Vm {
                devices: &["rtc"],
                ..vms[0]
            },
            vms[1],
        ]));
        let b = Board {
            devices,
            vms,
            ..BOARD
        };
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(stream_config(&b, 41), StreamConfig::Confined { vm: 1 });
        assert_eq!(stream_config(&b, 42), StreamConfig::Abort);
    }
}
