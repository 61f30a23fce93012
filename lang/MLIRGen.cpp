//===- MLIRGen.cpp - From a checked Program to the nn dialect -------------===//

#include "lang/MLIRGen.h"

#include "dialects/nn/NNAttrs.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/SourceMgr.h"

using namespace hotstage::lang;

namespace {
class MLIRGen {
public:
  MLIRGen(mlir::MLIRContext &context, const Program &program,
          const llvm::SourceMgr &sourceMgr)
      : context(context), builder(&context), program(program),
        sourceMgr(sourceMgr) {}

  mlir::OwningOpRef<mlir::ModuleOp> run();

private:
  mlir::Location loc(llvm::SMLoc smloc, llvm::StringRef scope = "");
  mlir::Type elementType(DType dtype);
  mlir::RankedTensorType tensorType(const TensorType &type);
  void emitNode(const Node &node);

  mlir::MLIRContext &context;
  mlir::OpBuilder builder;
  const Program &program;
  const llvm::SourceMgr &sourceMgr;
  std::vector<mlir::Value> values;
};
} // namespace

mlir::Location MLIRGen::loc(llvm::SMLoc smloc, llvm::StringRef scope) {
  mlir::Location result = mlir::UnknownLoc::get(&context);
  if (unsigned buffer =
          smloc.isValid() ? sourceMgr.FindBufferContainingLoc(smloc) : 0) {
    auto [line, col] = sourceMgr.getLineAndColumn(smloc, buffer);
    result = mlir::FileLineColLoc::get(
        builder.getStringAttr(
            sourceMgr.getMemoryBuffer(buffer)->getBufferIdentifier()),
        line, col);
  }
  if (!scope.empty())
    result = mlir::NameLoc::get(builder.getStringAttr(scope), result);
  return result;
}

mlir::Type MLIRGen::elementType(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return builder.getF32Type();
  case DType::BF16:
    return builder.getBF16Type();
  case DType::F16:
    return builder.getF16Type();
  case DType::I32:
    return builder.getI32Type();
  case DType::I64:
    return builder.getI64Type();
  }
  return {};
}

mlir::RankedTensorType MLIRGen::tensorType(const TensorType &type) {
  return mlir::RankedTensorType::get(type.shape, elementType(type.dtype));
}

static hotstage::nn::InitKind initKind(InitKind kind) {
  switch (kind) {
  case InitKind::Zeros:
    return hotstage::nn::InitKind::Zeros;
  case InitKind::Ones:
    return hotstage::nn::InitKind::Ones;
  case InitKind::Constant:
    return hotstage::nn::InitKind::Constant;
  case InitKind::Normal:
    return hotstage::nn::InitKind::Normal;
  case InitKind::Uniform:
    return hotstage::nn::InitKind::Uniform;
  }
  return hotstage::nn::InitKind::Zeros;
}

void MLIRGen::emitNode(const Node &node) {
  mlir::OperationState state(loc(node.loc, node.scope),
                             ("nn." + opName(node.kind)).str());
  for (unsigned operand : node.operands)
    state.addOperands(values[operand]);
  for (unsigned i = 0; i < node.numResults; ++i)
    state.addTypes(tensorType(program.values[node.firstResult + i]));
  auto i64 = [&](int64_t v) { return builder.getI64IntegerAttr(v); };
  auto f64 = [&](double v) { return builder.getF64FloatAttr(v); };
  switch (node.kind) {
  case OpKind::ParamRef:
    state.addAttribute("name",
                       mlir::FlatSymbolRefAttr::get(&context, node.name));
    break;
  case OpKind::Constant: {
    auto type = tensorType(program.values[node.firstResult]);
    mlir::Attribute element =
        isFloat(program.values[node.firstResult].dtype)
            ? mlir::Attribute(
                  builder.getFloatAttr(type.getElementType(), node.f))
            : mlir::Attribute(builder.getIntegerAttr(type.getElementType(),
                                                     int64_t(node.f)));
    state.addAttribute("value", mlir::DenseElementsAttr::get(type, element));
    break;
  }
  case OpKind::Gelu:
    state.addAttribute("approximate",
                       builder.getStringAttr(node.flag ? "tanh" : "none"));
    break;
  case OpKind::ReduceSum:
  case OpKind::ReduceMean:
  case OpKind::ReduceMax:
    state.addAttribute("axes", builder.getDenseI64ArrayAttr(node.ints));
    if (node.flag)
      state.addAttribute("keepdim", builder.getUnitAttr());
    break;
  case OpKind::Softmax:
  case OpKind::Split:
  case OpKind::Concat:
    state.addAttribute("axis", i64(node.axis));
    break;
  case OpKind::LayerNorm:
  case OpKind::RmsNorm:
    state.addAttribute("eps", f64(node.f));
    break;
  case OpKind::Attention:
    state.addAttribute("heads", i64(node.heads));
    if (node.kvHeads != node.heads)
      state.addAttribute("kv_heads", i64(node.kvHeads));
    if (node.flag)
      state.addAttribute("causal", builder.getUnitAttr());
    if (node.f != 0)
      state.addAttribute("scale", f64(node.f));
    break;
  case OpKind::Rope:
    state.addAttribute("heads", i64(node.heads));
    state.addAttribute("theta", f64(node.f));
    break;
  case OpKind::Transpose:
    state.addAttribute("perm", builder.getDenseI64ArrayAttr(node.ints));
    break;
  case OpKind::Slice:
    state.addAttribute("offsets", builder.getDenseI64ArrayAttr(node.ints));
    break;
  default:
    break;
  }
  mlir::Operation *op = builder.create(state);
  for (mlir::Value result : op->getResults())
    values.push_back(result);
}

