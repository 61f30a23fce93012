//===- NNDialect.cpp - The nn dialect and its attributes ------------------===//
//
// Registration, the module attributes `nn.model` and `nn.train`, constant
// materialization, and `#nn.init<...>`.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNDialect.h"
#include "dialects/nn/NNAttrs.h"
#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace hotstage::nn;

#include "dialects/nn/NNDialect.cpp.inc"
#include "dialects/nn/NNEnums.cpp.inc"
#define GET_ATTRDEF_CLASSES
#include "dialects/nn/NNAttrs.cpp.inc"

//===----------------------------------------------------------------------===//
// NNDialect
//===----------------------------------------------------------------------===//

void NNDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/nn/NNOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/nn/NNAttrs.cpp.inc"
      >();
}

LogicalResult NNDialect::verifyOperationAttribute(Operation *op,
                                                  NamedAttribute attr) {
  StringRef name = attr.getName().strref();
  // The fusion pass's mark on a GEMM: the epilogue stages, in order.
  if (name == "nn.epilogue") {
    if (!isa<LinearOp, MatmulOp>(op))
      return op->emitError() << "'nn.epilogue' is only valid on nn.linear "
                                "and nn.matmul";
    auto stages = dyn_cast<ArrayAttr>(attr.getValue());
    if (!stages || !llvm::all_of(stages, [](Attribute a) {
          auto s = dyn_cast<StringAttr>(a);
          return s && llvm::is_contained({"bias", "gelu", "gelu_tanh", "relu",
                                          "silu", "residual", "dgelu_tanh"},
                                         s.getValue());
        }))
      return op->emitError()
             << "'nn.epilogue' must be an array of bias, gelu, gelu_tanh, "
                "relu, silu, residual and dgelu_tanh, got "
             << attr.getValue();
    return success();
  }
  // The pipeline split (nn-split-chunks): the first atom and the rank of
  // every chunk on the module, each chunk's index and first atom on its
  // functions, and the atoms that read a tied parameter on the parameter.
  auto expect = [&](bool where, StringRef place, bool array) -> LogicalResult {
    if (!where)
      return op->emitError() << "'" << name << "' is only valid on " << place;
    bool ok = array ? isa<DenseI64ArrayAttr>(attr.getValue())
                    : isa<IntegerAttr>(attr.getValue());
    if (!ok)
      return op->emitError() << "'" << name << "' must be "
                             << (array ? "an array<i64>" : "an integer")
                             << ", got " << attr.getValue();
    return success();
  };
  if (name == "nn.chunks" || name == "nn.chunk_ranks")
    return expect(isa<ModuleOp>(op), "a module", true);
  if (name == "nn.chunk" || name == "nn.atom_offset")
    return expect(op->getName().getStringRef() == "func.func", "a function",
                  false);
  if (name == "nn.tied_atoms")
    return expect(isa<ParamOp>(op), "nn.param", true);
  // Unknown names are rejected so that a typo does not pass silently; add
  // new attributes here and to docs/nn-dialect.md.
  if (name != kModelAttrName && name != kTrainAttrName)
    return op->emitError() << "unknown nn dialect attribute '" << name << "'";
  if (!isa<ModuleOp>(op))
    return op->emitError() << "'" << name << "' is only valid on a module";
  if (name == kModelAttrName && !isa<StringAttr>(attr.getValue()))
    return op->emitError() << "'" << name << "' must be a string, got "
                           << attr.getValue();
  if (name == kTrainAttrName && !isa<DictionaryAttr>(attr.getValue()))
    return op->emitError() << "'" << name << "' must be a dictionary, got "
                           << attr.getValue();
  return success();
}

Operation *NNDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                          Type type, Location loc) {
  auto elements = dyn_cast<DenseElementsAttr>(value);
  if (!elements || elements.getType() != type)
    return nullptr;
  return ConstantOp::create(builder, loc, type, elements);
}

//===----------------------------------------------------------------------===//
// InitAttr
//===----------------------------------------------------------------------===//

unsigned InitAttr::getNumParams(InitKind kind) {
  switch (kind) {
  case InitKind::Zeros:
  case InitKind::Ones:
    return 0;
  case InitKind::Constant:
    return 1;
  case InitKind::Normal:
  case InitKind::Uniform:
    return 2;
  }
  llvm_unreachable("unknown init kind");
}

/// What the parameters of `kind` are, for diagnostics.
static StringRef describeParams(InitKind kind) {
  switch (kind) {
  case InitKind::Zeros:
  case InitKind::Ones:
    return "no parameters";
  case InitKind::Constant:
    return "1 parameter (value)";
  case InitKind::Normal:
    return "2 parameters (mean, std)";
  case InitKind::Uniform:
    return "2 parameters (low, high)";
  }
  llvm_unreachable("unknown init kind");
}

LogicalResult InitAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               InitKind kind, ArrayRef<APFloat> params) {
  StringRef name = stringifyInitKind(kind);
  if (params.size() != getNumParams(kind))
    return emitError() << "'" << name << "' init takes " << describeParams(kind)
                       << ", got " << params.size();
  for (const APFloat &param : params)
    if (!param.isFinite())
      return emitError() << "'" << name << "' init parameters must be finite";
  if (kind == InitKind::Normal &&
      (params[1].isNegative() || params[1].isZero()))
    return emitError() << "'normal' init needs a positive std, got "
                       << params[1].convertToDouble();
  if (kind == InitKind::Uniform &&
      params[0].compare(params[1]) != APFloat::cmpLessThan)
    return emitError() << "'uniform' init needs low < high, got "
                       << params[0].convertToDouble() << " and "
                       << params[1].convertToDouble();
  return success();
}

// #nn.init<KIND[, a[, b]]>
Attribute InitAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess())
    return {};
  SMLoc kindLoc = parser.getCurrentLocation();
  StringRef keyword;
  if (parser.parseKeyword(&keyword))
    return {};
  std::optional<InitKind> kind = symbolizeInitKind(keyword);
  if (!kind) {
    parser.emitError(kindLoc) << "unknown init kind '" << keyword
                              << "', expected zeros, ones, constant, normal "
                                 "or uniform";
    return {};
  }
  SmallVector<double, 2> values;
  while (succeeded(parser.parseOptionalComma())) {
    double value;
    if (parser.parseFloat(value))
      return {};
    values.push_back(value);
  }
  if (parser.parseGreater())
    return {};
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    *kind, ArrayRef<double>(values));
}

void InitAttr::print(AsmPrinter &printer) const {
  printer << '<' << stringifyInitKind(getKind());
  for (const APFloat &param : getParams()) {
    printer << ", ";
    printer.printFloat(param);
  }
  printer << '>';
}
