//===- NcclLinks.cpp - Transfers between the ranks' GPUs over NCCL --------===//

#include "runtime/cuda/NcclLinks.h"
#include "runtime/comm/Comm.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <unistd.h>

using namespace hotstage::rt;

NcclLinks::~NcclLinks() {
  for (Link &l : links_) {
    if (l.comm)
      failed_ ? ncclCommAbort(l.comm) : ncclCommDestroy(l.comm);
    if (l.computeDone)
      driver_.cuEventDestroy(l.computeDone);
    if (l.stream)
      driver_.cuStreamDestroy(l.stream);
  }
  for (CUevent e : events_)
    driver_.cuEventDestroy(e);
}

bool NcclLinks::load(std::string &why) {
  const char *path = std::getenv("HOTSTAGE_NCCL");
  library_ = dlopen(path ? path : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!library_) {
    why = std::string("cannot load NCCL (") + (path ? path : "libnccl.so.2") +
          "): " + dlerror();
    return false;
  }
#define HS_LOAD(fn)                                                            \
  fn = reinterpret_cast<decltype(fn)>(dlsym(library_, HS_SYMBOL(fn)));         \
  if (!fn) {                                                                   \
    why = std::string("NCCL lacks ") + HS_SYMBOL(fn) +                         \
          " (it is older than "                                                \
          "2.19)";                                                             \
    return false;                                                              \
  }
  HS_NCCL_FUNCTIONS(HS_LOAD)
#undef HS_LOAD
  return true;
}

std::string NcclLinks::name() const {
  int version = 0;
  ncclGetVersion(&version);
  // 22809 is 2.28.9.
  return "NCCL " + std::to_string(version / 10000) + "." +
         std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100);
}

std::string NcclLinks::where() const {
  // NCCL tells hosts apart by NCCL_HOSTID where it is set, else by name;
  // so do we.
  std::string host;
  if (const char *id = std::getenv("NCCL_HOSTID"))
    host = id;
  else {
    char name[256] = {};
    gethostname(name, sizeof(name) - 1);
    host = name;
  }
  char bus[64] = {};
  driver_.cuDeviceGetPCIBusId(bus, sizeof(bus), device_);
  return host + ":" + bus;
}

bool NcclLinks::check(CUresult result, const std::string &what,
                      std::string &error) {
  if (result == CUDA_SUCCESS)
    return true;
  const char *name = nullptr;
  driver_.cuGetErrorName(result, &name);
  error =
      what + ": " + (name ? name : "CUDA error " + std::to_string(int(result)));
  failed_ = true;
  return false;
}

bool NcclLinks::check(ncclResult_t result, const Link *link,
                      const std::string &what, std::string &error) {
  if (result == ncclSuccess)
    return true;
  error = what + ": " + ncclGetErrorString(result);
  if (const char *last = ncclGetLastError(link ? link->comm : nullptr);
      last && *last)
    error += std::string(" (") + last + ")";
  failed_ = true;
  return false;
}

bool NcclLinks::open(Comm &comm, const std::vector<int> &members, int &link,
                     std::string &error) {
  int self = static_cast<int>(
      std::find(members.begin(), members.end(), comm.worldRank()) -
      members.begin());
  ncclUniqueId id;
  std::string what = "the NCCL id of a link";
  // Above the tags of a step's messages (PipelineStep), like CopyLinks'.
  constexpr int kTag = (1 << 28) + 2;
  if (self == 0) {
    if (!check(ncclGetUniqueId(&id), nullptr, "ncclGetUniqueId", error))
      return false;
    for (size_t m = 1; m < members.size(); ++m) {
      Comm::Request r = comm.isend(&id, sizeof(id), members[m], kTag, what);
      comm.wait(r);
    }
  } else {
    Comm::Request r = comm.irecv(&id, sizeof(id), members[0], kTag, what);
    comm.wait(r);
  }
  Link l;
  std::string ranks;
  for (int m : members)
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(m);
  // (Blocking: every member got the id just now, so all are here.)
  if (!check(
          ncclCommInitRank(&l.comm, static_cast<int>(members.size()), id, self),
          nullptr, "opening NCCL between ranks " + ranks, error) ||
      !check(driver_.cuStreamCreate(&l.stream, CU_STREAM_NON_BLOCKING),
             "cuStreamCreate", error) ||
      !check(driver_.cuEventCreate(&l.computeDone, CU_EVENT_DISABLE_TIMING),
             "cuEventCreate", error))
    return false;
  link = static_cast<int>(links_.size());
  links_.push_back(std::move(l));
  return true;
}

