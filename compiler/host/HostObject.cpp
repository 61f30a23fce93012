//===- HostObject.cpp - Host kernels to a native object file -------------===//

#include "compiler/host/HostObject.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/IR/Constants.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/TargetParser/Triple.h"

using namespace mlir;
using namespace hotstage;

namespace {
/// tanh, erf and exp as polynomials: inline and vectorizable where libm
/// calls are neither.
struct ApproximateMath : PassWrapper<ApproximateMath, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(ApproximateMath)
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<arith::ArithDialect, math::MathDialect,
                    vector::VectorDialect>();
  }
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populatePolynomialApproximateTanhPattern(patterns);
    populatePolynomialApproximateErfPattern(patterns);
    // exp dominates softmax and attention, where a libm call per score
    // kept the loops scalar.
    populateMathPolynomialApproximationPatterns(
        patterns, [](StringRef name) { return name == "math.exp"; });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

/// bf16 widened and rounded by integer ops: LLVM's x86 back end otherwise
/// calls __truncsfbf2 (compiler-rt's, which GCC 12's libgcc lacks) where
/// the CPU has no AVX512-BF16, and rounds as the hardware does (denormals
/// flushed) where it has; these give the same bits on every CPU, as the
/// GPU's cvt.rn.bf16.f32 does.
struct ExpandBFloat16 : PassWrapper<ExpandBFloat16, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(ExpandBFloat16)
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<arith::ArithDialect, vector::VectorDialect>();
  }
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    arith::populateExpandBFloat16Patterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace

LogicalResult host::lowerKernelsToLLVM(ModuleOp kernels) {
  PassManager pm(kernels.getContext());
  pm.addPass(createConvertLinalgToLoopsPass());
  pm.addPass(std::make_unique<ApproximateMath>());
  pm.addPass(std::make_unique<ExpandBFloat16>());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertVectorToLLVMPass());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  ConvertFuncToLLVMPassOptions funcOptions;
  funcOptions.useBarePtrCallConv = true;
  pm.addPass(createConvertFuncToLLVMPass(funcOptions));
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  return pm.run(kernels);
}

LogicalResult host::emitHostObject(ModuleOp kernels,
                                   const std::vector<std::string> &table,
                                   const std::string &planText,
                                   llvm::raw_pwrite_stream &os, bool emitObject,
                                   std::string &error,
                                   const std::string *deviceImage) {
  registerBuiltinDialectTranslation(*kernels.getContext());
  registerLLVMDialectTranslation(*kernels.getContext());
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> module =
      translateModuleToLLVMIR(kernels, llvmContext, "hotstage_kernels");
  if (!module) {
    error = "cannot translate the kernels to LLVM IR";
    return failure();
  }

  // Reassociation and contraction let LLVM vectorize the reductions and
  // use FMAs; the code, and so the rounding, is fixed at compile time.
  // Elementwise kernels keep IEEE order: then a fused group computes
  // bitwise what its ops compute apart, and where fusion cuts (which
  // differs between a whole model and its pipeline stages) never changes a
  // result.
  auto reassociates = [](llvm::StringRef kernel) {
    for (const char *op : {"reduce", "norm", "softmax", "cross_entropy",
                           "attention", "scale_grad", "embedding_grad"})
      if (kernel.contains(op))
        return true;
    return false;
  };
  for (llvm::Function &f : *module)
    if (reassociates(f.getName()))
      for (llvm::BasicBlock &bb : f)
        for (llvm::Instruction &inst : bb)
          if (isa<llvm::FPMathOperator>(inst) &&
              (inst.getOpcode() == llvm::Instruction::FAdd ||
               inst.getOpcode() == llvm::Instruction::FMul ||
               inst.getOpcode() == llvm::Instruction::FSub)) {
            inst.setHasAllowReassoc(true);
            inst.setHasAllowContract(true);
          }

  // The kernel table and the plan.
  llvm::PointerType *ptr = llvm::PointerType::getUnqual(llvmContext);
  std::vector<llvm::Constant *> entries;
  for (const std::string &name : table) {
    if (deviceImage) {
      entries.push_back(llvm::ConstantPointerNull::get(ptr));
      continue;
    }
    llvm::Function *f = module->getFunction(name);
    if (!f) {
      error = "kernel " + name + " is missing";
      return failure();
    }
    entries.push_back(f);
  }
  auto *tableType = llvm::ArrayType::get(ptr, entries.size());
  new llvm::GlobalVariable(
      *module, tableType, true, llvm::GlobalValue::ExternalLinkage,
      llvm::ConstantArray::get(tableType, entries), "hotstage_kernels");
  auto *i64 = llvm::Type::getInt64Ty(llvmContext);
  new llvm::GlobalVariable(
      *module, i64, true, llvm::GlobalValue::ExternalLinkage,
      llvm::ConstantInt::get(i64, entries.size()), "hotstage_num_kernels");
  auto *text = llvm::ConstantDataArray::getString(llvmContext, planText);
  new llvm::GlobalVariable(*module, text->getType(), true,
                           llvm::GlobalValue::ExternalLinkage, text,
                           "hotstage_plan");
  if (deviceImage) {
    // 16-byte aligned: the driver reads the fatbin's header in place.
    auto *image = llvm::ConstantDataArray::getRaw(
        *deviceImage, deviceImage->size(), llvm::Type::getInt8Ty(llvmContext));
    auto *global = new llvm::GlobalVariable(*module, image->getType(), true,
                                            llvm::GlobalValue::ExternalLinkage,
                                            image, "hotstage_device_image");
    global->setAlignment(llvm::Align(16));
    new llvm::GlobalVariable(*module, i64, true,
                             llvm::GlobalValue::ExternalLinkage,
                             llvm::ConstantInt::get(i64, deviceImage->size()),
                             "hotstage_device_image_size");
  }

  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::Triple triple(llvm::sys::getProcessTriple());
  std::string lookupError;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, lookupError);
  if (!target) {
    error = lookupError;
    return failure();
  }
  llvm::SubtargetFeatures features;
  for (auto &feature : llvm::sys::getHostCPUFeatures())
    features.AddFeature(feature.first(), feature.second);
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, llvm::sys::getHostCPUName(), features.getString(), options,
      llvm::Reloc::PIC_, std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  module->setTargetTriple(triple);
  module->setDataLayout(machine->createDataLayout());
  for (llvm::Function &f : *module) {
    if (f.isDeclaration())
      continue;
    f.addFnAttr("target-cpu", machine->getTargetCPU());
    f.addFnAttr("target-features", machine->getTargetFeatureString());
  }

  // -O3.
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder builder(machine.get());
  builder.registerModuleAnalyses(mam);
  builder.registerCGSCCAnalyses(cgam);
  builder.registerFunctionAnalyses(fam);
  builder.registerLoopAnalyses(lam);
  builder.crossRegisterProxies(lam, fam, cgam, mam);
  builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3)
      .run(*module, mam);

  if (!emitObject) {
    module->print(os, nullptr);
    return success();
  }
  llvm::legacy::PassManager codegen;
  if (machine->addPassesToEmitFile(codegen, os, nullptr,
                                   llvm::CodeGenFileType::ObjectFile)) {
    error = "the host target cannot emit object files";
    return failure();
  }
  codegen.run(*module);
  return success();
}
