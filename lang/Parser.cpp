//===- Parser.cpp - Recursive-descent parser for model files --------------===//

#include "lang/Parser.h"

#include "llvm/ADT/Twine.h"

#include <cerrno>
#include <cstdlib>

using namespace hotstage::lang;

namespace {

/// Deeper expressions than this are rejected, so hostile input cannot
/// exhaust the stack of the parser or of anything walking the tree.
constexpr unsigned kMaxNesting = 256;
/// Long operator or call chains build deep trees without recursion in the
/// parser; their height is bounded too.
constexpr unsigned kMaxHeight = 512;

class Parser {
public:
  Parser(unsigned bufferId, size_t offset, DiagnosticEngine &diags)
      : diags(diags), bufferId(bufferId), lexer(diags.getSourceMgr()
                                                    .getMemoryBuffer(bufferId)
                                                    ->getBuffer()
                                                    .drop_front(offset),
                                                diags) {
    tok = lexer.next();
    ahead = lexer.next();
  }

  std::unique_ptr<FileAST> parseFile();
  ExprPtr parseStandaloneExpr();

private:
  // Token handling.
  void consume() {
    prevEnd = tok.text.end();
    tok = ahead;
    ahead = lexer.next();
  }
  bool consumeIf(Tok kind) {
    if (!tok.is(kind))
      return false;
    consume();
    return true;
  }
  /// Reports "expected X" at the current token; false so callers can
  /// `return expect(...)`.
  bool expect(Tok kind, const llvm::Twine &context) {
    if (consumeIf(kind))
      return true;
    errorExpected(spell(kind), context);
    return false;
  }
  void errorExpected(llvm::StringRef what, const llvm::Twine &context) {
    if (tok.is(Tok::Error))
      return; // the lexer said it already
    auto diag = diags.error(tok.loc());
    diag << "expected " << what;
    std::string text = context.str();
    if (!text.empty())
      diag << " " << text;
    diag << ", found " << describe(tok);
  }
  static std::string describe(const Token &t) {
    switch (t.kind) {
    case Tok::Identifier:
    case Tok::Integer:
    case Tok::Float:
      return "'" + t.text.take_front(40).str() + "'";
    default:
      return spell(t.kind).str();
    }
  }
  /// True where the current statement may end: a newline before the next
  /// token (outside brackets), `;`, `}` or the end of the file.
  bool atStatementEnd() const {
    return (tok.newlineBefore && nesting == 0) || tok.is(Tok::Semicolon) ||
           tok.is(Tok::RBrace) || tok.is(Tok::Eof);
  }
  bool endStatement(const llvm::Twine &what) {
    if (consumeIf(Tok::Semicolon) || atStatementEnd())
      return true;
    errorExpected("a newline or ';'", ("after " + what));
    return false;
  }
  /// Skips to where the next statement may start; brackets are balanced so
  /// the skip does not leave a block early.
  void recover() {
    unsigned depth = 0;
    nesting = 0;
    while (!tok.is(Tok::Eof)) {
      if (depth == 0 && (tok.is(Tok::Semicolon))) {
        consume();
        return;
      }
      if (depth == 0 && tok.is(Tok::RBrace))
        return;
      switch (tok.kind) {
      case Tok::LParen:
      case Tok::LBracket:
      case Tok::LBrace:
        ++depth;
        break;
      case Tok::RParen:
      case Tok::RBracket:
      case Tok::RBrace:
        if (depth)
          --depth;
        break;
      default:
        break;
      }
      consume();
      if (depth == 0 && tok.newlineBefore)
        return;
    }
  }
  bool stop() const { return diags.tooManyErrors(); }
  bool checkHeight(const Expr &e) {
    if (e.height <= kMaxHeight)
      return true;
    diags.error(e.getLoc()) << "expression is too long (its tree is deeper "
                               "than "
                            << kMaxHeight << " levels)";
    while (!tok.is(Tok::Eof))
      consume();
    return false;
  }

  Binding parseBinding(const llvm::Twine &context) {
    Binding b{tok.text.str(), tok.loc()};
    if (!tok.is(Tok::Identifier)) {
      errorExpected("a name", context);
      b.name.clear();
      return b;
    }
    consume();
    return b;
  }

