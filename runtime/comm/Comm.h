//===- Comm.h - Ranks and messages over MPI, with a watchdog ----*- C++ -*-===//
//
// The multi-rank runtime's view of MPI: this process's place in the job
// (pipeline stage and data-parallel replica), non-blocking point-to-point
// transfers, and the few collectives a step needs. Every wait runs under
// the watchdog: a peer that makes no progress for `timeout` seconds ends
// the whole job (MPI_Abort) with an error naming this rank, what it waited
// for and the step, instead of hanging.
//
// A single-rank build never starts MPI: `Comm::single()`.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_COMM_COMM_H
#define HOTSTAGE_RUNTIME_COMM_COMM_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hotstage::rt {

/// True when a launcher (mpirun, srun) started this process as one of
/// several ranks; `size` is the job's size from its environment.
bool launchedAsJob(int &size);

class Comm {
public:
  /// Starts MPI and places this rank: world rank = replica * stages +
  /// stage. False (with `error`) when the job's size is not stages * dp.
  bool init(int *argc, char ***argv, int stages, int dp, std::string &error);
  ~Comm();

  bool active() const { return active_; }
  int worldRank() const { return worldRank_; }
  int worldSize() const { return worldSize_; }
  int stage() const { return stage_; }
  int replica() const { return replica_; }
  /// World rank of pipeline stage `stage` of this rank's replica.
  int stageRank(int stage) const { return replica_ * stages_ + stage; }

  void setTimeout(double seconds) { timeout_ = seconds; }
  double timeout() const { return timeout_; }
  const std::string &context() const { return context_; }
  /// What the rank is doing, for the watchdog's error ("step 12, F chunk 1
  /// microbatch 3").
  void setContext(const std::string &what) { context_ = what; }

  /// A pending transfer.
  struct Request {
    alignas(8) unsigned char handle[8] = {}; // an MPI_Request
    bool pending = false;
    /// What a stall waits for: "for the loss from rank 1", "to send ... to
    /// rank 0".
    std::string what;
  };
  Request isend(const void *data, size_t bytes, int peer, int tag,
                std::string what);
  Request irecv(void *data, size_t bytes, int peer, int tag, std::string what);
  /// Waits for `request` under the watchdog; a no-op when it is done.
  void wait(Request &request);
  bool done(Request &request);

  /// Sums `n` floats across the ranks of this replica's pipeline (every
  /// stage) or of this stage's replicas, in place, under the watchdog.
  void allReducePipeline(float *data, size_t n, const std::string &what);
  void allReduceReplicas(float *data, size_t n, const std::string &what);
  void allReduceWorld(double *data, size_t n, const std::string &what);
  /// Starts summing `n` floats across this stage's replicas, in place.
  Request startAllReduceReplicas(float *data, size_t n, std::string what);
  /// The smallest `value` of any rank.
  int64_t minimumWorld(int64_t value, const std::string &what);
  /// Waits for every rank (under the watchdog).
  void barrier();
  /// Rank 0 receives every rank's `data` (in rank order) into `all`.
  void gatherToLeader(const std::vector<double> &data,
                      std::vector<std::vector<double>> &all);
  /// Ends the job: every rank exits with `code`.
  [[noreturn]] void abort(const std::string &message, int code = 1);

private:
  void allReduce(void *data, size_t n, bool isDouble, const void *comm,
                 const std::string &what, const std::string &peers);

  bool active_ = false;
  int worldRank_ = 0, worldSize_ = 1, stage_ = 0, replica_ = 0;
  int stages_ = 1, dp_ = 1;
  double timeout_ = 600;
  std::string context_;
  alignas(8) unsigned char pipelineComm_[8] = {}, replicaComm_[8] = {};
  // The other members of each collective, for the watchdog's message
  // (" with ranks 1, 3").
  std::string pipelinePeers_, replicaPeers_, worldPeers_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_COMM_COMM_H
