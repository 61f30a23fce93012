//===- HostDevice.cpp - The host target: kernels run on this CPU ----------===//
//
// No device: the executor runs the kernels on its own arena. With
// HOTSTAGE_DEVICE=copy, a stand-in for a GPU: a second arena on this CPU
// that only uploads and downloads reach, with its own executor. A run in
// that mode must equal a plain host run bit for bit; where it does not,
// the executor or the training loop misses a copy a GPU build would miss
// too (test/e2e/device-copy.test).
//
// The stand-in has links too (Device.h), over MPI between the ranks'
// copies, so that the pipeline's device-to-device path (a GPU build's
// NCCL) runs and is checked on any machine
// (test/e2e/pipeline/device-links.test).
//
//===----------------------------------------------------------------------===//

#include "runtime/comm/Comm.h"
#include "runtime/host/Device.h"
#include "runtime/host/Executor.h"

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <unistd.h>

using namespace hotstage::rt;

namespace {
/// One step of a recorded program (Device::replay): a run, a copy from or
/// to the host, or a call (of the links, a copy on the device) made when
/// the program is replayed.
struct ProgramOp {
  enum Kind { Run, Upload, Download, Call } kind;
  std::string function;
  int slot;
  char *host;
  int64_t offset, bytes;
  std::function<bool(std::string &)> call;
};

/// Links between the ranks' copies, over MPI: a transfer is a non-blocking
/// message from one copy's arena to the other's, a run waits for the
/// tickets it was told to, and an all-reduce sums on the link's first
/// member in member order (one rank's order), then sends the sums back.
/// While the device records a program, each call is recorded with it and
/// made when the program is replayed (as a CUDA graph holds NCCL's).
class CopyLinks final : public DeviceLinks {
public:
  explicit CopyLinks(char *arena) : arena_(arena) {}
  /// Where the calls go while the device records (nullptr: made at once).
  void record(std::vector<ProgramOp> *program) {
    recording_ = program;
    recordedTickets_ = static_cast<int>(tickets_.size());
  }
  std::string name() const override { return "MPI between the copies"; }
  std::string where() const override {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    // Every process has a copy of its own.
    return std::string(host) + ":copy:" + std::to_string(getpid());
  }
  bool open(Comm &comm, const std::vector<int> &members, int &link,
            std::string &) override {
    comm_ = &comm;
    link = static_cast<int>(members_.size());
    members_.push_back(members);
    linkWaits_.emplace_back();
    return true;
  }
  bool send(int link, int to, int64_t offset, int64_t bytes, int &ticket,
            std::string &) override {
    if (recording_)
      return defer(ticket, [=](int &t, std::string &e) {
        return send(link, to, offset, bytes, t, e);
      });
    waitFor(linkWaits_.at(link));
    ticket = add(comm_->isend(arena_ + offset, static_cast<size_t>(bytes),
                              members_[link].at(to), kTag,
                              "a transfer of link " + std::to_string(link)));
    return true;
  }
  bool receive(int link, int from, int64_t offset, int64_t bytes, int &ticket,
               std::string &) override {
    if (recording_)
      return defer(ticket, [=](int &t, std::string &e) {
        return receive(link, from, offset, bytes, t, e);
      });
    waitFor(linkWaits_.at(link));
    ticket = add(comm_->irecv(arena_ + offset, static_cast<size_t>(bytes),
                              members_[link].at(from), kTag,
                              "a transfer of link " + std::to_string(link)));
    return true;
  }
  bool allReduce(int link,
                 const std::vector<std::pair<int64_t, int64_t>> &ranges,
                 int &ticket, std::string &) override {
    if (recording_)
      return defer(ticket, [=](int &t, std::string &e) {
        return allReduce(link, ranges, t, e);
      });
    waitFor(linkWaits_.at(link));
    const std::vector<int> &members = members_[link];
    size_t n = 0;
    for (auto [offset, count] : ranges)
      n += static_cast<size_t>(count);
    std::vector<float> mine(n);
    float *p = mine.data();
    for (auto [offset, count] : ranges) {
      std::memcpy(p, arena_ + offset, static_cast<size_t>(count) * 4);
      p += count;
    }
    std::string what = "the all-reduce of link " + std::to_string(link);
    if (members.front() == comm_->worldRank()) {
      std::vector<float> theirs(n);
      for (size_t m = 1; m < members.size(); ++m) {
        Comm::Request r =
            comm_->irecv(theirs.data(), n * 4, members[m], kTag, what);
        comm_->wait(r);
        for (size_t i = 0; i < n; ++i)
          mine[i] += theirs[i];
      }
      for (size_t m = 1; m < members.size(); ++m) {
        Comm::Request r =
            comm_->isend(mine.data(), n * 4, members[m], kTag, what);
        comm_->wait(r);
      }
    } else {
      Comm::Request r =
          comm_->isend(mine.data(), n * 4, members.front(), kTag, what);
      comm_->wait(r);
      r = comm_->irecv(mine.data(), n * 4, members.front(), kTag, what);
      comm_->wait(r);
    }
    p = mine.data();
    for (auto [offset, count] : ranges) {
      std::memcpy(arena_ + offset, p, static_cast<size_t>(count) * 4);
      p += count;
    }
    ticket = add(Comm::Request()); // done already
    return true;
  }
  void after(int ticket, int link) override {
    if (recording_) {
      recording_->push_back(
          {ProgramOp::Call, "", 0, nullptr, 0, 0, [=](std::string &) {
             after(ticket, link);
             return true;
           }});
      return;
    }
    (link < 0 ? runWaits_ : linkWaits_.at(link)).push_back(ticket);
  }
  bool finish(std::string &error) override {
    if (recording_) {
      error = "internal: the links finish inside a program";
      return false;
    }
    for (Comm::Request &r : tickets_)
      comm_->wait(r);
    tickets_.clear();
    runWaits_.clear();
    for (std::vector<int> &waits : linkWaits_)
      waits.clear();
    return true;
  }
  /// Before each run of the copy's kernels.
  void beforeRun() { waitFor(runWaits_); }

private:
  // MPI keeps each sender's messages of one tag in order, which is the
  // order a link's transfers pair up in; two ranks share at most one link
  // each way (pipeline neighbours one, a stage's replicas one), so one
  // tag serves every link. Above every tag of Comm's own messages.
  static constexpr int kTag = 1 << 28;
  int add(Comm::Request r) {
    tickets_.push_back(std::move(r));
    return static_cast<int>(tickets_.size()) - 1;
  }
  void waitFor(std::vector<int> &tickets) {
    for (int t : tickets)
      comm_->wait(tickets_.at(t));
    tickets.clear();
  }
  /// A transfer while recording: its ticket now, the transfer when the
  /// program is replayed, which must give it the same ticket (the
  /// program starts with as many tickets as when it was recorded).
  bool defer(int &ticket, std::function<bool(int &, std::string &)> transfer) {
    int recorded = ticket = recordedTickets_++;
    recording_->push_back(
        {ProgramOp::Call, "", 0, nullptr, 0, 0,
         [transfer, recorded](std::string &error) {
           int t = -1;
           if (!transfer(t, error))
             return false;
           if (t != recorded) {
             error = "internal: a program's transfers were posted with "
                     "other transfers in flight";
             return false;
           }
           return true;
         }});
    return true;
  }