  // Declarations.
  bool parseImport(FileAST &file);
  bool parseDefinitions(std::vector<Definition> &out, bool inConfig,
                        llvm::StringRef where);
  std::unique_ptr<BlockDecl> parseBlock(bool isModel);
  bool parseMember(BlockDecl &block);
  bool parseForward(BlockDecl &block);
  bool parseType(TypeExpr &type);
  bool parseStatement(std::vector<Stmt> &body);

  // Expressions.
  ExprPtr parseExpr();
  ExprPtr parseBinary(unsigned minPrecedence);
  ExprPtr parseUnary();
  ExprPtr parsePostfix(ExprPtr base);
  ExprPtr parsePrimary();
  ExprPtr parseParenthesized();
  bool parseArguments(std::vector<Argument> &args, Tok close,
                      llvm::StringRef context);
  bool parseExprList(std::vector<ExprPtr> &out, Tok close,
                     const llvm::Twine &context);

  DiagnosticEngine &diags;
  unsigned bufferId;
  Lexer lexer;
  Token tok, ahead;
  const char *prevEnd = nullptr;
  unsigned nesting = 0; // open brackets around the current token
  unsigned depth = 0;   // expression recursion depth
};

/// RAII guard for the bracket nesting that makes newlines insignificant.
struct NestingGuard {
  explicit NestingGuard(unsigned &n) : n(n) { ++n; }
  ~NestingGuard() { --n; }
  unsigned &n;
};

} // namespace

//===----------------------------------------------------------------------===//
// Declarations
//===----------------------------------------------------------------------===//

std::unique_ptr<FileAST> Parser::parseFile() {
  auto file = std::make_unique<FileAST>();
  file->bufferId = bufferId;
  file->path = diags.getSourceMgr()
                   .getMemoryBuffer(bufferId)
                   ->getBufferIdentifier()
                   .str();
  while (!tok.is(Tok::Eof) && !stop()) {
    bool ok = true;
    switch (tok.kind) {
    case Tok::Semicolon:
      consume();
      continue;
    case Tok::KwImport:
      ok = parseImport(*file);
      break;
    case Tok::KwConst: {
      consume();
      std::vector<Definition> defs;
      Definition def;
      def.name = parseBinding("after 'const'");
      ok = !def.name.name.empty() && expect(Tok::Equal, "after constant name");
      if (ok && (def.value = parseExpr())) {
        file->constants.push_back(std::move(def));
        ok = endStatement("constant");
      } else {
        ok = false;
      }
      break;
    }
    case Tok::KwConfig:
      consume();
      ok = parseDefinitions(file->constants, /*inConfig=*/true, "config");
      break;
    case Tok::KwTrain:
      if (file->hasTrain) {
        diags.error(tok.loc()) << "duplicate 'train' section";
        diags.note(file->trainLoc) << "previous 'train' section is here";
      }
      file->hasTrain = true;
      file->trainLoc = tok.loc();
      consume();
      ok = parseDefinitions(file->train, /*inConfig=*/false, "train");
      break;
    case Tok::KwBlock:
    case Tok::KwModel: {
      bool isModel = tok.is(Tok::KwModel);
      consume();
      if (auto block = parseBlock(isModel))
        file->blocks.push_back(std::move(block));
      else
        ok = false;
      break;
    }
    default:
      errorExpected("'import', 'const', 'config', 'block', 'model' or 'train'",
                    "at top level");
      ok = false;
      break;
    }
    if (!ok) {
      // Skip to the next top-level keyword at the start of a line. Every
      // item consumed its first token, so this always makes progress.
      while (!tok.is(Tok::Eof) &&
             !(tok.newlineBefore &&
               (tok.is(Tok::KwImport) || tok.is(Tok::KwConst) ||
                tok.is(Tok::KwConfig) || tok.is(Tok::KwBlock) ||
                tok.is(Tok::KwModel) || tok.is(Tok::KwTrain))))
        consume();
      nesting = 0;
    }
  }
  return file;
}

