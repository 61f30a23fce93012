//===- AST.h - Syntax tree of a model file ----------------------*- C++ -*-===//
//
// Every node keeps the location of its first token; MLIRGen turns these into
// FileLineColLocs. Expressions use LLVM-style RTTI (a kind and `classof`).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_LANG_AST_H
#define HOTSTAGE_LANG_AST_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Casting.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hotstage::lang {

using llvm::SMLoc;

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

class Expr {
public:
  enum class Kind {
    Int,
    Float,
    String,
    Bool,
    Name,
    Member,
    Call,
    Index,
    Binary,
    Unary,
    Tuple,
    Record,
    List
  };
  Expr(Kind kind, SMLoc loc) : kind(kind), loc(loc) {}
  virtual ~Expr() = default;
  Kind getKind() const { return kind; }
  SMLoc getLoc() const { return loc; }

  /// Height of the tree below this node; the parser bounds it so recursive
  /// walks over hostile input cannot exhaust the stack.
  unsigned height = 1;

private:
  Kind kind;
  SMLoc loc;
};
using ExprPtr = std::unique_ptr<Expr>;

inline unsigned heightOf(const std::unique_ptr<Expr> &e) {
  return e ? e->height : 0;
}

class IntExpr : public Expr {
public:
  IntExpr(SMLoc loc, int64_t value) : Expr(Kind::Int, loc), value(value) {}
  int64_t value;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Int; }
};

class FloatExpr : public Expr {
public:
  FloatExpr(SMLoc loc, double value) : Expr(Kind::Float, loc), value(value) {}
  double value;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Float; }
};

class StringExpr : public Expr {
public:
  StringExpr(SMLoc loc, std::string value)
      : Expr(Kind::String, loc), value(std::move(value)) {}
  std::string value;
  static bool classof(const Expr *e) { return e->getKind() == Kind::String; }
};

class BoolExpr : public Expr {
public:
  BoolExpr(SMLoc loc, bool value) : Expr(Kind::Bool, loc), value(value) {}
  bool value;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Bool; }
};

class NameExpr : public Expr {
public:
  NameExpr(SMLoc loc, llvm::StringRef name)
      : Expr(Kind::Name, loc), name(name.str()) {}
  std::string name;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Name; }
};

/// `base.name`, e.g. `nn.LayerNorm`.
class MemberExpr : public Expr {
public:
  MemberExpr(SMLoc loc, ExprPtr base, llvm::StringRef name, SMLoc nameLoc)
      : Expr(Kind::Member, loc), base(std::move(base)), name(name.str()),
        nameLoc(nameLoc) {
    height = 1 + heightOf(this->base);
  }
  ExprPtr base;
  std::string name;
  SMLoc nameLoc;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Member; }
};

/// One argument of a call; `name` is set for `key = value`.
struct Argument {
  std::string name;
  SMLoc loc;
  ExprPtr value;
};

class CallExpr : public Expr {
public:
  CallExpr(SMLoc loc, ExprPtr callee, std::vector<Argument> args)
      : Expr(Kind::Call, loc), callee(std::move(callee)),
        args(std::move(args)) {
    height = 1 + heightOf(this->callee);
    for (auto &a : this->args)
      height = std::max(height, 1 + heightOf(a.value));
  }
  ExprPtr callee;
  std::vector<Argument> args;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Call; }
};

/// One entry of `x[...]`: either `lo:hi` (either side optional) or `i`.
struct IndexItem {
  SMLoc loc;
  bool isSlice = false;
  ExprPtr lo, hi; // for a plain index, `lo` holds it
};

class IndexExpr : public Expr {
public:
  IndexExpr(SMLoc loc, ExprPtr base, std::vector<IndexItem> items)
      : Expr(Kind::Index, loc), base(std::move(base)), items(std::move(items)) {
    height = 1 + heightOf(this->base);
    for (auto &i : this->items)
      height = std::max({height, 1 + heightOf(i.lo), 1 + heightOf(i.hi)});
  }
  ExprPtr base;
  std::vector<IndexItem> items;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Index; }
};

class BinaryExpr : public Expr {
public:
  BinaryExpr(SMLoc loc, char op, ExprPtr lhs, ExprPtr rhs)
      : Expr(Kind::Binary, loc), op(op), lhs(std::move(lhs)),
        rhs(std::move(rhs)) {
    height = 1 + std::max(heightOf(this->lhs), heightOf(this->rhs));
  }
  char op; // one of + - * / % @
  ExprPtr lhs, rhs;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Binary; }
};

