/* tunesvc attention: O = softmax(Q·Kᵀ·scale [causal mask]) · V, fused, with a streaming softmax.
 *
 * Grouped-query attention: Q, O: [TS_BHKV * TS_GQ][TS_Q][TS_D]; K, V: [TS_BHKV][TS_KV][TS_D],
 * row-major, storage `real`, float accumulation. Query head h (of B x Hq, batch-major) reads KV
 * head h / TS_GQ; TS_GQ = 1 is multi-head attention, TS_BHKV = B is multi-query attention. The
 * TS_GQ x TS_Q queries of one KV head are its "rows", query-major (row r is query r / TS_GQ of
 * query head r % TS_GQ of the group), so a block of QPG rows holds every head of the group for
 * a few queries and each K and V row is read once for all of them.
 * The score matrix never reaches global memory: a
 * work-group holds QPG rows and walks the keys in blocks of KB, keeping a
 * running maximum m and sum l per query and rescaling its output by
 * exp(m_old - m_new) whenever the maximum grows (online softmax).
 *
 * Within a block the work-items first share the QPG x KB scores (dot
 * products read K directly, or from local memory with LKV=1), then one
 * work-item per query turns its row into probabilities, then the work-items
 * share the QPG x TS_D outputs in vectors of DV elements, accumulating p·V.
 *
 * SPLIT > 1 is flash-decoding: the keys are cut into SPLIT chunks handled by
 * separate work-groups, which write their unnormalised outputs and (m, l) to
 * scratch; attention_combine merges the chunks. CAUSAL=1 masks key j for
 * query i when j > i + TS_KV - TS_Q (queries aligned to the end of the keys,
 * as when decoding after a KV cache). The shape is compiled in.
 *
 * MAP=1 is the mapping for CPUs: no work-item shares anything. One work-item
 * takes QPG rows of one KV head and one split and streams that split's K and
 * V rows in order, key by key, with the head dimension as fully unrolled
 * loops over private arrays (the compiler vectorises them within the
 * work-item; CPU OpenCL vectorises across work-items only when no loop is
 * left in one, and a loop over keys always is). The dot product is a tree
 * of sums down to DV partials, so it is not one chain of TS_D dependent adds. WG is then
 * just how many such work-items a work-group holds; KB and LKV are unused.
 *
 * Each input comes with the element offset at which its data starts in its
 * buffer (q_off, k_off, v_off, s_off: run-time arguments, so one build serves
 * every offset); a CPU device can then use a caller's arrays in place from
 * the aligned addresses below them. The tuner passes 0.
 */
#ifndef TS_BHKV
#define TS_BHKV 1
#endif
#ifndef TS_GQ
#define TS_GQ 1
#endif
#ifndef TS_Q
#define TS_Q 1
#endif
#ifndef TS_KV
#define TS_KV 64
#endif
#ifndef TS_D
#define TS_D 64
#endif
#ifndef CAUSAL
#define CAUSAL 0
#endif
#ifndef QPG
#define QPG 1
#endif
#ifndef KB
#define KB 16
#endif
#ifndef DV
#define DV 1
#endif
#ifndef WG
#define WG 64
#endif
#ifndef LKV
#define LKV 0
#endif
#ifndef SPLIT
#define SPLIT 1
#endif
#ifndef MAP
#define MAP 0
#endif
#ifndef PVO
#define PVO 0
#endif

