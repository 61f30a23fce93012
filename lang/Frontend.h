//===- Frontend.h - From a model file to a checked Program -----*- C++ -*-===//
//
// Loads a model file and the modules it imports, applies `-D` overrides,
// checks names, constants, the train section and every shape, and
// elaborates the model into a Program. MLIR is not involved here.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_LANG_FRONTEND_H
#define HOTSTAGE_LANG_FRONTEND_H

#include "lang/AST.h"
#include "lang/Diagnostics.h"
#include "lang/Program.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hotstage::lang {

struct FrontendOptions {
  /// Extra folders searched for imports, after the model's own folder.
  std::vector<std::string> includeDirs;
  /// The standard library folder (`import nn`), searched last.
  std::string stdlibDir;
  /// `name=value` overrides of constants and train fields.
  std::vector<std::string> defines;
};

/// A loaded `.hot` file and what its top level declares.
struct Module {
  std::string name; // how it was imported; "" for the main file
  std::unique_ptr<FileAST> ast;
  std::map<std::string, const Definition *> constants;
  std::map<std::string, const BlockDecl *> blocks;
  std::map<std::string, Module *> imports;
};

class Frontend {
public:
  Frontend(llvm::SourceMgr &sourceMgr, DiagnosticEngine &diags,
           FrontendOptions options);
  ~Frontend();

  /// Parses `path` and, recursively, its imports. False after errors.
  bool load(llvm::StringRef path);

  /// Like `load`, for a model held in memory (the fuzzer); imports are
  /// searched in the include folders and the standard library.
  bool loadSource(llvm::StringRef name, llvm::StringRef contents);

  /// The main file's tree (after a successful or failed load).
  const FileAST *mainAST() const;

  /// Checks and elaborates the loaded model; nullopt after errors.
  std::optional<Program> elaborate();

private:
  Module *loadModule(llvm::StringRef path, llvm::StringRef name,
                     SMLoc importLoc);
  Module *addModule(std::unique_ptr<llvm::MemoryBuffer> buffer,
                    const std::string &canonicalPath, llvm::StringRef dir,
                    llvm::StringRef name, SMLoc importLoc);
  bool collectDeclarations(Module &module);

  llvm::SourceMgr &sourceMgr;
  DiagnosticEngine &diags;
  FrontendOptions options;
  std::vector<std::unique_ptr<Module>> modules;
  std::map<std::string, Module *> modulesByPath;
  std::vector<std::pair<std::string, SMLoc>> importStack;
  Module *mainModule = nullptr;
};

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_FRONTEND_H
