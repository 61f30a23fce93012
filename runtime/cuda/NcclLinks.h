//===- NcclLinks.h - Transfers between the ranks' GPUs over NCCL -*- C++
//-*-===//
//
// The CUDA target's DeviceLinks (Device.h): each link is an NCCL
// communicator of its members with a stream of its own, bootstrapped over
// MPI (its first member makes the unique id and sends it to the others).
// A transfer waits on its stream for the compute stream's work so far (an
// event), and records an event of its own: its ticket. A run's compute
// stream waits for the tickets it was told to before its first launch.
//
// NCCL (libnccl.so.2) is opened at run time, as the driver is, and only by
// jobs whose ranks each have a GPU of their own: a one-rank run never
// needs it.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_CUDA_NCCLLINKS_H
#define HOTSTAGE_RUNTIME_CUDA_NCCLLINKS_H

#include "runtime/cuda/CudaDriver.h"
#include "runtime/host/Device.h"

#include <nccl.h>

#include <string>
#include <vector>

namespace hotstage::rt {

#define HS_NCCL_FUNCTIONS(X)                                                   \
  X(ncclGetVersion)                                                            \
  X(ncclGetUniqueId)                                                           \
  X(ncclCommInitRank)                                                          \
  X(ncclCommDestroy)                                                           \
  X(ncclCommAbort)                                                             \
  X(ncclCommGetAsyncError)                                                     \
  X(ncclGetErrorString)                                                        \
  X(ncclGetLastError)                                                          \
  X(ncclGroupStart)                                                            \
  X(ncclGroupEnd)                                                              \
  X(ncclSend)                                                                  \
  X(ncclRecv)                                                                  \
  X(ncclAllReduce)

class NcclLinks final : public DeviceLinks {
public:
  /// Links of the GPU `device`, whose runs go on `compute`, over the arena
  /// at `arena`; waits give up after `timeout` seconds without progress.
  NcclLinks(CudaDriver &driver, CUdevice device, CUstream compute,
            CUdeviceptr arena, double timeout)
      : driver_(driver), device_(device), compute_(compute), arena_(arena),
        timeout_(timeout) {}
  ~NcclLinks() override;
  /// Opens NCCL (HOTSTAGE_NCCL=PATH, else libnccl.so.2); false with `why`.
  bool load(std::string &why);

  std::string name() const override;
  std::string where() const override;
  bool open(Comm &comm, const std::vector<int> &members, int &link,
            std::string &error) override;
  bool send(int link, int to, int64_t offset, int64_t bytes, int &ticket,
            std::string &error) override;
  bool receive(int link, int from, int64_t offset, int64_t bytes, int &ticket,
               std::string &error) override;
  bool allReduce(int link,
                 const std::vector<std::pair<int64_t, int64_t>> &ranges,
                 int &ticket, std::string &error) override;
  void after(int ticket, int link) override;
  bool finish(std::string &error) override;

  /// Whether any link is open (runs then wait with the timeout).
  bool active() const { return !links_.empty(); }
  /// Before a run's first launch: the compute stream waits for the tickets
  /// `after` named.
  bool beforeRun(std::string &error);
  /// Waits for `stream` to drain, at most the timeout without progress,
  /// watching every link for NCCL's asynchronous errors.
  bool wait(CUstream stream, const std::string &what, std::string &error);

private:
  struct Link {
    ncclComm_t comm = nullptr;
    CUstream stream = nullptr;
    CUevent computeDone = nullptr;
    std::vector<int> waits; // tickets its next transfer waits for
  };
  bool check(CUresult result, const std::string &what, std::string &error);
  bool check(ncclResult_t result, const Link *link, const std::string &what,
             std::string &error);
  /// The link's stream waits for the compute stream and its tickets.
  bool ready(Link &l, std::string &error);
  /// A new ticket recorded on `l`'s stream.
  bool ticketOn(Link &l, int &ticket, std::string &error);

  CudaDriver &driver_;
  CUdevice device_;
  CUstream compute_;
  CUdeviceptr arena_;
  double timeout_;
  void *library_ = nullptr;
#define HS_MEMBER(fn) decltype(&::fn) fn = nullptr;
  HS_NCCL_FUNCTIONS(HS_MEMBER)
#undef HS_MEMBER
  std::vector<Link> links_;
  std::vector<CUevent> events_; // tickets' events, reused every step
  int tickets_ = 0;
  std::vector<int> runWaits_;
  bool failed_ = false; // an error: abort the communicators, not destroy
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_CUDA_NCCLLINKS_H
