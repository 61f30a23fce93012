//===- Comm.cpp - Ranks and messages over MPI, with a watchdog ------------===//

#include "runtime/comm/Comm.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mpi.h>
#include <thread>

using namespace hotstage::rt;

static_assert(sizeof(MPI_Request) <= 8, "MPI_Request does not fit");
static_assert(sizeof(MPI_Comm) <= 8, "MPI_Comm does not fit");

template <typename T> static T &as(unsigned char *storage) {
  return *reinterpret_cast<T *>(storage);
}
template <typename T> static const T &as(const unsigned char *storage) {
  return *reinterpret_cast<const T *>(storage);
}

bool hotstage::rt::launchedAsJob(int &size) {
  for (const char *name :
       {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"}) {
    const char *value = std::getenv(name);
    if (value && std::atoi(value) > 0) {
      size = std::atoi(value);
      return true;
    }
  }
  size = 1;
  return false;
}

/// " with rank 1" or " with ranks 1, 3": the other members of a collective,
/// so a stall names whom this rank waited on.
static std::string withPeers(int self, const std::vector<int> &members) {
  std::string text;
  int others = 0;
  for (int rank : members)
    if (rank != self)
      text += (others++ ? ", " : "") + std::to_string(rank);
  return others ? (others == 1 ? " with rank " : " with ranks ") + text : "";
}

bool Comm::init(int *argc, char ***argv, int stages, int dp,
                std::string &error) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) !=
      MPI_SUCCESS) {
    error = "MPI_Init failed";
    return false;
  }
  active_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &worldRank_);
  MPI_Comm_size(MPI_COMM_WORLD, &worldSize_);
  stages_ = stages;
  dp_ = dp;
  if (worldSize_ != stages * dp) {
    error = "this model was compiled for " + std::to_string(stages * dp) +
            " ranks (" + std::to_string(stages) + " pipeline stage(s) x " +
            std::to_string(dp) + " data-parallel replica(s)) but the job has " +
            std::to_string(worldSize_) + "; launch it with mpirun -np " +
            std::to_string(stages * dp);
    return false;
  }
  stage_ = worldRank_ % stages;
  replica_ = worldRank_ / stages;
  MPI_Comm_split(MPI_COMM_WORLD, replica_, stage_,
                 &as<MPI_Comm>(pipelineComm_));
  MPI_Comm_split(MPI_COMM_WORLD, stage_, replica_, &as<MPI_Comm>(replicaComm_));
  std::vector<int> pipeline, replicas, world;
  for (int s = 0; s < stages; ++s)
    pipeline.push_back(stageRank(s));
  for (int r = 0; r < dp; ++r)
    replicas.push_back(r * stages + stage_);
  for (int r = 0; r < worldSize_; ++r)
    world.push_back(r);
  pipelinePeers_ = withPeers(worldRank_, pipeline);
  replicaPeers_ = withPeers(worldRank_, replicas);
  worldPeers_ = withPeers(worldRank_, world);
  return true;
}

Comm::~Comm() {
  if (!active_)
    return;
  MPI_Comm_free(&as<MPI_Comm>(pipelineComm_));
  MPI_Comm_free(&as<MPI_Comm>(replicaComm_));
  MPI_Finalize();
}

namespace {
/// `bytes` as an MPI count and datatype. MPI counts are ints: a message of
/// 2 GiB or more (a large microbatch's activations) is one element of a
/// datatype made for it, 1 MiB blocks and the rest, which may be freed as
/// soon as the transfer is posted.
struct Extent {
  int count;
  MPI_Datatype type;
  bool made = false;
  explicit Extent(size_t bytes) : count(1), type(MPI_BYTE) {
    if (bytes <= static_cast<size_t>(INT_MAX)) {
      count = static_cast<int>(bytes);
      return;
    }
    constexpr size_t kBlock = 1 << 20;
    MPI_Datatype blocks;
    MPI_Type_contiguous(static_cast<int>(kBlock), MPI_BYTE, &blocks);
    int lengths[2] = {static_cast<int>(bytes / kBlock),
                      static_cast<int>(bytes % kBlock)};
    MPI_Aint offsets[2] = {0, static_cast<MPI_Aint>(bytes / kBlock * kBlock)};
    MPI_Datatype types[2] = {blocks, MPI_BYTE};
    MPI_Type_create_struct(lengths[1] ? 2 : 1, lengths, offsets, types, &type);
    MPI_Type_commit(&type);
    MPI_Type_free(&blocks);
    made = true;
  }
  ~Extent() {
    if (made)
      MPI_Type_free(&type);
  }
};
} // namespace

Comm::Request Comm::isend(const void *data, size_t bytes, int peer, int tag,
                          std::string what) {
  Request r;
  r.what = "to send " + what + " to rank " + std::to_string(peer);
  r.pending = true;
  Extent extent(bytes);
  MPI_Isend(data, extent.count, extent.type, peer, tag, MPI_COMM_WORLD,
            &as<MPI_Request>(r.handle));
  return r;
}

