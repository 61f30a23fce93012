//===- PipelineStep.cpp - One training step of a pipeline rank ------------===//

#include "runtime/train/PipelineStep.h"
#include "runtime/train/RankLinks.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

using namespace hotstage::rt;

PipelineStep::PipelineStep(const Plan &plan, Executor &exec, Comm &comm)
    : plan_(plan), exec_(exec), comm_(comm) {}

bool PipelineStep::init(std::string &error) {
  const PlanPipeline &p = plan_.pipeline;
  numChunks_ = static_cast<int>(p.chunkRank.size());
  chunks_.assign(numChunks_, {});
  for (int c = 0; c < numChunks_; ++c) {
    if (!local(c))
      continue;
    ChunkBuffers &cb = chunks_[c];
    std::string prefix = "c" + std::to_string(c) + ".";
    cb.forward = prefix + "forward";
    cb.backward = exec_.has(prefix + "backward") ? prefix + "backward"
                                                 : prefix + "backward_input";
    cb.weight =
        exec_.has(prefix + "backward_weight") ? prefix + "backward_weight" : "";
    if (!exec_.has(cb.forward) || !exec_.has(cb.backward)) {
      error = "the plan lacks the functions of chunk " + std::to_string(c);
      return false;
    }
  }
  auto place = [](std::vector<const PlanBuffer *> &list, int index,
                  const PlanBuffer *b) {
    if (static_cast<int>(list.size()) <= index)
      list.resize(index + 1, nullptr);
    list[index] = b;
  };
  std::set<int> received;
  for (const PlanPipeline::Exchange &e : p.exchanges)
    if (!e.send)
      received.insert(e.buffer);
  for (auto &[id, b] : plan_.buffers) {
    if (b.chunk >= 0 && b.chunk < numChunks_) {
      ChunkBuffers &cb = chunks_[b.chunk];
      if (b.kind == "input" && b.name == "tokens")
        cb.tokens.push_back(&b);
      if (b.kind == "input" && b.name == "targets")
        cb.targets.push_back(&b);
      if (b.kind == "boundary")
        place(b.role == "gradient" ? cb.gradIn : cb.actIn, b.index, &b);
      if (b.kind == "stash" && b.name == "loss")
        loss_ = &b;
    }
    if (b.kind == "state" && b.role == "norm")
      norms_.push_back(&b);
    if (b.kind == "state" && b.role == "grad" && !received.count(id))
      grads_.push_back(&b);
  }
  for (const PlanPipeline::Send &s : p.sends) {
    if (s.chunk < 0 || s.chunk >= numChunks_) {
      error = "a send of the plan names chunk " + std::to_string(s.chunk);
      return false;
    }
    ChunkBuffers &cb = chunks_[s.chunk];
    place(s.gradient ? cb.gradOut : cb.actOut, s.index,
          &plan_.buffers.at(s.buffer));
  }
  // Where each accumulator is last written in its chunk's accumulating
  // function: its all-reduce can start right after.
  finalAt_.assign(numChunks_, {});
  for (int c = 0; c < numChunks_; ++c) {
    if (!local(c))
      continue;
    const std::string &name =
        chunks_[c].weight.empty() ? chunks_[c].backward : chunks_[c].weight;
    const std::vector<PlanAction> &actions = plan_.functions.at(name);
    for (const PlanBuffer *g : grads_) {
      int64_t last = -1;
      for (size_t i = 0; i < actions.size(); ++i)
        for (int b : actions[i].buffers)
          if (&plan_.buffers.at(b) == g)
            last = static_cast<int64_t>(i);
      if (last >= 0)
        finalAt_[c][static_cast<size_t>(last)].push_back(g);
    }
  }
  lr_ = plan_.find("scalar", "lr");
  gradNorm_ = plan_.find("scalar", "grad_norm");
  stepBuf_ = plan_.find("scalar", "step");
  totalBuf_ = plan_.find("scalar", "total_steps");
  std::string rank = "r" + std::to_string(p.rank) + ".";
  gradNorms_ = rank + "grad_norms";
  optimizer_ = rank + "optimizer_step";
  if (!lr_ || !gradNorm_ || !stepBuf_ || !totalBuf_ || !exec_.has(gradNorms_) ||
      !exec_.has(optimizer_)) {
    error = "the plan of rank " + std::to_string(p.rank) +
            " lacks its optimizer step";
    return false;
  }
  if (local(numChunks_ - 1) && !loss_) {
    error = "the plan of the last stage has no loss buffer";
    return false;
  }
  for (int c = 0; c < numChunks_; ++c) {
    if (!local(c))
      continue;
    const ChunkBuffers &cb = chunks_[c];
    for (auto *list : {&cb.actIn, &cb.gradIn, &cb.actOut, &cb.gradOut})
      for (const PlanBuffer *b : *list)
        if (!b) {
          error = "chunk " + std::to_string(c) + " misses a boundary buffer";
          return false;
        }
  }
  return openLinks(error);
}