bool Parser::parseImport(FileAST &file) {
  ImportDecl import;
  import.loc = tok.loc();
  consume();
  import.nameLoc = tok.loc();
  Binding part = parseBinding("after 'import'");
  if (part.name.empty())
    return false;
  import.name = part.name;
  while (consumeIf(Tok::Dot)) {
    part = parseBinding("after '.' in import");
    if (part.name.empty())
      return false;
    import.name += "." + part.name;
  }
  file.imports.push_back(std::move(import));
  return endStatement("import");
}

bool Parser::parseDefinitions(std::vector<Definition> &out, bool inConfig,
                              llvm::StringRef where) {
  if (!expect(Tok::LBrace, ("after '" + where + "'")))
    return false;
  while (!tok.is(Tok::RBrace) && !tok.is(Tok::Eof) && !stop()) {
    if (consumeIf(Tok::Semicolon))
      continue;
    Definition def;
    def.inConfig = inConfig;
    def.name = parseBinding(("in '" + where + "'"));
    if (def.name.name.empty() ||
        !expect(Tok::Equal, ("after '" + def.name.name + "'")) ||
        !(def.value = parseExpr()) || !endStatement("definition")) {
      recover();
      continue;
    }
    out.push_back(std::move(def));
  }
  return expect(Tok::RBrace, ("to close '" + where + "'"));
}

std::unique_ptr<BlockDecl> Parser::parseBlock(bool isModel) {
  auto block = std::make_unique<BlockDecl>();
  block->isModel = isModel;
  block->name = parseBinding(isModel ? "after 'model'" : "after 'block'");
  if (block->name.name.empty())
    return nullptr;
  if (!isModel && consumeIf(Tok::LParen)) {
    NestingGuard guard(nesting);
    while (!tok.is(Tok::RParen)) {
      BlockParam param;
      param.name = parseBinding("in block parameters");
      if (param.name.name.empty())
        return nullptr;
      if (consumeIf(Tok::Equal) && !(param.defaultValue = parseExpr()))
        return nullptr;
      block->params.push_back(std::move(param));
      if (!consumeIf(Tok::Comma))
        break;
    }
    if (!expect(Tok::RParen, "to close block parameters"))
      return nullptr;
  }
  if (!expect(Tok::LBrace, ("to open '" + block->name.name + "'")))
    return nullptr;
  while (!tok.is(Tok::RBrace) && !tok.is(Tok::Eof) && !stop()) {
    if (consumeIf(Tok::Semicolon))
      continue;
    if (!parseMember(*block))
      recover();
  }
  if (!expect(Tok::RBrace, ("to close '" + block->name.name + "'")))
    return nullptr;
  return block;
}

bool Parser::parseMember(BlockDecl &block) {
  if (tok.is(Tok::KwForward))
    return parseForward(block);
  MemberDecl member;
  member.loc = tok.loc();
  member.name = parseBinding("or 'forward' in a block");
  if (member.name.name.empty() ||
      !expect(Tok::Equal, ("after '" + member.name.name + "'")))
    return false;
  if (consumeIf(Tok::KwParam)) {
    member.kind = MemberDecl::Kind::Param;
    if (!expect(Tok::LBracket, "after 'param'"))
      return false;
    {
      NestingGuard guard(nesting);
      if (!parseExprList(member.dims, Tok::RBracket, "in parameter shape"))
        return false;
    }
    if (consumeIf(Tok::KwInit) && !(member.init = parseExpr()))
      return false;
  } else if (consumeIf(Tok::KwRepeat)) {
    member.kind = MemberDecl::Kind::Repeat;
    if (!expect(Tok::LParen, "after 'repeat'"))
      return false;
    {
      NestingGuard guard(nesting);
      if (!(member.count = parseExpr()) ||
          !expect(Tok::RParen, "after the repeat count"))
        return false;
    }
    if (!(member.value = parseExpr()))
      return false;
  } else {
    member.kind = MemberDecl::Kind::Value;
    if (!(member.value = parseExpr()))
      return false;
  }
  block.members.push_back(std::move(member));
  return endStatement("member");
}