bool NcclLinks::ready(Link &l, std::string &error) {
  if (!check(driver_.cuEventRecord(l.computeDone, compute_), "cuEventRecord",
             error) ||
      !check(driver_.cuStreamWaitEvent(l.stream, l.computeDone, 0),
             "cuStreamWaitEvent", error))
    return false;
  for (int t : l.waits)
    if (!check(driver_.cuStreamWaitEvent(l.stream, events_.at(t), 0),
               "cuStreamWaitEvent", error))
      return false;
  l.waits.clear();
  return true;
}

bool NcclLinks::ticketOn(Link &l, int &ticket, std::string &error) {
  if (tickets_ == static_cast<int>(events_.size())) {
    CUevent e = nullptr;
    if (!check(driver_.cuEventCreate(&e, CU_EVENT_DISABLE_TIMING),
               "cuEventCreate", error))
      return false;
    events_.push_back(e);
  }
  ticket = tickets_++;
  return check(driver_.cuEventRecord(events_[ticket], l.stream),
               "cuEventRecord", error);
}

bool NcclLinks::send(int link, int to, int64_t offset, int64_t bytes,
                     int &ticket, std::string &error) {
  Link &l = links_.at(link);
  return ready(l, error) &&
         check(ncclSend(reinterpret_cast<void *>(arena_ + offset),
                        static_cast<size_t>(bytes), ncclInt8, to, l.comm,
                        l.stream),
               &l, "ncclSend", error) &&
         ticketOn(l, ticket, error);
}

bool NcclLinks::receive(int link, int from, int64_t offset, int64_t bytes,
                        int &ticket, std::string &error) {
  Link &l = links_.at(link);
  return ready(l, error) &&
         check(ncclRecv(reinterpret_cast<void *>(arena_ + offset),
                        static_cast<size_t>(bytes), ncclInt8, from, l.comm,
                        l.stream),
               &l, "ncclRecv", error) &&
         ticketOn(l, ticket, error);
}

bool NcclLinks::allReduce(
    int link, const std::vector<std::pair<int64_t, int64_t>> &ranges,
    int &ticket, std::string &error) {
  Link &l = links_.at(link);
  // Neighbouring ranges as one (gradients of a group lie back to back).
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (auto [offset, count] : ranges) {
    if (!merged.empty() &&
        merged.back().first + 4 * merged.back().second == offset)
      merged.back().second += count;
    else
      merged.emplace_back(offset, count);
  }
  if (!ready(l, error) || !check(ncclGroupStart(), &l, "ncclGroupStart", error))
    return false;
  for (auto [offset, count] : merged) {
    auto *p = reinterpret_cast<void *>(arena_ + offset);
    if (!check(ncclAllReduce(p, p, static_cast<size_t>(count), ncclFloat32,
                             ncclSum, l.comm, l.stream),
               &l, "ncclAllReduce", error)) {
      ncclGroupEnd();
      return false;
    }
  }
  return check(ncclGroupEnd(), &l, "ncclGroupEnd", error) &&
         ticketOn(l, ticket, error);
}

void NcclLinks::after(int ticket, int link) {
  (link < 0 ? runWaits_ : links_.at(link).waits).push_back(ticket);
}

bool NcclLinks::beforeRun(std::string &error) {
  for (int t : runWaits_)
    if (!check(driver_.cuStreamWaitEvent(compute_, events_.at(t), 0),
               "cuStreamWaitEvent", error))
      return false;
  runWaits_.clear();
  return true;
}

bool NcclLinks::wait(CUstream stream, const std::string &what,
                     std::string &error) {
  auto start = std::chrono::steady_clock::now();
  for (int polls = 0;; ++polls) {
    CUresult r = driver_.cuStreamQuery(stream);
    if (r == CUDA_SUCCESS)
      return true;
    if (r != CUDA_ERROR_NOT_READY)
      return check(r, what, error);
    for (Link &l : links_) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(l.comm, &async);
      if (async != ncclSuccess && async != ncclInProgress)
        return check(async, &l, what + ", NCCL", error);
    }
    double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (waited > timeout_) {
      error = what + ": no progress for " + std::to_string(int(timeout_)) +
              " s (--comm-timeout) while waiting for transfers between ranks "
              "over NCCL";
      failed_ = true;
      return false;
    }
    // Spin through short waits; sleep through long ones.
    if (polls < 1000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

bool NcclLinks::finish(std::string &error) {
  for (Link &l : links_) {
    if (!wait(l.stream, "finishing the step's transfers", error))
      return false;
    l.waits.clear();
  }
  tickets_ = 0;
  runWaits_.clear();
  return true;
}
