//===- CudaKernels.cpp - Kernels for NVIDIA GPUs: PTX and cubins ---------===//

#include "compiler/cuda/CudaKernels.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <cstdlib>

using namespace mlir;
using namespace hotstage;

std::vector<std::string> cuda::Target::cubinArchs() const {
  std::vector<std::string> archs{arch};
  if (arch != "sm_80")
    archs.push_back("sm_80");
  return archs;
}

bool cuda::parseTarget(llvm::StringRef text, Target &target,
                       std::string &error) {
  if (text == "cuda") {
    target.arch = "sm_90a";
    return true;
  }
  llvm::StringRef arch = text;
  if (!arch.consume_front("cuda:")) {
    error = "unknown target '" + text.str() +
            "'; expected host, cuda or cuda:sm_XY (for example cuda:sm_90a)";
    return false;
  }
  unsigned version = 0;
  llvm::StringRef digits = arch;
  bool named = digits.consume_front("sm_");
  digits.consume_back("a"); // sm_90a: Hopper's arch-specific features
  if (!named || digits.getAsInteger(10, version) || version < 80) {
    error = "unsupported GPU architecture '" + arch.str() +
            "'; Hotstage needs sm_80 (A100) or newer";
    return false;
  }
  target.arch = arch.str();
  return true;
}

std::string cuda::toolkitPath() {
  for (const char *name : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *value = std::getenv(name); value && *value)
      return value;
  if (llvm::sys::fs::exists("/usr/local/cuda/bin/ptxas"))
    return "/usr/local/cuda";
  if (auto ptxas = llvm::sys::findProgramByName("ptxas"))
    return llvm::sys::path::parent_path(llvm::sys::path::parent_path(*ptxas))
        .str();
  return "/usr/local/cuda";
}

static void registerGpuLowering(MLIRContext &context) {
  DialectRegistry registry;
  registry.insert<gpu::GPUDialect, NVVM::NVVMDialect, LLVM::LLVMDialect,
                  vector::VectorDialect, cf::ControlFlowDialect,
                  scf::SCFDialect, affine::AffineDialect>();
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  arith::registerConvertArithToLLVMInterface(registry);
  cf::registerConvertControlFlowToLLVMInterface(registry);
  registerConvertFuncToLLVMInterface(registry);
  registerConvertMathToLLVMInterface(registry);
  registerConvertMemRefToLLVMInterface(registry);
  registerConvertNVVMToLLVMInterface(registry);
  vector::registerConvertVectorToLLVMInterface(registry);
  NVVM::registerConvertGpuToNVVMInterface(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
}

/// Moves every kernel into `gpu.module @hotstage_kernels` and gives each
/// name of `table` an entry point: thread i of the grid runs the kernel's
/// range [i, i + 1) when i < parallel.
static LogicalResult wrapInGpuModule(ModuleOp kernels,
                                     const std::vector<std::string> &table,
                                     std::string &error) {
  MLIRContext *ctx = kernels.getContext();
  OpBuilder b(ctx);
  Location loc = kernels.getLoc();
  kernels->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                   b.getUnitAttr());
  b.setInsertionPointToStart(kernels.getBody());
  auto gpuModule = gpu::GPUModuleOp::create(b, loc, "hotstage_kernels");
  for (func::FuncOp f :
       llvm::make_early_inc_range(kernels.getOps<func::FuncOp>())) {
    f->moveBefore(gpuModule.getBody(), gpuModule.getBody()->end());
    f.setPrivate();
    // Inlined into its entry point whatever its size: called on its own, a
    // kernel's buffers lose the entry's 16-byte alignment (no 128-bit
    // loads) and its address space (generic loads).
    // Internal, so that LLVM drops it once inlined (ptxas assembles
    // every visible function).
    if (!f.isDeclaration()) {
      f->setAttr("always_inline", b.getUnitAttr());
      f->setAttr("llvm.linkage",
                 LLVM::LinkageAttr::get(ctx, LLVM::Linkage::Internal));
    }
  }
  // Shared memory (the row reductions' pairs of a block's warps).
  for (memref::GlobalOp global :
       llvm::make_early_inc_range(kernels.getOps<memref::GlobalOp>()))
    global->moveBefore(gpuModule.getBody(), gpuModule.getBody()->end());
  SymbolTable symbols(gpuModule);
  b.setInsertionPointToEnd(gpuModule.getBody());
  for (const std::string &name : table) {
    auto kernel = symbols.lookup<func::FuncOp>(name);
    if (!kernel) {
      error = "kernel " + name + " is missing";
      return failure();
    }
    // The kernel's buffers, then its [begin, end): the entry point takes
    // the buffers and the range's size.
    ArrayRef<Type> inputs = kernel.getFunctionType().getInputs();
    SmallVector<Type> params(inputs.drop_back(2));
    params.push_back(b.getIndexType());
    auto entry = gpu::GPUFuncOp::create(b, loc, name + cuda::kEntrySuffix,
                                        b.getFunctionType(params, {}));
    entry->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
    // A kernel whose blocks must have a size (HostLowering's
    // hotstage.block): ptxas then fits its registers to that many threads.
    if (auto block = kernel->getAttrOfType<IntegerAttr>("hotstage.block"))
      entry.setKnownBlockSizeAttr(
          b.getDenseI32ArrayAttr({static_cast<int32_t>(block.getInt()), 1, 1}));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&entry.getBody().front());
    Value block = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
    Value size = gpu::BlockDimOp::create(b, loc, gpu::Dimension::x);
    Value thread = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
    Value i = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, block, size), thread);
    Value parallel = entry.getArgument(params.size() - 1);
    Value inRange =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i, parallel);
    auto guardOp = scf::IfOp::create(b, loc, inRange, /*withElse=*/false);
    b.setInsertionPointToStart(&guardOp.getThenRegion().front());
    // Every buffer of the plan starts on a 64-byte boundary (of the arena,
    // itself 256-byte aligned): said here, a kernel's neighbouring loads
    // of a 16-byte chunk become one 128-bit load.
    SmallVector<Value> args;
    for (Value arg : entry.getArguments().drop_back())
      args.push_back(
          isa<MemRefType>(arg.getType())
              ? memref::AssumeAlignmentOp::create(b, loc, arg, 16).getResult()
              : arg);
    args.push_back(i);
    args.push_back(arith::AddIOp::create(
        b, loc, i, arith::ConstantIndexOp::create(b, loc, 1)));
    func::CallOp::create(b, loc, kernel, args);
    b.setInsertionPointToEnd(&entry.getBody().front());
    gpu::ReturnOp::create(b, loc);
  }
  return success();
}

