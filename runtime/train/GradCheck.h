//===- GradCheck.h - Gradients against finite differences -------*- C++ -*-===//
//
// `./model gradcheck` runs one batch through the compiled forward and
// backward, then, for each parameter, compares the analytic directional
// derivative g·v with a finite difference of the loss along v. Two unit
// directions per parameter: the gradient's own (catches a wrong scale or
// sign) and that plus a random one from the seed (catches an error
// orthogonal to the gradient). The difference is central and
// Richardson-extrapolated, (4 D(h/2) - D(h)) / 3, which leaves an O(h^4)
// error. The fp32 loss (about 5.5) carries a rounding noise e of about
// 3e-6; D(h) then carries about e/h, and the extrapolation
// (8 e/h + e/h) / 3 = 3 e/h: about 4e-4 at h = 0.02, hence absTol. A
// larger h would lower it further; at 0.02 the Richardson error is still
// far below the noise.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_TRAIN_GRADCHECK_H
#define HOTSTAGE_RUNTIME_TRAIN_GRADCHECK_H

#include "runtime/data/TokenShards.h"
#include "runtime/host/Executor.h"
#include "runtime/host/Plan.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace hotstage::rt {

struct GradCheckOptions {
  uint64_t seed = 0;
  double step = 0.02;   // h, along a unit direction
  double relTol = 1e-2; // |analytic - numeric| <= relTol * scale + absTol
  double absTol = 5e-4;
};

/// Prints one line per parameter and direction to `out`; returns the
/// number of failed checks, or -1 (with `error`) if the step cannot run.
/// Overwrites the parameters' gradients and the activations; restores the
/// parameters.
int64_t runGradCheck(const Plan &plan, Executor &exec, BatchLoader &loader,
                     const GradCheckOptions &options, std::FILE *out,
                     std::string &error);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_TRAIN_GRADCHECK_H
