/* rng.h - small, seedable, reproducible PRNG (xoshiro256** seeded through splitmix64).
 *
 * Sampling with the same seed gives the same tokens on every machine; tests and tools use splitmix64 directly to
 * generate deterministic weights that tools/make_goldens.py reproduces bit for bit. */
#ifndef SUGGESTD_CORE_RNG_H
#define SUGGESTD_CORE_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
} rng;

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void rng_seed(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform(rng *r);

#endif