#define TS_ROWS (TS_Q * TS_GQ)                                         /* query rows per KV head */
#define NQB ((TS_ROWS + QPG - 1) / QPG)                                /* row blocks per KV head */
/* where row r of KV head u starts in Q and O, and which query it is */
#define QROW(u, r) (((long)(u) * TS_GQ + (r) % TS_GQ) * TS_Q * TS_D + (long)((r) / TS_GQ) * TS_D)
#define QI(r) ((r) / TS_GQ)
/* the keys a block of rows from r0 sees: up to its last row's limit */
#define LAST_KEY_END(r0) (QI(TS_IMIN((r0) + QPG, TS_ROWS) - 1) + 1 + CAUSAL_OFF)
/* MAP=2 and 3 tile on CPUs; elsewhere (a GPU build of such a config) they stream as MAP=1 does */
#define TILED (MAP >= 2 && TS_DEVICE_CPU)
#define STREAMED (MAP == 1 || (MAP >= 2 && !TS_DEVICE_CPU))
#if MAP == 1
#define CHUNK ((TS_KV + SPLIT - 1) / SPLIT)                             /* keys per split (one at a time) */
#else
#define CHUNK ((((TS_KV + SPLIT - 1) / SPLIT) + KB - 1) / KB * KB)     /* keys per split, whole blocks */
#endif
#define NVEC (QPG * TS_D / DV)                                         /* output vectors of a group */
#define OPT ((NVEC + WG - 1) / WG)                                     /* output vectors per work-item */
#define CAUSAL_OFF (TS_KV - TS_Q)
#define TS_IMIN(a, b) ((a) < (b) ? (a) : (b))
/* the largest power of two not above TS_D */
#define TS_P2 (TS_D >= 256 ? 256 : TS_D >= 128 ? 128 : TS_D >= 64 ? 64 : TS_D >= 32 ? 32 : TS_D >= 16 ? 16 : \
               TS_D >= 8 ? 8 : TS_D >= 4 ? 4 : TS_D >= 2 ? 2 : 1)

#if LKV
#define KROW(j) (ks[j])
#define VROW(j) (vs[j])
#else
#define KROW(j) (K + kvoff + (long)(k0 + (j)) * TS_D)
#define VROW(j) (V + kvoff + (long)(k0 + (j)) * TS_D)
#endif

#if TILED
/* OpenCL vectors of the tiled mapping: KB keys of a block, DV elements of a head-dim chunk. */
#define NKB ((TS_KV + KB - 1) / KB)
typedef TS_CAT(float, KB) floatk;
typedef TS_CAT(int, KB) intk;
typedef TS_CAT(float, DV) floatd;
#if KB == 8
#define LANES_K ((intk)(0, 1, 2, 3, 4, 5, 6, 7))
#else
#define LANES_K ((intk)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#endif
#define TS_H2(v, f) f((v).s0, (v).s1)
#define TS_H4(v, f) TS_H2(f((v).lo, (v).hi), f)
#define TS_H8(v, f) TS_H4(f((v).lo, (v).hi), f)
#define TS_H16(v, f) TS_H8(f((v).lo, (v).hi), f)
#define TS_ADD(a, b) ((a) + (b))
#define HSUM_K(v) TS_CAT(TS_H, KB)(v, TS_ADD)
#define HMAX_K(v) TS_CAT(TS_H, KB)(v, fmax)
#define HSUM_D(v) TS_CAT(TS_H, DV)(v, TS_ADD)
#if TS_FP16
#define VLOAD_D(p) TS_CAT(convert_float, DV)(TS_CAT(vload, DV)(0, p))
#define VSTORE_D(v, p) TS_CAT(vstore, DV)(TS_CAT(convert_half, DV)(v), 0, p)
#else
#define VLOAD_D(p) TS_CAT(vload, DV)(0, p)
#define VSTORE_D(v, p) TS_CAT(vstore, DV)(v, 0, p)
#endif
#endif

#define ATTENTION_INPUTS const GLOBAL real* RESTRICT Q, const int q_off, const GLOBAL real* RESTRICT K, const int k_off, \
               const GLOBAL real* RESTRICT V, const int v_off, const GLOBAL float* RESTRICT scale_p, const int s_off