bool PipelineStep::openLinks(std::string &error) {
  DeviceLinks *links = nullptr;
  if (!agreeOnLinks(exec_, comm_, links, error))
    return false;
  if (!links)
    return true;
  const PlanPipeline &p = plan_.pipeline;
  int self = comm_.worldRank();
  // What this rank sends to each peer and receives from it, by tag, in its
  // schedule's order (as the staged path posts them).
  std::map<int, std::vector<int32_t>> sendOrder;
  std::map<int, std::vector<LinkMessage>> receiveOrder;
  for (const PlanPipeline::Step &a : p.steps) {
    int c = a.chunk, m = a.microbatch;
    const ChunkBuffers &cb = chunks_[c];
    bool forward = a.phase == 'F', backward = a.phase == 'B';
    // F receives from the chunk before and sends to the one after; B the
    // other way round.
    int from = forward ? c - 1 : c + 1, to = forward ? c + 1 : c - 1;
    if (!forward && !backward)
      continue;
    if (from >= 0 && from < numChunks_ && !local(from)) {
      const auto &in = forward ? cb.actIn : cb.gradIn;
      for (size_t i = 0; i < in.size(); ++i)
        receiveOrder[comm_.stageRank(stageOf(from))].push_back(
            {tag(from, m, backward, static_cast<int>(i)), in[i], m, c,
             backward});
    }
    if (to >= 0 && to < numChunks_ && !local(to)) {
      const auto &out = forward ? cb.actOut : cb.gradOut;
      for (size_t i = 0; i < out.size(); ++i)
        sendOrder[comm_.stageRank(stageOf(to))].push_back(
            tag(c, m, backward, static_cast<int>(i)));
    }
  }
  int base = numChunks_ * static_cast<int>(plan_.microbatches) * 2 * 64;
  for (const PlanPipeline::Exchange &e : p.exchanges) {
    int peer = comm_.stageRank(e.peer);
    if (e.send)
      sendOrder[peer].push_back(base + e.tag);
    else
      receiveOrder[peer].push_back(
          {base + e.tag, &plan_.buffers.at(e.buffer), 0, -1, false});
  }

  // A link's transfers pair up in the order posted, and the receives are
  // all posted up front: each rank posts them in the order its peer sends
  // (a V-shaped schedule's stages run their chunks in different orders),
  // which every other stage of the replica tells it, even of nothing.
  comm_.setContext("agreeing on device links");
  constexpr int kTag = (1 << 28) + 1;
  std::map<int, int64_t> sendCounts, counts;
  std::map<int, std::vector<int32_t>> theirs;
  std::vector<int> peers;
  for (int s = 0; s < p.stages; ++s)
    if (comm_.stageRank(s) != self)
      peers.push_back(comm_.stageRank(s));
  std::vector<Comm::Request> requests;
  for (int peer : peers) {
    sendCounts[peer] = static_cast<int64_t>(sendOrder[peer].size());
    requests.push_back(comm_.isend(&sendCounts[peer], 8, peer, kTag,
                                   "the number of transfers"));
    requests.push_back(
        comm_.irecv(&counts[peer], 8, peer, kTag, "the number of transfers"));
  }
  for (Comm::Request &r : requests)
    comm_.wait(r);
  requests.clear();
  for (int peer : peers) {
    if (sendCounts[peer] > 0)
      requests.push_back(comm_.isend(sendOrder[peer].data(),
                                     4 * sendOrder[peer].size(), peer, kTag,
                                     "the order of transfers"));
    theirs[peer].resize(static_cast<size_t>(counts[peer]));
    if (counts[peer] > 0)
      requests.push_back(comm_.irecv(theirs[peer].data(),
                                     4 * theirs[peer].size(), peer, kTag,
                                     "the order of transfers"));
  }
  for (Comm::Request &r : requests)
    comm_.wait(r);
  std::string mismatch;
  for (int peer : peers) {
    std::map<int32_t, LinkMessage> byTag;
    for (const LinkMessage &msg : receiveOrder[peer])
      byTag.emplace(msg.tag, msg);
    std::vector<LinkMessage> inSendOrder;
    for (int32_t t : theirs[peer])
      if (auto it = byTag.find(t); it != byTag.end()) {
        inSendOrder.push_back(it->second);
        byTag.erase(it);
      }
    if (inSendOrder.size() != theirs[peer].size() || !byTag.empty()) {
      if (mismatch.empty())
        mismatch = "rank " + std::to_string(self) + " expects other " +
                   "transfers from rank " + std::to_string(peer) +
                   " than it sends";
      continue;
    }
    receiveOrder[peer] = std::move(inSendOrder);
  }
  if (comm_.minimumWorld(mismatch.empty() ? 1 : 0,
                         "agreeing on device links") == 0) {
    // The plans of two stages disagree: a corrupt executable.
    error = mismatch.empty() ? "another rank's plan disagrees with this one's "
                               "on what the ranks send each other"
                             : mismatch;
    return false;
  }

  // One link each way between two stages that talk, opened by every rank
  // in the order of (sender, receiver): NCCL's opening waits for every
  // member, and in that order each waits for ranks that get there.
  std::vector<std::pair<int, int>> pairs;
  for (auto &[peer, order] : sendOrder)
    if (!order.empty())
      pairs.emplace_back(self, peer);
  for (auto &[peer, order] : receiveOrder)
    if (!order.empty())
      pairs.emplace_back(peer, self);
  std::sort(pairs.begin(), pairs.end());
  for (auto [sender, receiver] : pairs) {
    int link = -1;
    if (!links->open(comm_, {sender, receiver}, link, error))
      return false;
    (sender == self ? sendLink_[receiver] : receiveLink_[sender]) = link;
  }
  if (p.dp > 1) {
    std::vector<int> replicas;
    for (int r = 0; r < p.dp; ++r)
      replicas.push_back(r * p.stages + comm_.stage());
    if (!links->open(comm_, replicas, replicaLink_, error))
      return false;
  }
  // The stages of a replica, for the gradient norms of a step run whole.
  if (p.stages > 1) {
    std::vector<int> stages;
    for (int s = 0; s < p.stages; ++s)
      stages.push_back(comm_.stageRank(s));
    if (!links->open(comm_, stages, stageLink_, error))
      return false;
  }
  receiveOrder_ = std::move(receiveOrder);
  links_ = links;
  // Each step after the first runs whole, as one program of the device:
  // its batches and scalars go through host memory of the device's own.
  rowBytes_ = static_cast<size_t>(plan_.batch * plan_.seq) * 4;
  pinned_ =
      exec_.device()->hostMemory(scalarAt(4), error); // (the layout's end)
  if (!pinned_)
    return false;
  if (self == 0)
    std::fprintf(stderr,
                 "transfers between ranks: device to device (%s); each step "
                 "after the first runs whole on the device\n",
                 links->name().c_str());
  return true;
}

