//===- Diagnostics.h - Located errors and notes for model files -*- C++ -*-===//
//
// Every front-end error reads `file:line:col: error: message`, followed by
// the source line and a caret. Lines are clipped around the column so a
// 5 MB line or binary garbage still prints one short, readable line.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_LANG_DIAGNOSTICS_H
#define HOTSTAGE_LANG_DIAGNOSTICS_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace hotstage::lang {

enum class Severity { Error, Warning, Note };

class DiagnosticEngine;

/// A diagnostic being built with `<<`; it is printed when it goes out of
/// scope, so notes attached to it come right after it.
class InFlightDiagnostic {
public:
  InFlightDiagnostic(DiagnosticEngine &engine, Severity severity,
                     llvm::SMLoc loc);
  InFlightDiagnostic(InFlightDiagnostic &&other);
  ~InFlightDiagnostic();

  template <typename T> InFlightDiagnostic &operator<<(const T &value) {
    llvm::raw_string_ostream(message) << value;
    return *this;
  }

private:
  DiagnosticEngine *engine;
  Severity severity;
  llvm::SMLoc loc;
  std::string message;
};

class DiagnosticEngine {
public:
  explicit DiagnosticEngine(llvm::SourceMgr &sourceMgr,
                            llvm::raw_ostream &os = llvm::errs())
      : sourceMgr(sourceMgr), os(os) {}
  /// Says so if errors were dropped or the checks stopped at the limit.
  ~DiagnosticEngine();

  InFlightDiagnostic error(llvm::SMLoc loc) {
    return InFlightDiagnostic(*this, Severity::Error, loc);
  }
  InFlightDiagnostic note(llvm::SMLoc loc) {
    return InFlightDiagnostic(*this, Severity::Note, loc);
  }
  InFlightDiagnostic warning(llvm::SMLoc loc) {
    return InFlightDiagnostic(*this, Severity::Warning, loc);
  }

  unsigned errorCount() const { return errors; }
  bool hasErrors() const { return errors != 0; }
  /// True once so many errors were printed that going on would only add
  /// noise; parsers and checkers stop early then.
  bool tooManyErrors() const { return errors >= errorLimit; }
  void setErrorLimit(unsigned limit) { errorLimit = limit; }

  llvm::SourceMgr &getSourceMgr() { return sourceMgr; }

  /// `file:line:col` of a location, for messages that quote another place.
  std::string describe(llvm::SMLoc loc) const;

  /// Prints one diagnostic now. Used by InFlightDiagnostic.
  void emit(Severity severity, llvm::SMLoc loc, llvm::StringRef message);

private:
  llvm::SourceMgr &sourceMgr;
  llvm::raw_ostream &os;
  unsigned errors = 0;
  unsigned errorLimit = 20;
  bool announcedLimit = false;
  bool suppressing = false;
};

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_DIAGNOSTICS_H