#define AT_OFFSETS() { Q += q_off; K += k_off; V += v_off; scale_p += s_off; }
#if MAP == 2
#define KT_INPUT , const GLOBAL float* RESTRICT Kt  /* K packed by attention_pack_k */
#else
#define KT_INPUT
#endif
#if SPLIT > 1
KERNEL void attention(ATTENTION_INPUTS KT_INPUT, GLOBAL float* RESTRICT Opart, GLOBAL float* RESTRICT ML)
#else
KERNEL void attention(ATTENTION_INPUTS KT_INPUT, GLOBAL real* RESTRICT O)
#endif
#if TILED
{
    /* MAP=2 and 3, CPUs: one work-item holds a tile of QPG rows and walks the keys in blocks
       of KB. A block's QPG x KB scores are QPG vectors of KB lanes. MAP=2 (prefill) builds
       them over the head dimension from K packed per block as [TS_D][KB], each step a vector
       of keys times a broadcast query element; MAP=3 (decode, where a packing pass would read
       K twice) takes one dot product per row and key over K's own rows, DV lanes at a time.
       The online softmax then works on whole vectors (one max, one exp of KB lanes, one
       rescale per row and block, not per key), and P·V adds each V row, DV lanes at a time,
       into QPG x TS_D / DV output vectors. PVO orders P·V: 0 takes one head-dim chunk of
       the QPG outputs at a time (in registers) across the block's keys, so V is read down its
       columns, which the CPUs' stream prefetchers do not follow (decode then ran at a third of
       the read bandwidth); 1 takes V row by row as it lies (the outputs live in L1); 2 is 0
       with the block's V rows prefetched before its scores are computed. Causal blocks past a tile's last row are
       never visited; the blocks they straddle are masked lane by lane. */
    AT_OFFSETS();
    const int u = GRP(0) * WG + LID(0); /* (KV head, row block, split), split fastest */
    if (u >= TS_BHKV * NQB * SPLIT) return;
    const int split = u % SPLIT;
    const int q0 = u / SPLIT % NQB * QPG;
    const int bh = u / (SPLIT * NQB);
    const float scale = scale_p[0];
    float m[QPG], l[QPG], pr[QPG][KB];
    floatd acc[QPG][TS_D / DV];
#if MAP == 2
    float qv[QPG][TS_D];  /* each element is broadcast against a vector of keys */
#else
    floatd qd[QPG][TS_D / DV];  /* in the vectors the dot products take */
#endif
    UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
        const GLOBAL real* qp = Q + QROW(bh, TS_IMIN(q0 + qi, TS_ROWS - 1));
#if MAP == 2
        UNROLL_ALL for (int d = 0; d < TS_D; d++) qv[qi][d] = TO_FLOAT(qp[d]) * scale;
#else
        UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) qd[qi][c] = VLOAD_D(qp + c * DV) * scale;
#endif
        UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) acc[qi][c] = 0.0f;
        m[qi] = -INFINITY;
        l[qi] = 0.0f;
    }
    const int kbeg = split * CHUNK;
    int kend = TS_IMIN(kbeg + CHUNK, TS_KV);
#if CAUSAL
    kend = TS_IMIN(kend, LAST_KEY_END(q0));
#endif
    const intk lanes = LANES_K;
#if MAP == 2
    const GLOBAL float* kt = Kt + (long)bh * NKB * TS_D * KB;
#else
    const GLOBAL real* kh = K + (long)bh * TS_KV * TS_D;
#endif
    const GLOBAL real* vh = V + (long)bh * TS_KV * TS_D;
    for (int k0 = kbeg; k0 < kend; k0 += KB) {
        floatk sc[QPG];
#if PVO == 2
        /* the block's V rows, asked for now so they arrive while the scores are computed */
        for (int j = 0; j < KB; j++) prefetch(vh + (long)TS_IMIN(k0 + j, TS_KV - 1) * TS_D, TS_D);
#endif
#if MAP == 2
        UNROLL_ALL for (int qi = 0; qi < QPG; qi++) sc[qi] = 0.0f;
        const GLOBAL float* kb = kt + (long)(k0 / KB) * TS_D * KB;
        for (int d = 0; d < TS_D; d++) {
            const floatk kd = TS_CAT(vload, KB)(0, kb + d * KB);
            UNROLL_ALL for (int qi = 0; qi < QPG; qi++) sc[qi] = mad((floatk)(qv[qi][d]), kd, sc[qi]);
        }
#else
        /* loops over keys and head-dim chunks stay loops (unrolled, the tile's code grew to
           minutes of compile time on Intel's runtime); the rows within are unrolled */
        for (int j = 0; j < KB; j++) {
            const GLOBAL real* kr = kh + (long)TS_IMIN(k0 + j, TS_KV - 1) * TS_D;
            floatd dot[QPG];
            UNROLL_ALL for (int qi = 0; qi < QPG; qi++) dot[qi] = 0.0f;
            UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) {
                const floatd kd = VLOAD_D(kr + c * DV);
                UNROLL_ALL for (int qi = 0; qi < QPG; qi++) dot[qi] = mad(qd[qi][c], kd, dot[qi]);
            }
            UNROLL_ALL for (int qi = 0; qi < QPG; qi++) pr[qi][j] = HSUM_D(dot[qi]);
        }
        UNROLL_ALL for (int qi = 0; qi < QPG; qi++) sc[qi] = TS_CAT(vload, KB)(0, pr[qi]);
