//===- CudaDevice.cpp - The CUDA target: kernels and GEMMs on a GPU -------===//
//
// The plan's kernels come from the fatbin the compiler embedded
// (`hotstage_device_image`: a cubin per architecture and the PTX), loaded
// with the driver API; GEMMs go through cuBLASLt with the algorithm chosen
// once per GEMM at startup. The arena is one device allocation. Every
// action runs on one stream. A function run by itself ends with a stream
// synchronisation; a whole step (Device::replay) is one CUDA graph, which
// copies the microbatches' tokens in and the scalars out itself, from and
// to pinned host memory, and is waited for once.
//
// The driver (libcuda.so.1) is opened at run time rather than linked: an
// executable built for a GPU then starts anywhere and says clearly that
// it found no driver or no GPU.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudnnAttention.h"
#include "runtime/cuda/NcclLinks.h"
#include "runtime/host/ActionProfile.h"
#include "runtime/host/Device.h"
#include "runtime/host/HostGemm.h"

#include <cublasLt.h>
#include <cuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>

using namespace hotstage::rt;

extern "C" const unsigned char hotstage_device_image[];
extern "C" const int64_t hotstage_device_image_size;

namespace {

const char *cublasName(cublasStatus_t status) {
  switch (status) {
  case CUBLAS_STATUS_NOT_INITIALIZED:
    return "CUBLAS_STATUS_NOT_INITIALIZED";
  case CUBLAS_STATUS_ALLOC_FAILED:
    return "CUBLAS_STATUS_ALLOC_FAILED";
  case CUBLAS_STATUS_INVALID_VALUE:
    return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_ARCH_MISMATCH:
    return "CUBLAS_STATUS_ARCH_MISMATCH";
  case CUBLAS_STATUS_EXECUTION_FAILED:
    return "CUBLAS_STATUS_EXECUTION_FAILED";
  case CUBLAS_STATUS_NOT_SUPPORTED:
    return "CUBLAS_STATUS_NOT_SUPPORTED";
  default:
    return "a cuBLAS error";
  }
}

/// One GEMM of the plan as cuBLASLt runs it: row-major C = op(A) op(B) is
/// column-major C^T = op(B)^T op(A)^T, so B is cuBLASLt's first operand.
/// f32 or bf16 inputs (precision = bf16), f32 accumulation, f32 output or
/// bf16 (from bf16 inputs, with a bf16 bias: Dtype's, as cuBLASLt wants).
struct Gemm {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t first = nullptr, second = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo;
  /// HOTSTAGE_GEMM_AUTOTUNE: the heuristic's candidates, timed once.
  std::vector<cublasLtMatmulAlgo_t> candidates;
};

class CudaDevice final : public Device {
public:
  ~CudaDevice() override;
  bool init(const Plan &plan, std::string &error);
  std::string name() const override { return name_; }
  bool run(const std::string &function, const std::vector<PlanAction> &actions,
           int slot, std::string &error) override;
  bool upload(const char *host, int64_t offset, int64_t bytes,
              std::string &error) override;
  bool download(char *host, int64_t offset, int64_t bytes,
                std::string &error) override;
  bool copy(int64_t from, int64_t to, int64_t bytes,
            std::string &error) override {
    return bytes == 0 ||
           check(driver_.cuMemcpyDtoDAsync(arena_ + to, arena_ + from,
                                           static_cast<size_t>(bytes), stream_),
                 "copying " + std::to_string(bytes) + " bytes on the GPU",
                 error);
  }
  char *hostMemory(int64_t bytes, std::string &error) override;
  bool replay(int key, const std::function<bool(std::string &)> &queue,
              std::string &error) override;
  bool wait(std::string &error) override {
    return synchronize("a step", error);
  }
  DeviceLinks *links(double timeout, std::string &why) override;

private:
  /// What `queue` puts on the stream, as a graph ready to launch.
  bool capture(const std::string &what,
               const std::function<bool(std::string &)> &queue,
               CUgraphExec &exec, std::string &error);
  /// After a failed capture (`error`): says so and launches from then on.
  bool withoutGraphs(std::string &error);
  /// Whether [host, host + bytes) lies in hostMemory(): a graph copies
  /// from pinned memory only.
  bool pinned(const char *host, int64_t bytes) const {
    for (auto [memory, size] : hostMemory_)
      if (host >= memory && host + bytes <= memory + size)
        return true;
    return false;
  }
  /// Waits for the stream; with links, at most the job's timeout without
  /// progress (a peer's transfer may be what it waits for).
  bool synchronize(const std::string &what, std::string &error) {
    if (!(links_ && links_->active()
              ? links_->wait(stream_, what, error)
              : check(driver_.cuStreamSynchronize(stream_), what, error)))
      return false;
    stagingUsed_ = 0; // the copies from it are done
    return true;
  }
  bool check(CUresult result, const std::string &what, std::string &error);
  bool check(cublasStatus_t status, const std::string &what,
             std::string &error);
  bool prepareGemm(const PlanAction &a, Gemm &gemm, std::string &error);
  /// D = op(A) op(B) (+ C) of plan GEMM `a` on its slot's buffers, with
  /// `algo`, on the stream.
  cublasStatus_t launchGemm(const PlanAction &a, const Gemm &g,
                            const cublasLtMatmulAlgo_t &algo, int slot);
  /// HOTSTAGE_GEMM_AUTOTUNE=1: each GEMM of a distinct shape times the
  /// heuristic's first candidates on the (still zero) arena and keeps the
  /// fastest, as XLA autotunes; the others take the result of its shape.
  bool autotuneGemms(std::string &error);
  void setEpiloguePointers(const PlanAction &a, Gemm &gemm, int slot) {
    // (A bias gradient is written where a bias is read.)
    for (auto [arg, attribute] :
         {std::pair{a.biasArg, CUBLASLT_MATMUL_DESC_BIAS_POINTER},
          std::pair{a.bgradArg, CUBLASLT_MATMUL_DESC_BIAS_POINTER},
          std::pair{a.auxArg, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER}}) {
      if (arg < 0)
        continue;
      auto *p = reinterpret_cast<void *>(pointer(a.buffers[arg], slot));
      cublasLtMatmulDescSetAttribute(gemm.desc, attribute, &p, sizeof(p));
    }
  }
  /// Puts the function's actions on the stream, one launch each.
  bool enqueue(const std::string &function,
               const std::vector<PlanAction> &actions, int slot,
               std::string &error);
  CUdeviceptr pointer(int buffer, int slot) const {
    const PlanBuffer &b = plan_->buffers.at(buffer);
    return arena_ + b.offset + (slot % b.slots) * b.slotStride();
  }

