//! The virtual GICv3 of one VM: the distributor and redistributors a guest
//! programs, emulated on traps, and the bookkeeping of which virtual
//! interrupt is pending for which vCPU.
//!
//! mvmm owns the physical GIC. A guest sees a distributor and one
//! redistributor per vCPU at the board's GIC addresses; none of them is
//! mapped, so every access traps and lands here. Only the VM's own
//! interrupts exist in this model: SGIs and PPIs per vCPU, and the SPIs
//! below [`SPI_LIMIT`]. Interrupts reach the guest through the list
//! registers: the arch layer asks [`Vgic::next_pending`] for what to load.

use crate::partition::MAX_CPUS;

/// The EL1 virtual timer's PPI.
pub const VTIMER_INTID: u32 = 27;
/// The EL1 physical timer's PPI (a guest may use it: CNTHCTL_EL2.EL1PCEN).
pub const PTIMER_INTID: u32 = 30;
/// The per-CPU timer interrupts mvmm forwards to the vCPU on the CPU with
/// the HW bit (the guest's deactivation ends the physical interrupt).
pub const FORWARDED_TIMERS: [u32; 2] = [VTIMER_INTID, PTIMER_INTID];
/// The GIC maintenance interrupt's PPI.
pub const MAINTENANCE_INTID: u32 = 25;
/// ICC_SGI1R_EL1, trapped when a guest sends an SGI (op0, op1, CRn, CRm, op2).
pub const ICC_SGI1R_EL1: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 5);
/// ICC_ASGI1R_EL1 and ICC_SGI0R_EL1: other SGI generation registers.
pub const ICC_ASGI1R_EL1: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 6);
pub const ICC_SGI0R_EL1: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 7);

/// INTIDs below this exist in the model (32 private + 64 SPIs).
pub const SPI_LIMIT: u32 = 96;
const SPIS: usize = (SPI_LIMIT - 32) as usize;

/// An MMIO access the model refuses (bad size or alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAccess;

/// State of one interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Irq {
    enabled: bool,
    /// Waiting to be put in a list register.
    pending: bool,
    group1: bool,
    /// Edge-triggered (ICFGR bit set).
    edge: bool,
    priority: u8,
}

#[derive(Clone, Copy, Debug)]
struct Redistributor {
    private: [Irq; 32],
    sleeping: bool,
}

impl Redistributor {
    const fn new() -> Self {
        let mut private = [Irq {
            enabled: false,
            pending: false,
            group1: false,
            edge: false,
            priority: 0,
        }; 32];
        // Not architectural: the virtual timer's PPI starts enabled (group
        // 1, mid priority) so that a minimal guest that never programs a
        // redistributor still gets its timer. Linux programs it anyway.
        private[VTIMER_INTID as usize] = Irq {
            enabled: true,
            pending: false,
            group1: true,
            edge: false,
            priority: 0xa0,
        };
        Redistributor {
            private,
            sleeping: true,
        }
    }
}

/// The virtual GIC of one VM.
///
/// # Invariants
/// `vcpus <= MAX_CPUS`; `routes[i]` is the vCPU index SPI `32 + i` goes
/// to (always `< vcpus`).
#[derive(Clone, Debug)]
pub struct Vgic {
    vcpus: usize,
    ctlr: u32,
    spis: [Irq; SPIS],
    routes: [u8; SPIS],
    cpus: [Redistributor; MAX_CPUS],
    /// Which interrupts are pending, a bit each (the same as their
    /// `Irq::pending`): private ones per vCPU, then the SPIs. Finding the
    /// next interrupt to inject looks only at these bits, not at every
    /// interrupt's state (the hot path of every injection).
    pending_private: [u32; MAX_CPUS],
    pending_spis: [u32; SPIS / 32],
}

const _: () = assert!(SPIS.is_multiple_of(32));

/// Distributor registers.
mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const TYPER2: u64 = 0x000c;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR: u64 = 0x0c00;
    pub const IGRPMODR: u64 = 0x0d00;
    pub const IROUTER: u64 = 0x6000;
    pub const PIDR2: u64 = 0xffe8;
}

/// Redistributor registers (RD frame, then the SGI frame at +64 KiB).
mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    pub const SGI: u64 = 0x1_0000;
}

