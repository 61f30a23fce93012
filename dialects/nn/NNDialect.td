//===- NNDialect.td - The nn dialect ------------------------*- tablegen -*-===//
//
// The dialect of the forward graph on ranked tensors, as the front end emits
// it. docs/nn-dialect.md describes every op and attribute.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_NNDIALECT_TD
#define HOTSTAGE_DIALECTS_NN_NNDIALECT_TD

include "mlir/IR/OpBase.td"

def NN_Dialect : Dialect {
  let name = "nn";
  let cppNamespace = "::hotstage::nn";
  let summary = "The forward graph of a model on ranked tensors";
  let description = [{
    Value-semantic, side-effect free tensor ops with the shape rules of
    `dialects/nn/ShapeRules.h`, parameters as module-level symbols, and the
    module attributes `nn.model` and `nn.train`.
  }];

  let useDefaultAttributePrinterParser = 1;
  let hasConstantMaterializer = 1;
  // Checks the `nn.model` and `nn.train` module attributes.
  let hasOperationAttrVerify = 1;

  let extraClassDeclaration = [{
    /// Name of the module attribute holding the model's name.
    static constexpr ::llvm::StringLiteral kModelAttrName = "nn.model";
    /// Name of the module attribute holding the training settings.
    static constexpr ::llvm::StringLiteral kTrainAttrName = "nn.train";
  }];
}

#endif // HOTSTAGE_DIALECTS_NN_NNDIALECT_TD