  CudaDriver driver_;
  const Plan *plan_ = nullptr;
  std::string name_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  CUmodule module_ = nullptr;
  CUstream stream_ = nullptr;
  CUdeviceptr arena_ = 0, workspace_ = 0;
  // Pinned host memory that small uploads (a microbatch's tokens, the
  // scalars) and downloads pass through: a copy from pageable memory is
  // staged by the driver and returns only once staged, one from pinned
  // memory is a DMA in stream order. Filled from the start after each
  // synchronisation.
  char *staging_ = nullptr;
  int64_t stagingBytes_ = 8 << 20, stagingUsed_ = 0;
  size_t workspaceBytes_ = 32 << 20;
  cublasLtHandle_t blas_ = nullptr;
  std::vector<CUfunction> kernels_;
  std::map<const PlanAction *, Gemm> gemms_;
  // The plan's fused attention (cuDNN), released before the context.
  std::unique_ptr<CudnnAttention> attention_;
  CUdeviceptr attentionWorkspace_ = 0;
  bool graphs_ = true;
  bool autotune_ = false;
  std::map<std::pair<std::string, int>, CUgraphExec> graphExecs_;
  // Whole steps (replay): while `queuing_`, runs and copies only go on the
  // stream, to be captured.
  bool queuing_ = false;
  std::map<int, CUgraphExec> programs_;
  std::vector<std::pair<char *, int64_t>> hostMemory_;
  // Transfers between the ranks' GPUs (NCCL), once a multi-rank job asks.
  std::unique_ptr<NcclLinks> links_;