#endif
        UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
            /* keys past the split's end or (causal) past this row's limit */
            int lim = kend - 1;
#if CAUSAL
            lim = TS_IMIN(lim, QI(q0 + qi) + CAUSAL_OFF);
#endif
            sc[qi] = select(sc[qi], (floatk)(-INFINITY), (k0 + lanes) > lim);
            const float mnew = fmax(m[qi], HMAX_K(sc[qi]));
            /* mnew stays -inf only while every key so far is masked: nothing to add yet */
            const floatk p = mnew == -INFINITY ? (floatk)(0.0f) : exp(sc[qi] - mnew);
            const float a = mnew == -INFINITY ? 1.0f : exp(m[qi] - mnew);
            l[qi] = l[qi] * a + HSUM_K(p);
            m[qi] = mnew;
            TS_CAT(vstore, KB)(p, 0, pr[qi]);
            UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) acc[qi][c] *= a;
        }
        /* a key past the end has p = 0; its row is read from within the buffer */
#if PVO == 1
        for (int j = 0; j < KB; j++) {
            const GLOBAL real* vr = vh + (long)TS_IMIN(k0 + j, TS_KV - 1) * TS_D;
            float pj[QPG];
            UNROLL_ALL for (int qi = 0; qi < QPG; qi++) pj[qi] = pr[qi][j];
            UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) {
                const floatd vv = VLOAD_D(vr + c * DV);
                UNROLL_ALL for (int qi = 0; qi < QPG; qi++) acc[qi][c] = mad((floatd)(pj[qi]), vv, acc[qi][c]);
            }
        }
#else
        for (int c = 0; c < TS_D / DV; c++) {
            floatd o[QPG];
            UNROLL_ALL for (int qi = 0; qi < QPG; qi++) o[qi] = acc[qi][c];
            UNROLL_ALL for (int j = 0; j < KB; j++) {
                const floatd vv = VLOAD_D(vh + (long)TS_IMIN(k0 + j, TS_KV - 1) * TS_D + c * DV);
                UNROLL_ALL for (int qi = 0; qi < QPG; qi++) o[qi] = mad((floatd)(pr[qi][j]), vv, o[qi]);
            }
            UNROLL_ALL for (int qi = 0; qi < QPG; qi++) acc[qi][c] = o[qi];
        }
#endif
    }
    UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
        if (q0 + qi < TS_ROWS) {
#if SPLIT > 1
            const long row = ((long)bh * SPLIT + split) * TS_ROWS + q0 + qi;
            UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) TS_CAT(vstore, DV)(acc[qi][c], 0, Opart + row * TS_D + c * DV);
            ML[row * 2] = m[qi];
            ML[row * 2 + 1] = l[qi];
#else
            const float inv = 1.0f / l[qi];
            GLOBAL real* o = O + QROW(bh, q0 + qi);
            UNROLL_ALL for (int c = 0; c < TS_D / DV; c++) VSTORE_D(acc[qi][c] * inv, o + c * DV);
