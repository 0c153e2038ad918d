/* tunesvc gemv_q: Y[b][n] = sum over k of X[b][k] * W[n][k], W quantized in groups along K.
 *
 * X: [TS_B][TS_K] float; Y: [TS_B][TS_N] float; float accumulation throughout.
 * W (TS_N x TS_K logical) is stored as codes q with one scale s (and, ZP=1, one zero point z)
 * per group of GS consecutive weights of a row: w = (q - z) * s.
 *   BITS=8: W is [TS_N][TS_K] bytes; signed int8 with z = 0 when ZP=0, unsigned otherwise.
 *   BITS=4: W is [TS_N][(TS_K + 1) / 2] bytes, two codes 0..15 per byte: weight k of a row is
 *           in byte k / 2, the low nibble for even k, the high nibble for odd k; z = 8 when
 *           ZP=0 (signed values -8..7), else the stored zero point. An odd TS_K leaves the high
 *           nibble of a row's last byte unused.
 *   S: [TS_N][NG] scales (float, or float16 with SCALE16=1), NG = ceil(TS_K / GS); the last
 *      group of a row is shorter when GS does not divide TS_K.
 *   Z: [TS_N][NG] unsigned bytes (ZP=1 only).
 *
 * A work-group serves RPG rows, RPW rows per set of WPR work-items. A work-item walks the full
 * groups of its split of K: in each group it takes runs of VWK weights (VB bytes) at
 * (step * WPR + t) * VWK, so the WPR work-items of a row read neighbouring bytes, and keeps
 * VWK unscaled sums per batch row and row (independent chains), scaled once per group. On CPU
 * devices (TS_DEVICE_CPU) the runs are OpenCL vectors of VB lanes; elsewhere private arrays.
 * int4 runs unpack in order (UNPACK=0: x split into even and odd lanes) or as a plane of low
 * and one of high nibbles (UNPACK=1) against x permuted to match by gemv_q_prep. ZSUM=0
 * subtracts z from each code before converting it; ZSUM=1 multiplies the raw codes and takes
 * z * (sum of x over the group) off once per group (the sums from gemv_q_prep). XL=1 first
 * copies the split's slice of x into local memory. UR=1 unrolls a group's runs; on CPUs GB=4
 * takes four groups per step with their four scales read and converted as one vector. A short
 * last group goes element by element.
 * XQ=1 (CPUs) rounds x to 16-bit integers per group in the first pass (x = c * x16, c = the
 * group's max |x| / 32767; int4 runs also permuted into planes, UNPACK=1) and multiplies codes
 * minus z as 16-bit integers: each run's products summed in pairs into int lanes (x86's
 * multiply-add of 16-bit pairs, twice the weights per instruction of a float FMA and no
 * conversion per weight), converted and scaled by s * c once per group. x's rounding moves y by
 * at most the group's max |x| / 65534 per weight (the check allows that for every config).
 * The WPR partial sums of a row meet in local memory. SPLIT > 1 cuts K into SPLIT slices of
 * whole groups, handled by separate work-groups that write partial rows; gemv_q_combine adds
 * them.
 *
 * Rows past TS_N repeat row TS_N - 1 and are not stored (no guard inside the loops). The shape
 * and format are compiled in. Each input comes with the element offset at which its data
 * starts in its buffer (a run-time argument), so a CPU device can use a caller's arrays in
 * place from aligned addresses below them; the tuner passes 0.
 */