  // HOTSTAGE_PROFILE=1: each action timed with events (no graphs), summed
  // by function and op, printed at exit with the GEMMs' TFLOP/s.
  bool profile_ = false;
  std::vector<CUevent> events_; // two per action of the longest function
  ActionProfile profileTable_;
};

bool CudaDevice::check(CUresult result, const std::string &what,
                       std::string &error) {
  if (result == CUDA_SUCCESS)
    return true;
  if (result == CUDA_ERROR_STUB_LIBRARY) {
    error = what + ": the NVIDIA driver found is the CUDA toolkit's stub "
                   "library, not a driver";
    return false;
  }
  const char *name = nullptr, *text = nullptr;
  driver_.cuGetErrorName(result, &name);
  driver_.cuGetErrorString(result, &text);
  error = what + ": " +
          (name ? std::string(name)
                : "CUDA error " + std::to_string(static_cast<int>(result))) +
          " (" + (text ? text : "no description") + ")";
  return false;
}

bool CudaDevice::check(cublasStatus_t status, const std::string &what,
                       std::string &error) {
  if (status == CUBLAS_STATUS_SUCCESS)
    return true;
  error = what + ": " + cublasName(status);
  return false;
}

bool CudaDevice::init(const Plan &plan, std::string &error) {
  plan_ = &plan;
  attention_ = std::make_unique<CudnnAttention>();
  if (!attention_->load(plan, error) || !driver_.load(error))
    return false;
  CUresult status = driver_.cuInit(0);
  if (status == CUDA_ERROR_NO_DEVICE) {
    error = "no CUDA GPU on this machine (this executable was built for "
            "--target cuda)";
    return false;
  }
  if (!check(status, "cuInit", error))
    return false;
  // One GPU per rank: the launcher's local rank picks it.
  int ordinal = 0;
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                           "SLURM_LOCALID", "LOCAL_RANK"})
    if (const char *value = std::getenv(name)) {
      ordinal = std::atoi(value);
      break;
    }
  int count = 0;
  if (!check(driver_.cuDeviceGetCount(&count), "cuDeviceGetCount", error))
    return false;
  if (count == 0) {
    error = "no CUDA GPU on this machine";
    return false;
  }
  ordinal %= count;
  if (!check(driver_.cuDeviceGet(&device_, ordinal), "cuDeviceGet", error) ||
      !check(driver_.cuDevicePrimaryCtxRetain(&context_, device_),
             "cuDevicePrimaryCtxRetain", error) ||
      !check(driver_.cuCtxSetCurrent(context_), "cuCtxSetCurrent", error))
    return false;
  char text[256] = {};
  int major = 0, minor = 0;
  driver_.cuDeviceGetName(text, sizeof(text), device_);
  driver_.cuDeviceGetAttribute(
      &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device_);
  driver_.cuDeviceGetAttribute(
      &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device_);
  name_ = std::string(text) + " (sm_" + std::to_string(major) +
          std::to_string(minor) + ", GPU " + std::to_string(ordinal) + ")";

  if (!check(driver_.cuModuleLoadData(&module_, hotstage_device_image),
             "loading the kernels (" +
                 std::to_string(hotstage_device_image_size) +
                 "-byte fatbin) on " + name_,
             error))
    return false;
  for (const std::string &kernel : plan.kernels) {
    CUfunction fn = nullptr;
    if (!check(driver_.cuModuleGetFunction(&fn, module_,
                                           (kernel + "_gpu").c_str()),
               "kernel " + kernel, error))
      return false;
    kernels_.push_back(fn);
  }
  size_t bytes = static_cast<size_t>(std::max<int64_t>(plan.arenaBytes, 256));
  if (!check(driver_.cuMemAlloc(&arena_, bytes),
             "allocating the arena of " + std::to_string(bytes) + " bytes on " +
                 name_,
             error) ||
      !check(driver_.cuMemsetD8(arena_, 0, bytes), "clearing the arena",
             error) ||
      !check(driver_.cuMemAlloc(&workspace_, workspaceBytes_),
             "allocating the GEMM workspace", error) ||
      !check(driver_.cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING),
             "cuStreamCreate", error) ||
      !check(driver_.cuMemHostAlloc(reinterpret_cast<void **>(&staging_),
                                    static_cast<size_t>(stagingBytes_), 0),
             "allocating pinned host memory for the copies", error))
    return false;
  if (!check(cublasLtCreate(&blas_), "cublasLtCreate", error))
    return false;
  if (!attention_->init(stream_, error))
    return false;
  if (int64_t bytes = attention_->workspaceBytes();
      bytes > 0 && !check(driver_.cuMemAlloc(&attentionWorkspace_, bytes),
                          "allocating cuDNN's attention workspace", error))
    return false;
  if (const char *graphs = std::getenv("HOTSTAGE_CUDA_GRAPHS"))
    graphs_ = std::atoi(graphs) != 0;
  profile_ = std::getenv("HOTSTAGE_PROFILE") != nullptr;
  if (profile_) {
    graphs_ = false;
    size_t longest = 0;
    for (const auto &[name, actions] : plan.functions)
      longest = std::max(longest, actions.size());
    events_.resize(2 * longest);
    for (CUevent &e : events_)
      if (!check(driver_.cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate",
                 error))
        return false;
  }
  // Every GEMM's descriptors and algorithm, chosen once.
  if (const char *tune = std::getenv("HOTSTAGE_GEMM_AUTOTUNE"))
    autotune_ = std::atoi(tune) != 0;
  for (const auto &[name, actions] : plan.functions)
    for (const PlanAction &a : actions)
      if (a.gemm && !prepareGemm(a, gemms_[&a], error)) {
        error = name + ", GEMM " + a.note + ": " + error;
        return false;
      }
  return !autotune_ || autotuneGemms(error);
}