FailureOr<std::string>
cuda::lowerKernelsToPTX(ModuleOp kernels, const std::vector<std::string> &table,
                        const Target &target, std::string &error) {
  MLIRContext &context = *kernels.getContext();
  registerGpuLowering(context);
  {
    PassManager pm(&context);
    pm.addPass(createConvertLinalgToLoopsPass());
    pm.addPass(memref::createExpandStridedMetadataPass());
    pm.addPass(createLowerAffinePass());
    if (failed(pm.run(kernels))) {
      error = "cannot lower the kernels to loops";
      return failure();
    }
  }
  // Square roots rounded as IEEE and the host have them (libdevice's
  // __nv_fsqrt_rn: sqrt.rn), not as its default approximation: the GPU
  // then differs from the host only in exp/tanh/erf's last bits and in
  // summation order.
  func::FuncOp sqrtRn;
  kernels.walk([&](Operation *op) {
    if (!isa<math::SqrtOp, math::RsqrtOp>(op) ||
        !op->getResult(0).getType().isF32())
      return;
    OpBuilder b(op);
    Location loc = op->getLoc();
    if (!sqrtRn) {
      OpBuilder top(kernels.getBodyRegion());
      sqrtRn = func::FuncOp::create(
          top, loc, "__nv_fsqrt_rn",
          top.getFunctionType({top.getF32Type()}, {top.getF32Type()}));
      sqrtRn.setPrivate();
    }
    Value root =
        func::CallOp::create(b, loc, sqrtRn, op->getOperand(0)).getResult(0);
    if (isa<math::RsqrtOp>(op))
      root = arith::DivFOp::create(
          b, loc, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0)),
          root);
    op->getResult(0).replaceAllUsesWith(root);
    op->erase();
  });
  if (failed(wrapInGpuModule(kernels, table, error)))
    return failure();

  // One PTX for every architecture: it targets the oldest one, so that the
  // newer ones' ptxas and the driver's JIT both take it.
  std::string ptxArch = target.cubinArchs().back();
  PassManager pm(&context);
  pm.addPass(createSCFToControlFlowPass());
  GpuNVVMAttachTargetOptions attach;
  attach.chip = ptxArch;
  attach.features = "+ptx80";
  attach.optLevel = 3;
  std::string libdevice = toolkitPath() + "/nvvm/libdevice/libdevice.10.bc";
  if (!llvm::sys::fs::exists(libdevice)) {
    error = "cannot find libdevice at " + libdevice +
            " (set CUDA_HOME to the CUDA toolkit)";
    return failure();
  }
  attach.linkLibs.push_back(libdevice);
  pm.addPass(createGpuNVVMAttachTarget(attach));
  OpPassManager &gpuPm = pm.nest<gpu::GPUModuleOp>();
  ConvertGpuOpsToNVVMOpsOptions toNVVM;
  toNVVM.useBarePtrCallConv = true;
  gpuPm.addPass(createConvertGpuOpsToNVVMOps(toNVVM));
  gpuPm.addPass(createReconcileUnrealizedCastsPass());
  GpuModuleToBinaryPassOptions toBinary;
  toBinary.compilationTarget = "isa";
  toBinary.toolkitPath = toolkitPath();
  pm.addPass(createGpuModuleToBinaryPass(toBinary));
  if (failed(pm.run(kernels))) {
    error = "cannot lower the kernels to PTX";
    return failure();
  }
  for (auto binary : kernels.getOps<gpu::BinaryOp>())
    for (Attribute object : binary.getObjects())
      return cast<gpu::ObjectAttr>(object).getObject().str();
  error = "the GPU lowering produced no PTX";
  return failure();
}