#ifndef TS_B
#define TS_B 1
#endif
#ifndef TS_N
#define TS_N 64
#endif
#ifndef TS_K
#define TS_K 256
#endif
#ifndef BITS
#define BITS 4
#endif
#ifndef GS
#define GS 32
#endif
#ifndef ZP
#define ZP 0
#endif
#ifndef SCALE16
#define SCALE16 0
#endif
#ifndef RPG
#define RPG 4
#endif
#ifndef RPW
#define RPW 1
#endif
#ifndef WPR
#define WPR 1
#endif
#ifndef VB
#define VB 8
#endif
#ifndef SPLIT
#define SPLIT 1
#endif
#ifndef UNPACK
#define UNPACK 0
#endif
#ifndef ZSUM
#define ZSUM 0
#endif
#ifndef XL
#define XL 0
#endif
#ifndef GB
#define GB 1
#endif
#ifndef UR
#define UR 0
#endif
#ifndef XQ
#define XQ 0
#endif
#if UR
#define RUNS_LOOP UNROLL_ALL /* a group's runs unrolled (UR=1), or as the compiler likes */
#else
#define RUNS_LOOP
#endif

/* What the dialect preludes do not name (they are shared by every template, and changing them
   would change every template's source hash): a helper function's qualifier, and a float16
   scale read without cl_khr_fp16. OpenCL converts the bits itself: vload_half was a library
   call on PoCL, 1.3x slower over the whole kernel. Shifted into a float's place, a float16's
   exponent and mantissa are the value times 2^-112, for subnormals too; the sign goes on top
   (infinities and NaNs, no scale's values, come out finite). CUDA converts an __half. */
#ifdef __OPENCL_VERSION__
#define GQ_FN
#if SCALE16
typedef ushort scale_t;
#define LOAD_SCALE(p, i) (as_float((((uint)(p)[i] & 0x8000u) << 16) | (((uint)(p)[i] & 0x7fffu) << 13)) * 0x1p112f)
#endif
#else
#define GQ_FN __device__ __forceinline__
#if SCALE16
#include <cuda_fp16.h>
typedef __half scale_t;
#define LOAD_SCALE(p, i) __half2float((p)[i])
#endif
#endif
#if !SCALE16
typedef float scale_t;
#define LOAD_SCALE(p, i) ((p)[i])
#endif
/* GB (4) consecutive scales at p + i into the floats d[0..GB-1], as one vector (CPU path). */
#ifdef __OPENCL_VERSION__
#if SCALE16
#define LOAD_SCALES(d, p, i) { const uint4 u_ = convert_uint4(vload4(0, (p) + (i)));                         \
    vstore4(as_float4(((u_ & 0x8000u) << 16) | ((u_ & 0x7fffu) << 13)) * 0x1p112f, 0, (d)); }
#else
#define LOAD_SCALES(d, p, i) vstore4(vload4(0, (p) + (i)), 0, (d))
#endif
#endif

#if BITS == 8 && !ZP && defined(__OPENCL_VERSION__)
typedef char code_t; /* symmetric int8: the code is the value (OpenCL's char is signed, and vloadn takes it) */
#elif BITS == 8 && !ZP
typedef signed char code_t;
#else
typedef unsigned char code_t;
#endif

#define NG ((TS_K + GS - 1) / GS)                    /* groups per row */
#define NFULL (TS_K / GS)                            /* full groups per row */
#define ROWB (BITS == 8 ? TS_K : (TS_K + 1) / 2)     /* bytes per row of W */
#define VWK (BITS == 8 ? VB : 2 * VB)                /* weights per run */
#define STEPS (GS / (WPR * VWK))                     /* runs of one work-item per group */
#define CHUNK_G ((NG + SPLIT - 1) / SPLIT)           /* groups per split */
#define ROWSETS (RPG / RPW)
#define WG (ROWSETS * WPR)
#define ZDEF (BITS == 4 ? 8 : 0)                     /* the zero point of ZP=0 */
#define GQ_MIN(a, b) ((a) < (b) ? (a) : (b))

#define GEMV_INPUTS const GLOBAL float* RESTRICT X, const int x_off, const GLOBAL code_t* RESTRICT W, const int w_off, \
                    const GLOBAL scale_t* RESTRICT S, const int s_off