Comm::Request Comm::irecv(void *data, size_t bytes, int peer, int tag,
                          std::string what) {
  Request r;
  r.what = "for " + what + " from rank " + std::to_string(peer);
  r.pending = true;
  Extent extent(bytes);
  MPI_Irecv(data, extent.count, extent.type, peer, tag, MPI_COMM_WORLD,
            &as<MPI_Request>(r.handle));
  return r;
}

bool Comm::done(Request &request) {
  if (!request.pending)
    return true;
  int flag = 0;
  MPI_Test(&as<MPI_Request>(request.handle), &flag, MPI_STATUS_IGNORE);
  if (flag)
    request.pending = false;
  return flag != 0;
}

/// Polls `test` until it is true; past the timeout, ends the job naming
/// what this rank waited for.
template <typename Test>
static void watch(Comm &comm, const std::string &what, Test test) {
  double timeout = comm.timeout();
  auto start = std::chrono::steady_clock::now();
  int spins = 0;
  while (!test()) {
    if (++spins > 1000)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (waited > timeout)
      comm.abort("rank " + std::to_string(comm.worldRank()) +
                 " (pipeline stage " + std::to_string(comm.stage()) +
                 ", replica " + std::to_string(comm.replica()) +
                 "): no progress for " + std::to_string(int(timeout)) +
                 " s waiting " + what + " (" + comm.context() +
                 "); the peer may be stopped, dead or deadlocked");
  }
}

/// Waits for a collective's request under the watchdog.
static void waitFor(Comm &comm, MPI_Request &request, const std::string &what,
                    const std::string &peers) {
  watch(comm, "for " + what + peers, [&] {
    int flag = 0;
    MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
    return flag != 0;
  });
}

void Comm::wait(Request &request) {
  if (!request.pending)
    return;
  watch(*this, request.what, [&] { return done(request); });
}

void Comm::allReduce(void *data, size_t n, bool isDouble, const void *comm,
                     const std::string &what, const std::string &peers) {
  // In pieces whose counts fit an int (MPI's counts).
  size_t size = isDouble ? 8 : 4;
  for (size_t done = 0; done < n;) {
    int count = static_cast<int>(std::min<size_t>(n - done, INT_MAX));
    MPI_Request request;
    MPI_Iallreduce(MPI_IN_PLACE, static_cast<char *>(data) + done * size, count,
                   isDouble ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM,
                   *static_cast<const MPI_Comm *>(comm), &request);
    waitFor(*this, request, what, peers);
    done += static_cast<size_t>(count);
  }
}

void Comm::allReducePipeline(float *data, size_t n, const std::string &what) {
  allReduce(data, n, false, pipelineComm_, what, pipelinePeers_);
}

void Comm::allReduceReplicas(float *data, size_t n, const std::string &what) {
  allReduce(data, n, false, replicaComm_, what, replicaPeers_);
}

void Comm::allReduceWorld(double *data, size_t n, const std::string &what) {
  MPI_Comm world = MPI_COMM_WORLD;
  allReduce(data, n, true, &world, what, worldPeers_);
}

Comm::Request Comm::startAllReduceReplicas(float *data, size_t n,
                                           std::string what) {
  Request r;
  r.what = "for " + what + replicaPeers_;
  r.pending = true;
  // One request per accumulator: one of 2^31 floats (8 GiB) or more is
  // beyond MPI's counts.
  if (n > static_cast<size_t>(INT_MAX))
    abort("the all-reduce of " + what + " has " + std::to_string(n) +
          " floats, more than MPI counts (2^31 - 1)");
  MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_FLOAT, MPI_SUM,
                 as<MPI_Comm>(replicaComm_), &as<MPI_Request>(r.handle));
  return r;
}

int64_t Comm::minimumWorld(int64_t value, const std::string &what) {
  MPI_Request request;
  int64_t result = value;
  MPI_Iallreduce(&value, &result, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD,
                 &request);
  waitFor(*this, request, what, worldPeers_);
  return result;
}

void Comm::barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  waitFor(*this, request, "a barrier", worldPeers_);
}

void Comm::gatherToLeader(const std::vector<double> &data,
                          std::vector<std::vector<double>> &all) {
  int count = static_cast<int>(data.size());
  std::vector<int> counts(worldSize_), offsets(worldSize_);
  MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; r < worldSize_; ++r) {
    offsets[r] = total;
    total += counts[r];
  }
  std::vector<double> flat(worldRank_ == 0 ? total : 0);
  MPI_Gatherv(data.data(), count, MPI_DOUBLE, flat.data(), counts.data(),
              offsets.data(), MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (worldRank_ != 0)
    return;
  all.assign(worldSize_, {});
  for (int r = 0; r < worldSize_; ++r)
    all[r].assign(flat.begin() + offsets[r],
                  flat.begin() + offsets[r] + counts[r]);
}

void Comm::abort(const std::string &message, int code) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::fflush(stderr);
  if (active_)
    MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}
