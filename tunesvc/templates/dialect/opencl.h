/* tunesvc dialect prelude: OpenCL C.
 *
 * Template sources are written once against these names; dialect/cuda.h maps
 * the same names to CUDA C. Use only what is defined here (and plain C) in a
 * template, so every template builds for both.
 *
 *   KERNEL, GLOBAL, LOCAL_MEM, RESTRICT      qualifiers
 *   LID(d), GID(d), GRP(d), LSZ(d), NGRP(d)  work-item indices and sizes
 *   BARRIER()                                 work-group barrier with a local fence
 *   real, TS_FP16                             storage type (float, or half with TS_FP16=1)
 *   LOADV(n)(dst, i, p, off)                  n consecutive reals p[off..] -> float dst[i..i+n)
 *   STOREV(n)(src, i, p, off)                 float src[i..i+n) -> n consecutive reals p[off..]
 *     (dst/src are private arrays indexed, never offset as pointers: a pointer into a
 *      private array can keep it out of registers)
 *   TO_FLOAT(x), TO_REAL(x)                   scalar conversions
 *   UNROLL_ALL                                #pragma to fully unroll the next loop
 */
#define KERNEL __kernel
#define GLOBAL __global
#define LOCAL_MEM __local
#define RESTRICT restrict
#define LID(d) ((int)get_local_id(d))
#define GID(d) ((int)get_global_id(d))
#define GRP(d) ((int)get_group_id(d))
#define LSZ(d) ((int)get_local_size(d))
#define NGRP(d) ((int)get_num_groups(d))
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
#define TS_CAT_(a, b) a##b
#define TS_CAT(a, b) TS_CAT_(a, b)
#define TS_PRAGMA(x) _Pragma(#x)
#define UNROLL_ALL TS_PRAGMA(unroll)
#define UNROLL_N(n) TS_PRAGMA(unroll n)

#ifndef TS_FP16
#define TS_FP16 0
#endif
#if TS_FP16
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
typedef half real;
#define TO_FLOAT(x) ((float)(x))
#define TO_REAL(x) ((half)(x))
#define TS_CVT2 convert_half2
#define TS_CVT4 convert_half4
#define TS_CVT8 convert_half8
#else
typedef float real;
#define TO_FLOAT(x) (x)
#define TO_REAL(x) (x)
#define TS_CVT2
#define TS_CVT4
#define TS_CVT8
#endif

#ifndef TS_DEVICE_CPU
#define TS_DEVICE_CPU 0
#endif
#if TS_DEVICE_CPU
/* CPU drivers (PoCL) vectorise runs of scalar accesses themselves; an explicit vloadN
   unpacked into a private array, or a vstoreN packed from one, measured 3-15x slower
   there (matmul 1024: 41 vs 146 GFLOP/s at VW=8). The backend sets TS_DEVICE_CPU. */
#define TS_LOAD1(d, i, p, o) { (d)[(i)] = TO_FLOAT((p)[o]); }
#define TS_LOAD2(d, i, p, o) { _Pragma("unroll") for (int w_ = 0; w_ < 2; w_++) (d)[(i) + w_] = TO_FLOAT((p)[(o) + w_]); }
#define TS_LOAD4(d, i, p, o) { _Pragma("unroll") for (int w_ = 0; w_ < 4; w_++) (d)[(i) + w_] = TO_FLOAT((p)[(o) + w_]); }
#define TS_LOAD8(d, i, p, o) { _Pragma("unroll") for (int w_ = 0; w_ < 8; w_++) (d)[(i) + w_] = TO_FLOAT((p)[(o) + w_]); }
#define TS_STORE1(s, i, p, o) { (p)[o] = TO_REAL((s)[(i)]); }
#define TS_STORE2(s, i, p, o) { _Pragma("unroll") for (int w_ = 0; w_ < 2; w_++) (p)[(o) + w_] = TO_REAL((s)[(i) + w_]); }
#define TS_STORE4(s, i, p, o) { _Pragma("unroll") for (int w_ = 0; w_ < 4; w_++) (p)[(o) + w_] = TO_REAL((s)[(i) + w_]); }
#define TS_STORE8(s, i, p, o) { _Pragma("unroll") for (int w_ = 0; w_ < 8; w_++) (p)[(o) + w_] = TO_REAL((s)[(i) + w_]); }
#else
#define TS_LOAD1(d, i, p, o) { (d)[(i)] = TO_FLOAT((p)[o]); }
#define TS_LOAD2(d, i, p, o) { float2 v_ = convert_float2(vload2(0, (p) + (o))); (d)[(i)] = v_.s0; (d)[(i) + 1] = v_.s1; }
#define TS_LOAD4(d, i, p, o) { float4 v_ = convert_float4(vload4(0, (p) + (o))); \
    (d)[(i)] = v_.s0; (d)[(i) + 1] = v_.s1; (d)[(i) + 2] = v_.s2; (d)[(i) + 3] = v_.s3; }
#define TS_LOAD8(d, i, p, o) { float8 v_ = convert_float8(vload8(0, (p) + (o))); \
    (d)[(i)] = v_.s0; (d)[(i) + 1] = v_.s1; (d)[(i) + 2] = v_.s2; (d)[(i) + 3] = v_.s3; \
    (d)[(i) + 4] = v_.s4; (d)[(i) + 5] = v_.s5; (d)[(i) + 6] = v_.s6; (d)[(i) + 7] = v_.s7; }
#define TS_STORE1(s, i, p, o) { (p)[o] = TO_REAL((s)[(i)]); }
#define TS_STORE2(s, i, p, o) vstore2(TS_CVT2((float2)((s)[(i)], (s)[(i) + 1])), 0, (p) + (o))
#define TS_STORE4(s, i, p, o) vstore4(TS_CVT4((float4)((s)[(i)], (s)[(i) + 1], (s)[(i) + 2], (s)[(i) + 3])), 0, (p) + (o))
#define TS_STORE8(s, i, p, o) vstore8(TS_CVT8((float8)((s)[(i)], (s)[(i) + 1], (s)[(i) + 2], (s)[(i) + 3], \
    (s)[(i) + 4], (s)[(i) + 5], (s)[(i) + 6], (s)[(i) + 7])), 0, (p) + (o))
#endif
#define LOADV(n) TS_CAT(TS_LOAD, n)
#define STOREV(n) TS_CAT(TS_STORE, n)
