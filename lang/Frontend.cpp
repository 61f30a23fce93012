//===- Frontend.cpp - Loading model files and their imports ---------------===//

#include "lang/Frontend.h"

#include "lang/Parser.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

using namespace hotstage::lang;

/// Model files beyond this size are refused before parsing.
static constexpr uint64_t kMaxFileBytes = 64ull << 20;

Frontend::Frontend(llvm::SourceMgr &sourceMgr, DiagnosticEngine &diags,
                   FrontendOptions options)
    : sourceMgr(sourceMgr), diags(diags), options(std::move(options)) {}

Frontend::~Frontend() = default;

const FileAST *Frontend::mainAST() const {
  return mainModule ? mainModule->ast.get() : nullptr;
}

bool Frontend::load(llvm::StringRef path) {
  unsigned before = diags.errorCount();
  mainModule = loadModule(path, "", SMLoc());
  return mainModule && diags.errorCount() == before;
}

bool Frontend::loadSource(llvm::StringRef name, llvm::StringRef contents) {
  unsigned before = diags.errorCount();
  mainModule = addModule(llvm::MemoryBuffer::getMemBufferCopy(contents, name),
                         name.str(), "", "", SMLoc());
  return mainModule && diags.errorCount() == before;
}

Module *Frontend::loadModule(llvm::StringRef path, llvm::StringRef name,
                             SMLoc importLoc) {
  llvm::SmallString<256> canonical;
  if (llvm::sys::fs::real_path(path, canonical))
    canonical = path;
  // A module that is still being loaded further up the stack is a cycle.
  for (size_t i = 0; i < importStack.size(); ++i) {
    if (importStack[i].first != canonical.str())
      continue;
    {
      auto diag = diags.error(importLoc);
      diag << "import cycle: ";
      for (size_t j = i; j < importStack.size(); ++j)
        diag << llvm::sys::path::filename(importStack[j].first) << " -> ";
      diag << llvm::sys::path::filename(canonical);
    }
    for (size_t j = i + 1; j < importStack.size(); ++j)
      diags.note(importStack[j].second)
          << "'" << llvm::sys::path::stem(importStack[j].first)
          << "' is imported here";
    return nullptr;
  }

  auto cached = modulesByPath.find(canonical.str().str());
  if (cached != modulesByPath.end())
    return cached->second;

  auto reportOpen = [&](const std::string &why) {
    if (importLoc.isValid())
      diags.error(importLoc) << "cannot read module '" << name << "' from '"
                             << path << "': " << why;
    else
      diags.error(SMLoc()) << "cannot read '" << path << "': " << why;
  };
  if (llvm::sys::fs::is_directory(path)) {
    reportOpen("is a directory");
    return nullptr;
  }
  uint64_t size = 0;
  if (!llvm::sys::fs::file_size(path, size) && size > kMaxFileBytes) {
    reportOpen("larger than 64 MiB");
    return nullptr;
  }
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer) {
    reportOpen(buffer.getError().message());
    return nullptr;
  }
  llvm::StringRef dir = llvm::sys::path::parent_path(path);
  return addModule(std::move(*buffer), canonical.str().str(),
                   dir.empty() ? "." : dir, name, importLoc);
}

Module *Frontend::addModule(std::unique_ptr<llvm::MemoryBuffer> buffer,
                            const std::string &canonicalPath,
                            llvm::StringRef dir, llvm::StringRef name,
                            SMLoc importLoc) {
  unsigned bufferId = sourceMgr.AddNewSourceBuffer(std::move(buffer), SMLoc());
  auto module = std::make_unique<Module>();
  Module *m = module.get();
  m->name = name.str();
  modules.push_back(std::move(module));
  modulesByPath[canonicalPath] = m;

  m->ast = parseFile(bufferId, diags);
  if (diags.tooManyErrors())
    return m;
  collectDeclarations(*m);

  importStack.push_back({canonicalPath, importLoc});
  for (const ImportDecl &import : m->ast->imports) {
    // `import models.common` binds `common`.
    std::string alias = llvm::StringRef(import.name).rsplit('.').second.str();
    if (alias.empty())
      alias = import.name;
    if (m->imports.count(alias)) {
      diags.error(import.loc)
          << "module '" << import.name << "' is imported twice";
      continue;
    }
    llvm::SmallString<128> relative(import.name);
    std::replace(relative.begin(), relative.end(), '.', '/');
    relative += ".hot";
    std::vector<std::string> searchDirs;
    if (!dir.empty())
      searchDirs.push_back(dir.str());
    searchDirs.insert(searchDirs.end(), options.includeDirs.begin(),
                      options.includeDirs.end());
    if (!options.stdlibDir.empty())
      searchDirs.push_back(options.stdlibDir);
    std::string found;
    for (const std::string &searchDir : searchDirs) {
      llvm::SmallString<256> candidate(searchDir);
      llvm::sys::path::append(candidate, relative);
      if (llvm::sys::fs::is_regular_file(candidate)) {
        found = candidate.str().str();
        break;
      }
    }
    if (found.empty()) {
      auto diag = diags.error(import.nameLoc);
      diag << "module '" << import.name << "' not found; looked for '"
           << relative << "' in";
      for (const std::string &searchDir : searchDirs)
        diag << " '" << searchDir << "'";
      continue;
    }
    // A module that cannot be loaded was reported at this import.
    Module *imported = loadModule(found, import.name, import.nameLoc);
    if (!imported)
      continue;
    if (imported->ast) {
      for (const auto &block : imported->ast->blocks)
        if (block->isModel) {
          diags.error(block->name.loc)
              << "an imported module cannot declare a model";
          diags.note(import.loc) << "imported here";
        }
      if (imported->ast->hasTrain) {
        diags.error(imported->ast->trainLoc)
            << "an imported module cannot have a 'train' section";
        diags.note(import.loc) << "imported here";
      }
    }
    m->imports[alias] = imported;
  }
  importStack.pop_back();
  return m;
}

/// Fills the module's name tables and reports duplicate names.
bool Frontend::collectDeclarations(Module &module) {
  bool ok = true;
  std::map<std::string, SMLoc> seen;
  auto declare = [&](const Binding &name) {
    auto [it, inserted] = seen.insert({name.name, name.loc});
    if (inserted)
      return true;
    diags.error(name.loc) << "redefinition of '" << name.name << "'";
    diags.note(it->second) << "previous definition is here";
    ok = false;
    return false;
  };
  for (const ImportDecl &import : module.ast->imports) {
    llvm::StringRef alias = llvm::StringRef(import.name).rsplit('.').second;
    seen.insert({(alias.empty() ? import.name : alias.str()), import.loc});
  }
  for (const Definition &def : module.ast->constants)
    if (declare(def.name))
      module.constants[def.name.name] = &def;
  for (const auto &block : module.ast->blocks)
    if (declare(block->name))
      module.blocks[block->name.name] = block.get();
  return ok;
}
