/* Fault injection for tunesvc's isolation tests: C = A + B, unless FAULT says
 * to misbehave. Every fault is real: the kernel really loops forever, really
 * writes far outside its buffer, really computes the wrong thing.
 *
 *   FAULT 0  correct                       -> ok
 *   FAULT 1  loops forever                 -> timeout
 *   FAULT 2  writes ~4 TiB past C          -> crash (the process dies: SIGSEGV)
 *   FAULT 3  asks for a buffer the device cannot allocate (see faults.py)  -> launch
 *   FAULT 4  computes A - B                -> wrong_result
 *   FAULT 5  does not compile              -> build
 */
#ifndef TS_N
#define TS_N 1024
#endif
#ifndef FAULT
#define FAULT 0
#endif
#ifndef COPY
#define COPY 1
#endif

KERNEL void fault(const GLOBAL real* A, const GLOBAL real* B, GLOBAL real* C)
{
    const int i = GID(0);
#if FAULT == 5
    this_is_not_opencl(i);
#endif
    if (i >= TS_N) return;
#if FAULT == 1
    /* |A| <= 1, so the exit is never taken; the store keeps the loop from being removed. */
    while (TO_FLOAT(A[i]) < 2.0f) C[i] = TO_REAL(TO_FLOAT(C[i]) + 1.0f);
#elif FAULT == 2
    C[i + (1L << 40)] = TO_REAL(1.0f);
#elif FAULT == 4
    C[i] = TO_REAL(TO_FLOAT(A[i]) - TO_FLOAT(B[i]));
#else
    for (int r = 0; r < COPY; r++) C[i] = TO_REAL(TO_FLOAT(A[i]) + TO_FLOAT(B[i]));
#endif
}
