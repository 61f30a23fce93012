//===- RankLinks.h - Whether ranks transfer device to device ----*- C++ -*-===//
//
// A multi-rank job with a device moves what its ranks send, receive and
// all-reduce either straight between the devices (Device.h's links: NCCL
// on GPUs) or through the host over MPI. Every rank must choose the same:
// they agree here, once, before the first step.
//
// HOTSTAGE_LINKS=auto (the default) links the devices where every rank's
// device has links and no two ranks share one (NCCL refuses two ranks on
// one GPU: a two-stage pipeline on a single GPU, as the tests run it,
// goes through the host); `on` links them or fails; `off` never does.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_TRAIN_RANKLINKS_H
#define HOTSTAGE_RUNTIME_TRAIN_RANKLINKS_H

#include "runtime/comm/Comm.h"
#include "runtime/host/Executor.h"

#include <string>

namespace hotstage::rt {

/// Sets `links` to this rank's device links where the job transfers device
/// to device, else to nullptr; false with `error` where HOTSTAGE_LINKS=on
/// cannot be honoured. Every rank calls it (a collective).
bool agreeOnLinks(Executor &exec, Comm &comm, DeviceLinks *&links,
                  std::string &error);

/// The offset of buffer `b`'s copy for slot `slot` in the arena.
inline int64_t arenaOffset(Executor &exec, const PlanBuffer &b, int slot) {
  return static_cast<char *>(exec.buffer(b, slot)) - exec.arena();
}

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_TRAIN_RANKLINKS_H