#endif
        }
    }
}
#elif STREAMED
{
    AT_OFFSETS();
    const int u = GRP(0) * WG + LID(0); /* (KV head, row block, split), split fastest */
    if (u >= TS_BHKV * NQB * SPLIT) return;
    const int split = u % SPLIT;
    const int q0 = u / SPLIT % NQB * QPG; /* the first row */
    const int bh = u / (SPLIT * NQB);
    const float scale = scale_p[0];
    float qv[QPG][TS_D], acc[QPG][TS_D], m[QPG], l[QPG];
    UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
        /* a row past the end repeats the last one; its output is not stored */
        const GLOBAL real* qp = Q + QROW(bh, TS_IMIN(q0 + qi, TS_ROWS - 1));
        UNROLL_ALL for (int d = 0; d < TS_D; d++) {
            qv[qi][d] = TO_FLOAT(qp[d]) * scale;
            acc[qi][d] = 0.0f;
        }
        m[qi] = -INFINITY;
        l[qi] = 0.0f;
    }
    const int kbeg = split * CHUNK;
    int kend = TS_IMIN(kbeg + CHUNK, TS_KV);
#if CAUSAL
    kend = TS_IMIN(kend, LAST_KEY_END(q0));
#endif
    const GLOBAL real* kr = K + (long)bh * TS_KV * TS_D + (long)kbeg * TS_D;
    const GLOBAL real* vr = V + (long)bh * TS_KV * TS_D + (long)kbeg * TS_D;
    for (int j = kbeg; j < kend; j++, kr += TS_D, vr += TS_D) {
        UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
#if CAUSAL
            if (j > QI(q0 + qi) + CAUSAL_OFF) continue; /* masked: this row adds nothing */
#endif
            /* The dot product as a tree: products of the whole row (vector multiplies),
               then halving sums down to DV partials. A chain of adds over the row would
               take TS_D/DV dependent steps per key and bound the kernel by latency. */
            float pr[TS_D];
            UNROLL_ALL for (int d = 0; d < TS_D; d++) pr[d] = qv[qi][d] * TO_FLOAT(kr[d]);
            UNROLL_ALL for (int d = 0; d < TS_D - TS_P2; d++) pr[d] += pr[d + TS_P2];
            UNROLL_ALL for (int h = TS_P2 / 2; h >= DV; h /= 2) {
                UNROLL_ALL for (int d = 0; d < h; d++) pr[d] += pr[d + h];
            }
            float sc = pr[0];
            UNROLL_ALL for (int w = 1; w < DV; w++) sc += pr[w];
            if (sc > m[qi]) { /* a new maximum: rescale what is summed so far (rare after the first keys) */
                const float a = exp(m[qi] - sc);
                l[qi] *= a;
                UNROLL_ALL for (int d = 0; d < TS_D; d++) acc[qi][d] *= a;
                m[qi] = sc;
            }
            const float p = exp(sc - m[qi]);
            l[qi] += p;
            UNROLL_ALL for (int d = 0; d < TS_D; d++) acc[qi][d] += p * TO_FLOAT(vr[d]);
        }
    }
    UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
        if (q0 + qi < TS_ROWS) {
#if SPLIT > 1
            const long row = ((long)bh * SPLIT + split) * TS_ROWS + q0 + qi;
            UNROLL_ALL for (int d = 0; d < TS_D; d++) Opart[row * TS_D + d] = acc[qi][d];
            ML[row * 2] = m[qi];
            ML[row * 2 + 1] = l[qi];
#else
            const float inv = 1.0f / l[qi];
            GLOBAL real* o = O + QROW(bh, q0 + qi);
            UNROLL_ALL for (int d = 0; d < TS_D; d++) o[d] = TO_REAL(acc[qi][d] * inv);
#endif
        }
    }
}
#else
{
    LOCAL_MEM float qs[QPG][TS_D];   /* the group's queries, times the scale */
    LOCAL_MEM float s[QPG][KB];      /* scores of one key block, then their probabilities */
    LOCAL_MEM float alpha[QPG];      /* factor that rescales the running output */
    LOCAL_MEM float mrun[QPG];
    LOCAL_MEM float lrun[QPG];
#if LKV
    LOCAL_MEM float ks[KB][TS_D];
    LOCAL_MEM float vs[KB][TS_D];
#endif
    AT_OFFSETS();
    const int lid = LID(0);
    const int split = GRP(0) % SPLIT;
    const int q0 = (GRP(0) / SPLIT) % NQB * QPG;
    const int bh = GRP(0) / (SPLIT * NQB);
    const long kvoff = (long)bh * TS_KV * TS_D;
    const float scale = scale_p[0];

    for (int e = lid; e < QPG * TS_D; e += WG) {
        const int qi = e / TS_D, d = e % TS_D;
        qs[qi][d] = q0 + qi < TS_ROWS ? TO_FLOAT(Q[QROW(bh, q0 + qi) + d]) * scale : 0.0f;
    }
    if (lid < QPG) {
        mrun[lid] = -INFINITY;
        lrun[lid] = 0.0f;
    }
    float acc[OPT * DV]; /* output vector o of this work-item is acc[o * DV ..] */
    UNROLL_ALL for (int i = 0; i < OPT * DV; i++) acc[i] = 0.0f;
    const int kbeg = split * CHUNK;
    int kend = TS_IMIN(kbeg + CHUNK, TS_KV);
#if CAUSAL
    /* No row of the group sees a key past the last row's limit. */
    kend = TS_IMIN(kend, LAST_KEY_END(q0));
#endif
    BARRIER();

    for (int k0 = kbeg; k0 < kend; k0 += KB) {
        const int nk = TS_IMIN(KB, kend - k0);
#if LKV
        for (int e = lid; e < nk * (TS_D / DV); e += WG) {
            const int j = e / (TS_D / DV), d = e % (TS_D / DV) * DV;
            float kv[DV], vv[DV];
            LOADV(DV)(kv, 0, K, kvoff + (long)(k0 + j) * TS_D + d);
            LOADV(DV)(vv, 0, V, kvoff + (long)(k0 + j) * TS_D + d);
            UNROLL_ALL for (int w = 0; w < DV; w++) {
                ks[j][d + w] = kv[w];
                vs[j][d + w] = vv[w];
            }
        }
        BARRIER();
#endif
        for (int e = lid; e < QPG * nk; e += WG) {
            const int qi = e / nk, j = e % nk;
            float dot = 0.0f;
            for (int d = 0; d < TS_D; d += DV) {
                float kv[DV];
#if LKV
                UNROLL_ALL for (int w = 0; w < DV; w++) kv[w] = ks[j][d + w];
#else
                LOADV(DV)(kv, 0, KROW(j), d);
#endif
                UNROLL_ALL for (int w = 0; w < DV; w++) dot += qs[qi][d + w] * kv[w];
            }
#if CAUSAL
            if (k0 + j > QI(q0 + qi) + CAUSAL_OFF) dot = -INFINITY;
#endif
            s[qi][j] = dot;
        }
        BARRIER();
        if (lid < QPG) {
            const float mold = mrun[lid];
            float mnew = mold;
            for (int j = 0; j < nk; j++) mnew = fmax(mnew, s[lid][j]);
            /* mnew stays -inf only while every key so far is masked: nothing to add yet. */
            const int none = mnew == -INFINITY;
            float sum = 0.0f;
            for (int j = 0; j < nk; j++) {
                const float p = none ? 0.0f : exp(s[lid][j] - mnew);
                s[lid][j] = p;
                sum += p;
            }
            const float a = none ? 1.0f : exp(mold - mnew);
            alpha[lid] = a;
            lrun[lid] = lrun[lid] * a + sum;
            mrun[lid] = mnew;
        }
        BARRIER();
        UNROLL_ALL for (int o = 0; o < OPT; o++) {
            const int e = lid + o * WG;
            if (e < NVEC) {
                const int qi = e * DV / TS_D, d = e * DV % TS_D;
                const float a = alpha[qi];
                UNROLL_ALL for (int w = 0; w < DV; w++) acc[o * DV + w] *= a;
                for (int j = 0; j < nk; j++) {
                    const float p = s[qi][j];
                    float vv[DV];
#if LKV
                    UNROLL_ALL for (int w = 0; w < DV; w++) vv[w] = vs[j][d + w];
#else
                    LOADV(DV)(vv, 0, VROW(j), d);
#endif
                    UNROLL_ALL for (int w = 0; w < DV; w++) acc[o * DV + w] += p * vv[w];
                }
            }
        }
        BARRIER(); /* s, ks and vs are overwritten by the next block */
    }

    UNROLL_ALL for (int o = 0; o < OPT; o++) {
        const int e = lid + o * WG;
        if (e < NVEC) {
            const int qi = e * DV / TS_D, d = e * DV % TS_D;
            if (q0 + qi < TS_ROWS) {
#if SPLIT > 1
                STOREV(DV)(acc, o * DV, Opart, (((long)bh * SPLIT + split) * TS_ROWS + q0 + qi) * TS_D + d);
#else
                const float inv = 1.0f / lrun[qi];
                UNROLL_ALL for (int w = 0; w < DV; w++) acc[o * DV + w] *= inv;
                STOREV(DV)(acc, o * DV, O, QROW(bh, q0 + qi) + d);
#endif
            }
        }
    }
#if SPLIT > 1
    if (lid < QPG && q0 + lid < TS_ROWS) {
        const long ml = (((long)bh * SPLIT + split) * TS_ROWS + q0 + lid) * 2;
        ML[ml] = mrun[lid];
        ML[ml + 1] = lrun[lid];
    }
#endif
}
#endif /* MAP */

