//===- Random.h - Counter-based random numbers ------------------*- C++ -*-===//
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC'11; the Random123 library). A counter-based generator has no
// state: the value for (seed, stream, index) is a pure function, so a
// parameter's initial values and the data order come out identical on any
// machine, with any number of ranks or threads, in any order of evaluation.
//
// Mapping used throughout: key = seed (low word first), counter = {index
// low, index high, stream low, stream high}.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_SUPPORT_RANDOM_H
#define HOTSTAGE_RUNTIME_SUPPORT_RANDOM_H

#include <array>
#include <cstdint>
#include <vector>

namespace hotstage::rt {

/// One Philox4x32-10 block: 128 random bits for a counter and a key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter,
                                   std::array<uint32_t, 2> key);

/// The Philox block for (seed, stream, index) in the mapping above.
std::array<uint32_t, 4> philoxAt(uint64_t seed, uint64_t stream,
                                 uint64_t index);

/// A float in [0, 1) with 24 random bits.
float uniformAt(uint64_t seed, uint64_t stream, uint64_t index);

/// A normal sample: Box-Muller on two 53-bit uniforms from one Philox
/// block, computed in double and rounded once to float.
float normalAt(uint64_t seed, uint64_t stream, uint64_t index, float mean,
               float std);

/// An integer in [0, bound) (bound > 0) from 64 random bits by
/// multiply-shift; the bias is below bound / 2^64.
uint64_t uniformIntAt(uint64_t seed, uint64_t stream, uint64_t index,
                      uint64_t bound);

/// out[i] = normalAt(seed, stream, i, mean, std) for i in [0, n).
void fillNormal(float *out, int64_t n, uint64_t seed, uint64_t stream,
                float mean, float std);

/// out[i] in [lo, hi) from uniformAt(seed, stream, i).
void fillUniform(float *out, int64_t n, uint64_t seed, uint64_t stream,
                 float lo, float hi);

/// A permutation of [0, n): Fisher-Yates from the last element down, step
/// i drawing uniformIntAt(seed, stream, i, i + 1).
std::vector<uint64_t> randomPermutation(uint64_t n, uint64_t seed,
                                        uint64_t stream);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_SUPPORT_RANDOM_H