#if ZP
#define ZP_INPUT , const GLOBAL unsigned char* RESTRICT Z, const int z_off
#define ZERO(n, g) ((int)Z[z_off + (n) * NG + (g)])
#else
#define ZP_INPUT
#define ZERO(n, g) ZDEF
#endif
#if XQ
#define PREP_INPUT , const GLOBAL short* RESTRICT XQS, const GLOBAL float* RESTRICT XC
#elif UNPACK || ZSUM
#define PREP_INPUT , const GLOBAL float* RESTRICT XP, const GLOBAL float* RESTRICT XS
#else
#define PREP_INPUT
#endif
#if UNPACK && !XQ
#define XV X_PLANES  /* the runs' weights are read plane by plane: x permuted to match */
#else
#define XV X
#endif

/* The code of weight k of a row (the slow path: the short last group). */
GQ_FN int code_at(const GLOBAL code_t* row, const int k)
{
#if BITS == 8
    return (int)row[k];
#else
    const int byte = (int)row[k >> 1];
    return (k & 1) ? byte >> 4 : byte & 15;
#endif
}

/* VB bytes of one row at byte offset kb -> VWK weights as floats, q - z (ZSUM=0) or q. int4:
   UNPACK=0 keeps the weights in order (low, high nibble of each byte: a CPU then shuffles x
   into even and odd lanes); UNPACK=1 puts the VB low nibbles first, then the VB high ones
   (two planes, each a plain mask or shift of the bytes), against x permuted alike. */
#define ZSUB(z) (ZSUM ? 0 : (z))
#define UNPACK_RUN(w, row, kb, z) {                                                             \
    UNROLL_ALL for (int i_ = 0; i_ < VB; i_++) {                                                \
        const int byte_ = (int)(row)[(kb) + i_];                                                \
        UNPACK_BYTE(w, i_, byte_, z)                                                            \
    }                                                                                           \
}
#if BITS == 8
#define UNPACK_BYTE(w, i, byte, z) (w)[i] = (float)((byte) - ZSUB(z));
#elif UNPACK
#define UNPACK_BYTE(w, i, byte, z) { (w)[i] = (float)(((byte) & 15) - ZSUB(z)); (w)[VB + (i)] = (float)(((byte) >> 4) - ZSUB(z)); }
#else
#define UNPACK_BYTE(w, i, byte, z) { (w)[2 * (i)] = (float)(((byte) & 15) - ZSUB(z));           \
                                     (w)[2 * (i) + 1] = (float)(((byte) >> 4) - ZSUB(z)); }
#endif

/* ZSUM=1: one work-item of the row takes z * s * (the group's sum of x) off, once per group. */
#if ZSUM
#define ZSUM_CORRECT(c, s, z, b, g) { if (t == 0) (c) += (s) * (float)(z) * XS[(b) * NG + (g)]; }
#else
#define ZSUM_CORRECT(c, s, z, b, g)
#endif

#if TS_DEVICE_CPU
/* OpenCL vectors of VB lanes for the CPU path: PL planes of them per run (int4: low, high). */
#define PL (BITS == 8 ? 1 : 2)
#if VB == 1
typedef float floatv;
typedef code_t codev;
#define VLOAD(p) (*(p))
#define CVT_I(v) ((int)(v))
#define CVT_F(v) ((float)(v))
#else
typedef TS_CAT(float, VB) floatv;
#if BITS == 8 && !ZP
typedef TS_CAT(char, VB) codev;
#else
typedef TS_CAT(uchar, VB) codev;
#endif
#define VLOAD(p) TS_CAT(vload, VB)(0, (p))
#define CVT_I(v) TS_CAT(convert_int, VB)(v)
#define CVT_F(v) TS_CAT(convert_float, VB)(v)
#endif
#define HSUM1(v) (v)
#define HSUM2(v) ((v).s0 + (v).s1)
#define HSUM4(v) HSUM2((v).lo + (v).hi)
#define HSUM8(v) HSUM4((v).lo + (v).hi)
#define HSUM16(v) HSUM8((v).lo + (v).hi)
#define HSUM(v) TS_CAT(HSUM, VB)(v)
#define TO_W(q, z) (ZSUM ? CVT_F(q) : CVT_F(CVT_I(q) - (z)))
/* The weights of one run at p: VB bytes, as PL vectors. */
#if BITS == 8
#define UNPACK_VEC(w, p, z) { const codev q_ = VLOAD(p); (w)[0] = TO_W(q_, z); }
#else
#if VB == 1
typedef int intv;
#else
typedef TS_CAT(int, VB) intv;
#endif
/* int4: the VB bytes widened to int lanes once, then each plane a mask or a shift of them (a mask
   and a shift of the bytes, each widened, ran up to 1.3x slower on PoCL and 1.1x on Intel's
   runtime in five configs timed interleaved, and about even in the others). */