/// Runs `program` with `args`; false with its output in `error` when it
/// fails.
static bool runTool(const std::string &program,
                    llvm::ArrayRef<std::string> args, std::string &error) {
  llvm::SmallString<128> log;
  llvm::sys::fs::createTemporaryFile("hotstage-tool", "log", log);
  llvm::SmallVector<llvm::StringRef> argv{program};
  for (const std::string &a : args)
    argv.push_back(a);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, log.str(),
                                                log.str()};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(program, argv, std::nullopt, redirects, 0,
                                     0, &message);
  auto output = llvm::MemoryBuffer::getFile(log);
  llvm::sys::fs::remove(log);
  if (rc == 0)
    return true;
  error = llvm::sys::path::filename(program).str() + " failed" +
          (message.empty() ? "" : " (" + message + ")") +
          (output ? ":\n" + (*output)->getBuffer().rtrim().str() : "");
  return false;
}

FailureOr<std::string> cuda::buildImage(const std::string &ptx,
                                        const Target &target,
                                        std::string &error) {
  std::string bin = toolkitPath() + "/bin/";
  for (const char *tool : {"ptxas", "fatbinary"})
    if (!llvm::sys::fs::can_execute(bin + tool)) {
      error = "cannot find " + bin + tool +
              " (the CUDA target needs the CUDA toolkit; set CUDA_HOME)";
      return failure();
    }
  llvm::SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("hotstage-cuda", dir)) {
    error = "cannot create a temporary folder";
    return failure();
  }
  llvm::scope_exit cleanUp([&] { llvm::sys::fs::remove_directories(dir); });
  std::string ptxFile = (dir + "/kernels.ptx").str();
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(ptxFile, ec);
    if (ec) {
      error = "cannot write " + ptxFile + ": " + ec.message();
      return failure();
    }
    os << ptx;
  }
  std::vector<std::string> fatbinArgs{"--create", (dir + "/image.fatbin").str(),
                                      "-64"};
  for (const std::string &arch : target.cubinArchs()) {
    std::string cubin = (dir + "/" + arch + ".cubin").str();
    if (!runTool(bin + "ptxas", {"-O3", "-arch=" + arch, ptxFile, "-o", cubin},
                 error))
      return failure();
    fatbinArgs.push_back("--image3=kind=elf,sm=" + arch.substr(3) +
                         ",file=" + cubin);
  }
  std::string ptxArch = target.cubinArchs().back().substr(3);
  fatbinArgs.push_back("--image3=kind=ptx,sm=" + ptxArch + ",file=" + ptxFile);
  if (!runTool(bin + "fatbinary", fatbinArgs, error))
    return failure();
  auto image = llvm::MemoryBuffer::getFile(dir + "/image.fatbin");
  if (!image) {
    error = "fatbinary wrote no image";
    return failure();
  }
  return (*image)->getBuffer().str();
}