bool Parser::parseType(TypeExpr &type) {
  type.loc = tok.loc();
  if (!tok.is(Tok::Identifier)) {
    errorExpected("a type such as 'f32[B, T, dim]'", "");
    return false;
  }
  type.dtype = tok.text.str();
  consume();
  if (tok.is(Tok::LBracket) && !(tok.newlineBefore && nesting == 0)) {
    consume();
    NestingGuard guard(nesting);
    return parseExprList(type.dims, Tok::RBracket, "in tensor shape");
  }
  return true;
}

bool Parser::parseForward(BlockDecl &block) {
  SMLoc loc = tok.loc();
  consume();
  if (block.forward) {
    diags.error(loc) << "duplicate 'forward' in '" << block.name.name << "'";
    diags.note(block.forward->loc) << "previous 'forward' is here";
  }
  ForwardDecl fwd;
  fwd.loc = loc;
  if (!expect(Tok::LParen, "after 'forward'"))
    return false;
  {
    NestingGuard guard(nesting);
    while (!tok.is(Tok::RParen)) {
      ForwardDecl::Arg arg;
      arg.name = parseBinding("in forward arguments");
      if (arg.name.name.empty() ||
          !expect(Tok::Colon, ("after argument '" + arg.name.name + "'")) ||
          !parseType(arg.type))
        return false;
      fwd.args.push_back(std::move(arg));
      if (!consumeIf(Tok::Comma))
        break;
    }
    if (!expect(Tok::RParen, "to close forward arguments"))
      return false;
  }
  if (consumeIf(Tok::Arrow)) {
    fwd.result.emplace();
    if (!parseType(*fwd.result))
      return false;
  }
  if (!expect(Tok::LBrace, "to open the body of 'forward'"))
    return false;
  while (!tok.is(Tok::RBrace) && !tok.is(Tok::Eof) && !stop()) {
    if (consumeIf(Tok::Semicolon))
      continue;
    if (!parseStatement(fwd.body))
      recover();
  }
  fwd.endLoc = tok.loc();
  if (!expect(Tok::RBrace, "to close 'forward'"))
    return false;
  if (!block.forward)
    block.forward = std::move(fwd);
  return endStatement("'forward'");
}