#define TO_WI(q, z) (ZSUM ? CVT_F(q) : CVT_F((q) - (z)))
#define UNPACK_VEC(w, p, z) { const intv q_ = CVT_I(VLOAD(p)); (w)[0] = TO_WI(q_ & 15, z); (w)[1] = TO_WI(q_ >> 4, z); }
#endif
/* x for one run at p: in order for int8 and for nibble planes (x permuted by the first pass);
   split into its even and odd elements for int4 in order (UNPACK=0). */
#if BITS == 8
#define LOAD_X_RUN(xv, p) { (xv)[0] = VLOAD(p); }
#elif UNPACK
#define LOAD_X_RUN(xv, p) { (xv)[0] = VLOAD(p); (xv)[1] = VLOAD((p) + VB); }
#elif VB == 1
#define LOAD_X_RUN(xv, p) { (xv)[0] = (p)[0]; (xv)[1] = (p)[1]; }
#else
#define LOAD_X_RUN(xv, p) { const floatv a_ = VLOAD(p), b_ = VLOAD((p) + VB); \
                            (xv)[0] = (floatv)(a_.even, b_.even); (xv)[1] = (floatv)(a_.odd, b_.odd); }
#endif
#endif

#if TS_DEVICE_CPU && XQ
/* XQ=1: a run's planes as VB shorts (codes minus z), x's as VB shorts, their products summed in
   pairs into VB / 2 int lanes (HV). */
#if VB == 2
#define HV 1
#elif VB == 4
#define HV 2
#elif VB == 8
#define HV 4
#else
#define HV 8
#endif
typedef TS_CAT(short, VB) shortv;
typedef TS_CAT(int, VB) intq;
#if HV == 1
typedef int inth;
typedef float floath;
#define CVT_FH(v) ((float)(v))
#define PAIRS(m) ((m).s0 + (m).s1)
#else
typedef TS_CAT(int, HV) inth;
typedef TS_CAT(float, HV) floath;
#define CVT_FH(v) TS_CAT(convert_float, HV)(v)
#define PAIRS(m) ((m).even + (m).odd)
#endif
#define HSUMH(v) TS_CAT(HSUM, HV)(v)
#define CVT_S(v) TS_CAT(convert_short, VB)(v)
#define CVT_IQ(v) TS_CAT(convert_int, VB)(v)
#define XQ_RUN(b, k) TS_CAT(vload, VB)(0, XQS + (b) * TS_K + (k))
#if BITS == 8
#define UNPACK_Q(w, p, z) { (w)[0] = CVT_S(VLOAD(p)) - (short)(z); }
#else
#define UNPACK_Q(w, p, z) { const shortv q_ = CVT_S(VLOAD(p)); (w)[0] = (q_ & (short)15) - (short)(z); \
                            (w)[1] = (q_ >> (short)4) - (short)(z); }
#endif
#endif

#if SPLIT > 1
#define OUT_ARG GLOBAL float* RESTRICT Ypart
#else
#define OUT_ARG GLOBAL float* RESTRICT Y
#endif

