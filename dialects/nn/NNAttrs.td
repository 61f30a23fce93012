//===- NNAttrs.td - Attributes of the nn dialect ------------*- tablegen -*-===//
//
// `#nn.init<KIND[, a[, b]]>`, the initializer of a parameter.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_NNATTRS_TD
#define HOTSTAGE_DIALECTS_NN_NNATTRS_TD

include "dialects/nn/NNDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def NN_InitKind : I32EnumAttr<"InitKind", "kind of a parameter initializer", [
    I32EnumAttrCase<"Zeros", 0, "zeros">,
    I32EnumAttrCase<"Ones", 1, "ones">,
    I32EnumAttrCase<"Constant", 2, "constant">,
    I32EnumAttrCase<"Normal", 3, "normal">,
    I32EnumAttrCase<"Uniform", 4, "uniform">
  ]> {
  let cppNamespace = "::hotstage::nn";
  // The kind only lives inside #nn.init, never as an attribute of its own.
  let genSpecializedAttr = 0;
}

// f64 values compared bit for bit, so that uniquing is exact (APFloat's
// operator== says -0.0 == 0.0 and NaN != NaN).
def NN_F64ArrayParameter
    : ArrayRefParameter<"::llvm::APFloat", "f64 parameters"> {
  let comparator = [{
    ::llvm::equal($_lhs, $_rhs,
                  [](const ::llvm::APFloat &a, const ::llvm::APFloat &b) {
                    return a.bitwiseIsEqual(b);
                  })
  }];
}

class NN_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<NN_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def NN_InitAttr : NN_Attr<"Init", "init"> {
  let summary = "initializer of a parameter";
  let description = [{
    `#nn.init<KIND[, a[, b]]>`: `zeros` and `ones` take no parameter,
    `constant` takes its value, `normal` a mean and a positive standard
    deviation, `uniform` a lower bound below an upper bound.

    ```mlir
    #nn.init<zeros>
    #nn.init<constant, 5.000000e-01>
    #nn.init<normal, 0.000000e+00, 2.000000e-02>
    #nn.init<uniform, -1.000000e-01, 1.000000e-01>
    ```
  }];
  let parameters = (ins EnumParameter<NN_InitKind>:$kind,
                        NN_F64ArrayParameter:$params);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;

  let builders = [
    AttrBuilder<(ins "InitKind":$kind), [{
      return $_get($_ctxt, kind, ::llvm::ArrayRef<::llvm::APFloat>());
    }]>,
    AttrBuilder<(ins "InitKind":$kind, "double":$a), [{
      ::llvm::APFloat values[] = {::llvm::APFloat(a)};
      return $_get($_ctxt, kind, ::llvm::ArrayRef<::llvm::APFloat>(values));
    }]>,
    AttrBuilder<(ins "InitKind":$kind, "double":$a, "double":$b), [{
      ::llvm::APFloat values[] = {::llvm::APFloat(a), ::llvm::APFloat(b)};
      return $_get($_ctxt, kind, ::llvm::ArrayRef<::llvm::APFloat>(values));
    }]>,
    AttrBuilder<(ins "InitKind":$kind, "::llvm::ArrayRef<double>":$values), [{
      ::llvm::SmallVector<::llvm::APFloat, 2> floats;
      for (double value : values)
        floats.emplace_back(value);
      return $_get($_ctxt, kind, ::llvm::ArrayRef<::llvm::APFloat>(floats));
    }]>
  ];

  let extraClassDeclaration = [{
    /// Number of parameters `kind` takes.
    static unsigned getNumParams(InitKind kind);
    /// Parameter `i` as a double.
    double getParam(unsigned i) const {
      return getParams()[i].convertToDouble();
    }
  }];
}

#endif // HOTSTAGE_DIALECTS_NN_NNATTRS_TD
