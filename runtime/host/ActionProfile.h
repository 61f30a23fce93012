//===- ActionProfile.h - HOTSTAGE_PROFILE's table -------------*- C++ -*-===//
//
// The time of every action by function and action (its profile name: a
// GEMM's or attention's with its shape), with each GEMM's and fused
// attention's TFLOP/s and each kernel's GB/s: its buffers' bytes over its
// time, a lower bound on its traffic. The host build and a GPU build
// print the same table (bench/gpu_step.py --profile reads it).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_HOST_ACTIONPROFILE_H
#define HOTSTAGE_RUNTIME_HOST_ACTIONPROFILE_H

#include "runtime/host/Plan.h"

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace hotstage::rt {

class ActionProfile {
public:
  /// One run of action `a` of function `function` that took `ms`.
  void add(const std::string &function, const PlanAction &a, const Plan &plan,
           double ms);
  /// The table, largest first; `where` names the device ("" for the host).
  void print(std::FILE *out, const std::string &where) const;

private:
  struct Entry {
    double ms = 0, flops = 0, bytes = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Entry> entries_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_ACTIONPROFILE_H
