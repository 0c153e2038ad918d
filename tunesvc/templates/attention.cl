/* tunesvc attention: O = softmax(Q·Kᵀ·scale [causal mask]) · V, fused, with a streaming softmax.
 *
 * Q, O: [BH][TS_Q][TS_D]; K, V: [BH][TS_KV][TS_D], row-major, storage `real`,
 * float accumulation. The score matrix never reaches global memory: a
 * work-group holds QPG queries and walks the keys in blocks of KB, keeping a
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
 * takes QPG queries of one head and one split and streams that split's K and
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
#ifndef TS_BH
#define TS_BH 1
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

#define NQB ((TS_Q + QPG - 1) / QPG)                                  /* query blocks per head */
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

#define ATTENTION_INPUTS const GLOBAL real* RESTRICT Q, const int q_off, const GLOBAL real* RESTRICT K, const int k_off, \
               const GLOBAL real* RESTRICT V, const int v_off, const GLOBAL float* RESTRICT scale_p, const int s_off
#define AT_OFFSETS() { Q += q_off; K += k_off; V += v_off; scale_p += s_off; }
#if SPLIT > 1
KERNEL void attention(ATTENTION_INPUTS, GLOBAL float* RESTRICT Opart, GLOBAL float* RESTRICT ML)
#else
KERNEL void attention(ATTENTION_INPUTS, GLOBAL real* RESTRICT O)
#endif
#if MAP == 1
{
    AT_OFFSETS();
    const int u = GRP(0) * WG + LID(0); /* (head, query block, split), split fastest */
    if (u >= TS_BH * NQB * SPLIT) return;
    const int split = u % SPLIT;
    const int q0 = u / SPLIT % NQB * QPG;
    const int bh = u / (SPLIT * NQB);
    const float scale = scale_p[0];
    const GLOBAL real* qp = Q + (long)bh * TS_Q * TS_D;
    float qv[QPG][TS_D], acc[QPG][TS_D], m[QPG], l[QPG];
    UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
        /* a query past the end repeats the last one; its output is not stored */
        const int row = TS_IMIN(q0 + qi, TS_Q - 1);
        UNROLL_ALL for (int d = 0; d < TS_D; d++) {
            qv[qi][d] = TO_FLOAT(qp[row * TS_D + d]) * scale;
            acc[qi][d] = 0.0f;
        }
        m[qi] = -INFINITY;
        l[qi] = 0.0f;
    }
    const int kbeg = split * CHUNK;
    int kend = TS_IMIN(kbeg + CHUNK, TS_KV);
#if CAUSAL
    kend = TS_IMIN(kend, TS_IMIN(q0 + QPG, TS_Q) + CAUSAL_OFF);
#endif
    const GLOBAL real* kr = K + (long)bh * TS_KV * TS_D + (long)kbeg * TS_D;
    const GLOBAL real* vr = V + (long)bh * TS_KV * TS_D + (long)kbeg * TS_D;
    for (int j = kbeg; j < kend; j++, kr += TS_D, vr += TS_D) {
        UNROLL_ALL for (int qi = 0; qi < QPG; qi++) {
#if CAUSAL
            if (j > q0 + qi + CAUSAL_OFF) continue; /* masked: this query adds nothing */
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
        if (q0 + qi < TS_Q) {
#if SPLIT > 1
            const long row = ((long)bh * SPLIT + split) * TS_Q + q0 + qi;
            UNROLL_ALL for (int d = 0; d < TS_D; d++) Opart[row * TS_D + d] = acc[qi][d];
            ML[row * 2] = m[qi];
            ML[row * 2 + 1] = l[qi];
#else
            const float inv = 1.0f / l[qi];
            GLOBAL real* o = O + ((long)bh * TS_Q + q0 + qi) * TS_D;
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
    const long qoff = (long)bh * TS_Q * TS_D;
    const long kvoff = (long)bh * TS_KV * TS_D;
    const float scale = scale_p[0];

    for (int e = lid; e < QPG * TS_D; e += WG) {
        const int qi = e / TS_D, d = e % TS_D;
        qs[qi][d] = q0 + qi < TS_Q ? TO_FLOAT(Q[qoff + (long)(q0 + qi) * TS_D + d]) * scale : 0.0f;
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
    /* No query of the group sees a key past the last query's limit. */
    kend = TS_IMIN(kend, TS_IMIN(q0 + QPG, TS_Q) + CAUSAL_OFF);
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
            if (k0 + j > q0 + qi + CAUSAL_OFF) dot = -INFINITY;
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
            if (q0 + qi < TS_Q) {
#if SPLIT > 1
                STOREV(DV)(acc, o * DV, Opart, (((long)bh * SPLIT + split) * TS_Q + q0 + qi) * TS_D + d);
#else
                const float inv = 1.0f / lrun[qi];
                UNROLL_ALL for (int w = 0; w < DV; w++) acc[o * DV + w] *= inv;
                STOREV(DV)(acc, o * DV, O, qoff + (long)(q0 + qi) * TS_D + d);
#endif
            }
        }
    }
#if SPLIT > 1
    if (lid < QPG && q0 + lid < TS_Q) {
        const long ml = (((long)bh * SPLIT + split) * TS_Q + q0 + lid) * 2;
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
    if (e >= (long)TS_BH * TS_Q * TS_D) return;
    const int d = (int)(e % TS_D);
    const long bq = e / TS_D;
    const int q = (int)(bq % TS_Q);
    const long bh = bq / TS_Q;
    float m = -INFINITY;
    for (int p = 0; p < SPLIT; p++) m = fmax(m, ML[((bh * SPLIT + p) * TS_Q + q) * 2]);
    float num = 0.0f, den = 0.0f;
    for (int p = 0; p < SPLIT; p++) {
        const long row = (bh * SPLIT + p) * TS_Q + q;
        const float mp = ML[row * 2];
        if (mp != -INFINITY) { /* a chunk with every key masked adds nothing */
            const float w = exp(mp - m);
            num += w * Opart[row * TS_D + d];
            den += w * ML[row * 2 + 1];
        }
    }
    O[e] = TO_REAL(num / den);
}