/* Second pass of SPLIT > 1: one work-item per output element merges the SPLIT chunks. */
KERNEL void attention_combine(const GLOBAL float* RESTRICT Opart, const GLOBAL float* RESTRICT ML, GLOBAL real* RESTRICT O)
{
    const long e = (long)GRP(0) * LSZ(0) + LID(0);
    if (e >= (long)TS_BHKV * TS_ROWS * TS_D) return;
    const int d = (int)(e % TS_D);
    const long hq = e / TS_D;   /* (query head, query) */
    const long head = hq / TS_Q;
    const long bh = head / TS_GQ;
    const int r = (int)(hq % TS_Q) * TS_GQ + (int)(head % TS_GQ);
    float m = -INFINITY;
    for (int p = 0; p < SPLIT; p++) m = fmax(m, ML[((bh * SPLIT + p) * TS_ROWS + r) * 2]);
    float num = 0.0f, den = 0.0f;
    for (int p = 0; p < SPLIT; p++) {
        const long row = (bh * SPLIT + p) * TS_ROWS + r;
        const float mp = ML[row * 2];
        if (mp != -INFINITY) { /* a chunk with every key masked adds nothing */
            const float w = exp(mp - m);
            num += w * Opart[row * TS_D + d];
            den += w * ML[row * 2 + 1];
        }
    }
    O[e] = TO_REAL(num / den);
}

/* MAP=2's first pass: K of each KV head in blocks of KB keys, each block [TS_D][KB] (the keys of
   one head-dim element side by side), float, keys past the end 0. One work-item per key slot. */
KERNEL void attention_pack_k(const GLOBAL real* RESTRICT K, const int k_off, GLOBAL float* RESTRICT Kt)
{
    const long e = (long)GRP(0) * LSZ(0) + LID(0);
    const int nkb = (TS_KV + KB - 1) / KB;
    if (e >= (long)TS_BHKV * nkb * KB) return;
    const int slot = (int)(e % ((long)nkb * KB));
    const long bh = e / ((long)nkb * KB);
    const int j = slot, lane = slot % KB;
    GLOBAL float* dst = Kt + (bh * nkb + slot / KB) * TS_D * KB + lane;
    const GLOBAL real* src = K + k_off + (bh * TS_KV + TS_IMIN(j, TS_KV - 1)) * TS_D;
    for (int d = 0; d < TS_D; d++) dst[d * KB] = j < TS_KV ? TO_FLOAT(src[d]) : 0.0f;
}
