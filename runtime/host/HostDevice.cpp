//===- HostDevice.cpp - The host target: kernels run on this CPU ----------===//
//
// No device: the executor runs the kernels on its own arena. With
// HOTSTAGE_DEVICE=copy, a stand-in for a GPU: a second arena on this CPU
// that only uploads and downloads reach, with its own executor. A run in
// that mode must equal a plain host run bit for bit; where it does not,
// the executor or the training loop misses a copy a GPU build would miss
// too (test/e2e/device-copy.test).
//
//===----------------------------------------------------------------------===//

#include "runtime/host/Device.h"
#include "runtime/host/Executor.h"

#include <cstdlib>
#include <cstring>

using namespace hotstage::rt;

namespace {
class CopyDevice final : public Device {
public:
  CopyDevice(const Plan &plan, const KernelFn *kernels, int threads)
      : inner_(plan, kernels, threads) {}
  bool ok() { return inner_.arena() != nullptr; }
  std::string name() const override { return "a copy of the arena (host)"; }
  bool run(const std::string &function, const std::vector<PlanAction> &,
           int slot, std::string &error) override {
    return inner_.run(function, error, slot);
  }
  bool upload(const char *host, int64_t offset, int64_t bytes,
              std::string &) override {
    std::memcpy(inner_.arena() + offset, host, static_cast<size_t>(bytes));
    return true;
  }
  bool download(char *host, int64_t offset, int64_t bytes,
                std::string &) override {
    std::memcpy(host, inner_.arena() + offset, static_cast<size_t>(bytes));
    return true;
  }

private:
  Executor inner_;
};
} // namespace

std::unique_ptr<Device> hotstage::rt::createDevice(const Plan &plan,
                                                   const KernelFn *kernels,
                                                   int threads,
                                                   std::string &error) {
  error.clear();
  const char *mode = std::getenv("HOTSTAGE_DEVICE");
  if (!mode || !*mode)
    return nullptr;
  if (std::strcmp(mode, "copy") != 0) {
    error = std::string("HOTSTAGE_DEVICE=") + mode +
            ": unknown; 'copy' is the host build's only stand-in device";
    return nullptr;
  }
  auto device = std::make_unique<CopyDevice>(plan, kernels, threads);
  if (!device->ok()) {
    error = "cannot allocate the device copy of the arena";
    return nullptr;
  }
  return device;
}
