//===- AST.cpp - Printing the syntax tree (--emit=ast) --------------------===//

#include "lang/AST.h"
#include "lang/Program.h"

#include "llvm/Support/SourceMgr.h"

using namespace hotstage::lang;

void hotstage::lang::printExpr(const Expr &expr, llvm::raw_ostream &os) {
  auto printList = [&](const std::vector<ExprPtr> &elements) {
    for (size_t i = 0; i < elements.size(); ++i) {
      if (i)
        os << ", ";
      printExpr(*elements[i], os);
    }
  };
  auto printArgs = [&](const std::vector<Argument> &args) {
    for (size_t i = 0; i < args.size(); ++i) {
      if (i)
        os << ", ";
      if (!args[i].name.empty())
        os << args[i].name << " = ";
      printExpr(*args[i].value, os);
    }
  };
  switch (expr.getKind()) {
  case Expr::Kind::Int:
    os << llvm::cast<IntExpr>(expr).value;
    return;
  case Expr::Kind::Float:
    os << formatNumber(llvm::cast<FloatExpr>(expr).value);
    return;
  case Expr::Kind::String:
    os << '"' << llvm::cast<StringExpr>(expr).value << '"';
    return;
  case Expr::Kind::Bool:
    os << (llvm::cast<BoolExpr>(expr).value ? "true" : "false");
    return;
  case Expr::Kind::Name:
    os << llvm::cast<NameExpr>(expr).name;
    return;
  case Expr::Kind::Member: {
    auto &m = llvm::cast<MemberExpr>(expr);
    printExpr(*m.base, os);
    os << "." << m.name;
    return;
  }
  case Expr::Kind::Call: {
    auto &c = llvm::cast<CallExpr>(expr);
    printExpr(*c.callee, os);
    os << "(";
    printArgs(c.args);
    os << ")";
    return;
  }
  case Expr::Kind::Index: {
    auto &ix = llvm::cast<IndexExpr>(expr);
    printExpr(*ix.base, os);
    os << "[";
    for (size_t i = 0; i < ix.items.size(); ++i) {
      if (i)
        os << ", ";
      if (ix.items[i].lo)
        printExpr(*ix.items[i].lo, os);
      if (ix.items[i].isSlice) {
        os << ":";
        if (ix.items[i].hi)
          printExpr(*ix.items[i].hi, os);
      }
    }
    os << "]";
    return;
  }
  case Expr::Kind::Binary: {
    auto &b = llvm::cast<BinaryExpr>(expr);
    os << "(";
    printExpr(*b.lhs, os);
    os << " " << b.op << " ";
    printExpr(*b.rhs, os);
    os << ")";
    return;
  }
  case Expr::Kind::Unary: {
    auto &u = llvm::cast<UnaryExpr>(expr);
    os << "(" << u.op;
    printExpr(*u.operand, os);
    os << ")";
    return;
  }
  case Expr::Kind::Tuple:
    os << "(";
    printList(llvm::cast<TupleExpr>(expr).elements);
    os << ")";
    return;
  case Expr::Kind::Record:
    os << "(";
    printArgs(llvm::cast<RecordExpr>(expr).fields);
    os << ")";
    return;
  case Expr::Kind::List:
    os << "[";
    printList(llvm::cast<ListExpr>(expr).elements);
    os << "]";
    return;
  }
}

void hotstage::lang::printType(const TypeExpr &type, llvm::raw_ostream &os) {
  os << type.dtype;
  if (type.dims.empty())
    return;
  os << "[";
  for (size_t i = 0; i < type.dims.size(); ++i) {
    if (i)
      os << ", ";
    printExpr(*type.dims[i], os);
  }
  os << "]";
}

namespace {
class Dumper {
public:
  Dumper(llvm::raw_ostream &os, const llvm::SourceMgr &sm) : os(os), sm(sm) {}

  std::string at(SMLoc loc) {
    auto [line, col] = sm.getLineAndColumn(loc);
    return ("@" + llvm::Twine(line) + ":" + llvm::Twine(col)).str();
  }
  void definition(const Definition &d, llvm::StringRef indent) {
    os << indent << d.name.name << " = ";
    printExpr(*d.value, os);
    os << "  " << at(d.name.loc) << "\n";
  }
  void block(const BlockDecl &b) {
    os << (b.isModel ? "Model " : "Block ") << b.name.name;
    if (!b.isModel) {
      os << "(";
      for (size_t i = 0; i < b.params.size(); ++i) {
        if (i)
          os << ", ";
        os << b.params[i].name.name;
        if (b.params[i].defaultValue) {
          os << " = ";
          printExpr(*b.params[i].defaultValue, os);
        }
      }
      os << ")";
    }
    os << "  " << at(b.name.loc) << "\n";
    for (const MemberDecl &m : b.members) {
      os << "  ";
      switch (m.kind) {
      case MemberDecl::Kind::Param:
        os << "Param " << m.name.name << " [";
        for (size_t i = 0; i < m.dims.size(); ++i) {
          if (i)
            os << ", ";
          printExpr(*m.dims[i], os);
        }
        os << "]";
        if (m.init) {
          os << " init ";
          printExpr(*m.init, os);
        }
        break;
      case MemberDecl::Kind::Repeat:
        os << "Repeat " << m.name.name << " x";
        printExpr(*m.count, os);
        os << " ";
        printExpr(*m.value, os);
        break;
      case MemberDecl::Kind::Value:
        os << "Member " << m.name.name << " = ";
        printExpr(*m.value, os);
        break;
      }
      os << "  " << at(m.loc) << "\n";
    }
    if (!b.forward)
      return;
    const ForwardDecl &f = *b.forward;
    os << "  Forward(";
    for (size_t i = 0; i < f.args.size(); ++i) {
      if (i)
        os << ", ";
      os << f.args[i].name.name << ": ";
      printType(f.args[i].type, os);
    }
    os << ")";
    if (f.result) {
      os << " -> ";
      printType(*f.result, os);
    }
    os << "  " << at(f.loc) << "\n";
    for (const Stmt &s : f.body) {
      os << "    ";
      if (s.kind == Stmt::Kind::Return) {
        os << "Return ";
      } else {
        for (size_t i = 0; i < s.targets.size(); ++i)
          os << (i ? ", " : "") << s.targets[i].name;
        os << " = ";
      }
      printExpr(*s.value, os);
      os << "  " << at(s.loc) << "\n";
    }
  }

  llvm::raw_ostream &os;
  const llvm::SourceMgr &sm;
};
} // namespace

void hotstage::lang::dump(const FileAST &file, llvm::raw_ostream &os,
                          const llvm::SourceMgr &sourceMgr) {
  Dumper d(os, sourceMgr);
  os << "File " << file.path << "\n";
  for (const ImportDecl &i : file.imports)
    os << "Import " << i.name << "  " << d.at(i.loc) << "\n";
  for (const Definition &c : file.constants) {
    os << (c.inConfig ? "Config " : "Const ");
    d.definition(c, "");
  }
  for (const auto &b : file.blocks)
    d.block(*b);
  if (file.hasTrain) {
    os << "Train  " << d.at(file.trainLoc) << "\n";
    for (const Definition &t : file.train)
      d.definition(t, "  ");
  }
}
