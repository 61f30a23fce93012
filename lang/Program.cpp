//===- Program.cpp - A model after type checking and elaboration ----------===//

#include "lang/Program.h"

#include "llvm/ADT/StringSwitch.h"

#include <cstdio>
#include <cstdlib>

using namespace hotstage::lang;

std::string hotstage::lang::formatNumber(double value) {
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value)
      break;
  }
  std::string text(buf);
  if (text.find_first_of(".einn") == std::string::npos)
    text += ".0";
  return text;
}

llvm::StringRef hotstage::lang::dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "f32";
  case DType::BF16:
    return "bf16";
  case DType::F16:
    return "f16";
  case DType::I32:
    return "i32";
  case DType::I64:
    return "i64";
  }
  return "?";
}

std::optional<DType> hotstage::lang::parseDType(llvm::StringRef name) {
  return llvm::StringSwitch<std::optional<DType>>(name)
      .Case("f32", DType::F32)
      .Case("bf16", DType::BF16)
      .Case("f16", DType::F16)
      .Case("i32", DType::I32)
      .Case("i64", DType::I64)
      .Default(std::nullopt);
}

bool hotstage::lang::isFloat(DType dtype) {
  return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16;
}

int64_t hotstage::lang::dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::BF16:
  case DType::F16:
    return 2;
  case DType::I64:
    return 8;
  default:
    return 4;
  }
}

std::string TensorType::str() const {
  std::string out = dtypeName(dtype).str();
  if (!shape.empty())
    out += nn::shape::str(shape);
  return out;
}

llvm::StringRef hotstage::lang::initKindName(InitKind kind) {
  switch (kind) {
  case InitKind::Zeros:
    return "zeros";
  case InitKind::Ones:
    return "ones";
  case InitKind::Constant:
    return "constant";
  case InitKind::Normal:
    return "normal";
  case InitKind::Uniform:
    return "uniform";
  }
  return "?";
}

llvm::StringRef hotstage::lang::opName(OpKind kind) {
  switch (kind) {
  case OpKind::ParamRef:
    return "param_ref";
  case OpKind::Constant:
    return "constant";
  case OpKind::Add:
    return "add";
  case OpKind::Sub:
    return "sub";
  case OpKind::Mul:
    return "mul";
  case OpKind::Div:
    return "div";
  case OpKind::Maximum:
    return "maximum";
  case OpKind::Neg:
    return "neg";
  case OpKind::Exp:
    return "exp";
  case OpKind::Log:
    return "log";
  case OpKind::Sqrt:
    return "sqrt";
  case OpKind::Rsqrt:
    return "rsqrt";
  case OpKind::Tanh:
    return "tanh";
  case OpKind::Sigmoid:
    return "sigmoid";
  case OpKind::Relu:
    return "relu";
  case OpKind::Silu:
    return "silu";
  case OpKind::Gelu:
    return "gelu";
  case OpKind::Matmul:
    return "matmul";
  case OpKind::Linear:
    return "linear";
  case OpKind::ReduceSum:
    return "reduce_sum";
  case OpKind::ReduceMean:
    return "reduce_mean";
  case OpKind::ReduceMax:
    return "reduce_max";
  case OpKind::Softmax:
    return "softmax";
  case OpKind::LayerNorm:
    return "layer_norm";
  case OpKind::RmsNorm:
    return "rms_norm";
  case OpKind::Embedding:
    return "embedding";
  case OpKind::Attention:
    return "attention";
  case OpKind::Rope:
    return "rope";
  case OpKind::Reshape:
    return "reshape";
  case OpKind::Transpose:
    return "transpose";
  case OpKind::Split:
    return "split";
  case OpKind::Concat:
    return "concat";
  case OpKind::Slice:
    return "slice";
  case OpKind::CrossEntropy:
    return "cross_entropy";
  }
  return "?";
}

const TrainField *Program::trainField(llvm::StringRef name) const {
  for (const TrainField &f : train)
    if (f.name == name)
      return &f;
  return nullptr;
}

int64_t Program::trainInt(llvm::StringRef name) const {
  const TrainField *f = trainField(name);
  return f ? f->i : 0;
}

double Program::trainFloat(llvm::StringRef name) const {
  const TrainField *f = trainField(name);
  return f ? f->f : 0;
}

llvm::StringRef Program::trainName(llvm::StringRef name) const {
  const TrainField *f = trainField(name);
  return f ? llvm::StringRef(f->s) : llvm::StringRef();
}

int64_t Program::numParameters() const {
  int64_t total = 0;
  for (const Param &p : params)
    total += *nn::shape::numElements(p.type.shape);
  return total;
}