void PipelineStep::progress(void *self, size_t action) {
  auto *step = static_cast<PipelineStep *>(self);
  if (step->bucketing_) {
    auto it = step->bucketing_->find(action);
    if (it != step->bucketing_->end())
      for (const PlanBuffer *g : it->second) {
        step->allReduces_.push_back(step->comm_.startAllReduceReplicas(
            static_cast<float *>(step->exec_.buffer(*g)),
            static_cast<size_t>(g->numElements()),
            "the gradient all-reduce of " + g->name));
        step->reduced_.insert(g);
      }
    for (Comm::Request &r : step->allReduces_)
      step->comm_.done(r);
  }
  for (Comm::Request *r : step->inFlight_)
    step->comm_.done(*r);
}

int PipelineStep::tag(int chunk, int microbatch, bool gradient,
                      int index) const {
  // Unique within a step; a step's messages all complete before the next.
  return ((chunk * static_cast<int>(plan_.microbatches) + microbatch) * 2 +
          (gradient ? 1 : 0)) *
             64 +
         index;
}

void PipelineStep::toDevice(const PlanBuffer &b, int slot) {
  std::string error;
  if (!exec_.upload(b, slot, error))
    comm_.abort("rank " + std::to_string(comm_.worldRank()) + ", " +
                comm_.context() + ": " + error);
}

