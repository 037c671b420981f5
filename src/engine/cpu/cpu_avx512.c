/* cpu_avx512.c - the cpu kernels for AVX-512 F/BW/VL/DQ + FMA + F16C. Compiled with those flags; cpu.c calls it
 * only after checking the CPU has them. */
#include "cpu_vec_avx512.h"
#define CPU_KERN_TABLE cpu__kernels_avx512
#define CPU_KERN_NAME "avx512"
#include "cpu_kern.h"