mlir::OwningOpRef<mlir::ModuleOp> MLIRGen::run() {
  context.loadDialect<hotstage::nn::NNDialect, mlir::func::FuncDialect>();
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::ModuleOp::create(loc(program.modelLoc));

  llvm::SmallVector<mlir::NamedAttribute> train;
  for (const TrainField &f : program.train) {
    mlir::Attribute value;
    switch (f.kind) {
    case TrainField::Kind::Int:
      value = builder.getI64IntegerAttr(f.i);
      break;
    case TrainField::Kind::Float:
      value = builder.getF64FloatAttr(f.f);
      break;
    case TrainField::Kind::Name:
      value = builder.getStringAttr(f.s);
      break;
    }
    train.push_back(builder.getNamedAttr(f.name, value));
  }
  (*module)->setAttr("nn.model", builder.getStringAttr(program.modelName));
  (*module)->setAttr("nn.train", builder.getDictionaryAttr(train));

  builder.setInsertionPointToEnd(module->getBody());
  for (const Param &p : program.params) {
    hotstage::nn::InitAttr init;
    switch (p.init) {
    case InitKind::Zeros:
    case InitKind::Ones:
      init = hotstage::nn::InitAttr::get(&context, initKind(p.init));
      break;
    case InitKind::Constant:
      init = hotstage::nn::InitAttr::get(&context, initKind(p.init), p.a);
      break;
    case InitKind::Normal:
    case InitKind::Uniform:
      init = hotstage::nn::InitAttr::get(&context, initKind(p.init), p.a, p.b);
      break;
    }
    hotstage::nn::ParamOp::create(builder, loc(p.loc), p.path,
                                  tensorType(p.type), init);
  }

  llvm::SmallVector<mlir::Type> inputTypes;
  for (const Input &input : program.inputs)
    inputTypes.push_back(tensorType(input.type));
  auto resultType = tensorType(program.values[program.output]);
  auto func = mlir::func::FuncOp::create(
      builder, loc(program.modelLoc), "forward",
      builder.getFunctionType(inputTypes, {resultType}));
  mlir::Block *entry = func.addEntryBlock();
  for (auto [i, input] : llvm::enumerate(program.inputs)) {
    func.setArgAttr(i, "nn.name", builder.getStringAttr(input.name));
    values.push_back(entry->getArgument(i));
  }
  builder.setInsertionPointToStart(entry);
  for (const Node &node : program.nodes)
    emitNode(node);
  mlir::func::ReturnOp::create(builder, loc(program.modelLoc),
                               values[program.output]);

  if (mlir::failed(mlir::verify(*module)))
    return nullptr;
  return module;
}

mlir::OwningOpRef<mlir::ModuleOp>
hotstage::lang::mlirGen(mlir::MLIRContext &context, const Program &program,
                        const llvm::SourceMgr &sourceMgr) {
  return MLIRGen(context, program, sourceMgr).run();
}