void PipelineStep::toHost(const PlanBuffer &b, int slot) {
  std::string error;
  if (!exec_.download(b, slot, error))
    comm_.abort("rank " + std::to_string(comm_.worldRank()) + ", " +
                comm_.context() + ": " + error);
}

void PipelineStep::copyLocal(const PlanBuffer &from, const PlanBuffer &to,
                             int m) {
  std::string error;
  if (!exec_.copy(from, m, to, m, error))
    comm_.abort("rank " + std::to_string(comm_.worldRank()) + ", " +
                comm_.context() + ": " + error);
}

void PipelineStep::runFunction(const std::string &name, int microbatch,
                               const std::string &what, bool queued) {
  std::string error;
  if (!(queued ? exec_.queueRun(name, microbatch, error)
               : exec_.run(name, error, microbatch)))
    comm_.abort("rank " + std::to_string(comm_.worldRank()) + ", " + what +
                ": " + error);
}

void PipelineStep::stageInputs(const ChunkBuffers &cb, const Microbatch &batch,
                               int m) {
  for (const PlanBuffer *b : cb.tokens)
    std::memcpy(exec_.buffer(*b, m), batch.tokens.data(),
                static_cast<size_t>(b->bytes));
  for (const PlanBuffer *b : cb.targets)
    std::memcpy(exec_.buffer(*b, m), batch.targets.data(),
                static_cast<size_t>(b->bytes));
}

void PipelineStep::recordTime(const PlanPipeline::Step &a, int64_t step,
                              std::chrono::steady_clock::time_point start) {
  if (!recording_)
    return;
  auto seconds = [&](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count() -
           origin_;
  };
  times_.push_back({a.phase, a.chunk, a.microbatch, step, seconds(start),
                    seconds(std::chrono::steady_clock::now())});
}

void PipelineStep::linkCheck(bool ok, const std::string &error) {
  if (!ok)
    comm_.abort("rank " + std::to_string(comm_.worldRank()) + ", " +
                comm_.context() + ": " + error);
}