bool Parser::parseStatement(std::vector<Stmt> &body) {
  Stmt stmt;
  stmt.loc = tok.loc();
  if (consumeIf(Tok::KwReturn)) {
    stmt.kind = Stmt::Kind::Return;
    if (atStatementEnd()) {
      diags.error(stmt.loc) << "expected a value after 'return'";
      return false;
    }
    ExprPtr value = parseExpr();
    if (!value)
      return false;
    if (tok.is(Tok::Comma)) {
      std::vector<ExprPtr> values;
      values.push_back(std::move(value));
      while (consumeIf(Tok::Comma)) {
        if (!(value = parseExpr()))
          return false;
        values.push_back(std::move(value));
      }
      value = std::make_unique<TupleExpr>(stmt.loc, std::move(values));
    }
    stmt.value = std::move(value);
  } else {
    stmt.kind = Stmt::Kind::Assign;
    do {
      Binding b = parseBinding("or 'return' in 'forward'");
      if (b.name.empty())
        return false;
      stmt.targets.push_back(std::move(b));
    } while (consumeIf(Tok::Comma));
    if (!expect(Tok::Equal, "in assignment") || !(stmt.value = parseExpr()))
      return false;
  }
  body.push_back(std::move(stmt));
  return endStatement("statement");
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

namespace {
struct DepthGuard {
  DepthGuard(unsigned &d) : d(d) { ++d; }
  ~DepthGuard() { --d; }
  unsigned &d;
};
} // namespace

ExprPtr Parser::parseExpr() {
  DepthGuard guard(depth);
  if (depth > kMaxNesting) {
    diags.error(tok.loc()) << "expression is nested too deeply (more than "
                           << kMaxNesting << " levels)";
    // Skip the rest of the input: nothing sensible follows a bracket bomb.
    while (!tok.is(Tok::Eof))
      consume();
    return nullptr;
  }
  return parseBinary(1);
}

static unsigned precedence(Tok kind) {
  switch (kind) {
  case Tok::Plus:
  case Tok::Minus:
    return 1;
  case Tok::Star:
  case Tok::Slash:
  case Tok::Percent:
  case Tok::At:
    return 2;
  default:
    return 0;
  }
}

ExprPtr Parser::parseBinary(unsigned minPrecedence) {
  ExprPtr lhs = parseUnary();
  while (lhs) {
    unsigned prec = precedence(tok.kind);
    // A newline ends the statement unless inside brackets.
    if (prec < minPrecedence || prec == 0 ||
        (tok.newlineBefore && nesting == 0))
      return lhs;
    char op = tok.text[0];
    SMLoc loc = tok.loc();
    consume();
    ExprPtr rhs = parseBinary(prec + 1);
    if (!rhs)
      return nullptr;
    lhs = std::make_unique<BinaryExpr>(loc, op, std::move(lhs), std::move(rhs));
    if (!checkHeight(*lhs))
      return nullptr;
  }
  return lhs;
}

ExprPtr Parser::parseUnary() {
  if (tok.is(Tok::Minus)) {
    SMLoc loc = tok.loc();
    consume();
    DepthGuard guard(depth);
    if (depth > kMaxNesting) {
      diags.error(loc) << "expression is nested too deeply (more than "
                       << kMaxNesting << " levels)";
      while (!tok.is(Tok::Eof))
        consume();
      return nullptr;
    }
    ExprPtr operand = parseUnary();
    if (!operand)
      return nullptr;
    return std::make_unique<UnaryExpr>(loc, '-', std::move(operand));
  }
  ExprPtr primary = parsePrimary();
  if (!primary)
    return nullptr;
  return parsePostfix(std::move(primary));
}

ExprPtr Parser::parsePostfix(ExprPtr base) {
  while (base) {
    // `f\n(x)` is two statements, not a call.
    if (tok.newlineBefore && nesting == 0)
      return base;
    SMLoc loc = tok.loc();
    if (consumeIf(Tok::Dot)) {
      Binding name = parseBinding("after '.'");
      if (name.name.empty())
        return nullptr;
      base = std::make_unique<MemberExpr>(base->getLoc(), std::move(base),
                                          name.name, name.loc);
    } else if (consumeIf(Tok::LParen)) {
      std::vector<Argument> args;
      NestingGuard guard(nesting);
      if (!parseArguments(args, Tok::RParen, "in call"))
        return nullptr;
      base = std::make_unique<CallExpr>(loc, std::move(base), std::move(args));
    } else if (consumeIf(Tok::LBracket)) {
      NestingGuard guard(nesting);
      std::vector<IndexItem> items;
      while (!tok.is(Tok::RBracket)) {
        IndexItem item;
        item.loc = tok.loc();
        if (!tok.is(Tok::Colon) && !(item.lo = parseExpr()))
          return nullptr;
        if (consumeIf(Tok::Colon)) {
          item.isSlice = true;
          if (!tok.is(Tok::Comma) && !tok.is(Tok::RBracket) &&
              !(item.hi = parseExpr()))
            return nullptr;
        }
        items.push_back(std::move(item));
        if (!consumeIf(Tok::Comma))
          break;
      }
      if (!expect(Tok::RBracket, "to close the index"))
        return nullptr;
      base =
          std::make_unique<IndexExpr>(loc, std::move(base), std::move(items));
    } else {
      return base;
    }
    if (!checkHeight(*base))
      return nullptr;
  }
  return base;
}

ExprPtr Parser::parsePrimary() {
  SMLoc loc = tok.loc();
  switch (tok.kind) {
  case Tok::Integer: {
    int64_t value;
    if (tok.text.getAsInteger(10, value)) {
      diags.error(loc) << "integer '" << tok.text.take_front(40)
                       << "' is too large";
      consume();
      return nullptr;
    }
    consume();
    return std::make_unique<IntExpr>(loc, value);
  }
  case Tok::Float: {
    std::string text = tok.text.str();
    errno = 0;
    double value = std::strtod(text.c_str(), nullptr);
    if (errno == ERANGE && std::abs(value) > 1.0) {
      diags.error(loc) << "number '" << tok.text.take_front(40)
                       << "' is out of range";
      consume();
      return nullptr;
    }
    consume();
    return std::make_unique<FloatExpr>(loc, value);
  }
  case Tok::String: {
    std::string value = tok.text.drop_front().drop_back().str();
    consume();
    return std::make_unique<StringExpr>(loc, std::move(value));
  }
  case Tok::KwTrue:
  case Tok::KwFalse: {
    bool value = tok.is(Tok::KwTrue);
    consume();
    return std::make_unique<BoolExpr>(loc, value);
  }
  case Tok::Identifier: {
    auto name = std::make_unique<NameExpr>(loc, tok.text);
    consume();
    return name;
  }
  case Tok::LParen:
    return parseParenthesized();
  case Tok::LBracket: {
    consume();
    NestingGuard guard(nesting);
    std::vector<ExprPtr> elements;
    if (!parseExprList(elements, Tok::RBracket, "in list"))
      return nullptr;
    return std::make_unique<ListExpr>(loc, std::move(elements));
  }
  default:
    errorExpected("an expression", "");
    return nullptr;
  }
}

/// `(e)`, a tuple `(a, b)`, or a record `(name = e, ...)`.
ExprPtr Parser::parseParenthesized() {
  SMLoc loc = tok.loc();
  consume();
  NestingGuard guard(nesting);
  if (tok.is(Tok::Identifier) && ahead.is(Tok::Equal)) {
    std::vector<Argument> fields;
    if (!parseArguments(fields, Tok::RParen, "in record"))
      return nullptr;
    for (auto &field : fields)
      if (field.name.empty()) {
        diags.error(field.loc) << "every field of a record needs a name";
        return nullptr;
      }
    return std::make_unique<RecordExpr>(loc, std::move(fields));
  }
  if (tok.is(Tok::RParen)) {
    diags.error(tok.loc()) << "expected an expression inside '()'";
    consume();
    return nullptr;
  }
  ExprPtr first = parseExpr();
  if (!first)
    return nullptr;
  if (consumeIf(Tok::RParen))
    return first;
  if (!tok.is(Tok::Comma)) {
    errorExpected("')'", "to close '('");
    return nullptr;
  }
  std::vector<ExprPtr> elements;
  elements.push_back(std::move(first));
  while (consumeIf(Tok::Comma) && !tok.is(Tok::RParen)) {
    ExprPtr e = parseExpr();
    if (!e)
      return nullptr;
    elements.push_back(std::move(e));
  }
  if (!expect(Tok::RParen, "to close the tuple"))
    return nullptr;
  return std::make_unique<TupleExpr>(loc, std::move(elements));
}

bool Parser::parseArguments(std::vector<Argument> &args, Tok close,
                            llvm::StringRef context) {
  bool sawNamed = false;
  while (!tok.is(close)) {
    Argument arg;
    arg.loc = tok.loc();
    if (tok.is(Tok::Identifier) && ahead.is(Tok::Equal)) {
      arg.name = tok.text.str();
      consume();
      consume();
      sawNamed = true;
    } else if (sawNamed) {
      diags.error(arg.loc) << "positional argument after a named argument "
                           << context;
      return false;
    }
    if (!(arg.value = parseExpr()))
      return false;
    args.push_back(std::move(arg));
    if (!consumeIf(Tok::Comma))
      break;
  }
  return expect(close, ("to close the arguments " + context));
}

bool Parser::parseExprList(std::vector<ExprPtr> &out, Tok close,
                           const llvm::Twine &context) {
  while (!tok.is(close)) {
    ExprPtr e = parseExpr();
    if (!e)
      return false;
    out.push_back(std::move(e));
    if (!consumeIf(Tok::Comma))
      break;
  }
  return expect(close, context);
}

ExprPtr Parser::parseStandaloneExpr() {
  ExprPtr e = parseExpr();
  if (e && !tok.is(Tok::Eof)) {
    errorExpected("end of value", "");
    return nullptr;
  }
  return e;
}

std::unique_ptr<FileAST> hotstage::lang::parseFile(unsigned bufferId,
                                                   DiagnosticEngine &diags) {
  return Parser(bufferId, 0, diags).parseFile();
}

ExprPtr hotstage::lang::parseExpression(unsigned bufferId, size_t offset,
                                        DiagnosticEngine &diags) {
  return Parser(bufferId, offset, diags).parseStandaloneExpr();
}