KERNEL void gemv_q(GEMV_INPUTS ZP_INPUT PREP_INPUT, OUT_ARG)
{
    X += x_off; W += w_off; S += s_off;
#if UNPACK && !XQ
    const GLOBAL float* X_PLANES = XP;
#endif
#if XL
    LOCAL_MEM float xs[TS_B][CHUNK_G * GS];
#endif
#if WPR > 1
    LOCAL_MEM float red[WG][RPW * TS_B];
#endif
    const int lid = LID(0);
    const int t = lid % WPR;
    const int sp = GRP(0) % SPLIT;
    const int row0 = (GRP(0) / SPLIT) * RPG + (lid / WPR) * RPW;
    const int gbeg = sp * CHUNK_G;
    const int gend = GQ_MIN(NG, gbeg + CHUNK_G);
    const int kbeg = gbeg * GS;
    const int kend = GQ_MIN(TS_K, gend * GS);
    int n[RPW];
    UNROLL_ALL for (int r = 0; r < RPW; r++) n[r] = GQ_MIN(row0 + r, TS_N - 1);
#if XL
    for (int e = lid; e < TS_B * (kend - kbeg); e += WG) {
        const int b = e / (kend - kbeg), j = e % (kend - kbeg);
        xs[b][j] = XV[b * TS_K + kbeg + j];
    }
    BARRIER();
#define XAT(b, k) xs[b][(k) - kbeg]
#else
#define XAT(b, k) XV[(b) * TS_K + (k)]
#endif
#if XQ && !TS_DEVICE_CPU
    /* the portable form with XQ=1 (not searched on GPUs, but correct): x as the first pass
       rounded it, in its planes for int4, in float arithmetic */
#undef XAT
#define XAT(b, k) ((float)XQS[(b) * TS_K + (k)] * XC[(b) * NG + (k) / GS])
#endif
    float acc[RPW][TS_B];   /* each row's sum over the full groups, then the short last one */
    float corr[RPW][TS_B];  /* ZSUM=1: the z * s * sum(x) to take off */
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++) corr[r][b] = 0.0f;
    const int gfull = GQ_MIN(gend, NFULL);
#if TS_DEVICE_CPU
    /* CPUs: the runs as OpenCL vectors of VB lanes (the VB weights of an int8 run, or one plane
       of an int4 run: its low or its high nibbles). As scalar arrays, PoCL's vectoriser kept
       some forms of this loop vector code and turned others (ZSUM=1) into one conversion per
       weight, 8x slower; written as vectors it stays vector code on both CPU drivers. */
#if XQ
    floath tot[RPW][TS_B][PL];
#else
    floatv tot[RPW][TS_B][PL];
#endif
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++)
            UNROLL_ALL for (int p = 0; p < PL; p++) tot[r][b][p] = 0.0f;
#if XQ
    /* One group g of every row (XQ=1): integer pair sums of codes minus z times x16, then
       converted and scaled by SC(r) times x's scale of the group. */