void PipelineStep::runLinked(int64_t step,
                             const std::vector<Microbatch> &batches,
                             float &localLoss, bool program) {
  const PlanPipeline &p = plan_.pipeline;
  int M = static_cast<int>(plan_.microbatches);
  std::string stepName = "step " + std::to_string(step + 1);
  std::string error;
  auto offset = [&](const PlanBuffer &b, int slot) {
    return arenaOffset(exec_, b, slot);
  };
  using Key = std::tuple<int, int, bool>; // chunk, microbatch, gradient
  // Tickets of the receives each F or B waits for (chunk -1: the tied
  // accumulators), and of the sends in flight from each chunk's slot.
  std::map<Key, std::vector<int>> receives, sends;
  auto slotOf = [&](const std::vector<const PlanBuffer *> &buffers, int m) {
    return buffers.empty() ? 0 : m % buffers.front()->slots;
  };
  auto waitFor = [&](std::vector<int> &tickets) {
    for (int t : tickets)
      links_->after(t);
    tickets.clear();
  };
  posted_.clear();

  // Every receive of the step, up front, in the order its sender sends:
  // boundary buffers have a slot per microbatch.
  comm_.setContext(stepName + ", posting receives");
  for (auto &[peer, order] : receiveOrder_)
    for (const LinkMessage &msg : order) {
      int ticket = -1;
      linkCheck(links_->receive(receiveLink_.at(peer), 0,
                                offset(*msg.buffer, msg.slot),
                                msg.buffer->bytes, ticket, error),
                error);
      receives[{msg.chunk, msg.chunk < 0 ? 0 : msg.slot, msg.gradient}]
          .push_back(ticket);
      posted_.push_back(ticket);
    }

  std::vector<int> reduced; // all-reduce tickets
  std::set<const PlanBuffer *> reducedGrads;
  auto reduce = [&](const std::vector<const PlanBuffer *> &grads) {
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const PlanBuffer *g : grads)
      if (reducedGrads.insert(g).second)
        ranges.emplace_back(offset(*g, 0), g->numElements());
    if (ranges.empty())
      return;
    int ticket = -1;
    linkCheck(links_->allReduce(replicaLink_, ranges, ticket, error), error);
    reduced.push_back(ticket);
    posted_.push_back(ticket);
  };
  for (const PlanPipeline::Step &a : p.steps) {
    int c = a.chunk, m = a.microbatch;
    const ChunkBuffers &cb = chunks_[c];
    std::string what = stepName + ", " + a.phase + " of chunk " +
                       std::to_string(c) + " microbatch " + std::to_string(m);
    comm_.setContext(what);
    auto start = std::chrono::steady_clock::now();
    bool forward = a.phase == 'F', backward = a.phase == 'B';
    const auto &out = forward ? cb.actOut : cb.gradOut;
    int to = forward ? c + 1 : c - 1;
    if (forward && program)
      queueInputs(cb, m);
    else if (forward)
      stageInputs(cb, batches[m], m);
    if (forward || backward) {
      waitFor(receives[{c, m, backward}]);
      waitFor(sends[{c, slotOf(out, m), backward}]);
    }
    const std::string &function = forward    ? cb.forward
                                  : backward ? cb.backward
                                             : cb.weight;
    runFunction(function, m, what, program);
    // The replicas' gradients, summed as soon as the step's last
    // microbatch has made them.
    if (p.dp > 1 && m == M - 1 && (a.phase == 'W' || cb.weight.empty()) &&
        !forward) {
      std::vector<const PlanBuffer *> grads;
      for (auto &[action, bucket] : finalAt_[c])
        grads.insert(grads.end(), bucket.begin(), bucket.end());
      reduce(grads);
    }
    if (forward && c == numChunks_ - 1 && program) {
      // Read after the step (microbatch order, as here).
      linkCheck(exec_.device()->download(pinned_ + lossAt(m), offset(*loss_, m),
                                         4, error),
                error);
    } else if (forward && c == numChunks_ - 1) {
      toHost(*loss_, m);
      localLoss += *static_cast<const float *>(exec_.buffer(*loss_, m));
    } else if ((forward || backward) && to >= 0 && to < numChunks_) {
      for (size_t i = 0; i < out.size(); ++i) {
        if (local(to)) {
          // Another chunk of this rank.
          copyLocal(*out[i],
                    *(forward ? chunks_[to].actIn : chunks_[to].gradIn)[i], m);
          continue;
        }
        int ticket = -1;
        linkCheck(links_->send(sendLink_.at(comm_.stageRank(stageOf(to))), 1,
                               offset(*out[i], m), out[i]->bytes, ticket,
                               error),
                  error);
        sends[{c, slotOf(out, m), backward}].push_back(ticket);
        posted_.push_back(ticket);
      }
    }
    if (!program)
      recordTime(a, step, start);
  }
  comm_.setContext(stepName + ", after the last backward");
  if (p.dp > 1)
    reduce(grads_); // accumulators no action wrote

  // Tied parameters: each accumulator goes out once the replicas have
  // summed it; what comes in was received into its own buffer.
  for (const PlanPipeline::Exchange &e : p.exchanges) {
    if (!e.send)
      continue;
    const PlanBuffer &b = plan_.buffers.at(e.buffer);
    int link = sendLink_.at(comm_.stageRank(e.peer));
    for (int t : reduced)
      links_->after(t, link);
    int ticket = -1;
    linkCheck(links_->send(link, 1, offset(b, 0), b.bytes, ticket, error),
              error);
    posted_.push_back(ticket);
  }
  // The gradient norms read the sums and the received accumulators.
  waitFor(reduced);
  waitFor(receives[{-1, 0, false}]);
}

