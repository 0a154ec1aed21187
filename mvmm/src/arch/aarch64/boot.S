// mvmm entry: QEMU jumps here at EL2 with x0 = DTB (primary CPU), and the
// firmware's PSCI CPU_ON jumps to secondary_entry with x0 = CPU index.
// Every CPU gets its own stack, the EL2 vectors and the identity-mapped MMU
// before the first line of Rust runs.

.section .text.boot, "ax"
.global _start
_start:
    mrs     x9, CurrentEL
    cmp     x9, #(2 << 2)
    b.ne    not_el2
    mov     x19, x0                 // DTB address from QEMU
    adrp    x9, __bss_start
    add     x9, x9, :lo12:__bss_start
    adrp    x10, __bss_end
    add     x10, x10, :lo12:__bss_end
1:  cmp     x9, x10
    b.hs    2f
    str     xzr, [x9], #8
    b       1b
2:  mov     x20, #0
    b       cpu_common

.global secondary_entry
secondary_entry:
    mov     x20, x0                 // CPU index (PSCI context id)
    mov     x19, #0

cpu_common:
    msr     tpidr_el2, x20          // this CPU's index, for this_cpu()
    // Stack: __stacks_start + (index + 1) * STACK_SIZE.
    adrp    x9, __stacks_start
    add     x9, x9, :lo12:__stacks_start
    add     x10, x20, #1
    ldr     x11, ={STACK_SIZE}
    madd    x9, x10, x11, x9
    mov     sp, x9

    adrp    x9, mvmm_vectors
    add     x9, x9, :lo12:mvmm_vectors
    msr     vbar_el2, x9

    ldr     x9, ={MAIR}
    msr     mair_el2, x9
    ldr     x9, ={TCR}
    msr     tcr_el2, x9
    adrp    x9, __el2_l1
    add     x9, x9, :lo12:__el2_l1
    msr     ttbr0_el2, x9
    isb
    tlbi    alle2
    dsb     sy
    isb
    ldr     x9, ={SCTLR}
    msr     sctlr_el2, x9
    isb

    mov     x0, x20
    mov     x1, x19
    bl      mvmm_cpu_main
not_el2:
    wfe
    b       not_el2
