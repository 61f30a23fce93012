//===- Random.cpp - Counter-based random numbers --------------------------===//

#include "runtime/support/Random.h"

#include <cmath>
#include <utility>

namespace hotstage::rt {

namespace {
// Constants from Random123's philox.h.
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u; // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u; // sqrt(3) - 1

inline void mulHiLo(uint32_t a, uint32_t b, uint32_t &hi, uint32_t &lo) {
  uint64_t product = uint64_t(a) * b;
  hi = uint32_t(product >> 32);
  lo = uint32_t(product);
}

inline double uniform53(uint32_t hi, uint32_t lo) {
  uint64_t bits = (uint64_t(hi) << 32 | lo) >> 11;
  return double(bits) * 0x1.0p-53;
}
} // namespace

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr,
                                   std::array<uint32_t, 2> key) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulHiLo(kMul0, ctr[0], hi0, lo0);
    mulHiLo(kMul1, ctr[2], hi1, lo1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

std::array<uint32_t, 4> philoxAt(uint64_t seed, uint64_t stream,
                                 uint64_t index) {
  return philox4x32({uint32_t(index), uint32_t(index >> 32), uint32_t(stream),
                     uint32_t(stream >> 32)},
                    {uint32_t(seed), uint32_t(seed >> 32)});
}

float uniformAt(uint64_t seed, uint64_t stream, uint64_t index) {
  // 24 bits fill a float mantissa exactly, so the result is never 1.
  return float(philoxAt(seed, stream, index)[0] >> 8) * 0x1.0p-24f;
}

float normalAt(uint64_t seed, uint64_t stream, uint64_t index, float mean,
               float std) {
  std::array<uint32_t, 4> r = philoxAt(seed, stream, index);
  // u1 in (0, 1] keeps the logarithm finite.
  double u1 = 1.0 - uniform53(r[0], r[1]);
  double u2 = uniform53(r[2], r[3]);
  double radius = std::sqrt(-2.0 * std::log(u1));
  double z = radius * std::cos(6.283185307179586 * u2);
  return float(double(mean) + double(std) * z);
}

uint64_t uniformIntAt(uint64_t seed, uint64_t stream, uint64_t index,
                      uint64_t bound) {
  std::array<uint32_t, 4> r = philoxAt(seed, stream, index);
  uint64_t bits = uint64_t(r[0]) << 32 | r[1];
  // The high word of bits * bound, in 32-bit halves to stay portable.
  uint64_t aLo = uint32_t(bits), aHi = bits >> 32;
  uint64_t bLo = uint32_t(bound), bHi = bound >> 32;
  uint64_t lolo = aLo * bLo, hilo = aHi * bLo, lohi = aLo * bHi;
  uint64_t middle = (lolo >> 32) + uint32_t(hilo) + uint32_t(lohi);
  return aHi * bHi + (hilo >> 32) + (lohi >> 32) + (middle >> 32);
}

void fillNormal(float *out, int64_t n, uint64_t seed, uint64_t stream,
                float mean, float std) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = normalAt(seed, stream, uint64_t(i), mean, std);
}

void fillUniform(float *out, int64_t n, uint64_t seed, uint64_t stream,
                 float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    double u = uniformAt(seed, stream, uint64_t(i));
    float v = float(double(lo) + (double(hi) - double(lo)) * u);
    // Rounding to float can land on hi; the interval is half-open.
    out[i] = v < hi ? v : std::nextafter(hi, lo);
  }
}

std::vector<uint64_t> randomPermutation(uint64_t n, uint64_t seed,
                                        uint64_t stream) {
  std::vector<uint64_t> perm(n);
  for (uint64_t i = 0; i < n; ++i)
    perm[i] = i;
  for (uint64_t i = n; i > 1; --i) {
    uint64_t j = uniformIntAt(seed, stream, i - 1, i);
    std::swap(perm[i - 1], perm[j]);
  }
  return perm;
}

} // namespace hotstage::rt