cublasStatus_t CudaDevice::launchGemm(const PlanAction &a, const Gemm &g,
                                      const cublasLtMatmulAlgo_t &algo,
                                      int slot) {
  float one = 1.0f, beta = a.accumulate || a.addendArg >= 0 ? 1.0f : 0.0f;
  CUdeviceptr A = pointer(a.buffers[0], slot), B = pointer(a.buffers[1], slot),
              D = pointer(a.buffers[2], slot),
              C = a.addendArg >= 0 ? pointer(a.buffers[a.addendArg], slot) : D;
  return cublasLtMatmul(
      blas_, g.desc, &one, reinterpret_cast<void *>(B), g.first,
      reinterpret_cast<void *>(A), g.second, &beta, reinterpret_cast<void *>(C),
      g.out, reinterpret_cast<void *>(D), g.out, &algo,
      reinterpret_cast<void *>(workspace_), workspaceBytes_, stream_);
}

bool CudaDevice::autotuneGemms(std::string &error) {
  // The arena is still all zeros (parameters arrive later), so every
  // candidate writes zeros where it writes, and an accumulating one adds
  // zero: timing leaves nothing behind. (Zeros can run a little faster
  // than real data, alike for every candidate.)
  CUevent start = nullptr, stop = nullptr;
  if (!check(driver_.cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate",
             error) ||
      !check(driver_.cuEventCreate(&stop, CU_EVENT_DEFAULT), "cuEventCreate",
             error))
    return false;
  std::map<std::string, cublasLtMatmulAlgo_t> chosen; // by shape
  bool ok = true;
  int tuned = 0;
  for (auto &[action, g] : gemms_) {
    const PlanAction &a = *action;
    if (g.candidates.size() < 2)
      continue;
    std::string key;
    for (int64_t v : {a.m, a.n, a.k, a.lda, a.ldb, a.ldc, a.strideA, a.strideB,
                      a.strideC, a.batch})
      key += std::to_string(v) + ",";
    key += std::to_string(a.transA) + std::to_string(a.transB) +
           std::to_string(a.accumulate) + std::to_string(a.bf16) +
           std::to_string(a.bf16Out) + std::to_string(a.biasArg >= 0) +
           std::to_string(a.addendArg >= 0) + std::to_string(a.auxArg >= 0) +
           std::to_string(a.bgradArg >= 0) + a.activation;
    if (auto it = chosen.find(key); it != chosen.end()) {
      g.algo = it->second;
      continue;
    }
    float best = -1;
    for (const cublasLtMatmulAlgo_t &algo : g.candidates) {
      // Two warm-up runs, then the median of five.
      std::vector<float> times;
      bool failed = false;
      for (int run = 0; run < 7 && !failed; ++run) {
        driver_.cuEventRecord(start, stream_);
        failed = launchGemm(a, g, algo, 0) != CUBLAS_STATUS_SUCCESS;
        driver_.cuEventRecord(stop, stream_);
        float ms = 0;
        if (!check(driver_.cuStreamSynchronize(stream_),
                   "timing GEMM " + a.note, error)) {
          ok = false;
          failed = true;
          break;
        }
        driver_.cuEventElapsedTime(&ms, start, stop);
        if (run >= 2)
          times.push_back(ms);
      }
      if (!ok)
        break;
      if (failed) // an algorithm that refuses these pointers is skipped
        continue;
      std::sort(times.begin(), times.end());
      float median = times[times.size() / 2];
      if (best < 0 || median < best) {
        best = median;
        g.algo = algo;
      }
    }
    if (!ok)
      break;
    chosen[key] = g.algo;
    ++tuned;
  }
  driver_.cuEventDestroy(start);
  driver_.cuEventDestroy(stop);
  if (ok)
    std::fprintf(stderr, "HOTSTAGE_GEMM_AUTOTUNE: %d GEMM shapes timed\n",
                 tuned);
  return ok;
}

