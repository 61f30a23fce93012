//===- Pipelining.cpp - Partition and schedule of a pipelined build -------===//

#include "compiler/driver/Pipelining.h"
#include "compiler/passes/Passes.h"
#include "dialects/pipe/PipeDialect.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include <algorithm>

using namespace mlir;
using namespace hotstage;

TrainConfig hotstage::readTrainConfig(ModuleOp module) {
  TrainConfig c;
  auto train = module->getAttrOfType<DictionaryAttr>("nn.train");
  if (!train)
    return c;
  auto getInt = [&](StringRef key, int64_t &out) {
    if (auto a = train.getAs<IntegerAttr>(key))
      out = a.getInt();
  };
  auto getString = [&](StringRef key, std::string &out) {
    if (auto a = train.getAs<StringAttr>(key))
      out = a.getValue().str();
  };
  getInt("stages", c.stages);
  getInt("virtual_stages", c.virtualStages);
  getInt("microbatches", c.microbatches);
  getInt("dp", c.dp);
  getInt("batch", c.batch);
  getInt("seq", c.seq);
  getString("schedule", c.schedule);
  getString("layout", c.layout);
  getString("optimizer", c.optimizer);
  if (auto a = train.getAs<FloatAttr>("momentum"))
    c.momentum = a.getValueAsDouble();
  if (c.layout == "none")
    c.layout.clear();
  return c;
}

plan::Pipeline PipelineSetup::rankPipeline(int rank) const {
  plan::Pipeline p;
  p.stages = static_cast<int>(train.stages);
  p.dp = static_cast<int>(train.dp);
  p.rank = rank;
  p.schedule = schedule::kindName(schedule.config.kind);
  p.chunkRank = schedule.chunkRank;
  p.chunkSlots = chunkSlots;
  for (const schedule::Action &a : schedule.ranks[rank])
    p.steps.push_back({schedule::phaseName(a.phase)[0], a.chunk, a.microbatch});
  return p;
}

FailureOr<PipelineSetup> hotstage::setUpPipeline(ModuleOp module) {
  PipelineSetup setup;
  setup.train = readTrainConfig(module);
  const TrainConfig &train = setup.train;

  schedule::Config config;
  if (!schedule::parseKind(train.schedule, config.kind))
    return module.emitError("unknown schedule '")
           << train.schedule << "'; expected " << schedule::kindNames();
  config.stages = static_cast<int>(train.stages);
  config.virtualStages = static_cast<int>(train.virtualStages);
  config.microbatches = static_cast<int>(train.microbatches);
  std::string error;
  if (!schedule::generate(config, setup.schedule, error))
    return module.emitError(error);

  // Costs come from a differentiated copy: B and W apart.
  OwningOpRef<ModuleOp> copy = module.clone();
  PassManager pm(module.getContext(), ModuleOp::getOperationName());
  AutodiffOptions autodiff;
  autodiff.splitBackward = true;
  pm.addPass(createAutodiff(autodiff));
  pm.addNestedPass<func::FuncOp>(createCanonicalizerPass());
  pm.addNestedPass<func::FuncOp>(createCSEPass());
  if (failed(pm.run(*copy)))
    return failure();
  FailureOr<partition::ModelAnalysis> model =
      partition::analyzeModel(*copy, setup.machine);
  if (failed(model))
    return failure();
  setup.model = std::move(*model);

  int numChunks = setup.schedule.numChunks();
  bool ok = train.layout.empty()
                ? partition::balance(setup.model, numChunks, setup.cut, error)
                : partition::applyLayout(setup.model, train.layout, numChunks,
                                         setup.cut, error);
  if (!ok)
    return module.emitError(error);

  schedule::CheckResult checked = schedule::check(setup.schedule);
  if (!checked.ok)
    return module.emitError("internal error: schedule '")
           << train.schedule << "' fails its check: " << checked.error;

  // Microbatches in flight per chunk, walking each rank's actions.
  setup.chunkSlots.assign(numChunks, 1);
  std::vector<int> open(numChunks, 0);
  for (const auto &actions : setup.schedule.ranks)
    for (const schedule::Action &a : actions) {
      bool last =
          a.phase == (setup.schedule.splitBackward ? schedule::Phase::W
                                                   : schedule::Phase::B);
      if (a.phase == schedule::Phase::F)
        setup.chunkSlots[a.chunk] =
            std::max(setup.chunkSlots[a.chunk], ++open[a.chunk]);
      else if (last)
        --open[a.chunk];
    }
  return setup;
}

