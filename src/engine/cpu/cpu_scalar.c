/* cpu_scalar.c - the cpu kernels with one-lane vectors: the portable path for CPUs without AVX2 and for other
 * architectures (SUGGESTD_CPU_SIMD=scalar forces it). */
#include "cpu_vec_scalar.h"
#define CPU_KERN_TABLE cpu__kernels_scalar
#define CPU_KERN_NAME "scalar"
#include "cpu_kern.h"