bool CudaDevice::prepareGemm(const PlanAction &a, Gemm &g, std::string &error) {
  if (!check(cublasLtMatmulDescCreate(&g.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
             "cublasLtMatmulDescCreate", error))
    return false;
  cublasOperation_t opFirst = a.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opSecond = a.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opFirst,
                                 sizeof(opFirst));
  cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opSecond,
                                 sizeof(opSecond));
  // The plan's epilogue (bias and aux have D's type; cuBLASLt's GELU is
  // the tanh form). An addend is the C of D = AB + C.
  bool bias = a.biasArg >= 0, aux = a.auxArg >= 0;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  if (a.activation == "gelu_tanh")
    epilogue =
        aux ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                    : CUBLASLT_EPILOGUE_GELU_AUX)
            : (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU);
  else if (a.activation == "dgelu_tanh")
    epilogue = CUBLASLT_EPILOGUE_DGELU;
  else if (bias)
    epilogue = CUBLASLT_EPILOGUE_BIAS;
  else if (a.bgradArg >= 0) {
    // Sums over k of cuBLASLt's second operand, our A (the output
    // gradient; row-major C = A B is column-major C^T = B^T A^T), one per
    // column of its D: M of them, f32.
    epilogue = CUBLASLT_EPILOGUE_BGRADB;
    cudaDataType type = CUDA_R_32F;
    cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                   &type, sizeof(type));
  }
  cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                 &epilogue, sizeof(epilogue));
  if (aux) {
    int64_t ld = a.n; // D's rows, column-major
    cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                   &ld, sizeof(ld));
  }
  // The heuristic reads the pointers' alignment: slot 0's stand for all.
  setEpiloguePointers(a, g, 0);
  // Column-major shapes of the stored matrices (rows, columns, leading
  // dimension) and their batch strides.
  auto layout = [&](cublasLtMatrixLayout_t &l, uint64_t rows, uint64_t cols,
                    int64_t ld, int64_t stride, bool input) {
    cudaDataType type = (input ? a.bf16 : a.bf16Out) ? CUDA_R_16BF : CUDA_R_32F;
    if (!check(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld),
               "cublasLtMatrixLayoutCreate", error))
      return false;
    int32_t batch = static_cast<int32_t>(a.batch);
    cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                     &batch, sizeof(batch));
    cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
        sizeof(stride));
    return true;
  };
  // Leading dimensions are the stored rows: a padded buffer's pitch.
  int64_t m = a.m, n = a.n, k = a.k;
  if (!(a.transB ? layout(g.first, k, n, a.ldb, a.strideB, true)
                 : layout(g.first, n, k, a.ldb, a.strideB, true)) ||
      !(a.transA ? layout(g.second, m, k, a.lda, a.strideA, true)
                 : layout(g.second, k, m, a.lda, a.strideA, true)) ||
      !layout(g.out, n, m, a.ldc, a.strideC, false))
    return false;
  cublasLtMatmulPreference_t preference = nullptr;
  if (!check(cublasLtMatmulPreferenceCreate(&preference),
             "cublasLtMatmulPreferenceCreate", error))
    return false;
  cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspaceBytes_,
      sizeof(workspaceBytes_));
  // The heuristic's first choice, or its first eight to time
  // (autotuneGemms).
  cublasLtMatmulHeuristicResult_t results[8] = {};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      blas_, g.desc, g.first, g.second, g.out, g.out, preference,
      autotune_ ? 8 : 1, results, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  if (!check(status, "cublasLtMatmulAlgoGetHeuristic", error))
    return false;
  if (found == 0) {
    error = "cuBLASLt has no algorithm for " + std::to_string(m) + "x" +
            std::to_string(n) + "x" + std::to_string(k);
    return false;
  }
  g.algo = results[0].algo;
  if (autotune_)
    for (int i = 0; i < found; ++i)
      g.candidates.push_back(results[i].algo);
  return true;
}

