//===- CudnnAttention.cpp - The plan's fused attention through cuDNN ------===//
//
// The one part of the runtime built with exceptions and RTTI, which the
// cuDNN frontend uses; none leaves this file.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/CudnnAttention.h"

#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#include <cudnn_frontend.h>

#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <map>
#include <unordered_map>

// The frontend calls cuDNN through this handle (dynamic loading).
namespace cudnn_frontend {
void *cudnn_dlhandle = nullptr;
} // namespace cudnn_frontend

namespace fe = cudnn_frontend;
using namespace hotstage::rt;

namespace {

// The graphs' tensors, numbered as the plan orders an action's buffers.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

std::string describe(const PlanAction &a) {
  return std::string(a.attention == 1 ? "attention" : "attention gradient") +
         " (batch " + std::to_string(a.batch) + ", seq " +
         std::to_string(a.seq) + ", " + std::to_string(a.heads) + " heads, " +
         std::to_string(a.kvHeads) + " kv heads of " +
         std::to_string(a.headDim) + (a.causal ? ", causal)" : ")");
}

/// cuDNN's SDPA graph for action `a`: [batch, seq, heads * dim] tensors
/// seen as [batch, heads, seq, dim] through their strides.
std::shared_ptr<fe::graph::Graph> buildGraph(const PlanAction &a,
                                             cudnnHandle_t handle,
                                             bool deterministic,
                                             std::string &error) {
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  int64_t b = a.batch, t = a.seq, d = a.headDim;
  auto dims = [&](int64_t heads) {
    return std::vector<int64_t>{b, heads, t, d};
  };
  // Tensor uid's rows (tokens) are a.attentionRow(uid - kQ) apart: a
  // packed QKV buffer's row holds all three.
  auto strides = [&](int64_t uid) {
    int64_t row = a.attentionRow(static_cast<int>(uid - kQ));
    return std::vector<int64_t>{t * row, d, row, 1};
  };
  auto tensor = [&](const char *name, int64_t uid, int64_t heads) {
    return graph->tensor(fe::graph::Tensor_attributes()
                             .set_name(name)
                             .set_uid(uid)
                             .set_dim(dims(heads))
                             .set_stride(strides(uid)));
  };
  std::vector<int64_t> statsDims{b, a.heads, t, 1},
      statsStrides{a.heads * t, t, 1, 1};
  auto q = tensor("Q", kQ, a.heads), k = tensor("K", kK, a.kvHeads),
       v = tensor("V", kV, a.kvHeads);
  if (a.attention == 1) {
    auto options = fe::graph::SDPA_attributes()
                       .set_name("attention")
                       .set_generate_stats(true)
                       .set_causal_mask(a.causal)
                       .set_attn_scale(a.scale);
    auto [o, stats] = graph->sdpa(q, k, v, options);
    o->set_output(true)
        .set_uid(kO)
        .set_dim(dims(a.heads))
        .set_stride(strides(kO));
    stats->set_output(true)
        .set_uid(kStats)
        .set_data_type(fe::DataType_t::FLOAT)
        .set_dim(statsDims)
        .set_stride(statsStrides);
  } else {
    auto o = tensor("O", kO, a.heads), dO = tensor("dO", kDO, a.heads);
    auto stats = graph->tensor(fe::graph::Tensor_attributes()
                                   .set_name("Stats")
                                   .set_uid(kStats)
                                   .set_dim(statsDims)
                                   .set_stride(statsStrides)
                                   .set_data_type(fe::DataType_t::FLOAT));
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("attention_grad")
                       .set_causal_mask(a.causal)
                       .set_attn_scale(a.scale);
    if (deterministic)
      options.set_deterministic_algorithm(true);
    auto [dQ, dK, dV] = graph->sdpa_backward(q, k, v, o, dO, stats, options);
    dQ->set_output(true)
        .set_uid(kDQ)
        .set_dim(dims(a.heads))
        .set_stride(strides(kDQ));
    dK->set_output(true)
        .set_uid(kDK)
        .set_dim(dims(a.kvHeads))
        .set_stride(strides(kDK));
    dV->set_output(true)
        .set_uid(kDV)
        .set_dim(dims(a.kvHeads))
        .set_stride(strides(kDV));
  }
  auto status = graph->build(handle, {fe::HeurMode_t::A});
  if (!status.is_good()) {
    error = status.get_message();
    return nullptr;
  }
  return graph;
}

} // namespace