OwningOpRef<ModuleOp> hotstage::emitPipe(MLIRContext &context,
                                         const PipelineSetup &setup,
                                         const std::vector<plan::Plan> &plans) {
  context.loadDialect<pipe::PipeDialect>();
  Location loc = UnknownLoc::get(&context);
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  OpBuilder b = OpBuilder::atBlockEnd(module->getBody());
  const schedule::Schedule &s = setup.schedule;
  std::vector<int64_t> ranks(s.chunkRank.begin(), s.chunkRank.end());
  auto pipeline = pipe::PipelineOp::create(
      b, loc, b.getStringAttr(schedule::kindName(s.config.kind)),
      b.getI64IntegerAttr(setup.train.stages),
      b.getI64IntegerAttr(setup.train.dp),
      b.getI64IntegerAttr(setup.train.microbatches),
      b.getDenseI64ArrayAttr(ranks));
  pipeline.getBody().emplaceBlock();
  int numChunks = s.numChunks();
  for (int r = 0; r < s.numRanks(); ++r) {
    OpBuilder pb = OpBuilder::atBlockEnd(&pipeline.getBody().front());
    auto rank = pipe::RankOp::create(pb, loc, b.getI64IntegerAttr(r));
    rank.getBody().emplaceBlock();
    OpBuilder rb = OpBuilder::atBlockEnd(&rank.getBody().front());
    auto i64 = [&](int64_t v) { return rb.getI64IntegerAttr(v); };
    auto transfer = [&](bool send, StringRef kind, int chunk, int mb,
                        int peer) {
      if (send)
        pipe::SendOp::create(rb, loc, rb.getStringAttr(kind), i64(chunk),
                             i64(mb), i64(peer));
      else
        pipe::RecvOp::create(rb, loc, rb.getStringAttr(kind), i64(chunk),
                             i64(mb), i64(peer));
    };
    for (const schedule::Action &a : s.ranks[r]) {
      int c = a.chunk, m = a.microbatch;
      switch (a.phase) {
      case schedule::Phase::F:
        if (c > 0 && ranks[c - 1] != r)
          transfer(false, "activation", c - 1, m, ranks[c - 1]);
        pipe::ForwardOp::create(rb, loc, i64(c), i64(m));
        if (c + 1 < numChunks && ranks[c + 1] != r)
          transfer(true, "activation", c, m, ranks[c + 1]);
        break;
      case schedule::Phase::B:
        if (c + 1 < numChunks && ranks[c + 1] != r)
          transfer(false, "gradient", c + 1, m, ranks[c + 1]);
        if (s.splitBackward)
          pipe::BackwardInputOp::create(rb, loc, i64(c), i64(m));
        else
          pipe::BackwardOp::create(rb, loc, i64(c), i64(m));
        if (c > 0 && ranks[c - 1] != r)
          transfer(true, "gradient", c, m, ranks[c - 1]);
        break;
      case schedule::Phase::W:
        pipe::BackwardWeightOp::create(rb, loc, i64(c), i64(m));
        break;
      }
    }
    if (setup.train.dp > 1)
      pipe::AllReduceOp::create(rb, loc, i64(setup.train.dp));
    if (r < static_cast<int>(plans.size()) && plans[r].pipeline)
      for (const plan::Pipeline::Exchange &e : plans[r].pipeline->exchanges)
        pipe::ExchangeOp::create(
            rb, loc, rb.getStringAttr(plans[r].buffers[e.buffer].name),
            rb.getStringAttr(e.send ? "to" : "from"), i64(e.peer));
    pipe::GradNormsOp::create(rb, loc);
    pipe::OptimizerStepOp::create(rb, loc);
  }
  return module;
}
