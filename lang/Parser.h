//===- Parser.h - Recursive-descent parser for model files ------*- C++ -*-===//

#ifndef HOTSTAGE_LANG_PARSER_H
#define HOTSTAGE_LANG_PARSER_H

#include "lang/AST.h"
#include "lang/Diagnostics.h"
#include "lang/Lexer.h"

#include <memory>

namespace hotstage::lang {

/// Parses the buffer `bufferId` of the diagnostics' SourceMgr. Always returns
/// a tree; syntax errors are reported to `diags` and the parser recovers at
/// the next statement so one run shows several of them.
std::unique_ptr<FileAST> parseFile(unsigned bufferId, DiagnosticEngine &diags);

/// Parses a standalone expression that starts `offset` bytes into the buffer
/// (the value of `-D name=value`); nullptr on error.
ExprPtr parseExpression(unsigned bufferId, size_t offset,
                        DiagnosticEngine &diags);

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_PARSER_H
