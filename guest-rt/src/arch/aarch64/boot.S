// Boot path of an EL1 guest of mVMM, for the boot vCPU and for vCPUs started
// with PSCI CPU_ON. Constants and symbols come from arch/aarch64/mod.rs.

    .section .text.boot, "ax"
    .global _start
_start:
    // Boot vCPU: x0 = 0 from mvmm. x20 = 0 marks "no secondary entry".
    msr     daifset, #0xf
    mov     x20, xzr
    b       .Lcommon

    .global __guest_rt_secondary_start
__guest_rt_secondary_start:
    // CPU_ON: x0 = context = the Rust function this vCPU runs.
    msr     daifset, #0xf
    mov     x20, x0

.Lcommon:
    // FP/SIMD on before any Rust: the target may use NEON anywhere.
    mov     x1, #{CPACR_FP_ON}
    msr     cpacr_el1, x1
    isb

    // MMU on with the constant identity map.
    ic      iallu
    tlbi    vmalle1
    dsb     nsh
    ldr     x1, ={MAIR}
    msr     mair_el1, x1
    ldr     x1, ={TCR}
    msr     tcr_el1, x1
    adrp    x1, {table}
    add     x1, x1, :lo12:{table}
    msr     ttbr0_el1, x1
    isb
    ldr     x1, ={SCTLR}
    msr     sctlr_el1, x1
    isb

    // Vectors.
    adrp    x1, __guest_rt_vectors
    add     x1, x1, :lo12:__guest_rt_vectors
    msr     vbar_el1, x1
    isb

    // Stack slot: 0 for the boot vCPU, MPIDR.Aff0 for a started one.
    mov     x19, xzr
    cbz     x20, .Lstack
    mrs     x19, mpidr_el1
    and     x19, x19, #0xff
    cbz     x19, .Lpark
    cmp     x19, #{MAX_CPUS}
    b.hs    .Lpark
.Lstack:
    adrp    x1, {stacks}
    add     x1, x1, :lo12:{stacks}
    add     x2, x19, #1
    ldr     x3, ={STACK_SIZE}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr

    cbnz    x20, .Lsecondary

    // Boot vCPU: zero .bss, then Rust.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
.Lzero:
    cmp     x1, x2
    b.hs    .Lzeroed
    stp     xzr, xzr, [x1], #16
    b       .Lzero
.Lzeroed:
    bl      {primary}
    b       .Lpark

.Lsecondary:
    mov     x0, x19
    blr     x20

.Lpark:
    msr     daifset, #0xf
    wfi
    b       .Lpark