  char *arena_;
  Comm *comm_ = nullptr;
  std::vector<std::vector<int>> members_;
  std::vector<Comm::Request> tickets_;
  std::vector<int> runWaits_;
  std::vector<std::vector<int>> linkWaits_;
  std::vector<ProgramOp> *recording_ = nullptr;
  int recordedTickets_ = 0;
};

class CopyDevice final : public Device {
public:
  CopyDevice(const Plan &plan, const KernelFn *kernels, int threads)
      : inner_(plan, kernels, threads) {}
  bool ok() { return inner_.arena() != nullptr; }
  std::string name() const override { return "a copy of the arena (host)"; }
  bool run(const std::string &function, const std::vector<PlanAction> &,
           int slot, std::string &error) override {
    if (recording_) {
      recording_->push_back(
          {ProgramOp::Run, function, slot, nullptr, 0, 0, {}});
      return true;
    }
    if (links_)
      links_->beforeRun();
    return inner_.run(function, error, slot);
  }
  bool upload(const char *host, int64_t offset, int64_t bytes,
              std::string &error) override {
    if (recording_)
      return record(ProgramOp::Upload, const_cast<char *>(host), offset, bytes,
                    error);
    std::memcpy(inner_.arena() + offset, host, static_cast<size_t>(bytes));
    return true;
  }
  bool download(char *host, int64_t offset, int64_t bytes,
                std::string &error) override {
    if (recording_)
      return record(ProgramOp::Download, host, offset, bytes, error);
    std::memcpy(host, inner_.arena() + offset, static_cast<size_t>(bytes));
    return true;
  }
  bool copy(int64_t from, int64_t to, int64_t bytes, std::string &) override {
    if (recording_) {
      recording_->push_back(
          {ProgramOp::Call, "", 0, nullptr, 0, 0,
           [=](std::string &error) { return copy(from, to, bytes, error); }});
      return true;
    }
    std::memcpy(inner_.arena() + to, inner_.arena() + from,
                static_cast<size_t>(bytes));
    return true;
  }
  char *hostMemory(int64_t bytes, std::string &) override {
    hostMemory_.emplace_back(new char[static_cast<size_t>(bytes)](), bytes);
    return hostMemory_.back().first.get();
  }
  // A program is a list of its runs and copies, replayed at wait() rather
  // than at once, as a GPU would run it later: a loop that reads a step's
  // results before waiting, or refills the host memory of a step still
  // queued, then differs from the host build (test/e2e/device-copy.test).
  bool replay(int key, const std::function<bool(std::string &)> &queue,
              std::string &error) override {
    if (!programs_.count(key)) {
      recording_ = &programs_[key];
      if (links_)
        links_->record(recording_);
      bool queued = queue(error);
      recording_ = nullptr;
      if (links_)
        links_->record(nullptr);
      if (!queued) {
        programs_.erase(key);
        return false;
      }
    }
    queued_.push_back(key);
    return true;
  }
  bool wait(std::string &error) override {
    std::vector<int> keys;
    keys.swap(queued_);
    for (int key : keys)
      for (const ProgramOp &op : programs_.at(key)) {
        bool ok = true;
        switch (op.kind) {
        case ProgramOp::Run:
          ok = run(op.function, {}, op.slot, error);
          break;
        case ProgramOp::Upload:
          ok = upload(op.host, op.offset, op.bytes, error);
          break;
        case ProgramOp::Download:
          ok = download(op.host, op.offset, op.bytes, error);
          break;
        case ProgramOp::Call:
          ok = op.call(error);
          break;
        }
        if (!ok)
          return false;
      }
    return true;
  }
  DeviceLinks *links(double, std::string &) override {
    // (MPI's own watchdog bounds the waits: Comm::wait.)
    if (!links_)
      links_ = std::make_unique<CopyLinks>(inner_.arena());
    return links_.get();
  }

private:
  /// A program's copy, from or to the device's host memory only (a GPU's
  /// graph copies from pinned memory alone).
  bool record(ProgramOp::Kind kind, char *host, int64_t offset, int64_t bytes,
              std::string &error) {
    for (auto &[memory, size] : hostMemory_)
      if (host >= memory.get() && host + bytes <= memory.get() + size) {
        recording_->push_back({kind, "", 0, host, offset, bytes, {}});
        return true;
      }
    error = "internal: a program copies " + std::to_string(bytes) +
            " bytes from or to host memory that is not the device's";
    return false;
  }

  Executor inner_;
  std::unique_ptr<CopyLinks> links_;
  std::vector<std::pair<std::unique_ptr<char[]>, int64_t>> hostMemory_;
  std::map<int, std::vector<ProgramOp>> programs_;
  std::vector<ProgramOp> *recording_ = nullptr;
  std::vector<int> queued_;
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
