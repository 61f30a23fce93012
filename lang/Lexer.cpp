//===- Lexer.cpp - Tokens of the Hotstage language ------------------------===//

#include "lang/Lexer.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"

using namespace hotstage::lang;

llvm::StringRef hotstage::lang::spell(Tok kind) {
  switch (kind) {
  case Tok::Eof:
    return "end of file";
  case Tok::Error:
    return "invalid character";
  case Tok::Identifier:
    return "identifier";
  case Tok::Integer:
    return "integer";
  case Tok::Float:
    return "number";
  case Tok::String:
    return "string";
  case Tok::KwImport:
    return "'import'";
  case Tok::KwConst:
    return "'const'";
  case Tok::KwConfig:
    return "'config'";
  case Tok::KwBlock:
    return "'block'";
  case Tok::KwModel:
    return "'model'";
  case Tok::KwTrain:
    return "'train'";
  case Tok::KwForward:
    return "'forward'";
  case Tok::KwReturn:
    return "'return'";
  case Tok::KwParam:
    return "'param'";
  case Tok::KwRepeat:
    return "'repeat'";
  case Tok::KwInit:
    return "'init'";
  case Tok::KwTrue:
    return "'true'";
  case Tok::KwFalse:
    return "'false'";
  case Tok::LParen:
    return "'('";
  case Tok::RParen:
    return "')'";
  case Tok::LBracket:
    return "'['";
  case Tok::RBracket:
    return "']'";
  case Tok::LBrace:
    return "'{'";
  case Tok::RBrace:
    return "'}'";
  case Tok::Comma:
    return "','";
  case Tok::Semicolon:
    return "';'";
  case Tok::Colon:
    return "':'";
  case Tok::Dot:
    return "'.'";
  case Tok::Equal:
    return "'='";
  case Tok::Arrow:
    return "'->'";
  case Tok::Plus:
    return "'+'";
  case Tok::Minus:
    return "'-'";
  case Tok::Star:
    return "'*'";
  case Tok::Slash:
    return "'/'";
  case Tok::Percent:
    return "'%'";
  case Tok::At:
    return "'@'";
  }
  return "token";
}

/// Names and strings are echoed in messages; longer ones are refused.
static constexpr size_t kMaxIdentifier = 256;
static constexpr long kMaxString = 1024;

static bool isIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool isDigit(char c) { return c >= '0' && c <= '9'; }
static bool isIdentChar(char c) { return isIdentStart(c) || isDigit(c); }