CudaDevice::~CudaDevice() {
  if (profile_)
    profileTable_.print(stderr, name_);
  links_.reset();
  attention_.reset();
  if (staging_)
    driver_.cuMemFreeHost(staging_);
  for (auto [memory, size] : hostMemory_)
    driver_.cuMemFreeHost(memory);
  for (auto &[key, exec] : programs_)
    driver_.cuGraphExecDestroy(exec);
  if (attentionWorkspace_)
    driver_.cuMemFree(attentionWorkspace_);
  for (CUevent e : events_)
    driver_.cuEventDestroy(e);
  for (auto &[key, exec] : graphExecs_)
    driver_.cuGraphExecDestroy(exec);
  for (auto &[action, g] : gemms_) {
    if (g.desc)
      cublasLtMatmulDescDestroy(g.desc);
    for (cublasLtMatrixLayout_t l : {g.first, g.second, g.out})
      if (l)
        cublasLtMatrixLayoutDestroy(l);
  }
  if (blas_)
    cublasLtDestroy(blas_);
  if (stream_)
    driver_.cuStreamDestroy(stream_);
  if (workspace_)
    driver_.cuMemFree(workspace_);
  if (arena_)
    driver_.cuMemFree(arena_);
  if (module_)
    driver_.cuModuleUnload(module_);
  if (context_)
    driver_.cuDevicePrimaryCtxRelease(device_);
}

bool CudaDevice::run(const std::string &function,
                     const std::vector<PlanAction> &actions, int slot,
                     std::string &error) {
  // What it was told to wait for (transfers between ranks), before any
  // launch: a graph's launches then follow it too.
  if (links_ && !links_->beforeRun(error))
    return false;
  if (queuing_)
    return enqueue(function, actions, slot, error);
  if (!graphs_) {
    if (!enqueue(function, actions, slot, error) ||
        !synchronize(function, error))
      return false;
    for (size_t i = 0; profile_ && i < actions.size(); ++i) {
      const PlanAction &a = actions[i];
      float ms = 0;
      driver_.cuEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]);
      profileTable_.add(function, a, *plan_, ms);
    }
    return true;
  }
  auto key = std::make_pair(function, slot);
  auto it = graphExecs_.find(key);
  if (it == graphExecs_.end()) {
    // The first run records the function's launches; they read their
    // buffers when replayed, so one graph serves every step.
    CUgraphExec exec = nullptr;
    if (!capture(
            function,
            [&](std::string &error) {
              return enqueue(function, actions, slot, error);
            },
            exec, error))
      return withoutGraphs(error) && run(function, actions, slot, error);
    it = graphExecs_.emplace(key, exec).first;
  }
  return check(driver_.cuGraphLaunch(it->second, stream_),
               function + ": cuGraphLaunch", error) &&
         synchronize(function, error);
}

bool CudaDevice::withoutGraphs(std::string &error) {
  // Nothing captured has run: the same work, launched, gives the same
  // results; where the fault is the work's, launching it fails too.
  std::fprintf(stderr,
               "note: the GPU's work cannot be captured as a CUDA graph (%s); "
               "its actions are launched one by one instead\n",
               error.c_str());
  error.clear();
  graphs_ = false;
  return true;
}

