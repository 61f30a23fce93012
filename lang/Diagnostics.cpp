//===- Diagnostics.cpp - Located errors and notes for model files ---------===//

#include "lang/Diagnostics.h"

#include "llvm/Support/WithColor.h"

using namespace hotstage::lang;

InFlightDiagnostic::InFlightDiagnostic(DiagnosticEngine &engine,
                                       Severity severity, llvm::SMLoc loc)
    : engine(&engine), severity(severity), loc(loc) {}

InFlightDiagnostic::InFlightDiagnostic(InFlightDiagnostic &&other)
    : engine(other.engine), severity(other.severity), loc(other.loc),
      message(std::move(other.message)) {
  other.engine = nullptr;
}

InFlightDiagnostic::~InFlightDiagnostic() {
  if (engine)
    engine->emit(severity, loc, message);
}

DiagnosticEngine::~DiagnosticEngine() {
  if (errors >= errorLimit && !announcedLimit)
    os << "error: too many errors, stopping now\n";
  os.flush();
}

std::string DiagnosticEngine::describe(llvm::SMLoc loc) const {
  unsigned buffer = sourceMgr.FindBufferContainingLoc(loc);
  if (!buffer)
    return "<unknown>";
  auto [line, col] = sourceMgr.getLineAndColumn(loc, buffer);
  return (sourceMgr.getMemoryBuffer(buffer)->getBufferIdentifier() + ":" +
          llvm::Twine(line) + ":" + llvm::Twine(col))
      .str();
}

/// Prints the source line of `loc` with a caret under it, clipped to a
/// window around the column; control bytes and bytes outside ASCII print as
/// `?` so a corrupt file cannot garble the terminal.
static void printSourceLine(llvm::raw_ostream &os, llvm::StringRef buffer,
                            const char *ptr) {
  constexpr size_t window = 100;
  const char *begin = buffer.begin(), *end = buffer.end();
  const char *lineStart = ptr, *lineEnd = ptr;
  size_t scanned = 0;
  while (lineStart > begin && lineStart[-1] != '\n' && scanned++ < window)
    --lineStart;
  bool clippedLeft = lineStart > begin && lineStart[-1] != '\n';
  scanned = 0;
  while (lineEnd < end && *lineEnd != '\n' && *lineEnd != '\r' &&
         scanned++ < window)
    ++lineEnd;
  bool clippedRight = lineEnd < end && *lineEnd != '\n' && *lineEnd != '\r';

  std::string text = clippedLeft ? "..." : "";
  size_t caret = text.size() + (ptr - lineStart);
  for (const char *c = lineStart; c < lineEnd; ++c) {
    unsigned char ch = *c;
    text += ch == '\t' ? ' ' : (ch < 0x20 || ch >= 0x7f) ? '?' : char(ch);
  }
  if (clippedRight)
    text += "...";
  os << text << "\n" << std::string(caret, ' ') << "^\n";
}

void DiagnosticEngine::emit(Severity severity, llvm::SMLoc loc,
                            llvm::StringRef message) {
  if (severity == Severity::Error) {
    if (errors >= errorLimit) {
      if (!announcedLimit)
        os << "error: too many errors, stopping now\n";
      announcedLimit = true;
      suppressing = true;
      return;
    }
    ++errors;
    suppressing = false;
  } else if (suppressing) {
    return; // the notes of an error that was not printed
  }

  unsigned buffer = loc.isValid() ? sourceMgr.FindBufferContainingLoc(loc) : 0;
  if (buffer)
    os << describe(loc) << ": ";
  switch (severity) {
  case Severity::Error:
    os << "error: ";
    break;
  case Severity::Warning:
    os << "warning: ";
    break;
  case Severity::Note:
    os << "note: ";
    break;
  }
  os << message << "\n";
  if (buffer)
    printSourceLine(os, sourceMgr.getMemoryBuffer(buffer)->getBuffer(),
                    loc.getPointer());
  os.flush();
}
