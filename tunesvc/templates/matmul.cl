/* tunesvc matmul: C[M][N] = A[M][K] * B[K][N], row-major, float accumulation.
 *
 * A work-group of MDIM x NDIM work-items computes an MWG x NWG tile of C
 * (MWG = MDIM * WPTM, NWG = NDIM * WPTN); each work-item holds WPTM x WPTN
 * accumulators (register blocking). MDIM = NDIM = 1 makes a work-group a
 * single work-item, which suits CPUs. Along N a work-item owns WPTN/VW vectors of VW columns, strided
 * by the work-group's width so neighbouring work-items touch neighbouring
 * memory (coalesced on GPUs, vectorisable across work-items by PoCL).
 * LOCAL=1 stages KWG-deep slices of A and B in local memory; LOCAL=0 reads
 * global memory directly, which suits CPUs where local memory is emulated.
 * PACKB=1 first copies B into panels of WPTN columns, each panel K rows deep
 * and contiguous (pack_b), and gives each work-item WPTN adjacent columns: its
 * reads of B then stream through memory instead of striding by a row of B
 * (a new page every k), which is what CPUs need; the copy is timed too.
 * The shape is compiled in (TS_M, TS_N, TS_K) so bounds are constants.
 * Each input comes with an element offset at which its data starts in the
 * buffer (a_off, b_off; a run-time argument, so one build serves every
 * offset): a CPU device can then use a caller's array in place from the
 * aligned address below it. The tuner passes 0.
 */
#ifndef TS_M
#define TS_M 64
#endif
#ifndef TS_N
#define TS_N 64
#endif
#ifndef TS_K
#define TS_K 64
#endif
#ifndef MDIM
#define MDIM 4
#endif
#ifndef NDIM
#define NDIM 8
#endif
#ifndef KWG
#define KWG 8
#endif
#ifndef WPTM
#define WPTM 2
#endif
#ifndef WPTN
#define WPTN 2
#endif
#ifndef VW
#define VW 1
#endif
#ifndef LOCAL
#define LOCAL 0
#endif
#ifndef UNROLL
#define UNROLL 1
#endif
#ifndef PACKB
#define PACKB 0
#endif

#define MWG (MDIM * WPTM)  /* rows of C per work-group */
#define NWG (NDIM * WPTN)  /* columns of C per work-group */
#define NVEC (WPTN / VW)   /* vectors per work-item along N */
#define TS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NPAN ((TS_N + WPTN - 1) / WPTN) /* panels of packed B */
/* First column of panel p: the last panel is shifted left to end at column N, so every
   panel is full and holds real columns only (needs WPTN <= N). */
#define PANEL_COL(p) TS_MIN((p) * WPTN, TS_N - WPTN)

/* Bp[p][k][c] = B[k][PANEL_COL(p) + c]. Global size (NPAN * WPTN, K). */
KERNEL void pack_b(const GLOBAL real* RESTRICT B, const int b_off, GLOBAL real* RESTRICT Bp)
{
    B += b_off;
    const int c = GID(0), k = GID(1);
    if (k < TS_K && c < NPAN * WPTN)
        Bp[(c / WPTN) * (TS_K * WPTN) + k * WPTN + c % WPTN] = B[k * TS_N + PANEL_COL(c / WPTN) + c % WPTN];
}

/* Work-items at the bottom and right edges shift their block back inside the matrix
   instead of guarding every access: they recompute (and store, with the same values)
   a few rows or columns a neighbour also computes. With no branches around them the
   accumulators stay in registers; per-element guards made PoCL 20x slower. Only the
   LOCAL=1 path, which zero-fills its tiles, guards its stores. B is packed B (b_off 0) with PACKB=1. */
