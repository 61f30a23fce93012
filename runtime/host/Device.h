//===- Device.h - Where the plan's actions run, when not here --*- C++ -*-===//
//
// A model built for the host runs its kernels on this CPU; one built for a
// GPU (`--target cuda:...`) runs them on the device and keeps its arena
// there. The executor keeps a host copy of the arena either way: the
// training loop, data loader and checkpoints read and write that copy, and
// the executor moves what changed between the two (Executor.h).
//
// Which device an executable has is decided when it is linked: the host
// target links runtime/host/HostDevice.cpp (no device, or a stand-in for
// tests), the CUDA target runtime/cuda/CudaDevice.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_HOST_DEVICE_H
#define HOTSTAGE_RUNTIME_HOST_DEVICE_H

#include "runtime/host/Plan.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace hotstage::rt {

/// A host kernel: `buffers...`, then the [begin, end) range of its parallel
/// dimension.
using KernelFn = void (*)();

class Device {
public:
  virtual ~Device() = default;
  /// "NVIDIA H100 80GB HBM3 (sm_90)", for the log.
  virtual std::string name() const = 0;
  /// Runs `actions` of function `function` on the device arena (the
  /// buffers of microbatch slot `slot`) and waits for them.
  virtual bool run(const std::string &function,
                   const std::vector<PlanAction> &actions, int slot,
                   std::string &error) = 0;
  /// Copies `bytes` at `offset` of the arena from the host copy, or to it.
  virtual bool upload(const char *host, int64_t offset, int64_t bytes,
                      std::string &error) = 0;
  virtual bool download(char *host, int64_t offset, int64_t bytes,
                        std::string &error) = 0;
};

/// The device this executable was built for, with the plan's arena
/// allocated and its kernels loaded: nullptr with an empty `error` for the
/// host target; nullptr with `error` when the device cannot be used.
/// `kernels` and `threads` are the host's (its stand-in device runs them).
std::unique_ptr<Device> createDevice(const Plan &plan, const KernelFn *kernels,
                                     int threads, std::string &error);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_DEVICE_H