/// CTLR bits a guest may set: EnableGrp0, EnableGrp1, ARE, DS (RAO).
const GICD_CTLR_WRITABLE: u32 = 0b11;
const GICD_CTLR_ARE: u32 = 1 << 4;
const GICD_CTLR_DS: u32 = 1 << 6;
/// Arm as implementer, product 0 (an emulated GIC).
const IIDR: u32 = 0x43b;
/// GICv3 architecture revision in PIDR2.
const PIDR2_GICV3: u32 = 0x3 << 4;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// A one-bit-per-IRQ register: its offset and the field it reads.
type BitReader<'a> = (u64, &'a dyn Fn(&Irq, Live) -> bool);

/// What the hardware holds of an interrupt beyond this model: it is pending
/// or active in a list register of the CPU that runs its vCPU (from
/// injection until the guest deactivates it), or, for one forwarded with
/// the HW bit (the timers, passed-through SPIs), in the physical GIC. The
/// arch layer supplies it to [`Vgic::dist_read_live`] and
/// [`Vgic::redist_read_live`] so that ISPENDR and ISACTIVER read back as on
/// hardware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub pending: bool,
    pub active: bool,
}

/// No live state known (every interrupt reads as the model has it).
pub fn no_live_state(_vcpu: usize, _intid: u32) -> Live {
    Live::default()
}
/// A one-bit-per-IRQ register: its offset and what a written bit does.
type BitWriter<'a> = (u64, &'a dyn Fn(&mut Irq, u32));

/// Which register block and field an offset names: (base, bits per IRQ).
fn bitfield(offset: u64, base: u64, bits: u64) -> Option<u32> {
    let span = u64::from(SPI_LIMIT) * bits / 8;
    (offset >= base && offset < base + span).then(|| ((offset - base) * 8 / bits) as u32)
}

impl Vgic {
    /// A VM with `vcpus` vCPUs (clamped to 1..=MAX_CPUS), all interrupts
    /// disabled, SPIs routed to vCPU 0.
    pub const fn new(vcpus: usize) -> Self {
        let vcpus = if vcpus == 0 {
            1
        } else if vcpus > MAX_CPUS {
            MAX_CPUS
        } else {
            vcpus
        };
        Vgic {
            vcpus,
            ctlr: GICD_CTLR_ARE | GICD_CTLR_DS,
            spis: [Irq {
                enabled: false,
                pending: false,
                group1: false,
                edge: false,
                priority: 0,
            }; SPIS],
            routes: [0; SPIS],
            cpus: [Redistributor::new(); MAX_CPUS],
            pending_private: [0; MAX_CPUS],
            pending_spis: [0; SPIS / 32],
        }
    }

    pub fn vcpus(&self) -> usize {
        self.vcpus
    }

    fn irq(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        if intid < 32 {
            self.cpus.get_mut(vcpu)?.private.get_mut(intid as usize)
        } else {
            self.spis.get_mut((intid - 32) as usize)
        }
    }

    fn irq_ref(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < 32 {
            self.cpus.get(vcpu)?.private.get(intid as usize)
        } else {
            self.spis.get((intid - 32) as usize)
        }
    }

    /// Whether the guest has enabled `intid` for `vcpu` (and its group).
    pub fn is_enabled(&self, vcpu: usize, intid: u32) -> bool {
        self.irq_ref(vcpu, intid).is_some_and(|i| i.enabled)
    }

    /// The vCPU an SPI is routed to; private interrupts belong to `vcpu`.
    pub fn target(&self, intid: u32) -> Option<usize> {
        match intid {
            0..32 => None,
            _ => self
                .routes
                .get((intid - 32) as usize)
                .map(|&r| usize::from(r)),
        }
    }

    /// Marks `intid` pending for `vcpu` (private) or for its routed vCPU
    /// (SPI). Returns the vCPU that should be told, if the interrupt can be
    /// delivered now (enabled, distributor on).
    pub fn raise(&mut self, vcpu: usize, intid: u32) -> Option<usize> {
        if vcpu >= self.vcpus {
            return None;
        }
        let target = self.target(intid).unwrap_or(vcpu);
        let dist_on = self.ctlr & GICD_CTLR_WRITABLE != 0 || intid < 32;
        let irq = self.irq(target, intid)?;
        irq.pending = true;
        let enabled = irq.enabled;
        self.mark_pending(target, intid, true);
        (enabled && dist_on).then_some(target)
    }

    /// Clears a pending interrupt that was not yet delivered (a level
    /// that dropped).
    pub fn lower(&mut self, vcpu: usize, intid: u32) {
        let target = self.target(intid).unwrap_or(vcpu);
        if let Some(irq) = self.irq(target, intid) {
            irq.pending = false;
            self.mark_pending(target, intid, false);
        }
    }

