//===- CudaDriver.h - The CUDA driver API, opened at run time ---*- C++ -*-===//
//
// The driver (libcuda.so.1) is opened at run time rather than linked: an
// executable built for a GPU then starts anywhere and says clearly that it
// found no driver or no GPU. `CudaDriver` holds the functions the runtime
// calls, resolved by dlsym.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_CUDA_CUDADRIVER_H
#define HOTSTAGE_RUNTIME_CUDA_CUDADRIVER_H

#include <cuda.h>
#include <dlfcn.h>

#include <cstdlib>
#include <string>

namespace hotstage::rt {

#define HS_STRING(x) #x
#define HS_SYMBOL(x) HS_STRING(x)
// The driver functions used, by the names cuda.h maps them to (cuMemAlloc
// is cuMemAlloc_v2).
#define HS_DRIVER_FUNCTIONS(X)                                                 \
  X(cuInit)                                                                    \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetName)                                                           \
  X(cuDeviceGetAttribute)                                                      \
  X(cuDeviceGetPCIBusId)                                                       \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuDevicePrimaryCtxRelease)                                                 \
  X(cuCtxSetCurrent)                                                           \
  X(cuModuleLoadData)                                                          \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuMemAlloc)                                                                \
  X(cuMemFree)                                                                 \
  X(cuMemHostAlloc)                                                            \
  X(cuMemFreeHost)                                                             \
  X(cuMemsetD8)                                                                \
  X(cuMemcpyHtoDAsync)                                                         \
  X(cuMemcpyDtoHAsync)                                                         \
  X(cuMemcpyDtoDAsync)                                                         \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy)                                                           \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamQuery)                                                             \
  X(cuStreamWaitEvent)                                                         \
  X(cuStreamBeginCapture)                                                      \
  X(cuStreamEndCapture)                                                        \
  X(cuGraphInstantiate)                                                        \
  X(cuGraphLaunch)                                                             \
  X(cuGraphExecDestroy)                                                        \
  X(cuGraphDestroy)                                                            \
  X(cuEventCreate)                                                             \
  X(cuEventRecord)                                                             \
  X(cuEventElapsedTime)                                                        \
  X(cuEventDestroy)                                                            \
  X(cuLaunchKernel)

struct CudaDriver {
#define HS_MEMBER(fn) decltype(&::fn) fn = nullptr;
  HS_DRIVER_FUNCTIONS(HS_MEMBER)
#undef HS_MEMBER

  bool load(std::string &error) {
    // HOTSTAGE_CUDA_DRIVER names another driver library (tests load the
    // toolkit's stub to check that every function below resolves).
    const char *path = std::getenv("HOTSTAGE_CUDA_DRIVER");
    void *library = dlopen(path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library && path) {
      error = std::string("cannot load the NVIDIA driver ") + path + ": " +
              dlerror();
      return false;
    }
    if (!library) {
      error = "cannot load the NVIDIA driver (libcuda.so.1): this executable "
              "was built for a CUDA GPU (--target cuda) and this machine has "
              "no NVIDIA driver";
      return false;
    }
#define HS_LOAD(fn)                                                            \
  fn = reinterpret_cast<decltype(fn)>(dlsym(library, HS_SYMBOL(fn)));          \
  if (!fn) {                                                                   \
    error = std::string("the NVIDIA driver lacks ") + HS_SYMBOL(fn) +          \
            " (it is older than CUDA 12)";                                     \
    return false;                                                              \
  }
    HS_DRIVER_FUNCTIONS(HS_LOAD)
#undef HS_LOAD
    return true;
  }
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_CUDA_CUDADRIVER_H
