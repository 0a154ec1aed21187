// EL2 exception vectors. Exceptions from the guests (lower EL) save the
// guest's general registers, ELR_EL2 and SPSR_EL2 into a GuestRegs frame on
// this CPU's stack and call into Rust with a pointer to it; on return the
// (possibly changed) frame is restored and the guest resumed. Exceptions
// taken at EL2 itself are mvmm bugs: they go to mvmm_el2_fault.

.macro VECTOR target
    .balign 0x80
    b       \target
.endm

.section .text.vectors, "ax"
.balign 0x800
.global mvmm_vectors
mvmm_vectors:
    // Current EL with SP_EL0.
    VECTOR  el2_fault
    VECTOR  el2_fault
    VECTOR  el2_fault
    VECTOR  el2_fault
    // Current EL with SP_ELx.
    VECTOR  el2_fault
    VECTOR  el2_fault
    VECTOR  el2_fault
    VECTOR  el2_fault
    // Lower EL, AArch64.
    VECTOR  lower_sync
    VECTOR  lower_irq
    VECTOR  lower_fiq
    VECTOR  lower_serror
    // Lower EL, AArch32 (EL0 of a guest running 32-bit code).
    VECTOR  lower_sync
    VECTOR  lower_irq
    VECTOR  lower_fiq
    VECTOR  lower_serror

.macro SAVE_GUEST
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #(0 * 16)]
    stp     x2, x3, [sp, #(1 * 16)]
    stp     x4, x5, [sp, #(2 * 16)]
    stp     x6, x7, [sp, #(3 * 16)]
    stp     x8, x9, [sp, #(4 * 16)]
    stp     x10, x11, [sp, #(5 * 16)]
    stp     x12, x13, [sp, #(6 * 16)]
    stp     x14, x15, [sp, #(7 * 16)]
    stp     x16, x17, [sp, #(8 * 16)]
    stp     x18, x19, [sp, #(9 * 16)]
    stp     x20, x21, [sp, #(10 * 16)]
    stp     x22, x23, [sp, #(11 * 16)]
    stp     x24, x25, [sp, #(12 * 16)]
    stp     x26, x27, [sp, #(13 * 16)]
    stp     x28, x29, [sp, #(14 * 16)]
    str     x30, [sp, #(15 * 16)]
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x0, x1, [sp, #{OFF_ELR}]
    mov     x0, sp
.endm

lower_sync:
    SAVE_GUEST
    bl      mvmm_guest_sync
    b       guest_resume
lower_irq:
    SAVE_GUEST
    bl      mvmm_guest_irq
    b       guest_resume
lower_fiq:
    SAVE_GUEST
    mov     x1, #0
    bl      mvmm_guest_unexpected
    b       guest_resume
lower_serror:
    SAVE_GUEST
    mov     x1, #1
    bl      mvmm_guest_unexpected
    b       guest_resume

el2_fault:
    mrs     x0, esr_el2
    mrs     x1, elr_el2
    mrs     x2, far_el2
    bl      mvmm_el2_fault
    b       el2_fault

// Enters a guest: x0 = GuestRegs to load, x1 = top of this CPU's stack.
// The frame is copied to the top of the stack so that the next exception
// from the guest finds the stack exactly as guest_resume leaves it. The
// source usually lives in the caller's frame on this same stack, so the two
// may overlap: the copy runs downwards when the source lies below the
// destination, upwards otherwise, as memmove does. (Copying upwards only
// overwrote the frame it was reading whenever the compiler put it within
// FRAME_SIZE of the top: with opt-level 2 every guest entered at pc 0.)
.global mvmm_enter_guest
mvmm_enter_guest:
    sub     x1, x1, #{FRAME_SIZE}
    cmp     x0, x1
    b.hs    2f
    mov     x2, #{FRAME_SIZE}
1:  sub     x2, x2, #8
    ldr     x3, [x0, x2]
    str     x3, [x1, x2]
    cbnz    x2, 1b
    b       4f
2:  mov     x2, #0
3:  ldr     x3, [x0, x2]
    str     x3, [x1, x2]
    add     x2, x2, #8
    cmp     x2, #{FRAME_SIZE}
    b.lo    3b
4:  mov     sp, x1
guest_resume:
    ldp     x0, x1, [sp, #{OFF_ELR}]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #(0 * 16)]
    ldp     x2, x3, [sp, #(1 * 16)]
    ldp     x4, x5, [sp, #(2 * 16)]
    ldp     x6, x7, [sp, #(3 * 16)]
    ldp     x8, x9, [sp, #(4 * 16)]
    ldp     x10, x11, [sp, #(5 * 16)]
    ldp     x12, x13, [sp, #(6 * 16)]
    ldp     x14, x15, [sp, #(7 * 16)]
    ldp     x16, x17, [sp, #(8 * 16)]
    ldp     x18, x19, [sp, #(9 * 16)]
    ldp     x20, x21, [sp, #(10 * 16)]
    ldp     x22, x23, [sp, #(11 * 16)]
    ldp     x24, x25, [sp, #(12 * 16)]
    ldp     x26, x27, [sp, #(13 * 16)]
    ldp     x28, x29, [sp, #(14 * 16)]
    ldr     x30, [sp, #(15 * 16)]
    add     sp, sp, #{FRAME_SIZE}
    eret
