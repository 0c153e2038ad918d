/* tunesvc reduce: out[r] = OP over c of x[r][c], row-major (TS_R rows of TS_C columns).
 *
 * OP (compiled in, part of the problem): 0 sum, 1 max, 2 mean, 3 sum of squares.
 * Accumulation is always float, so float16 input (TS_FP16=1) sums in float;
 * the output is float.
 *
 * A work-group of WG work-items serves RPG rows (short rows) with WG/RPG
 * work-items per row, or one SPLIT-th of one row (long rows). Each work-item
 * walks its columns in blocks of EPT vectors of VW elements, strided by the
 * row's work-item count so neighbouring work-items read neighbouring memory;
 * it keeps EPT*VW independent accumulators so the adds do not form one long
 * dependency chain (on a CPU, WG=1 with EPT*VW of 32-64 streams a row at
 * memory speed). Partials are combined in local memory by a tree.
 * SPLIT > 1 is the two-pass form: pass one writes SPLIT partials per row to
 * scratch, reduce_final combines them (and divides for the mean).
 * The shape is compiled in (TS_R, TS_C) so every bound is a constant.
 * x_off is the element offset at which x starts in its buffer (a run-time
 * argument: one build serves every offset), so a CPU device can use a
 * caller's array in place from the aligned address below it; the tuner passes 0.
 */
#ifndef TS_R
#define TS_R 1
#endif
#ifndef TS_C
#define TS_C 1024
#endif
#ifndef OP
#define OP 0
#endif
#ifndef WG
#define WG 64
#endif
#ifndef EPT
#define EPT 1
#endif
#ifndef VW
#define VW 1
#endif
#ifndef RPG
#define RPG 1
#endif
#ifndef SPLIT
#define SPLIT 1
#endif

#define ROW_THREADS (WG / RPG)
/* Columns of one split of a row, rounded up to whole vectors so every split
   but the row's last starts on a vector boundary. */
#define CHUNK ((((TS_C + SPLIT - 1) / SPLIT) + VW - 1) / VW * VW)
#define STEP (ROW_THREADS * VW * EPT)

#if OP == 1
#define IDENT (-INFINITY)
/* a compare and select vectorises on CPUs; fmax() became a scalar call on PoCL (4x slower) */
#define COMBINE(a, b) ((a) > (b) ? (a) : (b))
#define TERM(v) (v)
#elif OP == 3
#define IDENT 0.0f
#define COMBINE(a, b) ((a) + (b))
#define TERM(v) ((v) * (v))
#else
#define IDENT 0.0f
#define COMBINE(a, b) ((a) + (b))
#define TERM(v) (v)
#endif

/* The last step of a row's value: the mean divides by the row length. */
#if OP == 2
#define FINISH(a) ((a) * (1.0f / (float)TS_C))
#else
#define FINISH(a) (a)
#endif

KERNEL void reduce_rows(const GLOBAL real* RESTRICT x, const int x_off, GLOBAL float* RESTRICT out)
{
    x += x_off;
    LOCAL_MEM float partial[WG];
    const int lid = LID(0);
    const int sub = lid / ROW_THREADS; /* which of the group's rows */
    const int t = lid % ROW_THREADS;   /* position within the row */
    const int part = GRP(0) % SPLIT;
    const int row = (GRP(0) / SPLIT) * RPG + sub;
    const int c0 = part * CHUNK < TS_C ? part * CHUNK : TS_C;
    /* Rows past the end still take part in the barriers, with nothing to read. */
    const int c1 = row < TS_R ? (c0 + CHUNK < TS_C ? c0 + CHUNK : TS_C) : c0;
    const GLOBAL real* base = x + (long)(row < TS_R ? row : 0) * TS_C;

    /* EPT x VW independent accumulators: the adds of one step form no dependency chain, and a
       CPU compiler turns them into vector adds over contiguous scalar loads (with one work-item
       per row, a step reads EPT*VW consecutive elements). Scalar loads rather than vloadn:
       unpacking a wide vector into a private array kept it out of registers on PoCL. */
    float acc[EPT * VW];
    UNROLL_ALL for (int i = 0; i < EPT * VW; i++) acc[i] = IDENT;
    const int blocks = (c1 - c0) / STEP;
    const GLOBAL real* p = base + c0 + t * VW; /* this work-item's first vector */
    for (int b = 0; b < blocks; b++) {
        UNROLL_ALL for (int e = 0; e < EPT; e++) {
            UNROLL_ALL for (int w = 0; w < VW; w++) {
                const float v = TO_FLOAT(p[e * ROW_THREADS * VW + w]);
                acc[e * VW + w] = COMBINE(acc[e * VW + w], TERM(v));
            }
        }
        p += STEP;
    }
    for (int c = c0 + blocks * STEP + t; c < c1; c += ROW_THREADS) {
        const float v = TO_FLOAT(base[c]);
        acc[0] = COMBINE(acc[0], TERM(v));
    }
    float total = acc[0];
    UNROLL_ALL for (int i = 1; i < EPT * VW; i++) total = COMBINE(total, acc[i]);

#if ROW_THREADS > 1
    partial[lid] = total;
    BARRIER();
    for (int s = ROW_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) partial[lid] = COMBINE(partial[lid], partial[lid + s]);
        BARRIER();
    }
    total = partial[sub * ROW_THREADS];
#endif
    if (t == 0 && row < TS_R) {
#if SPLIT > 1
        out[row * SPLIT + part] = total;
#else
        out[row] = FINISH(total);
#endif
    }
}

/* Second pass of SPLIT > 1: one work-item per row combines its SPLIT partials. */
KERNEL void reduce_final(const GLOBAL float* RESTRICT partials, GLOBAL float* RESTRICT out)
{
    const int row = GID(0);
    if (row >= TS_R) return;
    float total = partials[row * SPLIT];
    for (int p = 1; p < SPLIT; p++) total = COMBINE(total, partials[row * SPLIT + p]);
    out[row] = FINISH(total);
}
