/* tunesvc dialect prelude: CUDA C++.
 *
 * Maps every name of dialect/opencl.h onto CUDA, so a template's one kernel
 * source builds for both backends (the idea of CLBlast's opencl_to_cuda.h).
 * Work-item indices follow OpenCL: dimension 0 is x, 1 is y, 2 is z, and a
 * launch's global size is counted in work-items (the backend divides it by
 * the local size to get the grid).
 *
 *   KERNEL, GLOBAL, LOCAL_MEM, RESTRICT      qualifiers
 *   LID(d), GID(d), GRP(d), LSZ(d), NGRP(d)  work-item indices and sizes
 *   BARRIER()                                 __syncthreads()
 *   real, TS_FP16                             storage type (float, or __half with TS_FP16=1)
 *   LOADV(n)(dst, i, p, off)                  n = 1, 2, 4 or 8 reals p[off..] -> float dst[i..i+n)
 *   STOREV(n)(src, i, p, off)                 float src[i..i+n) -> n reals p[off..]
 *   TO_FLOAT(x), TO_REAL(x)                   scalar conversions
 *   UNROLL_ALL, UNROLL_N(n)                   unroll pragmas
 * OpenCL C built-ins the templates use (INFINITY, fmax, ...) exist in CUDA
 * under the same names; what does not is defined at the end.
 */
#include <math.h>
#include <float.h>

#ifndef TS_FP16
#define TS_FP16 0
#endif
#if TS_FP16
#include <cuda_fp16.h>
#endif

#define KERNEL extern "C" __global__
#define GLOBAL
#define LOCAL_MEM __shared__
#define RESTRICT __restrict__

/* d is a constant at every use, so the selection folds away. */
__device__ __forceinline__ int ts_dim(const uint3 v, const int d) { return (int)(d == 0 ? v.x : d == 1 ? v.y : v.z); }
__device__ __forceinline__ int ts_dim(const dim3 v, const int d) { return (int)(d == 0 ? v.x : d == 1 ? v.y : v.z); }
#define LID(d) ts_dim(threadIdx, (d))
#define GRP(d) ts_dim(blockIdx, (d))
#define LSZ(d) ts_dim(blockDim, (d))
#define NGRP(d) ts_dim(gridDim, (d))
#define GID(d) (GRP(d) * LSZ(d) + LID(d))
#define BARRIER() __syncthreads()
#define TS_CAT_(a, b) a##b
#define TS_CAT(a, b) TS_CAT_(a, b)
#define TS_PRAGMA(x) _Pragma(#x)
#define UNROLL_ALL TS_PRAGMA(unroll)
#define UNROLL_N(n) TS_PRAGMA(unroll n)

#if TS_FP16
typedef __half real;
#else
typedef float real;
#endif

/* Overloads, not casts: one TO_FLOAT serves float and __half operands alike. */
__device__ __forceinline__ float ts_to_float(const float x) { return x; }
template <typename T> __device__ __forceinline__ T ts_from_float(const float x) { return (T)x; }
#if TS_FP16
__device__ __forceinline__ float ts_to_float(const __half x) { return __half2float(x); }
template <> __device__ __forceinline__ __half ts_from_float<__half>(const float x) { return __float2half_rn(x); }
#endif
#define TO_FLOAT(x) ts_to_float(x)
#define TO_REAL(x) ts_from_float<real>(x)

/* Vector loads and stores. OpenCL's vloadn needs only element alignment, so
 * the wide access (a 16-byte ld.global.v4 at most; CUDA has no float8) is
 * taken only where the address is aligned to it, checked at run time, and an
 * element loop serves the rest. The check is one AND on the address. */
template <typename T, int N> struct ts_width {
    enum { bytes = (int)sizeof(T) * N < 16 ? (int)sizeof(T) * N : 16 };
};
template <typename T, int N> struct alignas(ts_width<T, N>::bytes) ts_pack { T v[N]; };

template <int N, typename T> __device__ __forceinline__ bool ts_aligned(const T* p)
{
    return (reinterpret_cast<unsigned long long>(p) & (unsigned long long)(ts_width<T, N>::bytes - 1)) == 0;
}

/* dst/src arrive as pointers but the functions are always inlined, so a private array
 * indexed with constants stays in registers. off may be int or long. */
template <int N, typename D, typename T, typename I> __device__ __forceinline__ void ts_loadv(D* d, const int i0, const T* p, const I off)
{
    const T* q = p + off;
    if (N > 1 && ts_aligned<N>(q)) {
        const ts_pack<T, N> v = *reinterpret_cast<const ts_pack<T, N>*>(q);
#pragma unroll
        for (int i = 0; i < N; i++) d[i0 + i] = ts_to_float(v.v[i]);
    } else {
#pragma unroll
        for (int i = 0; i < N; i++) d[i0 + i] = ts_to_float(q[i]);
    }
}

template <int N, typename S, typename T, typename I> __device__ __forceinline__ void ts_storev(const S* s, const int i0, T* p, const I off)
{
    T* q = p + off;
    if (N > 1 && ts_aligned<N>(q)) {
        ts_pack<T, N> v;
#pragma unroll
        for (int i = 0; i < N; i++) v.v[i] = ts_from_float<T>(s[i0 + i]);
        *reinterpret_cast<ts_pack<T, N>*>(q) = v;
    } else {
#pragma unroll
        for (int i = 0; i < N; i++) q[i] = ts_from_float<T>(s[i0 + i]);
    }
}
#define LOADV(n) ts_loadv<(n)>
#define STOREV(n) ts_storev<(n)>
