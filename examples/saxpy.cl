/* Example user template: out[i] = a * x[i] + y[i] for i < TS_N.
 *
 * Written against the tunesvc dialect (KERNEL, GLOBAL, GID, LOADV/STOREV,
 * real, TO_FLOAT), so it builds for OpenCL and CUDA alike. Every tunable has
 * a default, so the file compiles on its own. Each work-item handles EPT
 * vectors of VW elements, the vectors of neighbouring work-items adjacent.
 */
#ifndef TS_N
#define TS_N 1024
#endif
#ifndef VW
#define VW 1
#endif
#ifndef EPT
#define EPT 1
#endif

KERNEL void saxpy(const GLOBAL float* RESTRICT a, const GLOBAL real* RESTRICT x, const GLOBAL real* RESTRICT y,
                  GLOBAL real* RESTRICT out)
{
    const float alpha = a[0];
    const long first = (long)GRP(0) * LSZ(0) * VW * EPT;
    UNROLL_ALL for (int e = 0; e < EPT; e++) {
        const long i = first + ((long)e * LSZ(0) + LID(0)) * VW;
        if (i + VW <= TS_N) { /* whole vectors */
            float xv[VW], yv[VW];
            LOADV(VW)(xv, 0, x, i);
            LOADV(VW)(yv, 0, y, i);
            UNROLL_ALL for (int w = 0; w < VW; w++) yv[w] = alpha * xv[w] + yv[w];
            STOREV(VW)(yv, 0, out, i);
        } else { /* the ragged end */
            for (long j = i; j < TS_N; j++) out[j] = TO_REAL(alpha * TO_FLOAT(x[j]) + TO_FLOAT(y[j]));
        }
    }
}