    /// The highest-priority (lowest value) deliverable pending interrupt
    /// for `vcpu`; it stays pending until [`Vgic::delivered`].
    pub fn next_pending(&self, vcpu: usize) -> Option<(u32, u8)> {
        let cpu = self.cpus.get(vcpu)?;
        let mut best: Option<(u32, u8)> = None;
        let mut consider = |intid: u32, irq: &Irq| {
            if irq.enabled && best.is_none_or(|(i, p)| (irq.priority, intid) < (p, i)) {
                best = Some((intid, irq.priority));
            }
        };
        let mut bits = self.pending_private.get(vcpu).copied().unwrap_or(0);
        while bits != 0 {
            let intid = bits.trailing_zeros();
            bits &= bits - 1;
            if let Some(irq) = cpu.private.get(intid as usize) {
                consider(intid, irq);
            }
        }
        if self.ctlr & GICD_CTLR_WRITABLE != 0 {
            for (w, &word) in self.pending_spis.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let i = w * 32 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if usize::from(self.routes[i]) == vcpu {
                        consider(i as u32 + 32, &self.spis[i]);
                    }
                }
            }
        }
        best
    }

    /// [`Vgic::next_pending`] by a walk over every interrupt: what the
    /// pending bits must always agree with.
    #[cfg(test)]
    fn next_pending_by_walk(&self, vcpu: usize) -> Option<(u32, u8)> {
        let cpu = self.cpus.get(vcpu)?;
        let private = cpu
            .private
            .iter()
            .enumerate()
            .map(|(i, irq)| (i as u32, irq));
        let spis = self
            .spis
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                usize::from(self.routes[*i]) == vcpu && self.ctlr & GICD_CTLR_WRITABLE != 0
            })
            .map(|(i, irq)| (i as u32 + 32, irq));
        private
            .chain(spis)
            .filter(|(_, irq)| irq.pending && irq.enabled)
            .min_by_key(|(intid, irq)| (irq.priority, *intid))
            .map(|(intid, irq)| (intid, irq.priority))
    }

    /// The interrupt is now in a list register: no longer pending here.
    pub fn delivered(&mut self, vcpu: usize, intid: u32) {
        if let Some(irq) = self.irq(vcpu, intid) {
            irq.pending = false;
            self.mark_pending(vcpu, intid, false);
        }
    }

    /// Keeps the pending bits equal to `Irq::pending` of `intid` (private
    /// to `vcpu`, or an SPI).
    fn mark_pending(&mut self, vcpu: usize, intid: u32, pending: bool) {
        let word = if intid < 32 {
            self.pending_private.get_mut(vcpu)
        } else {
            self.pending_spis.get_mut((intid as usize - 32) / 32)
        };
        if let Some(word) = word {
            let bit = 1u32 << (intid % 32);
            if pending {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Recomputes every pending bit from the interrupts' state (after a
    /// register write that may have set or cleared many).
    fn rebuild_pending(&mut self) {
        let bits = |irqs: &[Irq]| {
            irqs.iter()
                .enumerate()
                .fold(0u32, |w, (i, irq)| w | u32::from(irq.pending) << i)
        };
        for (word, cpu) in self.pending_private.iter_mut().zip(&self.cpus) {
            *word = bits(&cpu.private);
        }
        for (word, chunk) in self.pending_spis.iter_mut().zip(self.spis.chunks(32)) {
            *word = bits(chunk);
        }
    }

    /// Decodes a guest write of ICC_SGI1R_EL1: the SGI number and the
    /// bitmask of target vCPUs (only Aff0 = vCPU index exists).
    pub fn sgi_targets(&self, sender: usize, value: u64) -> (u32, u32) {
        let intid = ((value >> 24) & 0xf) as u32;
        let all: u32 = if self.vcpus >= 32 {
            u32::MAX
        } else {
            (1u32 << self.vcpus) - 1
        };
        let irm = value >> 40 & 1 == 1;
        let mask = if irm {
            all & !(1 << sender)
        } else {
            let aff_higher = value & (0xff << 16 | 0xff << 32 | 0xff << 48);
            let range_selector = (value >> 44) & 0xf;
            if aff_higher != 0 || range_selector != 0 {
                0
            } else {
                (value & 0xffff) as u32 & all
            }
        };
        (intid, mask)
    }

    fn mask(size: u8) -> u64 {
        if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (u32::from(size) * 8)) - 1
        }
    }

    fn check(offset: u64, size: u8, allow_64: bool) -> Result<(), BadAccess> {
        let ok_size = size == 4 || size == 1 || (allow_64 && size == 8);
        if ok_size && offset.is_multiple_of(u64::from(size)) {
            Ok(())
        } else {
            Err(BadAccess)
        }
    }

    /// A guest read of the distributor.
    pub fn dist_read(&mut self, offset: u64, size: u8) -> Result<u64, BadAccess> {
        self.dist_read_live(offset, size, &no_live_state)
    }

    /// [`Vgic::dist_read`] with the hardware's view of each interrupt
    /// (`live(vcpu, intid)`, for the vCPU an SPI is routed to).
    pub fn dist_read_live(
        &mut self,
        offset: u64,
        size: u8,
        live: &dyn Fn(usize, u32) -> Live,
    ) -> Result<u64, BadAccess> {
        Self::check(offset, size, offset >= gicd::IROUTER)?;
        if size == 1
            && !(gicd::IPRIORITYR..gicd::IPRIORITYR + u64::from(SPI_LIMIT)).contains(&offset)
        {
            return Err(BadAccess);
        }
        Ok(match offset {
            gicd::CTLR => u64::from(self.ctlr),
            // ITLinesNumber = SPI_LIMIT / 32 - 1; IDbits = 9 (10-bit INTIDs).
            gicd::TYPER => u64::from(SPI_LIMIT / 32 - 1) | 9 << 19,
            gicd::IIDR => u64::from(IIDR),
            gicd::TYPER2 => 0,
            gicd::PIDR2 => u64::from(PIDR2_GICV3),
            o if o >= gicd::IROUTER => {
                let index = ((o - gicd::IROUTER) / 8) as usize;
                // IROUTER<n> exists for SPIs only (n >= 32).
                match index.checked_sub(32).and_then(|i| self.routes.get(i)) {
                    Some(&r) => u64::from(r),
                    None => 0,
                }
            }
            o => u64::from(self.bank_read(0, o, true, live)) & Self::mask(size),
        })
    }

    /// A guest write of the distributor.
    pub fn dist_write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), BadAccess> {
        Self::check(offset, size, offset >= gicd::IROUTER)?;
        if size == 1
            && !(gicd::IPRIORITYR..gicd::IPRIORITYR + u64::from(SPI_LIMIT)).contains(&offset)
        {
            return Err(BadAccess);
        }
        match offset {
            gicd::CTLR => {
                self.ctlr = GICD_CTLR_ARE | GICD_CTLR_DS | (value as u32 & GICD_CTLR_WRITABLE)
            }
            o if o >= gicd::IROUTER => {
                let index = ((o - gicd::IROUTER) / 8) as usize;
                let vcpus = self.vcpus;
                if let Some(route) = index.checked_sub(32).and_then(|i| self.routes.get_mut(i)) {
                    // Aff0 names the vCPU; a route to a vCPU that does not
                    // exist (or IRM, "any") goes to vCPU 0.
                    let aff0 = (value & 0xff) as usize;
                    let other_aff = value & (0xff << 8 | 0xff << 16 | 0xff << 32 | 1 << 31);
                    *route = if other_aff == 0 && aff0 < vcpus {
                        aff0 as u8
                    } else {
                        0
                    };
                }
            }
            o => self.bank_write(0, o, size, value as u32, true),
        }
        Ok(())
    }

    /// A guest read of vCPU `vcpu`'s redistributor frames.
    pub fn redist_read(&mut self, vcpu: usize, offset: u64, size: u8) -> Result<u64, BadAccess> {
        self.redist_read_live(vcpu, offset, size, &no_live_state)
    }

    /// [`Vgic::redist_read`] with the hardware's view of each private
    /// interrupt of `vcpu` (`live(vcpu, intid)`).
    pub fn redist_read_live(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: u8,
        live: &dyn Fn(usize, u32) -> Live,
    ) -> Result<u64, BadAccess> {
        Self::check(offset, size, offset == gicr::TYPER)?;
        if vcpu >= self.vcpus {
            return Err(BadAccess);
        }
        let in_sgi = offset >= gicr::SGI;
        if size == 1
            && !(in_sgi
                && (gicd::IPRIORITYR..gicd::IPRIORITYR + 32).contains(&(offset - gicr::SGI)))
        {
            return Err(BadAccess);
        }
        if in_sgi {
            return Ok(
                u64::from(self.bank_read(vcpu, offset - gicr::SGI, false, live)) & Self::mask(size),
            );
        }
        Ok(match offset {
            gicr::CTLR => 0,
            gicr::IIDR => u64::from(IIDR),
            gicr::TYPER => {
                let last = u64::from(vcpu + 1 == self.vcpus) << 4;
                let typer = (vcpu as u64) << 32 | (vcpu as u64) << 8 | last;
                if size == 8 {
                    typer
                } else {
                    typer & 0xffff_ffff
                }
            }
            o if o == gicr::TYPER + 4 => vcpu as u64,
            gicr::WAKER if self.cpus[vcpu].sleeping => {
                u64::from(WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP)
            }
            gicr::PIDR2 => u64::from(PIDR2_GICV3),
            _ => 0,
        })
    }

    /// A guest write of vCPU `vcpu`'s redistributor frames.
    pub fn redist_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<(), BadAccess> {
        Self::check(offset, size, false)?;
        if vcpu >= self.vcpus {
            return Err(BadAccess);
        }
        let in_sgi = offset >= gicr::SGI;
        if size == 1
            && !(in_sgi
                && (gicd::IPRIORITYR..gicd::IPRIORITYR + 32).contains(&(offset - gicr::SGI)))
        {
            return Err(BadAccess);
        }
        if in_sgi {
            self.bank_write(vcpu, offset - gicr::SGI, size, value as u32, false);
        } else if offset == gicr::WAKER {
            self.cpus[vcpu].sleeping = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
        }
        Ok(())
    }

    /// INTIDs covered by a banked register: private ones (distributor
    /// view of 0..32 is RAZ/WI under affinity routing) or SPIs.
    fn covers(intid: u32, spis: bool) -> bool {
        if spis {
            (32..SPI_LIMIT).contains(&intid)
        } else {
            intid < 32
        }
    }

    /// Reads a one-bit-per-IRQ, priority or config register.
    fn bank_read(
        &self,
        vcpu: usize,
        offset: u64,
        spis: bool,
        live: &dyn Fn(usize, u32) -> Live,
    ) -> u32 {
        let bits = |first: u32, f: &dyn Fn(&Irq, Live) -> bool| -> u32 {
            (0..32)
                .filter(|i| {
                    let intid = first + i;
                    let owner = self.target(intid).unwrap_or(vcpu);
                    Self::covers(intid, spis)
                        && self
                            .irq_ref(vcpu, intid)
                            .is_some_and(|irq| f(irq, live(owner, intid)))
                })
                .fold(0, |acc, i| acc | 1 << i)
        };
        // Pending: still here (not yet in a list register) or pending in
        // the hardware; active only in the hardware.
        let one_bit: &[BitReader<'_>] = &[
            (gicd::IGROUPR, &|i, _| i.group1),
            (gicd::ISENABLER, &|i, _| i.enabled),
            (gicd::ICENABLER, &|i, _| i.enabled),
            (gicd::ISPENDR, &|i, l| i.pending || l.pending),
            (gicd::ICPENDR, &|i, l| i.pending || l.pending),
            (gicd::ISACTIVER, &|_, l| l.active),
            (gicd::ICACTIVER, &|_, l| l.active),
            (gicd::IGRPMODR, &|_, _| false),
        ];
        for (base, f) in one_bit {
            if let Some(first) = bitfield(offset, *base, 1) {
                return bits(first, *f);
            }
        }
        if let Some(first) = bitfield(offset, gicd::IPRIORITYR, 8) {
            return (0..4)
                .filter(|i| Self::covers(first + i, spis))
                .filter_map(|i| {
                    self.irq_ref(vcpu, first + i)
                        .map(|irq| u32::from(irq.priority) << (8 * i))
                })
                .fold(0, |acc, v| acc | v);
        }
        if let Some(first) = bitfield(offset, gicd::ICFGR, 2) {
            return (0..16)
                .filter(|i| Self::covers(first + i, spis) || first + i < 16)
                .filter_map(|i| {
                    // SGIs are always edge-triggered.
                    let edge =
                        first + i < 16 || self.irq_ref(vcpu, first + i).is_some_and(|irq| irq.edge);
                    edge.then_some(2u32 << (2 * i))
                })
                .fold(0, |acc, v| acc | v);
        }
        0
    }

    /// Writes a one-bit-per-IRQ, priority or config register.
    fn bank_write(&mut self, vcpu: usize, offset: u64, size: u8, value: u32, spis: bool) {
        let mut apply = |first: u32, count: u32, width: u32, f: &dyn Fn(&mut Irq, u32)| {
            for i in 0..count {
                let intid = first + i;
                if !Self::covers(intid, spis) {
                    continue;
                }
                let field = (value >> (i * width)) & ((1u32 << width) - 1);
                if let Some(irq) = self.irq(vcpu, intid) {
                    f(irq, field);
                }
            }
        };
        let one_bit: &[BitWriter<'_>] = &[
            (gicd::IGROUPR, &|irq, b| irq.group1 = b == 1),
            (gicd::ISENABLER, &|irq, b| irq.enabled |= b == 1),
            (gicd::ICENABLER, &|irq, b| irq.enabled &= b == 0),
            (gicd::ISPENDR, &|irq, b| irq.pending |= b == 1),
            (gicd::ICPENDR, &|irq, b| irq.pending &= b == 0),
        ];
        for (base, f) in one_bit {
            if let Some(first) = bitfield(offset, *base, 1) {
                apply(first, 32, 1, *f);
                if matches!(*base, gicd::ISPENDR | gicd::ICPENDR) {
                    self.rebuild_pending();
                }
                return;
            }
        }
        if let Some(first) = bitfield(offset, gicd::IPRIORITYR, 8) {
            return apply(first, u32::from(size), 8, &|irq, p| irq.priority = p as u8);
        }
        if let Some(first) = bitfield(offset, gicd::ICFGR, 2) {
            apply(first, 16, 2, &|irq, c| irq.edge = c & 2 != 0);
        }
        // Active state, group modifiers and everything else: ignored.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SGI: u64 = gicr::SGI;

    /// What Linux's GICv3 driver does at boot, in short.
    fn linux_like_init(g: &mut Vgic) {
        g.dist_write(gicd::CTLR, 4, 0).unwrap();
        for reg in 1..3u64 {
            g.dist_write(gicd::IGROUPR + reg * 4, 4, u64::from(u32::MAX))
                .unwrap();
            g.dist_write(gicd::ICENABLER + reg * 4, 4, u64::from(u32::MAX))
                .unwrap();
        }
        for vcpu in 0..g.vcpus() {
            g.redist_write(vcpu, gicr::WAKER, 4, 0).unwrap();
            g.redist_write(vcpu, SGI + gicd::IGROUPR, 4, u64::from(u32::MAX))
                .unwrap();
            g.redist_write(vcpu, SGI + gicd::IPRIORITYR + 24, 4, 0xa0a0_a0a0)
                .unwrap();
            g.redist_write(vcpu, SGI + gicd::ISENABLER, 4, 0xffff | 1 << 27)
                .unwrap();
        }
        g.dist_write(gicd::CTLR, 4, 0b11).unwrap();
        g.dist_write(gicd::IROUTER + 33 * 8, 8, 0).unwrap();
        g.dist_write(gicd::IPRIORITYR + 33, 1, 0xa0).unwrap();
        g.dist_write(gicd::ISENABLER + 4, 4, 1 << 1).unwrap();
    }

    #[test]
    fn identification_registers_look_like_a_gicv3() {
        let mut g = Vgic::new(2);
        assert_eq!(g.dist_read(gicd::PIDR2, 4), Ok(0x30));
        assert_eq!(g.dist_read(gicd::TYPER, 4), Ok(2 | 9 << 19));
        assert_eq!(
            g.dist_read(gicd::CTLR, 4).unwrap() & u64::from(GICD_CTLR_ARE),
            u64::from(GICD_CTLR_ARE)
        );
        assert_eq!(g.redist_read(0, gicr::TYPER, 8), Ok(0));
        assert_eq!(
            g.redist_read(1, gicr::TYPER, 8),
            Ok(1 << 32 | 1 << 8 | 1 << 4)
        );
        assert_eq!(g.redist_read(1, gicr::PIDR2, 4), Ok(0x30));
        assert_eq!(
            g.redist_read(2, gicr::TYPER, 8),
            Err(BadAccess),
            "no third vCPU"
        );
    }

    #[test]
    fn the_virtual_timer_works_without_any_gic_programming() {
        let mut g = Vgic::new(1);
        assert!(g.is_enabled(0, VTIMER_INTID));
        assert_eq!(g.raise(0, VTIMER_INTID), Some(0));
        assert_eq!(g.next_pending(0), Some((VTIMER_INTID, 0xa0)));
    }

    #[test]
    fn waker_handshake() {
        let mut g = Vgic::new(1);
        assert_eq!(g.redist_read(0, gicr::WAKER, 4), Ok(6));
        g.redist_write(0, gicr::WAKER, 4, 0).unwrap();
        assert_eq!(g.redist_read(0, gicr::WAKER, 4), Ok(0));
    }

    #[test]
    fn enabled_interrupts_are_delivered_by_priority() {
        let mut g = Vgic::new(2);
        linux_like_init(&mut g);
        assert_eq!(g.raise(0, 27), Some(0));
        assert_eq!(g.raise(0, 33), Some(0));
        g.redist_write(0, SGI + gicd::IPRIORITYR + 24, 4, 0x0090_0000)
            .unwrap();
        g.redist_write(0, SGI + gicd::ICENABLER, 4, 1 << 26)
            .unwrap();
        // INTID 26 is disabled and stays queued; 27 (prio 0) beats 33 (0xa0).
        assert_eq!(g.raise(0, 26), None);
        assert_eq!(g.next_pending(0), Some((27, 0)));
        g.delivered(0, 27);
        assert_eq!(g.next_pending(0), Some((33, 0xa0)));
        g.delivered(0, 33);
        assert_eq!(g.next_pending(0), None);
        // Enabling 26 later makes it deliverable.
        g.redist_write(0, SGI + gicd::ISENABLER, 4, 1 << 26)
            .unwrap();
        assert_eq!(g.next_pending(0).map(|p| p.0), Some(26));
    }

    #[test]
    fn spis_follow_their_route_and_the_distributor_enable() {
        let mut g = Vgic::new(2);
        linux_like_init(&mut g);
        g.dist_write(gicd::IROUTER + 33 * 8, 8, 1).unwrap();
        assert_eq!(g.dist_read(gicd::IROUTER + 33 * 8, 8), Ok(1));
        assert_eq!(g.raise(0, 33), Some(1));
        assert_eq!(g.next_pending(0), None);
        assert_eq!(g.next_pending(1), Some((33, 0xa0)));
        // A route to a vCPU that does not exist falls back to vCPU 0.
        g.dist_write(gicd::IROUTER + 33 * 8, 8, 7).unwrap();
        assert_eq!(g.target(33), Some(0));
        g.dist_write(gicd::CTLR, 4, 0).unwrap();
        assert_eq!(g.raise(0, 33), None);
    }

    #[test]
    fn sgi_target_lists() {
        let g = Vgic::new(2);
        // SGI 1 to vCPU 1; SGI 3 to "all but self"; Aff1 set: nobody.
        assert_eq!(g.sgi_targets(0, 1 << 24 | 0b10), (1, 0b10));
        assert_eq!(g.sgi_targets(1, 3 << 24 | 1 << 40), (3, 0b01));
        assert_eq!(g.sgi_targets(0, 1 << 16 | 0b1), (0, 0));
        assert_eq!(
            g.sgi_targets(0, 0xffff),
            (0, 0b11),
            "targets beyond the VM are dropped"
        );
    }

    #[test]
    fn registers_read_back_and_bad_accesses_are_refused() {
        let mut g = Vgic::new(1);
        g.dist_write(gicd::ICFGR + 8, 4, 0x8).unwrap();
        assert_eq!(g.dist_read(gicd::ICFGR + 8, 4), Ok(0x8));
        g.dist_write(gicd::IPRIORITYR + 40, 4, 0x1122_3344).unwrap();
        assert_eq!(g.dist_read(gicd::IPRIORITYR + 40, 4), Ok(0x1122_3344));
        assert_eq!(g.dist_read(gicd::IPRIORITYR + 41, 1), Ok(0x33));
        // Private interrupts are not visible through the distributor.
        g.dist_write(gicd::ISENABLER, 4, u64::from(u32::MAX))
            .unwrap();
        assert_eq!(g.dist_read(gicd::ISENABLER, 4), Ok(0));
        assert_eq!(g.dist_read(gicd::CTLR + 2, 4), Err(BadAccess));
        assert_eq!(g.dist_read(gicd::CTLR, 8), Err(BadAccess));
        assert_eq!(g.dist_write(gicd::ISENABLER, 1, 1), Err(BadAccess));
        assert_eq!(g.redist_write(0, gicr::TYPER, 8, 0), Err(BadAccess));
        // SGIs read back as edge-triggered.
        assert_eq!(g.redist_read(0, SGI + gicd::ICFGR, 4), Ok(0xaaaa_aaaa));
        // IRQs beyond the model read as zero and ignore writes.
        g.dist_write(gicd::ISENABLER + 12, 4, u64::from(u32::MAX))
            .unwrap();
        assert_eq!(g.dist_read(gicd::ISENABLER + 12, 4), Ok(0));
        assert_eq!(g.raise(0, 200), None);
        assert_eq!(g.raise(5, 1), None);
    }

    #[test]
    fn pending_and_active_read_back_from_the_hardware_once_delivered() {
        let mut g = Vgic::new(2);
        // The virtual timer of vCPU 1 raised and loaded into a list
        // register: no longer pending in the model.
        assert_eq!(g.raise(1, VTIMER_INTID), Some(1));
        g.delivered(1, VTIMER_INTID);
        let ispendr0 = gicr::SGI + gicd::ISPENDR;
        let isactiver0 = gicr::SGI + gicd::ISACTIVER;
        assert_eq!(
            g.redist_read(1, ispendr0, 4),
            Ok(0),
            "the model alone forgets it"
        );
        // The list register says pending, then (after the guest's
        // acknowledge) active.
        let pending = |v: usize, i: u32| Live {
            pending: v == 1 && i == VTIMER_INTID,
            active: false,
        };
        let active = |v: usize, i: u32| Live {
            pending: false,
            active: v == 1 && i == VTIMER_INTID,
        };
        assert_eq!(
            g.redist_read_live(1, ispendr0, 4, &pending),
            Ok(1 << VTIMER_INTID)
        );
        assert_eq!(g.redist_read_live(1, isactiver0, 4, &pending), Ok(0));
        assert_eq!(
            g.redist_read_live(1, isactiver0, 4, &active),
            Ok(1 << VTIMER_INTID)
        );
        assert_eq!(
            g.redist_read_live(1, gicr::SGI + gicd::ICACTIVER, 4, &active),
            Ok(1 << VTIMER_INTID)
        );
        // vCPU 0's redistributor asks about vCPU 0 only.
        assert_eq!(g.redist_read_live(0, isactiver0, 4, &active), Ok(0));
        // A passed-through SPI (34, the RTC's on qemu-virt), routed to vCPU
        // 0, active in the physical distributor.
        let rtc = |v: usize, i: u32| Live {
            pending: false,
            active: v == 0 && i == 34,
        };
        assert_eq!(g.dist_read_live(gicd::ISACTIVER + 4, 4, &rtc), Ok(1 << 2));
        assert_eq!(g.dist_read(gicd::ISACTIVER + 4, 4), Ok(0));
    }

    proptest::proptest! {
        /// Whatever a guest writes and whatever mvmm raises, lowers and
        /// delivers, the pending bits find the same next interrupt as a
        /// walk over every interrupt's state.
        #[test]
        fn the_pending_bits_always_agree_with_the_interrupts(
            ops in proptest::collection::vec((0u8..8, 0u32..SPI_LIMIT, 0usize..3, proptest::prelude::any::<u32>()), 0..200)
        ) {
            let mut g = Vgic::new(2);
            linux_like_init(&mut g);
            for (op, intid, vcpu, value) in ops {
                let word = u64::from(intid / 32) * 4;
                match op {
                    0 => { let _ = g.raise(vcpu, intid); }
                    1 => g.lower(vcpu, intid),
                    2 => g.delivered(vcpu, intid),
                    3 => { let _ = g.dist_write(gicd::ISPENDR + word, 4, u64::from(value)); }
                    4 => { let _ = g.dist_write(gicd::ICPENDR + word, 4, u64::from(value)); }
                    5 => { let _ = g.dist_write(gicd::ISENABLER + word, 4, u64::from(value)); }
                    6 => { let _ = g.redist_write(vcpu, SGI + gicd::ISPENDR, 4, u64::from(value)); }
                    _ => { let _ = g.dist_write(gicd::IROUTER + u64::from(intid) * 8, 8, u64::from(value % 3)); }
                }
                for v in 0..3 {
                    proptest::prop_assert_eq!(g.next_pending(v), g.next_pending_by_walk(v));
                }
            }
        }
    }
}