#define CPU_GROUP(g_, SC) {                                                                     \
        const int g = (g_);                                                                     \
        inth part[RPW][TS_B][PL];                                                               \
        UNROLL_ALL for (int r = 0; r < RPW; r++)                                                \
            UNROLL_ALL for (int b = 0; b < TS_B; b++)                                           \
                UNROLL_ALL for (int p = 0; p < PL; p++) part[r][b][p] = 0;                      \
        int z[RPW];                                                                             \
        UNROLL_ALL for (int r = 0; r < RPW; r++) z[r] = ZERO(n[r], g);                          \
        RUNS_LOOP for (int st = 0; st < STEPS; st++) {                                          \
            const int k = g * GS + (st * WPR + t) * VWK;                                        \
            shortv xv[TS_B][PL];                                                                \
            UNROLL_ALL for (int b = 0; b < TS_B; b++)                                           \
                UNROLL_ALL for (int p = 0; p < PL; p++) xv[b][p] = XQ_RUN(b, k + p * VB);       \
            UNROLL_ALL for (int r = 0; r < RPW; r++) {                                          \
                shortv w[PL];                                                                   \
                UNPACK_Q(w, W + (long)n[r] * ROWB + (BITS == 8 ? k : k / 2), z[r]);             \
                UNROLL_ALL for (int b = 0; b < TS_B; b++)                                       \
                    UNROLL_ALL for (int p = 0; p < PL; p++) {                                   \
                        const intq m_ = CVT_IQ(w[p]) * CVT_IQ(xv[b][p]);                        \
                        part[r][b][p] += PAIRS(m_);                                             \
                    }                                                                           \
            }                                                                                   \
        }                                                                                       \
        UNROLL_ALL for (int r = 0; r < RPW; r++) {                                              \
            const float s = SC(r);                                                              \
            UNROLL_ALL for (int b = 0; b < TS_B; b++) {                                         \
                const float f = s * XC[b * NG + g];                                             \
                UNROLL_ALL for (int p = 0; p < PL; p++) tot[r][b][p] += f * CVT_FH(part[r][b][p]); \
            }                                                                                   \
        }                                                                                       \
    }
#else
    /* One group g of every row: its runs (unrolled with UR=1) into unscaled sums, then scaled by
       SC(r), row r's scale, into the totals. */
#define CPU_GROUP(g_, SC) {                                                                     \
        const int g = (g_);                                                                     \
        floatv part[RPW][TS_B][PL];                                                             \
        UNROLL_ALL for (int r = 0; r < RPW; r++)                                                \
            UNROLL_ALL for (int b = 0; b < TS_B; b++)                                           \
                UNROLL_ALL for (int p = 0; p < PL; p++) part[r][b][p] = 0.0f;                   \
        int z[RPW];                                                                             \
        UNROLL_ALL for (int r = 0; r < RPW; r++) z[r] = ZERO(n[r], g);                          \
        RUNS_LOOP for (int st = 0; st < STEPS; st++) {                                          \
            const int k = g * GS + (st * WPR + t) * VWK;                                        \
            floatv xv[TS_B][PL];                                                                \
            UNROLL_ALL for (int b = 0; b < TS_B; b++) LOAD_X_RUN(xv[b], &XAT(b, k));            \
            UNROLL_ALL for (int r = 0; r < RPW; r++) {                                          \
                floatv w[PL];                                                                   \
                UNPACK_VEC(w, W + (long)n[r] * ROWB + (BITS == 8 ? k : k / 2), z[r]);           \
                UNROLL_ALL for (int b = 0; b < TS_B; b++)                                       \
                    UNROLL_ALL for (int p = 0; p < PL; p++) part[r][b][p] += w[p] * xv[b][p];   \
            }                                                                                   \
        }                                                                                       \
        UNROLL_ALL for (int r = 0; r < RPW; r++) {                                              \
            const float s = SC(r);                                                              \
            UNROLL_ALL for (int b = 0; b < TS_B; b++) {                                         \
                UNROLL_ALL for (int p = 0; p < PL; p++) tot[r][b][p] += s * part[r][b][p];      \
                ZSUM_CORRECT(corr[r][b], s, z[r], b, g);                                        \
            }                                                                                   \
        }                                                                                       \
    }
#endif
    int g0 = gbeg;
#if GB > 1
    /* GB groups at a time, their GB scales of a row read and converted as one vector (a float16
       scale one at a time cost PoCL about 25 scalar instructions per group). */
    for (; g0 + GB <= gfull; g0 += GB) {
        float sc[RPW][GB];
        UNROLL_ALL for (int r = 0; r < RPW; r++) LOAD_SCALES(sc[r], S, n[r] * NG + g0);
#define SC_BLOCK(r) sc[r][j]
        UNROLL_ALL for (int j = 0; j < GB; j++) CPU_GROUP(g0 + j, SC_BLOCK)
    }