struct CudnnAttention::State {
  std::vector<const PlanAction *> actions;
  std::string library;
  cudnnHandle_t handle = nullptr;
  std::map<const PlanAction *, std::shared_ptr<fe::graph::Graph>> graphs;
  int64_t workspace = 0;
};

CudnnAttention::CudnnAttention() : state_(std::make_unique<State>()) {}

CudnnAttention::~CudnnAttention() {
  state_->graphs.clear();
  if (state_->handle)
    fe::detail::destroy_handle(state_->handle);
}

int64_t CudnnAttention::workspaceBytes() const { return state_->workspace; }

bool CudnnAttention::load(const Plan &plan, std::string &error) {
  for (const auto &[name, list] : plan.functions)
    for (const PlanAction &a : list)
      if (a.attention)
        state_->actions.push_back(&a);
  if (state_->actions.empty())
    return true;
  const char *path = std::getenv("HOTSTAGE_CUDNN");
  state_->library = path && *path ? path : "libcudnn.so.9";
  void *cudnn = dlopen(state_->library.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!cudnn) {
    const char *why = dlerror();
    error = "the plan's attention runs in cuDNN 9, which did not load (" +
            (why ? std::string(why) : state_->library) +
            "): set HOTSTAGE_CUDNN to a libcudnn.so.9 (PyTorch installs one "
            "under site-packages/nvidia/cudnn/lib), or build with "
            "--sdpa=false";
    return false;
  }
  fe::cudnn_dlhandle = cudnn;
  return true;
}

bool CudnnAttention::init(CUstream stream, std::string &error) {
  const std::vector<const PlanAction *> &actions = state_->actions;
  if (actions.empty())
    return true;
  try {
    if (fe::detail::create_handle(&state_->handle) != CUDNN_STATUS_SUCCESS ||
        fe::detail::set_stream(state_->handle,
                               reinterpret_cast<cudaStream_t>(stream)) !=
            CUDNN_STATUS_SUCCESS) {
      error = "cuDNN (" + state_->library + ") could not start";
      return false;
    }
    for (const PlanAction *a : actions) {
      std::string why;
      // Deterministic gradients (bitwise-equal reruns) where cuDNN has
      // them; else its fastest, said once.
      auto graph = buildGraph(*a, state_->handle, true, why);
      if (!graph && a->attention == 2) {
        std::string first = why;
        graph = buildGraph(*a, state_->handle, false, why);
        if (graph)
          std::fprintf(stderr,
                       "warning: cuDNN has no deterministic %s (%s): its "
                       "gradients may differ in the last bits between runs\n",
                       describe(*a).c_str(), first.c_str());
      }
      if (!graph) {
        error = "cuDNN cannot run the " + describe(*a) + ": " + why;
        return false;
      }
      int64_t bytes = 0;
      if (auto status = graph->get_workspace_size(bytes); !status.is_good()) {
        error = "cuDNN " + describe(*a) + ": " + status.get_message();
        return false;
      }
      state_->workspace = std::max(state_->workspace, bytes);
      state_->graphs[a] = std::move(graph);
    }
    return true;
  } catch (const std::exception &e) {
    error = std::string("cuDNN: ") + e.what();
    return false;
  }
}

bool CudnnAttention::enqueue(const PlanAction &a, void *const *pointers,
                             void *workspace, std::string &error) {
  auto it = state_->graphs.find(&a);
  if (it == state_->graphs.end()) {
    error = "internal: no cuDNN graph for the " + describe(a);
    return false;
  }
  try {
    std::unordered_map<int64_t, void *> pack;
    // A packed QKV buffer's K and V start a few columns into its rows.
    for (size_t i = 0; i < a.buffers.size(); ++i)
      pack[static_cast<int64_t>(i) + kQ] =
          static_cast<char *>(pointers[i]) +
          2 * a.attentionOffset(static_cast<int>(i));
    auto status = it->second->execute(state_->handle, pack, workspace);
    if (!status.is_good()) {
      error = "cuDNN " + describe(a) + ": " + status.get_message();
      return false;
    }
    return true;
  } catch (const std::exception &e) {
    error = "cuDNN " + describe(a) + ": " + e.what();
    return false;
  }
}
