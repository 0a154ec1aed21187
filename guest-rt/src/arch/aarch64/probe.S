// Recoverable 32-bit memory accesses for the isolation probes. If the access
// instruction takes a data abort, the exception handler finds its address
// here, stores ESR_EL1 in x1 and FAR_EL1 in x2 and resumes at the next
// instruction. So on return x1 = 0 means the access completed.
//
//   __guest_rt_probe_read32:  x0 = address      -> w0 = value, x1 = ESR or 0, x2 = FAR
//   __guest_rt_probe_write32: x0 = address, w1 = value -> x1 = ESR or 0, x2 = FAR
// Only x0-x3 are used.

    .section .text.probe, "ax"
    .global __guest_rt_probe_read32
    .global __guest_rt_probe_read32_access
__guest_rt_probe_read32:
    mov     x1, xzr
    mov     x2, xzr
__guest_rt_probe_read32_access:
    ldr     w0, [x0]
    ret

    .global __guest_rt_probe_write32
    .global __guest_rt_probe_write32_access
__guest_rt_probe_write32:
    mov     w3, w1
    mov     x1, xzr
    mov     x2, xzr
__guest_rt_probe_write32_access:
    str     w3, [x0]
    dsb     sy
    ret