void PipelineStep::runStaged(int64_t step,
                             const std::vector<Microbatch> &batches,
                             float &localLoss) {
  const PlanPipeline &p = plan_.pipeline;
  int M = static_cast<int>(plan_.microbatches);
  std::string stepName = "step " + std::to_string(step + 1);
  using Key = std::tuple<int, int, bool>; // chunk, microbatch, gradient
  std::map<Key, std::vector<Comm::Request>> receives;
  // Sends in flight, by the chunk, slot and direction of the buffers they
  // read: the next microbatch that writes that slot waits for them.
  std::map<Key, std::vector<Comm::Request>> sends;
  auto slotOf = [&](const std::vector<const PlanBuffer *> &buffers, int m) {
    return buffers.empty() ? 0 : m % buffers.front()->slots;
  };
  auto drain = [&](std::vector<Comm::Request> &requests) {
    for (Comm::Request &r : requests)
      comm_.wait(r);
    requests.clear();
  };

  // Every receive of the step, up front: boundary buffers have a slot per
  // microbatch, so nothing a sender does can wait for a slot here.
  comm_.setContext(stepName + ", posting receives");
  for (int c = 0; c < numChunks_; ++c) {
    if (!local(c))
      continue;
    const ChunkBuffers &cb = chunks_[c];
    for (int m = 0; m < M; ++m) {
      if (c > 0 && !local(c - 1))
        for (size_t i = 0; i < cb.actIn.size(); ++i)
          receives[{c, m, false}].push_back(comm_.irecv(
              exec_.buffer(*cb.actIn[i], m), cb.actIn[i]->bytes,
              comm_.stageRank(stageOf(c - 1)), tag(c - 1, m, false, i),
              "the activation of chunk " + std::to_string(c) + ", microbatch " +
                  std::to_string(m)));
      if (c + 1 < numChunks_ && !local(c + 1))
        for (size_t i = 0; i < cb.gradIn.size(); ++i)
          receives[{c, m, true}].push_back(comm_.irecv(
              exec_.buffer(*cb.gradIn[i], m), cb.gradIn[i]->bytes,
              comm_.stageRank(stageOf(c + 1)), tag(c + 1, m, true, i),
              "the gradient of chunk " + std::to_string(c) + ", microbatch " +
                  std::to_string(m)));
    }
  }

  // Between the kernels of an action, MPI moves what is in flight (a
  // large send waits for its receiver's reply, which needs a call into
  // MPI on this side too).
  exec_.setProgress(&PipelineStep::progress, this);
  auto track = [&] {
    inFlight_.clear();
    for (auto *group : {&receives, &sends})
      for (auto &[key, requests] : *group)
        for (Comm::Request &r : requests)
          if (r.pending)
            inFlight_.push_back(&r);
  };
  track();
  for (const PlanPipeline::Step &a : p.steps) {
    int c = a.chunk, m = a.microbatch;
    const ChunkBuffers &cb = chunks_[c];
    std::string what = stepName + ", " + a.phase + " of chunk " +
                       std::to_string(c) + " microbatch " + std::to_string(m);
    comm_.setContext(what);
    // The action's own time: after its inputs arrived.
    auto start = std::chrono::steady_clock::now();
    if (a.phase == 'F') {
      stageInputs(cb, batches[m], m);
      for (Comm::Request &r : receives[{c, m, false}])
        comm_.wait(r);
      if (c > 0 && !local(c - 1))
        for (const PlanBuffer *b : cb.actIn)
          toDevice(*b, m);
      drain(sends[{c, slotOf(cb.actOut, m), false}]);
      start = std::chrono::steady_clock::now();
      runFunction(cb.forward, m, what);
      if (c == numChunks_ - 1) {
        toHost(*loss_, m);
        localLoss += *static_cast<const float *>(exec_.buffer(*loss_, m));
      } else if (local(c + 1)) {
        for (size_t i = 0; i < cb.actOut.size(); ++i) {
          copyLocal(*cb.actOut[i], *chunks_[c + 1].actIn[i], m);
        }
      } else {
        for (size_t i = 0; i < cb.actOut.size(); ++i) {
          toHost(*cb.actOut[i], m);
          sends[{c, slotOf(cb.actOut, m), false}].push_back(
              comm_.isend(exec_.buffer(*cb.actOut[i], m), cb.actOut[i]->bytes,
                          comm_.stageRank(stageOf(c + 1)), tag(c, m, false, i),
                          "the activation of chunk " + std::to_string(c) +
                              ", microbatch " + std::to_string(m)));
        }
      }
    } else if (a.phase == 'B') {
      for (Comm::Request &r : receives[{c, m, true}])
        comm_.wait(r);
      if (c + 1 < numChunks_ && !local(c + 1))
        for (const PlanBuffer *b : cb.gradIn)
          toDevice(*b, m);
      drain(sends[{c, slotOf(cb.gradOut, m), true}]);
      start = std::chrono::steady_clock::now();
      if (p.dp > 1 && cb.weight.empty() && m == M - 1)
        bucketing_ = &finalAt_[c];
      runFunction(cb.backward, m, what);
      bucketing_ = nullptr;
      if (c > 0 && local(c - 1)) {
        for (size_t i = 0; i < cb.gradOut.size(); ++i) {
          copyLocal(*cb.gradOut[i], *chunks_[c - 1].gradIn[i], m);
        }
      } else if (c > 0) {
        for (size_t i = 0; i < cb.gradOut.size(); ++i) {
          toHost(*cb.gradOut[i], m);
          sends[{c, slotOf(cb.gradOut, m), true}].push_back(
              comm_.isend(exec_.buffer(*cb.gradOut[i], m), cb.gradOut[i]->bytes,
                          comm_.stageRank(stageOf(c - 1)), tag(c, m, true, i),
                          "the gradient of chunk " + std::to_string(c) +
                              ", microbatch " + std::to_string(m)));
        }
      }
    } else {
      if (p.dp > 1 && m == M - 1)
        bucketing_ = &finalAt_[c];
      runFunction(cb.weight, m, what);
      bucketing_ = nullptr;
    }
    recordTime(a, step, start);
    // What is still in flight, for the next action's kernels to progress.
    track();
  }
  inFlight_.clear();
  exec_.setProgress(nullptr, nullptr);
  comm_.setContext(stepName + ", after the last backward");
  for (auto &[key, requests] : sends)
    drain(requests);

  // Data parallel: the replicas' gradients summed (the loss seed already
  // divides by every replica's microbatches). Most all-reduces started
  // during the last backward; the rest (accumulators no action wrote)
  // start now.
  // (A device's actions report no progress, so there all start now,
  // through the host.)
  if (p.dp > 1) {
    for (const PlanBuffer *g : grads_)
      if (!reduced_.count(g)) {
        toHost(*g, 0);
        allReduces_.push_back(comm_.startAllReduceReplicas(
            static_cast<float *>(exec_.buffer(*g)),
            static_cast<size_t>(g->numElements()),
            "the gradient all-reduce of " + g->name));
      }
    for (Comm::Request &r : allReduces_)
      comm_.wait(r);
    if (exec_.device())
      for (const PlanBuffer *g : grads_)
        toDevice(*g, 0);
    allReduces_.clear();
    reduced_.clear();
  }

  // Tied parameters: every rank that holds one gets all its accumulators.
  int base = numChunks_ * M * 2 * 64;
  std::vector<Comm::Request> exchange;
  for (const PlanPipeline::Exchange &e : p.exchanges) {
    const PlanBuffer &b = plan_.buffers.at(e.buffer);
    int peer = comm_.stageRank(e.peer);
    if (e.send)
      toHost(b, 0);
    exchange.push_back(
        e.send ? comm_.isend(exec_.buffer(b), b.bytes, peer, base + e.tag,
                             "the accumulator " + b.name)
               : comm_.irecv(exec_.buffer(b), b.bytes, peer, base + e.tag,
                             "the accumulator " + b.name));
  }
  for (Comm::Request &r : exchange)
    comm_.wait(r);
  for (const PlanPipeline::Exchange &e : p.exchanges)
    if (!e.send)
      toDevice(plan_.buffers.at(e.buffer), 0);
}