#endif
#define SC_ONE(r) LOAD_SCALE(S, n[r] * NG + g)
    for (; g0 < gfull; g0++) CPU_GROUP(g0, SC_ONE)
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++) {
            float a = 0.0f;
#if XQ
            UNROLL_ALL for (int p = 0; p < PL; p++) a += HSUMH(tot[r][b][p]);
#else
            UNROLL_ALL for (int p = 0; p < PL; p++) a += HSUM(tot[r][b][p]);
#endif
            acc[r][b] = a - corr[r][b];
        }
#else
    /* GPUs (and CUDA): the runs as private arrays of VWK floats, unrolled. */
    float tot[RPW][TS_B][VWK];
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++)
            UNROLL_ALL for (int i = 0; i < VWK; i++) tot[r][b][i] = 0.0f;
    for (int g = gbeg; g < gfull; g++) {
        float part[RPW][TS_B][VWK];
        UNROLL_ALL for (int r = 0; r < RPW; r++)
            UNROLL_ALL for (int b = 0; b < TS_B; b++)
                UNROLL_ALL for (int i = 0; i < VWK; i++) part[r][b][i] = 0.0f;
        int z[RPW];
        UNROLL_ALL for (int r = 0; r < RPW; r++) z[r] = ZERO(n[r], g);
        RUNS_LOOP for (int st = 0; st < STEPS; st++) {
            const int k = g * GS + (st * WPR + t) * VWK;
            float xv[TS_B][VWK];
            UNROLL_ALL for (int b = 0; b < TS_B; b++)
                UNROLL_ALL for (int i = 0; i < VWK; i++) xv[b][i] = XAT(b, k + i);
            UNROLL_ALL for (int r = 0; r < RPW; r++) {
                float w[VWK];
                UNPACK_RUN(w, W + (long)n[r] * ROWB, BITS == 8 ? k : k / 2, z[r]);
                UNROLL_ALL for (int b = 0; b < TS_B; b++)
                    UNROLL_ALL for (int i = 0; i < VWK; i++) part[r][b][i] += w[i] * xv[b][i];
            }
        }
        UNROLL_ALL for (int r = 0; r < RPW; r++) {
            const float s = LOAD_SCALE(S, n[r] * NG + g);
            UNROLL_ALL for (int b = 0; b < TS_B; b++) {
                UNROLL_ALL for (int i = 0; i < VWK; i++) tot[r][b][i] += s * part[r][b][i];
                ZSUM_CORRECT(corr[r][b], s, z[r], b, g);
            }
        }
    }
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++) {
            float a = 0.0f;
            UNROLL_ALL for (int i = 0; i < VWK; i++) a += tot[r][b][i];
            acc[r][b] = a - corr[r][b];
        }
#endif
#if TS_K % GS
    if (gend > NFULL) { /* the short last group, in the last split */
        UNROLL_ALL for (int r = 0; r < RPW; r++) {
            const float s = LOAD_SCALE(S, n[r] * NG + NFULL);
            const int z = ZERO(n[r], NFULL);
            for (int k = NFULL * GS + t; k < TS_K; k += WPR) {
                const float w = s * (float)(code_at(W + (long)n[r] * ROWB, k) - z);
                UNROLL_ALL for (int b = 0; b < TS_B; b++) acc[r][b] += w * X[b * TS_K + k]; /* in order */
            }
        }
    }
#endif
#if WPR > 1
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++) red[lid][r * TS_B + b] = acc[r][b];
    BARRIER();
    for (int h = WPR / 2; h > 0; h >>= 1) {
        if (t < h) {
            UNROLL_ALL for (int e = 0; e < RPW * TS_B; e++) red[lid][e] += red[lid + h][e];
        }
        BARRIER();
    }
    UNROLL_ALL for (int r = 0; r < RPW; r++)
        UNROLL_ALL for (int b = 0; b < TS_B; b++) acc[r][b] = red[lid][r * TS_B + b];