KERNEL void matmul(const GLOBAL real* RESTRICT A, const int a_off, const GLOBAL real* RESTRICT B, const int b_off,
                   GLOBAL real* RESTRICT C)
{
    A += a_off;
    B += b_off;
    const int tx = LID(0);
    const int ty = LID(1);
    const int n0 = GRP(0) * NWG;
    const int mrow = GRP(1) * MWG + ty * WPTM;   /* first row of this work-item, unshifted */

    float acc[WPTM][WPTN];
    UNROLL_ALL for (int i = 0; i < WPTM; i++) {
        UNROLL_ALL for (int j = 0; j < WPTN; j++) acc[i][j] = 0.0f;
    }

#if LOCAL
    /* Tiles staged in local memory, zero past the edges; the store is guarded instead. */
    LOCAL_MEM float As[KWG][MWG];
    LOCAL_MEM float Bs[KWG][NWG];
    const int tid = ty * NDIM + tx;
    for (int k0 = 0; k0 < TS_K; k0 += KWG) {
        for (int e = tid; e < MWG * KWG; e += MDIM * NDIM) {
            const int r = e / KWG, c = e % KWG;
            const int gr = GRP(1) * MWG + r, gc = k0 + c;
            As[c][r] = (gr < TS_M && gc < TS_K) ? TO_FLOAT(A[gr * TS_K + gc]) : 0.0f;
        }
        for (int e = tid; e < KWG * NWG; e += MDIM * NDIM) {
            const int r = e / NWG, c = e % NWG;
            const int gr = k0 + r, gc = n0 + c;
            Bs[r][c] = (gr < TS_K && gc < TS_N) ? TO_FLOAT(B[gr * TS_N + gc]) : 0.0f;
        }
        BARRIER();
        UNROLL_N(UNROLL) for (int kk = 0; kk < KWG; kk++) {
            float a[WPTM], b[WPTN];
            UNROLL_ALL for (int i = 0; i < WPTM; i++) a[i] = As[kk][ty * WPTM + i];
            UNROLL_ALL for (int v = 0; v < NVEC; v++) {
                UNROLL_ALL for (int w = 0; w < VW; w++) b[v * VW + w] = Bs[kk][(v * NDIM + tx) * VW + w];
            }
            UNROLL_ALL for (int i = 0; i < WPTM; i++) {
                UNROLL_ALL for (int j = 0; j < WPTN; j++) acc[i][j] += a[i] * b[j];
            }
        }
        BARRIER();
    }
    UNROLL_ALL for (int i = 0; i < WPTM; i++) {
        UNROLL_ALL for (int v = 0; v < NVEC; v++) {
            const int col = n0 + (v * NDIM + tx) * VW;
            if (mrow + i < TS_M && col < TS_N) STOREV(VW)(acc[i], v * VW, C, (mrow + i) * TS_N + col);
        }
    }
#else
    const int m0 = TS_MIN(mrow, TS_M - WPTM);  /* shifted inside (needs WPTM <= M) */
    const GLOBAL real* Ab = A + m0 * TS_K;
#if PACKB
    /* WPTN adjacent columns per work-item, read from one contiguous panel. */
    const int pan = TS_MIN((n0 + tx * WPTN) / WPTN, NPAN - 1);
    const GLOBAL real* Bb = B + pan * (TS_K * WPTN);
    GLOBAL real* Cb = C + m0 * TS_N + PANEL_COL(pan);
#define BOFF(k, v) ((k) * WPTN + (v) * VW)
#define COFF(v) ((v) * VW)
#else
    /* Vectors of VW columns strided by the work-group's width (coalesced on GPUs); the
       last work-group's tile is shifted inside (needs NWG <= N). */
    const int c0 = TS_MIN(n0, TS_N - NWG) + tx * VW;
    const GLOBAL real* Bb = B + c0;
    GLOBAL real* Cb = C + m0 * TS_N + c0;
#define BOFF(k, v) ((k) * TS_N + (v) * NDIM * VW)
#define COFF(v) ((v) * NDIM * VW)
#endif
    /* Addresses are a base pointer plus constant offsets: a clamp inside them kept
       PoCL from keeping the accumulators in registers. */
    UNROLL_N(UNROLL) for (int k = 0; k < TS_K; k++) {
        float b[WPTN];
        UNROLL_ALL for (int v = 0; v < NVEC; v++) LOADV(VW)(b, v * VW, Bb, BOFF(k, v));
        UNROLL_ALL for (int i = 0; i < WPTM; i++) {
            const float a = TO_FLOAT(Ab[i * TS_K + k]);
            UNROLL_ALL for (int j = 0; j < WPTN; j++) acc[i][j] += a * b[j];
        }
    }
    UNROLL_ALL for (int i = 0; i < WPTM; i++) {
        UNROLL_ALL for (int v = 0; v < NVEC; v++) STOREV(VW)(acc[i], v * VW, Cb, i * TS_N + COFF(v));
    }
#endif
}