void PipelineStep::run(int64_t step, int64_t totalSteps,
                       const std::vector<Microbatch> &batches,
                       double &lossSum) {
  std::string stepName = "step " + std::to_string(step + 1);
  // In f32 and microbatch order, as one rank sums it.
  float localLoss = 0;
  if (pinned_ && stepsRun_++ > 0 && !recording_) {
    runProgram(step, totalSteps, batches, localLoss);
    lossSum = localLoss;
    comm_.allReduceWorld(&lossSum, 1, "the loss");
    return;
  }
  if (links_)
    runLinked(step, batches, localLoss, /*program=*/false);
  else
    runStaged(step, batches, localLoss);

  // Each parameter's squared norm from the stage that owns it (the others
  // write zero there, and x + 0 is exact), then the optimizer on every
  // stage.
  runFunction(gradNorms_, 0, stepName + ", gradient norms");
  for (const PlanBuffer *b : norms_) {
    toHost(*b, 0);
    auto *norms = static_cast<float *>(exec_.buffer(*b));
    comm_.allReducePipeline(norms, static_cast<size_t>(b->numElements()),
                            "the gradient norms");
    toDevice(*b, 0);
  }
  *static_cast<int64_t *>(exec_.buffer(*stepBuf_)) = step;
  *static_cast<int64_t *>(exec_.buffer(*totalBuf_)) = totalSteps;
  // (Scalars such as these go up and come back with every run.)
  runFunction(optimizer_, 0, stepName + ", optimizer step");
  if (links_) {
    // What this step sent has left before the next step writes it again.
    comm_.setContext(stepName + ", after the optimizer step");
    std::string error;
    linkCheck(links_->finish(error), error);
  }

  // The loss lives on the last stage of each replica (the others add 0).
  lossSum = localLoss;
  comm_.allReduceWorld(&lossSum, 1, "the loss");
}

