//===- FrontendFuzzer.cpp - libFuzzer target for the front end ------------===//
//
// Feeds arbitrary bytes through the whole front end: lexer, parser,
// imports (the standard library), resolver, elaborator and diagnostics
// printing. Any crash, sanitizer report, or run over libFuzzer's time or
// memory limit is a bug. Run it with scripts/fuzz.sh.
//
//===----------------------------------------------------------------------===//

#include "lang/Frontend.h"

#include "llvm/Support/raw_ostream.h"

#include <cstddef>
#include <cstdint>

using namespace hotstage::lang;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::SourceMgr sourceMgr;
  std::string printed;
  llvm::raw_string_ostream os(printed);
  DiagnosticEngine diags(sourceMgr, os);
  FrontendOptions options;
  options.stdlibDir = HOTSTAGE_STDLIB_DIR;
  Frontend frontend(sourceMgr, diags, options);
  llvm::StringRef input(reinterpret_cast<const char *>(data), size);
  if (frontend.loadSource("fuzz.hot", input))
    (void)frontend.elaborate();
  return 0;
}
