/* tunesvc matmul: C[M][N] = A[M][K] * B[K][N], row-major, float accumulation.
 *
 * A work-group computes an MWG x NWG tile of C with (MWG/WPTM) x (NWG/WPTN)
 * work-items; each work-item holds WPTM x WPTN accumulators (register
 * blocking). Along N a work-item owns WPTN/VW vectors of VW columns, strided
 * by the work-group's width so neighbouring work-items touch neighbouring
 * memory (coalesced on GPUs, vectorisable across work-items by PoCL).
 * LOCAL=1 stages KWG-deep slices of A and B in local memory; LOCAL=0 reads
 * global memory directly, which suits CPUs where local memory is emulated.
 * The shape is compiled in (TS_M, TS_N, TS_K) so bounds are constants.
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
#ifndef MWG
#define MWG 8
#endif
#ifndef NWG
#define NWG 8
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

#define MDIM (MWG / WPTM)  /* work-items along M */
#define NDIM (NWG / WPTN)  /* work-items along N */
#define NVEC (WPTN / VW)   /* vectors per work-item along N */
#define TS_MIN(a, b) ((a) < (b) ? (a) : (b))

KERNEL void matmul(const GLOBAL real* RESTRICT A, const GLOBAL real* RESTRICT B, GLOBAL real* RESTRICT C)
{
    const int tx = LID(0);
    const int ty = LID(1);
    const int m0 = GRP(1) * MWG + ty * WPTM;
    const int n0 = GRP(0) * NWG;

    float acc[WPTM][WPTN];
    UNROLL_ALL for (int i = 0; i < WPTM; i++) {
        UNROLL_ALL for (int j = 0; j < WPTN; j++) acc[i][j] = 0.0f;
    }

#if LOCAL
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
#else
    /* Rows and columns past the edge are clamped onto the last valid ones, so the
       loop has no branches; their results are discarded by the guarded store. */
    int arow[WPTM], bcol[NVEC];
    UNROLL_ALL for (int i = 0; i < WPTM; i++) arow[i] = TS_MIN(m0 + i, TS_M - 1) * TS_K;
    UNROLL_ALL for (int v = 0; v < NVEC; v++) bcol[v] = TS_MIN(n0 + (v * NDIM + tx) * VW, TS_N - VW);
    UNROLL_N(UNROLL) for (int k = 0; k < TS_K; k++) {
        float a[WPTM], b[WPTN];
        UNROLL_ALL for (int i = 0; i < WPTM; i++) a[i] = TO_FLOAT(A[arow[i] + k]);
        UNROLL_ALL for (int v = 0; v < NVEC; v++) LOADV(VW)(b + v * VW, B, k * TS_N + bcol[v]);
        UNROLL_ALL for (int i = 0; i < WPTM; i++) {
            UNROLL_ALL for (int j = 0; j < WPTN; j++) acc[i][j] += a[i] * b[j];
        }
    }
#endif

    UNROLL_ALL for (int i = 0; i < WPTM; i++) {
        const int row = m0 + i;
        if (row < TS_M) {
            UNROLL_ALL for (int v = 0; v < NVEC; v++) {
                const int col = n0 + (v * NDIM + tx) * VW;
                if (col < TS_N) STOREV(VW)(acc[i] + v * VW, C, row * TS_N + col);
            }
        }
    }
}