class UnaryExpr : public Expr {
public:
  UnaryExpr(SMLoc loc, char op, ExprPtr operand)
      : Expr(Kind::Unary, loc), op(op), operand(std::move(operand)) {
    height = 1 + heightOf(this->operand);
  }
  char op; // '-'
  ExprPtr operand;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Unary; }
};

/// `(a, b)`.
class TupleExpr : public Expr {
public:
  TupleExpr(SMLoc loc, std::vector<ExprPtr> elements)
      : Expr(Kind::Tuple, loc), elements(std::move(elements)) {
    for (auto &e : this->elements)
      height = std::max(height, 1 + heightOf(e));
  }
  std::vector<ExprPtr> elements;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Tuple; }
};

/// `(stages = 4, schedule = zb_h1)`.
class RecordExpr : public Expr {
public:
  RecordExpr(SMLoc loc, std::vector<Argument> fields)
      : Expr(Kind::Record, loc), fields(std::move(fields)) {
    for (auto &f : this->fields)
      height = std::max(height, 1 + heightOf(f.value));
  }
  std::vector<Argument> fields;
  static bool classof(const Expr *e) { return e->getKind() == Kind::Record; }
};

/// `[0, 2, 1]`.
class ListExpr : public Expr {
public:
  ListExpr(SMLoc loc, std::vector<ExprPtr> elements)
      : Expr(Kind::List, loc), elements(std::move(elements)) {
    for (auto &e : this->elements)
      height = std::max(height, 1 + heightOf(e));
  }
  std::vector<ExprPtr> elements;
  static bool classof(const Expr *e) { return e->getKind() == Kind::List; }
};

//===----------------------------------------------------------------------===//
// Types, statements and declarations
//===----------------------------------------------------------------------===//

/// `f32[B, T, dim]`, or `f32` for a scalar.
struct TypeExpr {
  SMLoc loc;
  std::string dtype;
  std::vector<ExprPtr> dims;
};

struct Binding {
  std::string name;
  SMLoc loc;
};

/// `x = expr`, `q, k, v = split(...)` or `return expr`.
struct Stmt {
  enum class Kind { Assign, Return } kind;
  SMLoc loc;
  std::vector<Binding> targets;
  ExprPtr value;
};

struct ForwardDecl {
  SMLoc loc;
  struct Arg {
    Binding name;
    TypeExpr type;
  };
  std::vector<Arg> args;
  std::optional<TypeExpr> result;
  std::vector<Stmt> body;
  SMLoc endLoc; // the closing brace
};

/// A member of a block or model: a parameter, a stack of layers, or a named
/// value (a sub-block instance or a block-local constant).
struct MemberDecl {
  enum class Kind { Param, Repeat, Value } kind;
  Binding name;
  SMLoc loc;
  // Param: `param[dims] init expr`.
  std::vector<ExprPtr> dims;
  ExprPtr init;
  // Repeat: `repeat(count) Ctor(args)`; Value: any expression.
  ExprPtr count;
  ExprPtr value;
};

/// A constructor parameter of a block, with an optional default.
struct BlockParam {
  Binding name;
  ExprPtr defaultValue;
};

/// `block Name(params) { members; forward }` or `model Name { ... }`.
struct BlockDecl {
  bool isModel = false;
  Binding name;
  std::vector<BlockParam> params;
  std::vector<MemberDecl> members;
  std::optional<ForwardDecl> forward;
};

/// `name = expr` in `config`, `train` or after `const`.
struct Definition {
  Binding name;
  ExprPtr value;
  bool inConfig = false;
};

struct ImportDecl {
  SMLoc loc;
  std::string name; // dotted module path
  SMLoc nameLoc;
};

/// One parsed `.hot` file.
struct FileAST {
  std::string path;
  unsigned bufferId = 0;
  std::vector<ImportDecl> imports;
  std::vector<Definition> constants; // `const` and `config` entries
  std::vector<std::unique_ptr<BlockDecl>> blocks; // the model included
  std::vector<Definition> train;
  SMLoc trainLoc;
  bool hasTrain = false;
};

/// Prints the tree in an indented, stable form (`--emit=ast`).
void dump(const FileAST &file, llvm::raw_ostream &os,
          const llvm::SourceMgr &sourceMgr);
void printExpr(const Expr &expr, llvm::raw_ostream &os);
/// `f32[B, T, dim]` as written.
void printType(const TypeExpr &type, llvm::raw_ostream &os);

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_AST_H
