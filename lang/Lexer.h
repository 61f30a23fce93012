//===- Lexer.h - Tokens of the Hotstage language ----------------*- C++ -*-===//
//
// Statements end at a newline or `;`; inside parentheses and brackets
// newlines are plain space. The lexer records on each token whether a
// newline came before it and leaves that decision to the parser, which
// knows the nesting.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_LANG_LEXER_H
#define HOTSTAGE_LANG_LEXER_H

#include "lang/Diagnostics.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"

namespace hotstage::lang {

enum class Tok {
  Eof,
  Error, // an invalid character; already diagnosed
  Identifier,
  Integer,
  Float,
  String,
  // Keywords.
  KwImport,
  KwConst,
  KwConfig,
  KwBlock,
  KwModel,
  KwTrain,
  KwForward,
  KwReturn,
  KwParam,
  KwRepeat,
  KwInit,
  KwTrue,
  KwFalse,
  // Punctuation.
  LParen,
  RParen,
  LBracket,
  RBracket,
  LBrace,
  RBrace,
  Comma,
  Semicolon,
  Colon,
  Dot,
  Equal,
  Arrow,
  Plus,
  Minus,
  Star,
  Slash,
  Percent,
  At,
};

/// Printable spelling of a token kind for messages: `'('`, `identifier`.
llvm::StringRef spell(Tok kind);

struct Token {
  Tok kind = Tok::Eof;
  llvm::StringRef text;
  bool newlineBefore = false;

  llvm::SMLoc loc() const { return llvm::SMLoc::getFromPointer(text.data()); }
  bool is(Tok k) const { return kind == k; }
};

class Lexer {
public:
  Lexer(llvm::StringRef buffer, DiagnosticEngine &diags)
      : buffer(buffer), cur(buffer.begin()), diags(diags) {}

  Token next();

private:
  Token make(Tok kind, const char *start, bool newline) {
    return Token{kind, llvm::StringRef(start, cur - start), newline};
  }
  Token lexNumber(const char *start, bool newline);
  Token lexString(const char *start, bool newline);

  llvm::StringRef buffer;
  const char *cur;
  DiagnosticEngine &diags;
};

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_LEXER_H
