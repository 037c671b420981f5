/* cpu_avx2.c - the cpu kernels for AVX2 + FMA + F16C. Compiled with those flags; cpu.c calls it only after
 * checking the CPU has them. */
#include "cpu_vec_avx2.h"
#define CPU_KERN_TABLE cpu__kernels_avx2
#define CPU_KERN_NAME "avx2"
#include "cpu_kern.h"