bool CudaDevice::capture(const std::string &what,
                         const std::function<bool(std::string &)> &queue,
                         CUgraphExec &exec, std::string &error) {
  CUgraph graph = nullptr;
  if (!check(driver_.cuStreamBeginCapture(stream_,
                                          CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
             what + ": cuStreamBeginCapture", error))
    return false;
  bool queued = queue(error);
  CUresult ended = driver_.cuStreamEndCapture(stream_, &graph);
  if (!queued || !check(ended, what + ": cuStreamEndCapture", error)) {
    if (graph)
      driver_.cuGraphDestroy(graph);
    return false;
  }
  CUresult made = driver_.cuGraphInstantiate(&exec, graph, 0);
  driver_.cuGraphDestroy(graph);
  return check(made, what + ": cuGraphInstantiate", error);
}

char *CudaDevice::hostMemory(int64_t bytes, std::string &error) {
  void *memory = nullptr;
  if (!check(driver_.cuMemHostAlloc(&memory, static_cast<size_t>(bytes), 0),
             "allocating " + std::to_string(bytes) + " bytes of pinned memory",
             error))
    return nullptr;
  std::memset(memory, 0, static_cast<size_t>(bytes));
  hostMemory_.push_back({static_cast<char *>(memory), bytes});
  return static_cast<char *>(memory);
}

bool CudaDevice::replay(int key,
                        const std::function<bool(std::string &)> &queue,
                        std::string &error) {
  // The profile times each action with events and waits after each run.
  if (profile_)
    return queue(error);
  if (!graphs_) {
    queuing_ = true;
    bool queued = queue(error);
    queuing_ = false;
    return queued;
  }
  auto it = programs_.find(key);
  if (it == programs_.end()) {
    CUgraphExec exec = nullptr;
    queuing_ = true;
    bool captured = capture("a step", queue, exec, error);
    queuing_ = false;
    if (!captured && links_ && links_->active()) {
      // The NCCL transfers of a capture that failed may have paired with
      // a peer's: posting them again could leave the ranks waiting on
      // each other, so the step ends here, saying how to go on.
      error += " (HOTSTAGE_CUDA_GRAPHS=0 launches the step's work instead)";
      return false;
    }
    if (!captured)
      return withoutGraphs(error) && replay(key, queue, error);
    it = programs_.emplace(key, exec).first;
  }
  return check(driver_.cuGraphLaunch(it->second, stream_),
               "a step: cuGraphLaunch", error);
}

bool CudaDevice::enqueue(const std::string &function,
                         const std::vector<PlanAction> &actions, int slot,
                         std::string &error) {
  constexpr unsigned kBlock = 128;
  for (size_t index = 0; index < actions.size(); ++index) {
    const PlanAction &a = actions[index];
    if (profile_)
      driver_.cuEventRecord(events_[2 * index], stream_);
    if (a.gemm) {
      Gemm &g = gemms_.at(&a);
      setEpiloguePointers(a, g, slot);
      if (!check(launchGemm(a, g, g.algo, slot), function + ", GEMM " + a.note,
                 error))
        return false;
      if (profile_)
        driver_.cuEventRecord(events_[2 * index + 1], stream_);
      continue;
    }
    if (a.attention) {
      void *pointers[9];
      for (size_t i = 0; i < a.buffers.size() && i < 9; ++i)
        pointers[i] = reinterpret_cast<void *>(pointer(a.buffers[i], slot));
      if (!attention_->enqueue(a, pointers,
                               reinterpret_cast<void *>(attentionWorkspace_),
                               error)) {
        error = function + ", " + error;
        return false;
      }
      if (profile_)
        driver_.cuEventRecord(events_[2 * index + 1], stream_);
      continue;
    }
    // The kernel's buffers, then the size of its parallel range: one
    // thread per index.
    CUdeviceptr pointers[16];
    void *params[17];
    size_t n = a.buffers.size();
    if (n > 16) {
      error = function + ": an action has " + std::to_string(n) + " buffers";
      return false;
    }
    for (size_t i = 0; i < n; ++i) {
      pointers[i] = pointer(a.buffers[i], slot);
      params[i] = &pointers[i];
    }
    int64_t parallel = a.parallel;
    params[n] = &parallel;
    unsigned block = a.block ? static_cast<unsigned>(a.block) : kBlock;
    unsigned grid = static_cast<unsigned>((parallel + block - 1) / block);
    if (!check(driver_.cuLaunchKernel(kernels_.at(a.kernel), grid, 1, 1, block,
                                      1, 1, 0, stream_, params, nullptr),
               function + ", kernel " + plan_->kernels.at(a.kernel) + " (" +
                   a.note + ")",
               error))
      return false;
    if (profile_)
      driver_.cuEventRecord(events_[2 * index + 1], stream_);
  }
  return true;
}

// Copies go on the actions' stream, so they are ordered with them. Small
// ones pass through the pinned staging memory: an upload is then a memcpy
// here and a DMA queued behind the work before it, and returns at once.
bool CudaDevice::upload(const char *host, int64_t offset, int64_t bytes,
                        std::string &error) {
  if (bytes == 0)
    return true;
  if (queuing_ && !pinned(host, bytes)) {
    error = "internal: a step copies from host memory that is not pinned";
    return false;
  }
  const void *from = host;
  if (!queuing_ && stagingUsed_ + bytes <= stagingBytes_) {
    char *staged = staging_ + stagingUsed_;
    std::memcpy(staged, host, static_cast<size_t>(bytes));
    // (Each copy 64-byte aligned in the staging memory.)
    stagingUsed_ += (bytes + 63) / 64 * 64;
    from = staged;
  }
  return check(driver_.cuMemcpyHtoDAsync(arena_ + offset, from,
                                         static_cast<size_t>(bytes), stream_),
               "copying " + std::to_string(bytes) + " bytes to the GPU", error);
}

bool CudaDevice::download(char *host, int64_t offset, int64_t bytes,
                          std::string &error) {
  if (bytes == 0)
    return true;
  if (queuing_) {
    if (!pinned(host, bytes)) {
      error = "internal: a step copies to host memory that is not pinned";
      return false;
    }
    return check(driver_.cuMemcpyDtoHAsync(host, arena_ + offset,
                                           static_cast<size_t>(bytes), stream_),
                 "copying " + std::to_string(bytes) + " bytes from the GPU",
                 error);
  }
  // Behind the uploads queued since the last synchronisation, whose
  // staging memory must stay as it is until they are done.
  bool staged = stagingUsed_ + bytes <= stagingBytes_;
  char *to = staged ? staging_ + stagingUsed_ : host;
  if (!check(driver_.cuMemcpyDtoHAsync(to, arena_ + offset,
                                       static_cast<size_t>(bytes), stream_),
             "copying " + std::to_string(bytes) + " bytes from the GPU",
             error) ||
      !synchronize("a download", error))
    return false;
  if (staged)
    std::memcpy(host, to, static_cast<size_t>(bytes));
  return true;
}

DeviceLinks *CudaDevice::links(double timeout, std::string &why) {
  if (!links_) {
    auto links =
        std::make_unique<NcclLinks>(driver_, device_, stream_, arena_, timeout);
    if (!links->load(why))
      return nullptr;
    links_ = std::move(links);
  }
  return links_.get();
}

} // namespace

// The executor computes on the host only without a device, which a GPU
// build always has: no oneDNN in it.
void hotstage::rt::hostGemm(const PlanAction &, void *const *, ThreadPool &) {
  std::fprintf(stderr, "error: internal: a host GEMM in a GPU build\n");
  std::abort();
}

void hotstage::rt::hostAttention(const PlanAction &, void *const *,
                                 ThreadPool &) {
  std::fprintf(stderr, "error: internal: host attention in a GPU build\n");
  std::abort();
}

std::unique_ptr<Device> hotstage::rt::createDevice(const Plan &plan,
                                                   const KernelFn *, int,
                                                   std::string &error) {
  auto device = std::make_unique<CudaDevice>();
  if (!device->init(plan, error))
    return nullptr;
  return device;
}