#endif
    if (t == 0) {
        UNROLL_ALL for (int r = 0; r < RPW; r++) {
            if (row0 + r < TS_N) {
                UNROLL_ALL for (int b = 0; b < TS_B; b++) {
#if SPLIT > 1
                    Ypart[((long)sp * TS_B + b) * TS_N + row0 + r] = acc[r][b];
#else
                    Y[(long)b * TS_N + row0 + r] = acc[r][b];
#endif
                }
            }
        }
    }
}

/* The first pass of UNPACK=1 or ZSUM=1, one work-item per batch row and group: x with each run
   of VWK weights permuted into its even then its odd elements (UNPACK=1, int4), and the sum of
   x over the group (ZSUM=1). A short last group is copied in order (read element by element). */
#if XQ
/* v (|v| <= 32767 but for rounding) to the nearest short, saturated. */
#ifdef __OPENCL_VERSION__
#define TO_X16(v) convert_short_sat_rte(v)
#else
#define TO_X16(v) ((short)__float2int_rn(fminf(fmaxf((v), -32767.0f), 32767.0f)))
#endif
/* XQ=1's first pass, one work-item per batch row and group: the group's x as shorts x16 with
   x = c * x16, c = max |x| / 32767 (into XC), int4 runs permuted into their planes as for
   UNPACK=1. A short last group (read as floats by the main pass) is copied in order. */
KERNEL void gemv_q_prep(const GLOBAL float* RESTRICT X, const int x_off, GLOBAL short* RESTRICT XQS, GLOBAL float* RESTRICT XC)
{
    const int e = GID(0);
    if (e >= TS_B * NG) return;
    const int b = e / NG, g = e % NG;
    const GLOBAL float* x = X + x_off + b * TS_K;
    const int k0 = g * GS, k1 = GQ_MIN(TS_K, k0 + GS);
    float m = 0.0f;
    for (int k = k0; k < k1; k++) m = fmax(m, fabs(x[k]));
    const float inv = m > 0.0f ? 32767.0f / m : 0.0f;
    for (int k = k0; k < k1; k++) {
#if BITS == 4
        const int r = (k - k0) % VWK, run = k - r;
        const int to = k1 - k0 == GS ? run + (r & 1) * VB + r / 2 : k;
#else
        const int to = k;
#endif
        XQS[b * TS_K + to] = TO_X16(x[k] * inv);
    }
    XC[e] = m / 32767.0f;
}
#else
KERNEL void gemv_q_prep(const GLOBAL float* RESTRICT X, const int x_off, GLOBAL float* RESTRICT XP, GLOBAL float* RESTRICT XS)
{
    const int e = GID(0);
    if (e >= TS_B * NG) return;
    const int b = e / NG, g = e % NG;
    const GLOBAL float* x = X + x_off + b * TS_K;
    const int k0 = g * GS, k1 = GQ_MIN(TS_K, k0 + GS);
    float s = 0.0f;
    for (int k = k0; k < k1; k++) {
        s += x[k];
#if UNPACK && BITS == 4
        const int r = (k - k0) % VWK, run = k - r;
        /* weight r of a full group's run sits at r / 2 (even r) or VB + r / 2 (odd r) */
        const int to = k1 - k0 == GS ? run + (r & 1) * VB + r / 2 : k;
#else
        const int to = k;
#endif
        XP[b * TS_K + to] = x[k];
    }
    XS[e] = s;
}
#endif

/* SPLIT > 1's second pass: one work-item per output adds the SPLIT partial sums. */
KERNEL void gemv_q_combine(const GLOBAL float* RESTRICT Ypart, GLOBAL float* RESTRICT Y)
{
    const int e = GID(0);
    if (e >= TS_B * TS_N) return;
    float s = 0.0f;
    for (int p = 0; p < SPLIT; p++) s += Ypart[(long)p * TS_B * TS_N + e];
    Y[e] = s;
}
