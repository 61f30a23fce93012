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
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hotstage::rt {

class Comm;

/// Transfers between the arenas of the job's ranks that do not pass
/// through the host (NCCL on GPUs). A link joins a few ranks (its members)
/// and has a queue of its own: its transfers run in the order posted, each
/// after the work posted to the device before it, and beside the device's
/// later runs. A transfer has a ticket; a run, or a link's next transfers,
/// can be made to wait for it. Point-to-point transfers on a link pair up
/// in the order posted (no tags), so its two ends must post them in the
/// same order.
class DeviceLinks {
public:
  virtual ~DeviceLinks() = default;
  /// "NCCL 2.28.9", for the log.
  virtual std::string name() const = 0;
  /// The device this rank's arena lives on ("host:pci-bus-id"): members of
  /// a link must not share one.
  virtual std::string where() const = 0;
  /// Opens a link among `members` (world ranks, this rank among them);
  /// each member calls it, for all its links in the same order as the
  /// others. `comm` carries the bootstrap. Returns the link's index.
  virtual bool open(Comm &comm, const std::vector<int> &members, int &link,
                    std::string &error) = 0;
  /// `bytes` at `offset` of the arena to member `to` of `link`, or from
  /// member `from` into it.
  virtual bool send(int link, int to, int64_t offset, int64_t bytes,
                    int &ticket, std::string &error) = 0;
  virtual bool receive(int link, int from, int64_t offset, int64_t bytes,
                       int &ticket, std::string &error) = 0;
  /// Sums the floats of each (offset, count) range across the link's
  /// members, in place.
  virtual bool allReduce(int link,
                         const std::vector<std::pair<int64_t, int64_t>> &ranges,
                         int &ticket, std::string &error) = 0;
  /// The device's next run (link < 0), or the next transfer posted on
  /// `link`, starts after `ticket` is done.
  virtual void after(int ticket, int link = -1) = 0;
  /// Waits for every transfer posted (at most the job's --comm-timeout
  /// without progress); tickets start again from 0.
  virtual bool finish(std::string &error) = 0;
};

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
  /// Copies `bytes` at `from` of the device arena to `to`, in order with
  /// the runs.
  virtual bool copy(int64_t from, int64_t to, int64_t bytes,
                    std::string &error) = 0;
  /// Host memory that programs copy from and to (pinned on a GPU: a copy
  /// from it is a DMA in stream order), zeroed, freed with the device;
  /// nullptr with `error` when it cannot be had.
  virtual char *hostMemory(int64_t bytes, std::string &error) = 0;
  /// Program `key`: the runs and copies that `queue` puts on the device,
  /// and the transfers it posts on the device's links (the program waits
  /// for those its runs are told to wait for), recorded on the first call
  /// and replayed on later ones without calling `queue` (one CUDA graph
  /// on a GPU). Its copies go from and to
  /// hostMemory() only, read and written when it is replayed. Returns once
  /// the program is queued; nothing of it may be read before wait().
  virtual bool replay(int key, const std::function<bool(std::string &)> &queue,
                      std::string &error) = 0;
  /// Waits for every program queued.
  virtual bool wait(std::string &error) = 0;
  /// Direct transfers between the ranks' devices, or nullptr with `why`
  /// where this device has none (the ranks then stage them through the
  /// host over MPI). `timeout`: the job's --comm-timeout, which bounds
  /// every wait for a peer from then on.
  virtual DeviceLinks *links(double timeout, std::string &why) {
    (void)timeout;
    why = "this device moves nothing between ranks by itself";
    return nullptr;
  }
};

/// The device this executable was built for, with the plan's arena
/// allocated and its kernels loaded: nullptr with an empty `error` for the
/// host target; nullptr with `error` when the device cannot be used.
/// `kernels` and `threads` are the host's (its stand-in device runs them).
std::unique_ptr<Device> createDevice(const Plan &plan, const KernelFn *kernels,
                                     int threads, std::string &error);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_DEVICE_H