void PipelineStep::queueInputs(const ChunkBuffers &cb, int m) {
  std::string error;
  auto up = [&](const std::vector<const PlanBuffer *> &buffers, int64_t at) {
    for (const PlanBuffer *b : buffers)
      linkCheck(exec_.device()->upload(pinned_ + at, arenaOffset(exec_, *b, m),
                                       b->bytes, error),
                error);
  };
  up(cb.tokens, tokensAt(m));
  up(cb.targets, targetsAt(m));
}

void PipelineStep::runProgram(int64_t step, int64_t totalSteps,
                              const std::vector<Microbatch> &batches,
                              float &localLoss) {
  std::string stepName = "step " + std::to_string(step + 1);
  int64_t M = plan_.microbatches;
  for (int64_t m = 0; m < M; ++m) {
    std::memcpy(pinned_ + tokensAt(m), batches[m].tokens.data(), rowBytes_);
    std::memcpy(pinned_ + targetsAt(m), batches[m].targets.data(), rowBytes_);
  }
  std::memcpy(pinned_ + scalarAt(0), &step, 8);
  std::memcpy(pinned_ + scalarAt(1), &totalSteps, 8);
  Device &device = *exec_.device();
  auto queue = [&](std::string &error) {
    float unused = 0;
    runLinked(step, batches, unused, /*program=*/true);
    runFunction(gradNorms_, 0, stepName + ", gradient norms", /*queued=*/true);
    if (stageLink_ >= 0) {
      std::vector<std::pair<int64_t, int64_t>> ranges;
      for (const PlanBuffer *b : norms_)
        ranges.emplace_back(arenaOffset(exec_, *b, 0), b->numElements());
      int ticket = -1;
      if (!links_->allReduce(stageLink_, ranges, ticket, error))
        return false;
      posted_.push_back(ticket);
    }
    // The optimizer reads the norms' sums, and the step ends after every
    // transfer it posted (a CUDA graph's capture must end joined).
    for (int t : posted_)
      links_->after(t);
    return device.upload(pinned_ + scalarAt(0),
                         arenaOffset(exec_, *stepBuf_, 0), 8, error) &&
           device.upload(pinned_ + scalarAt(1),
                         arenaOffset(exec_, *totalBuf_, 0), 8, error) &&
           exec_.queueRun(optimizer_, 0, error) &&
           device.download(pinned_ + scalarAt(2), arenaOffset(exec_, *lr_, 0),
                           4, error) &&
           device.download(pinned_ + scalarAt(3),
                           arenaOffset(exec_, *gradNorm_, 0), 4, error);
  };
  comm_.setContext(stepName + ", queued whole");
  std::string error;
  if (!device.replay(0, queue, error) || !device.wait(error) ||
      !links_->finish(error))
    comm_.abort("rank " + std::to_string(comm_.worldRank()) + ", " + stepName +
                ": " + error);
  if (local(numChunks_ - 1))
    for (int64_t m = 0; m < M; ++m) {
      float loss = 0;
      std::memcpy(&loss, pinned_ + lossAt(m), 4);
      localLoss += loss;
    }
  // Where lr() and gradNorm() read them.
  std::memcpy(exec_.buffer(*lr_), pinned_ + scalarAt(2), 4);
  std::memcpy(exec_.buffer(*gradNorm_), pinned_ + scalarAt(3), 4);
}

float PipelineStep::lr() const {
  return *static_cast<const float *>(
      static_cast<const Executor &>(exec_).buffer(*lr_));
}

float PipelineStep::gradNorm() const {
  return *static_cast<const float *>(
      static_cast<const Executor &>(exec_).buffer(*gradNorm_));
}