Token Lexer::next() {
  bool newline = false;
  const char *end = buffer.end();
  // Skip space, newlines and `#` comments.
  while (cur < end) {
    char c = *cur;
    if (c == '\n') {
      newline = true;
      ++cur;
    } else if (c == ' ' || c == '\t' || c == '\r') {
      ++cur;
    } else if (c == '#') {
      while (cur < end && *cur != '\n')
        ++cur;
    } else {
      break;
    }
  }
  const char *start = cur;
  if (cur == end)
    return make(Tok::Eof, start, newline);

  char c = *cur++;
  if (isIdentStart(c)) {
    while (cur < end && isIdentChar(*cur))
      ++cur;
    llvm::StringRef text(start, cur - start);
    if (text.size() > kMaxIdentifier) {
      diags.error(llvm::SMLoc::getFromPointer(start))
          << "name is longer than " << kMaxIdentifier << " characters";
      return make(Tok::Error, start, newline);
    }
    Tok kind = llvm::StringSwitch<Tok>(text)
                   .Case("import", Tok::KwImport)
                   .Case("const", Tok::KwConst)
                   .Case("config", Tok::KwConfig)
                   .Case("block", Tok::KwBlock)
                   .Case("model", Tok::KwModel)
                   .Case("train", Tok::KwTrain)
                   .Case("forward", Tok::KwForward)
                   .Case("return", Tok::KwReturn)
                   .Case("param", Tok::KwParam)
                   .Case("repeat", Tok::KwRepeat)
                   .Case("init", Tok::KwInit)
                   .Case("true", Tok::KwTrue)
                   .Case("false", Tok::KwFalse)
                   .Default(Tok::Identifier);
    return make(kind, start, newline);
  }
  if (isDigit(c) || (c == '.' && cur < end && isDigit(*cur)))
    return lexNumber(start, newline);
  switch (c) {
  case '"':
    return lexString(start, newline);
  case '(':
    return make(Tok::LParen, start, newline);
  case ')':
    return make(Tok::RParen, start, newline);
  case '[':
    return make(Tok::LBracket, start, newline);
  case ']':
    return make(Tok::RBracket, start, newline);
  case '{':
    return make(Tok::LBrace, start, newline);
  case '}':
    return make(Tok::RBrace, start, newline);
  case ',':
    return make(Tok::Comma, start, newline);
  case ';':
    return make(Tok::Semicolon, start, newline);
  case ':':
    return make(Tok::Colon, start, newline);
  case '.':
    return make(Tok::Dot, start, newline);
  case '=':
    return make(Tok::Equal, start, newline);
  case '+':
    return make(Tok::Plus, start, newline);
  case '-':
    if (cur < end && *cur == '>') {
      ++cur;
      return make(Tok::Arrow, start, newline);
    }
    return make(Tok::Minus, start, newline);
  case '*':
    return make(Tok::Star, start, newline);
  case '/':
    return make(Tok::Slash, start, newline);
  case '%':
    return make(Tok::Percent, start, newline);
  case '@':
    return make(Tok::At, start, newline);
  default:
    break;
  }

  // Anything else is one invalid character; a run of them (binary data) is
  // reported once.
  unsigned char byte = c;
  auto diag = diags.error(llvm::SMLoc::getFromPointer(start));
  if (byte == 0)
    diag << "unexpected NUL byte";
  else if (byte >= 0x80)
    diag << "unexpected byte 0x" << llvm::utohexstr(byte, true)
         << " (only ASCII is allowed outside strings and comments)";
  else
    diag << "unexpected character '" << std::string(1, c) << "'";
  auto isJunk = [](char ch) {
    unsigned char b = ch;
    return !(isIdentChar(ch) || b == ' ' || b == '\n' || b == '\t' ||
             b == '\r' || llvm::StringRef("()[]{},;:.=+-*/%@\"#").contains(ch));
  };
  while (cur < end && isJunk(*cur))
    ++cur;
  return make(Tok::Error, start, newline);
}

Token Lexer::lexNumber(const char *start, bool newline) {
  const char *end = buffer.end();
  bool isFloat = *start == '.';
  while (cur < end && isDigit(*cur))
    ++cur;
  if (cur < end && *cur == '.' && !isFloat && cur + 1 < end &&
      isDigit(cur[1])) {
    isFloat = true;
    ++cur;
    while (cur < end && isDigit(*cur))
      ++cur;
  }
  if (cur < end && (*cur == 'e' || *cur == 'E')) {
    const char *exp = cur + 1;
    if (exp < end && (*exp == '+' || *exp == '-'))
      ++exp;
    if (exp < end && isDigit(*exp)) {
      isFloat = true;
      cur = exp;
      while (cur < end && isDigit(*cur))
        ++cur;
    }
  }
  // A word that starts with digits (`1f1b`) names a choice such as a
  // schedule; where a number is expected it is reported as an unknown name.
  if (cur < end && isIdentStart(*cur) && !isFloat) {
    while (cur < end && isIdentChar(*cur))
      ++cur;
    if (size_t(cur - start) > kMaxIdentifier) {
      diags.error(llvm::SMLoc::getFromPointer(start))
          << "name is longer than " << kMaxIdentifier << " characters";
      return make(Tok::Error, start, newline);
    }
    return make(Tok::Identifier, start, newline);
  }
  if (cur < end && isIdentStart(*cur)) {
    while (cur < end && isIdentChar(*cur))
      ++cur;
    diags.error(llvm::SMLoc::getFromPointer(start))
        << "invalid number '"
        << llvm::StringRef(start, cur - start).take_front(40) << "'";
    return make(Tok::Error, start, newline);
  }
  return make(isFloat ? Tok::Float : Tok::Integer, start, newline);
}

Token Lexer::lexString(const char *start, bool newline) {
  const char *end = buffer.end();
  while (cur < end && *cur != '"' && *cur != '\n')
    ++cur;
  if (cur == end || *cur != '"') {
    diags.error(llvm::SMLoc::getFromPointer(start)) << "unterminated string";
    return make(Tok::Error, start, newline);
  }
  ++cur;
  if (cur - start - 2 > kMaxString) {
    diags.error(llvm::SMLoc::getFromPointer(start))
        << "string is longer than " << kMaxString << " characters";
    return make(Tok::Error, start, newline);
  }
  return make(Tok::String, start, newline);
}
