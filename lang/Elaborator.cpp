//===- Elaborator.cpp - Checking and elaborating a model ------------------===//
//
// Runs in two steps. The resolver walks every block of every loaded module,
// used or not, and reports names that do not resolve. The elaborator then
// instantiates the model: it evaluates constants (with `-D` overrides),
// constructs every block instance with concrete constructor arguments,
// names every parameter by its path, and runs each `forward` on concrete
// tensor types, checking every shape with the nn dialect's shape rules and
// recording one Node per operation.
//
//===----------------------------------------------------------------------===//

#include "lang/Frontend.h"
#include "lang/Parser.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>
#include <set>

using namespace hotstage::lang;
namespace shape = hotstage::nn::shape;
using llvm::cast;
using llvm::dyn_cast;
using llvm::isa;

namespace {

/// Limits that keep hostile models from exhausting time or memory.
constexpr int64_t kMaxRepeat = 100000;
constexpr size_t kMaxNodes = 1000000;
constexpr size_t kMaxInstances = 200000;
constexpr size_t kMaxInstanceDepth = 64;

/// The functions a model can call without importing anything.
const llvm::StringSet<> &builtinNames() {
  static const llvm::StringSet<> names = {
      "matmul",    "linear",  "embedding",    "transpose", "reshape", "split",
      "concat",    "softmax", "layer_norm",   "rms_norm",  "gelu",    "relu",
      "silu",      "tanh",    "exp",          "log",       "sqrt",    "rsqrt",
      "sigmoid",   "sum",     "mean",         "max",       "min",     "maximum",
      "attention", "rope",    "cross_entropy"};
  return names;
}

const llvm::StringSet<> &initializerNames() {
  static const llvm::StringSet<> names = {"zeros", "ones", "constant", "normal",
                                          "uniform"};
  return names;
}

struct Instance;

/// A value during elaboration: a compile-time constant, a tensor in the
/// graph, a parameter, or something callable.
struct Val {
  enum class K {
    None, // an error that was already reported
    Int,
    Float,
    Str,
    Bool,
    Tensor,
    Param,
    Block,
    Instance,
    Repeat,
    Module,
    Tuple,
    Builtin
  };
  K k = K::None;
  int64_t i = 0;
  double f = 0;
  std::string s;
  unsigned id = 0; // Tensor: value id; Param: index into params
  const BlockDecl *block = nullptr;
  Module *module = nullptr;
  Instance *inst = nullptr;
  std::vector<Val> elems;

  bool ok() const { return k != K::None; }
  bool isNumber() const { return k == K::Int || k == K::Float; }
  double number() const { return k == K::Int ? double(i) : f; }

  static Val none() { return Val(); }
  static Val ofInt(int64_t v) {
    Val r;
    r.k = K::Int;
    r.i = v;
    return r;
  }
  static Val ofFloat(double v) {
    Val r;
    r.k = K::Float;
    r.f = v;
    return r;
  }
  static Val ofStr(std::string v) {
    Val r;
    r.k = K::Str;
    r.s = std::move(v);
    return r;
  }
  static Val ofBool(bool v) {
    Val r;
    r.k = K::Bool;
    r.i = v;
    return r;
  }
  static Val ofTensor(unsigned id) {
    Val r;
    r.k = K::Tensor;
    r.id = id;
    return r;
  }
};

/// A constructed block: its constructor arguments and members by name.
struct Instance {
  const BlockDecl *decl = nullptr;
  Module *module = nullptr;
  std::string path; // "" for the model, "blocks.3.attn" below it
  std::map<std::string, Val> env;
  std::vector<Instance *> layers; // for `repeat`
};

struct Scope {
  Module *module = nullptr;
  Instance *inst = nullptr;
  std::map<std::string, Val> *locals = nullptr;
  bool forward = false;   // tensors may be created
  std::string memberPath; // set while evaluating a member: names instances
};

struct Override {
  std::string name;
  std::string value;
  unsigned bufferId = 0;
  SMLoc nameLoc; // the start of `name=value`
  SMLoc loc;     // the start of the value
  bool used = false;
};

/// An evaluated call argument.
struct EvArg {
  std::string name;
  SMLoc loc;
  Val v;
};

class Elaborator {
public:
  Elaborator(llvm::SourceMgr &sm, DiagnosticEngine &diags, Module &main,
             std::vector<Module *> modules,
             const std::vector<std::string> &defines)
      : sm(sm), diags(diags), main(main), allModules(std::move(modules)),
        defines(defines) {}

  std::optional<Program> run();

private:
  // Resolver.
  void resolveModule(Module &module);
  void resolveBlock(Module &module, const BlockDecl &block);
  void resolveExpr(const Expr &e, Module &module,
                   const std::set<std::string> &names);
  void reportUndeclared(llvm::StringRef name, SMLoc loc) {
    if (!name.empty() && isdigit(name[0]))
      diags.error(loc) << "invalid number '" << name << "'";
    else
      diags.error(loc) << "use of undeclared name '" << name << "'";
  }
  bool isModuleName(Module &module, llvm::StringRef name) {
    return module.constants.count(name.str()) ||
           module.blocks.count(name.str()) || module.imports.count(name.str());
  }

  // -D overrides.
  void parseDefines(const std::vector<std::string> &defines);
  Override *findOverride(llvm::StringRef name) {
    for (Override &o : overrides)
      if (o.name == name)
        return &o;
    return nullptr;
  }
  Val evalOverride(Override &o);

  // Constants and names.
  Val evalConstant(Module &module, const Definition &def);
  Val lookup(llvm::StringRef name, SMLoc loc, Scope &scope);
  Val lookupInModule(Module &module, llvm::StringRef name, SMLoc loc,
                     bool report);

  // Expressions.
  Val eval(const Expr &e, Scope &scope);
  Val evalBinary(const BinaryExpr &e, Scope &scope);
  Val evalUnary(const UnaryExpr &e, Scope &scope);
  Val evalIndex(const IndexExpr &e, Scope &scope);
  Val evalCall(const CallExpr &e, Scope &scope);
  Val callBuiltin(const std::string &name, const CallExpr &call, Scope &scope);
  std::optional<int64_t> evalInt(const Expr &e, Scope &scope,
                                 llvm::StringRef what);

  // Blocks.
  Instance *instantiate(const BlockDecl &decl, Module &module,
                        std::vector<EvArg> args, const std::string &path,
                        SMLoc loc);
  bool constructMember(Instance &inst, const MemberDecl &member, Scope &scope);
  bool evalInit(const Expr *init, Scope &scope, Param &param);
  Val callForward(Instance &inst, std::vector<EvArg> args, SMLoc loc);
  bool matchType(const TypeExpr &type, const TensorType &actual,
                 std::map<std::string, Val> &locals, Scope &scope, SMLoc useLoc,
                 llvm::StringRef what);
  std::string describeType(const TypeExpr &type);

  // Train section.
  void evalTrain(Module &module);
  void setTrainField(const std::string &name, const Expr &value, Scope &scope,
                     SMLoc loc);
  void setTrainValue(TrainField &field, const Val &v, SMLoc loc);
  void checkTrain();
  /// `recompute` names a block member of the constructed model.
  bool checkRecompute();

  // Graph construction.
  std::optional<unsigned> asTensor(const Val &v, SMLoc loc,
                                   llvm::StringRef what);
  unsigned emit(OpKind kind, llvm::ArrayRef<unsigned> operands,
                llvm::ArrayRef<TensorType> results, SMLoc loc,
                const std::function<void(Node &)> &attrs = nullptr);
  const TensorType &typeOf(unsigned value) { return program.values[value]; }
  Val elementwise(OpKind kind, char symbol, const Val &lhs, const Val &rhs,
                  SMLoc loc);
  Val unaryOp(OpKind kind, llvm::StringRef name, const Val &x, SMLoc loc);
  bool requireFloat(unsigned value, llvm::StringRef op, SMLoc loc);

  std::string describe(const Val &v);
  Scope *currentScope = nullptr;

  llvm::SourceMgr &sm;
  DiagnosticEngine &diags;
  Module &main;
  std::vector<Module *> allModules;
  const std::vector<std::string> &defines;
  std::vector<Override> overrides;
  std::map<const Definition *, Val> constCache;
  std::set<const Definition *> evaluating;
  std::vector<std::unique_ptr<Instance>> instances;
  std::vector<const BlockDecl *> constructing;
  std::map<std::string, SMLoc> trainSetAt;
  Program program;
  bool tooLarge = false;
};

} // namespace

//===----------------------------------------------------------------------===//
// Resolver: every name in every block resolves, used or not
//===----------------------------------------------------------------------===//

void Elaborator::resolveModule(Module &module) {
  for (const Definition &def : module.ast->constants)
    resolveExpr(*def.value, module, {});
  for (const auto &block : module.ast->blocks)
    resolveBlock(module, *block);
}

void Elaborator::resolveExpr(const Expr &e, Module &module,
                             const std::set<std::string> &names) {
  switch (e.getKind()) {
  case Expr::Kind::Name: {
    const std::string &name = cast<NameExpr>(e).name;
    if (!names.count(name) && !isModuleName(module, name) &&
        !builtinNames().count(name))
      reportUndeclared(name, e.getLoc());
    return;
  }
  case Expr::Kind::Member:
    resolveExpr(*cast<MemberExpr>(e).base, module, names);
    return;
  case Expr::Kind::Call:
    resolveExpr(*cast<CallExpr>(e).callee, module, names);
    for (const Argument &a : cast<CallExpr>(e).args) {
      // `approximate = none` names an option, not a value.
      if (a.name == "approximate" && isa<NameExpr>(a.value.get()))
        continue;
      resolveExpr(*a.value, module, names);
    }
    return;
  case Expr::Kind::Index:
    resolveExpr(*cast<IndexExpr>(e).base, module, names);
    for (const IndexItem &item : cast<IndexExpr>(e).items) {
      if (item.lo)
        resolveExpr(*item.lo, module, names);
      if (item.hi)
        resolveExpr(*item.hi, module, names);
    }
    return;
  case Expr::Kind::Binary:
    resolveExpr(*cast<BinaryExpr>(e).lhs, module, names);
    resolveExpr(*cast<BinaryExpr>(e).rhs, module, names);
    return;
  case Expr::Kind::Unary:
    resolveExpr(*cast<UnaryExpr>(e).operand, module, names);
    return;
  case Expr::Kind::Tuple:
    for (const ExprPtr &x : cast<TupleExpr>(e).elements)
      resolveExpr(*x, module, names);
    return;
  case Expr::Kind::List:
    for (const ExprPtr &x : cast<ListExpr>(e).elements)
      resolveExpr(*x, module, names);
    return;
  case Expr::Kind::Record:
    for (const Argument &a : cast<RecordExpr>(e).fields)
      resolveExpr(*a.value, module, names);
    return;
  default:
    return;
  }
}

void Elaborator::resolveBlock(Module &module, const BlockDecl &block) {
  std::set<std::string> names;
  std::map<std::string, SMLoc> declared;
  auto declare = [&](const Binding &b, llvm::StringRef what) {
    auto [it, inserted] = declared.insert({b.name, b.loc});
    if (!inserted) {
      diags.error(b.loc) << "redefinition of " << what << " '" << b.name
                         << "' in '" << block.name.name << "'";
      diags.note(it->second) << "previous definition is here";
    }
    names.insert(b.name);
  };
  for (const BlockParam &p : block.params) {
    if (p.defaultValue)
      resolveExpr(*p.defaultValue, module, names);
    declare(p.name, "parameter");
  }
  for (const MemberDecl &m : block.members) {
    for (const ExprPtr &d : m.dims)
      resolveExpr(*d, module, names);
    if (m.init) {
      const Expr *callee = m.init.get();
      if (auto *call = dyn_cast<CallExpr>(callee))
        callee = call->callee.get();
      auto *initName = dyn_cast<NameExpr>(callee);
      if (initName && !initializerNames().count(initName->name) &&
          !names.count(initName->name)) {
        diags.error(initName->getLoc())
            << "unknown initializer '" << initName->name
            << "'; expected zeros, ones, constant, normal or uniform";
      } else {
        // Initializer names are only names inside `init`.
        std::set<std::string> withInit = names;
        for (const auto &n : initializerNames())
          withInit.insert(n.getKey().str());
        resolveExpr(*m.init, module, withInit);
      }
    }
    if (m.count)
      resolveExpr(*m.count, module, names);
    if (m.value)
      resolveExpr(*m.value, module, names);
    declare(m.name, "member");
  }
  if (!block.forward) {
    if (block.isModel)
      diags.error(block.name.loc)
          << "model '" << block.name.name << "' has no 'forward'";
    return;
  }
  const ForwardDecl &fwd = *block.forward;
  std::set<std::string> locals = names;
  auto declareDims = [&](const TypeExpr &type) {
    if (!parseDType(type.dtype))
      diags.error(type.loc) << "unknown element type '" << type.dtype
                            << "'; expected f32, bf16, f16, i32 or i64";
    for (const ExprPtr &d : type.dims) {
      // A name that is not otherwise declared is a symbolic dimension.
      if (auto *n = dyn_cast<NameExpr>(d.get())) {
        if (!locals.count(n->name) && !isModuleName(module, n->name))
          locals.insert(n->name);
        continue;
      }
      resolveExpr(*d, module, locals);
    }
  };
  std::set<std::string> argNames;
  for (const ForwardDecl::Arg &arg : fwd.args) {
    if (!argNames.insert(arg.name.name).second)
      diags.error(arg.name.loc)
          << "duplicate argument '" << arg.name.name << "'";
    if (names.count(arg.name.name)) {
      diags.error(arg.name.loc)
          << "argument '" << arg.name.name << "' shadows a member of '"
          << block.name.name << "'";
      diags.note(declared[arg.name.name]) << "member declared here";
    }
    declareDims(arg.type);
    locals.insert(arg.name.name);
  }
  if (fwd.result)
    declareDims(*fwd.result);
  bool returned = false;
  for (const Stmt &stmt : fwd.body) {
    if (returned) {
      diags.error(stmt.loc) << "statement after 'return' is never executed";
      break;
    }
    resolveExpr(*stmt.value, module, locals);
    if (stmt.kind == Stmt::Kind::Return) {
      returned = true;
      continue;
    }
    for (const Binding &t : stmt.targets) {
      if (names.count(t.name)) {
        diags.error(t.loc) << "cannot assign to '" << t.name
                           << "': it is a member of '" << block.name.name
                           << "'";
        diags.note(declared[t.name]) << "member declared here";
      }
      locals.insert(t.name);
    }
  }
  if (!returned)
    diags.error(fwd.endLoc)
        << "'forward' of '" << block.name.name << "' ends without 'return'";
}

//===----------------------------------------------------------------------===//
// -D overrides
//===----------------------------------------------------------------------===//

void Elaborator::parseDefines(const std::vector<std::string> &defines) {
  for (const std::string &define : defines) {
    auto [name, value] = llvm::StringRef(define).split('=');
    // The buffer holds the whole `name=value` so columns match the flag.
    unsigned id = sm.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(define, "<command line -D>"),
        SMLoc());
    SMLoc loc = SMLoc::getFromPointer(sm.getMemoryBuffer(id)->getBufferStart());
    name = name.trim();
    if (!llvm::StringRef(define).contains('=') || name.empty()) {
      diags.error(loc) << "-D expects name=value, got '" << define << "'";
      continue;
    }
    if (value.trim().empty()) {
      diags.error(loc) << "-D " << name << " has no value";
      continue;
    }
    if (Override *previous = findOverride(name)) {
      diags.error(loc) << "-D " << name << " is given twice";
      diags.note(previous->nameLoc) << "first given here";
      continue;
    }
    Override o;
    o.name = name.str();
    o.value = value.str();
    o.bufferId = id;
    o.nameLoc = loc;
    o.loc =
        SMLoc::getFromPointer(loc.getPointer() + define.size() - value.size());
    overrides.push_back(std::move(o));
  }
}

Val Elaborator::evalOverride(Override &o) {
  o.used = true;
  llvm::StringRef value = llvm::StringRef(o.value).trim();
  // A bare word that is not a number (`1f1b`, `zb_h1`, `bf16`) is a name.
  bool word =
      llvm::all_of(value, [](char c) { return isalnum(c) || c == '_'; });
  int64_t asInt;
  double asFloat;
  if (value == "true" || value == "false")
    return Val::ofBool(value == "true");
  if (word && value.getAsInteger(10, asInt) && value.getAsDouble(asFloat))
    return Val::ofStr(value.str());
  // Otherwise parse it as an expression over the main file's constants.
  const char *begin = sm.getMemoryBuffer(o.bufferId)->getBufferStart();
  ExprPtr expr = parseExpression(o.bufferId, o.loc.getPointer() - begin, diags);
  if (!expr)
    return Val::none();
  Scope scope;
  scope.module = &main;
  return eval(*expr, scope);
}

//===----------------------------------------------------------------------===//
// Names and constants
//===----------------------------------------------------------------------===//

std::string Elaborator::describe(const Val &v) {
  switch (v.k) {
  case Val::K::None:
    return "an invalid value";
  case Val::K::Int:
    return "integer " + std::to_string(v.i);
  case Val::K::Float: {
    return "number " + formatNumber(v.f);
  }
  case Val::K::Str:
    return "name '" + v.s + "'";
  case Val::K::Bool:
    return v.i ? "'true'" : "'false'";
  case Val::K::Tensor:
    return "tensor " + typeOf(v.id).str();
  case Val::K::Param:
    return "parameter '" + program.params[v.id].path + "' " +
           program.params[v.id].type.str();
  case Val::K::Block:
    return "block '" + v.block->name.name + "'";
  case Val::K::Instance:
    return "instance '" + v.inst->path + "' of block '" +
           v.inst->decl->name.name + "'";
  case Val::K::Repeat:
    return "repeated block '" + v.inst->path + "'";
  case Val::K::Module:
    return "module '" + v.module->name + "'";
  case Val::K::Tuple:
    return "a tuple of " + std::to_string(v.elems.size());
  case Val::K::Builtin:
    return "builtin '" + v.s + "'";
  }
  return "a value";
}

Val Elaborator::evalConstant(Module &module, const Definition &def) {
  auto cached = constCache.find(&def);
  if (cached != constCache.end())
    return cached->second;
  if (!evaluating.insert(&def).second) {
    diags.error(def.name.loc)
        << "constant '" << def.name.name << "' is defined in terms of itself";
    return Val::none();
  }
  Val v;
  Override *o = &module == &main ? findOverride(def.name.name) : nullptr;
  if (o) {
    v = evalOverride(*o);
  } else {
    Scope scope;
    scope.module = &module;
    v = eval(*def.value, scope);
  }
  if (v.ok() && !v.isNumber() && v.k != Val::K::Str && v.k != Val::K::Bool &&
      v.k != Val::K::Tuple) {
    diags.error(def.value->getLoc())
        << "constant '" << def.name.name
        << "' must be a number, a name or a tuple, got " << describe(v);
    v = Val::none();
  }
  evaluating.erase(&def);
  constCache[&def] = v;
  return v;
}

Val Elaborator::lookupInModule(Module &module, llvm::StringRef name, SMLoc loc,
                               bool report) {
  auto c = module.constants.find(name.str());
  if (c != module.constants.end())
    return evalConstant(module, *c->second);
  auto b = module.blocks.find(name.str());
  if (b != module.blocks.end()) {
    Val v;
    v.k = Val::K::Block;
    v.block = b->second;
    v.module = &module;
    return v;
  }
  auto m = module.imports.find(name.str());
  if (m != module.imports.end()) {
    Val v;
    v.k = Val::K::Module;
    v.module = m->second;
    return v;
  }
  if (report)
    diags.error(loc) << "module '" << module.name << "' has no '" << name
                     << "'";
  return Val::none();
}

Val Elaborator::lookup(llvm::StringRef name, SMLoc loc, Scope &scope) {
  if (scope.locals) {
    auto it = scope.locals->find(name.str());
    if (it != scope.locals->end())
      return it->second;
  }
  if (scope.inst) {
    auto it = scope.inst->env.find(name.str());
    if (it != scope.inst->env.end())
      return it->second;
  }
  if (scope.module && (scope.module->constants.count(name.str()) ||
                       scope.module->blocks.count(name.str()) ||
                       scope.module->imports.count(name.str())))
    return lookupInModule(*scope.module, name, loc, true);
  if (builtinNames().count(name)) {
    Val v;
    v.k = Val::K::Builtin;
    v.s = name.str();
    return v;
  }
  reportUndeclared(name, loc);
  return Val::none();
}

//===----------------------------------------------------------------------===//
// Graph construction helpers
//===----------------------------------------------------------------------===//

unsigned Elaborator::emit(OpKind kind, llvm::ArrayRef<unsigned> operands,
                          llvm::ArrayRef<TensorType> results, SMLoc loc,
                          const std::function<void(Node &)> &attrs) {
  if (program.nodes.size() >= kMaxNodes && !tooLarge) {
    diags.error(loc) << "the model needs more than " << kMaxNodes
                     << " operations; it is too large to compile";
    tooLarge = true;
  }
  Node node;
  node.kind = kind;
  node.loc = loc;
  node.scope = currentScope && currentScope->inst ? currentScope->inst->path
                                                  : std::string();
  node.operands.assign(operands.begin(), operands.end());
  node.firstResult = program.values.size();
  node.numResults = results.size();
  for (const TensorType &t : results)
    program.values.push_back(t);
  if (attrs)
    attrs(node);
  program.nodes.push_back(std::move(node));
  return program.nodes.back().firstResult;
}

std::optional<unsigned> Elaborator::asTensor(const Val &v, SMLoc loc,
                                             llvm::StringRef what) {
  if (v.k == Val::K::Tensor)
    return v.id;
  if (v.k == Val::K::Param) {
    Param &p = program.params[v.id];
    ++p.uses;
    return emit(OpKind::ParamRef, {}, {p.type}, loc,
                [&](Node &n) { n.name = p.path; });
  }
  if (v.ok())
    diags.error(loc) << "expected a tensor for " << what << ", got "
                     << describe(v);
  return std::nullopt;
}

bool Elaborator::requireFloat(unsigned value, llvm::StringRef op, SMLoc loc) {
  if (isFloat(typeOf(value).dtype))
    return true;
  diags.error(loc) << "'" << op << "' needs a floating-point tensor, got "
                   << typeOf(value).str();
  return false;
}

Val Elaborator::elementwise(OpKind kind, char symbol, const Val &lhs,
                            const Val &rhs, SMLoc loc) {
  if (!lhs.ok() || !rhs.ok())
    return Val::none();
  std::string op(1, symbol);
  if (kind == OpKind::Maximum)
    op = "maximum";
  // Both compile-time numbers: fold.
  if (lhs.isNumber() && rhs.isNumber()) {
    bool ints = lhs.k == Val::K::Int && rhs.k == Val::K::Int;
    double a = lhs.number(), b = rhs.number();
    int64_t exact = 0;
    auto overflow = [&]() {
      diags.error(loc) << "integer overflow in '" << op << "'";
      return Val::none();
    };
    switch (kind) {
    case OpKind::Add:
      if (ints && __builtin_add_overflow(lhs.i, rhs.i, &exact))
        return overflow();
      return ints ? Val::ofInt(exact) : Val::ofFloat(a + b);
    case OpKind::Sub:
      if (ints && __builtin_sub_overflow(lhs.i, rhs.i, &exact))
        return overflow();
      return ints ? Val::ofInt(exact) : Val::ofFloat(a - b);
    case OpKind::Mul:
      if (ints && __builtin_mul_overflow(lhs.i, rhs.i, &exact))
        return overflow();
      return ints ? Val::ofInt(exact) : Val::ofFloat(a * b);
    case OpKind::Maximum:
      return ints ? Val::ofInt(std::max(lhs.i, rhs.i))
                  : Val::ofFloat(std::max(a, b));
    case OpKind::Div:
      if (b == 0) {
        diags.error(loc) << "division by zero";
        return Val::none();
      }
      // Exact integer division stays an integer, so `dim / heads` is a
      // dimension.
      if (ints && rhs.i == -1 && lhs.i == INT64_MIN)
        return overflow();
      if (ints && lhs.i % rhs.i == 0)
        return Val::ofInt(lhs.i / rhs.i);
      return Val::ofFloat(a / b);
    default:
      break;
    }
  }
  bool lhsTensor = lhs.k == Val::K::Tensor || lhs.k == Val::K::Param;
  bool rhsTensor = rhs.k == Val::K::Tensor || rhs.k == Val::K::Param;
  if (!lhsTensor && !rhsTensor) {
    diags.error(loc) << "'" << op << "' needs numbers or tensors, got "
                     << describe(lhs) << " and " << describe(rhs);
    return Val::none();
  }
  if (!currentScope || !currentScope->forward) {
    diags.error(loc) << "tensor arithmetic is only allowed inside 'forward'";
    return Val::none();
  }
  auto operand = [&](const Val &v,
                     const Val &other) -> std::optional<unsigned> {
    if (v.isNumber()) {
      // A number next to a tensor becomes a scalar of the tensor's type.
      std::optional<unsigned> t = asTensor(other, loc, "'" + op + "'");
      if (!t)
        return std::nullopt;
      TensorType scalar{typeOf(*t).dtype, {}};
      double value = v.number();
      return emit(OpKind::Constant, {}, {scalar}, loc,
                  [&](Node &n) { n.f = value; });
    }
    return asTensor(v, loc, "operand of '" + op + "'");
  };
  std::optional<unsigned> a = operand(lhs, rhs);
  std::optional<unsigned> b = a ? operand(rhs, lhs) : std::nullopt;
  if (!a || !b)
    return Val::none();
  const TensorType &ta = typeOf(*a), &tb = typeOf(*b);
  if (ta.dtype != tb.dtype) {
    diags.error(loc) << "operands of '" << op
                     << "' have different element types: " << ta.str()
                     << " and " << tb.str();
    return Val::none();
  }
  if (!requireFloat(*a, op, loc))
    return Val::none();
  std::string error;
  auto result = shape::broadcast(op, ta.shape, tb.shape, error);
  if (!result) {
    diags.error(loc) << error;
    return Val::none();
  }
  TensorType type{ta.dtype, *result};
  return Val::ofTensor(emit(kind, {*a, *b}, {type}, loc));
}

Val Elaborator::unaryOp(OpKind kind, llvm::StringRef name, const Val &x,
                        SMLoc loc) {
  if (!x.ok())
    return Val::none();
  if (x.isNumber()) {
    double v = x.number();
    switch (kind) {
    case OpKind::Neg:
      if (x.k == Val::K::Int && x.i == INT64_MIN) {
        diags.error(loc) << "integer overflow in '-'";
        return Val::none();
      }
      return x.k == Val::K::Int ? Val::ofInt(-x.i) : Val::ofFloat(-v);
    case OpKind::Sqrt:
      if (v < 0) {
        diags.error(loc) << "'sqrt' of negative number " << formatNumber(v);
        return Val::none();
      }
      return Val::ofFloat(std::sqrt(v));
    case OpKind::Rsqrt:
      if (v <= 0) {
        diags.error(loc) << "'rsqrt' of non-positive number "
                         << formatNumber(v);
        return Val::none();
      }
      return Val::ofFloat(1.0 / std::sqrt(v));
    case OpKind::Exp:
      return Val::ofFloat(std::exp(v));
    case OpKind::Log:
      if (v <= 0) {
        diags.error(loc) << "'log' of non-positive number " << formatNumber(v);
        return Val::none();
      }
      return Val::ofFloat(std::log(v));
    case OpKind::Tanh:
      return Val::ofFloat(std::tanh(v));
    default:
      break;
    }
  }
  if (!currentScope || !currentScope->forward) {
    diags.error(loc) << "'" << name << "' of " << describe(x)
                     << " is only allowed inside 'forward'";
    return Val::none();
  }
  auto t = asTensor(x, loc, "'" + name.str() + "'");
  if (!t || !requireFloat(*t, name, loc))
    return Val::none();
  TensorType type = typeOf(*t);
  return Val::ofTensor(emit(kind, {*t}, {type}, loc));
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

std::optional<int64_t> Elaborator::evalInt(const Expr &e, Scope &scope,
                                           llvm::StringRef what) {
  Val v = eval(e, scope);
  if (!v.ok())
    return std::nullopt;
  if (v.k == Val::K::Float && v.f == std::floor(v.f) && std::abs(v.f) < 1e18)
    return int64_t(v.f);
  if (v.k != Val::K::Int) {
    diags.error(e.getLoc())
        << what << " must be an integer, got " << describe(v);
    return std::nullopt;
  }
  return v.i;
}

Val Elaborator::eval(const Expr &e, Scope &scope) {
  Scope *saved = currentScope;
  currentScope = &scope;
  llvm::scope_exit restore([&] { currentScope = saved; });
  switch (e.getKind()) {
  case Expr::Kind::Int:
    return Val::ofInt(cast<IntExpr>(e).value);
  case Expr::Kind::Float:
    return Val::ofFloat(cast<FloatExpr>(e).value);
  case Expr::Kind::String:
    return Val::ofStr(cast<StringExpr>(e).value);
  case Expr::Kind::Bool:
    return Val::ofBool(cast<BoolExpr>(e).value);
  case Expr::Kind::Name:
    return lookup(cast<NameExpr>(e).name, e.getLoc(), scope);
  case Expr::Kind::Member: {
    auto &m = cast<MemberExpr>(e);
    Val base = eval(*m.base, scope);
    if (!base.ok())
      return base;
    if (base.k == Val::K::Module)
      return lookupInModule(*base.module, m.name, m.nameLoc, true);
    if (base.k == Val::K::Instance) {
      auto it = base.inst->env.find(m.name);
      if (it != base.inst->env.end())
        return it->second;
      diags.error(m.nameLoc)
          << describe(base) << " has no member '" << m.name << "'";
      return Val::none();
    }
    diags.error(m.nameLoc) << "cannot take member '" << m.name << "' of "
                           << describe(base);
    return Val::none();
  }
  case Expr::Kind::Call:
    return evalCall(cast<CallExpr>(e), scope);
  case Expr::Kind::Index:
    return evalIndex(cast<IndexExpr>(e), scope);
  case Expr::Kind::Binary:
    return evalBinary(cast<BinaryExpr>(e), scope);
  case Expr::Kind::Unary:
    return evalUnary(cast<UnaryExpr>(e), scope);
  case Expr::Kind::Tuple:
  case Expr::Kind::List: {
    Val v;
    v.k = Val::K::Tuple;
    const auto &elements = isa<TupleExpr>(e) ? cast<TupleExpr>(e).elements
                                             : cast<ListExpr>(e).elements;
    for (const ExprPtr &x : elements) {
      Val ev = eval(*x, scope);
      if (!ev.ok())
        return ev;
      v.elems.push_back(std::move(ev));
    }
    return v;
  }
  case Expr::Kind::Record:
    diags.error(e.getLoc())
        << "a record '(name = value, ...)' is only allowed in 'train'";
    return Val::none();
  }
  return Val::none();
}

Val Elaborator::evalUnary(const UnaryExpr &e, Scope &scope) {
  Val x = eval(*e.operand, scope);
  if (!x.ok())
    return x;
  if (!x.isNumber() && x.k != Val::K::Tensor && x.k != Val::K::Param) {
    diags.error(e.getLoc()) << "cannot negate " << describe(x);
    return Val::none();
  }
  return unaryOp(OpKind::Neg, "-", x, e.getLoc());
}

Val Elaborator::evalBinary(const BinaryExpr &e, Scope &scope) {
  Val lhs = eval(*e.lhs, scope);
  Val rhs = eval(*e.rhs, scope);
  if (!lhs.ok() || !rhs.ok())
    return Val::none();
  SMLoc loc = e.getLoc();
  switch (e.op) {
  case '+':
    return elementwise(OpKind::Add, '+', lhs, rhs, loc);
  case '-':
    return elementwise(OpKind::Sub, '-', lhs, rhs, loc);
  case '*':
    return elementwise(OpKind::Mul, '*', lhs, rhs, loc);
  case '/':
    return elementwise(OpKind::Div, '/', lhs, rhs, loc);
  case '%':
    if (lhs.k == Val::K::Int && rhs.k == Val::K::Int) {
      if (rhs.i == 0) {
        diags.error(loc) << "division by zero";
        return Val::none();
      }
      if (rhs.i == -1)
        return Val::ofInt(0);
      return Val::ofInt(lhs.i % rhs.i);
    }
    diags.error(loc) << "'%' needs integers, got " << describe(lhs) << " and "
                     << describe(rhs);
    return Val::none();
  case '@': {
    if (!scope.forward) {
      diags.error(loc) << "'@' is only allowed inside 'forward'";
      return Val::none();
    }
    auto a = asTensor(lhs, loc, "the left operand of '@'");
    auto b = a ? asTensor(rhs, loc, "the right operand of '@'") : std::nullopt;
    if (!a || !b)
      return Val::none();
    const TensorType &ta = typeOf(*a), &tb = typeOf(*b);
    if (ta.dtype != tb.dtype) {
      diags.error(loc) << "operands of '@' have different element types: "
                       << ta.str() << " and " << tb.str();
      return Val::none();
    }
    if (!requireFloat(*a, "@", loc))
      return Val::none();
    std::string error;
    auto result = shape::matmul(ta.shape, tb.shape, error);
    if (!result) {
      diags.error(loc) << error;
      return Val::none();
    }
    return Val::ofTensor(
        emit(OpKind::Matmul, {*a, *b}, {{ta.dtype, *result}}, loc));
  }
  }
  return Val::none();
}

Val Elaborator::evalIndex(const IndexExpr &e, Scope &scope) {
  Val base = eval(*e.base, scope);
  if (!base.ok())
    return base;
  SMLoc loc = e.getLoc();
  if (base.k == Val::K::Repeat || base.k == Val::K::Tuple) {
    size_t size =
        base.k == Val::K::Repeat ? base.inst->layers.size() : base.elems.size();
    if (e.items.size() != 1 || e.items[0].isSlice) {
      diags.error(loc) << "index " << describe(base)
                       << " with a single integer";
      return Val::none();
    }
    auto index = evalInt(*e.items[0].lo, scope, "index");
    if (!index)
      return Val::none();
    int64_t i = *index;
    if (i < 0 && i >= -int64_t(size))
      i += size;
    if (i < 0 || i >= int64_t(size)) {
      diags.error(e.items[0].loc)
          << "index " << *index << " is out of range for "
          << (base.k == Val::K::Tuple ? "a tuple of " + std::to_string(size)
                                      : "'" + base.inst->path + "' of " +
                                            std::to_string(size) + " layers");
      return Val::none();
    }
    if (base.k == Val::K::Tuple)
      return base.elems[i];
    Val v;
    v.k = Val::K::Instance;
    v.inst = base.inst->layers[i];
    return v;
  }
  if (!scope.forward) {
    diags.error(loc) << "indexing " << describe(base)
                     << " is only allowed inside 'forward'";
    return Val::none();
  }
  auto t = asTensor(base, loc, "indexing");
  if (!t)
    return Val::none();
  TensorType type = typeOf(*t);
  int64_t rank = type.shape.size();
  if (int64_t(e.items.size()) > rank) {
    diags.error(loc) << "too many indices (" << e.items.size() << ") for "
                     << type.str();
    return Val::none();
  }
  shape::Shape offsets(rank, 0), sizes(type.shape.begin(), type.shape.end());
  shape::Shape kept; // result shape after integer indices drop their axes
  bool dropsAxes = false;
  for (int64_t d = 0; d < rank; ++d) {
    if (d >= int64_t(e.items.size())) {
      kept.push_back(type.shape[d]);
      continue;
    }
    const IndexItem &item = e.items[d];
    int64_t dim = type.shape[d];
    auto bound = [&](const ExprPtr &x, int64_t dflt) -> std::optional<int64_t> {
      if (!x)
        return dflt;
      auto v = evalInt(*x, scope, "an index");
      if (!v)
        return std::nullopt;
      if (*v < -dim) {
        diags.error(x->getLoc())
            << "index " << *v << " is out of bounds for dimension " << d
            << " of " << type.str();
        return std::nullopt;
      }
      return *v < 0 ? *v + dim : *v;
    };
    auto lo = bound(item.lo, 0);
    // An integer index i is the range i:i+1 (i < dim is checked first, so
    // i + 1 cannot overflow).
    auto hi = item.isSlice
                  ? bound(item.hi, dim)
                  : (lo ? std::optional<int64_t>(*lo < dim ? *lo + 1 : *lo)
                        : std::nullopt);
    if (!lo || !hi)
      return Val::none();
    if (*lo < 0 || *hi > dim || *lo > *hi || (!item.isSlice && *lo >= dim)) {
      diags.error(item.loc)
          << "index " << (item.isSlice ? "range " : "") << *lo
          << (item.isSlice ? ":" : "")
          << (item.isSlice ? std::to_string(*hi) : "")
          << " is out of bounds for dimension " << d << " of " << type.str();
      return Val::none();
    }
    offsets[d] = *lo;
    sizes[d] = *hi - *lo;
    if (item.isSlice)
      kept.push_back(sizes[d]);
    else
      dropsAxes = true;
  }
  std::string error;
  if (!shape::slice(type.shape, offsets, sizes, error)) {
    diags.error(loc) << error;
    return Val::none();
  }
  unsigned sliced = *t;
  if (sizes != type.shape)
    sliced = emit(OpKind::Slice, {*t}, {{type.dtype, sizes}}, loc,
                  [&](Node &n) { n.ints = offsets; });
  if (dropsAxes)
    sliced = emit(OpKind::Reshape, {sliced}, {{type.dtype, kept}}, loc);
  return Val::ofTensor(sliced);
}

Val Elaborator::evalCall(const CallExpr &e, Scope &scope) {
  Val callee = eval(*e.callee, scope);
  if (!callee.ok())
    return callee;
  // Builtins look at their argument expressions (`approximate = none`), so
  // they evaluate their arguments themselves.
  if (callee.k == Val::K::Builtin)
    return callBuiltin(callee.s, e, scope);
  std::vector<EvArg> args;
  for (const Argument &a : e.args) {
    Val v = eval(*a.value, scope);
    if (!v.ok())
      return v;
    args.push_back({a.name, a.loc, std::move(v)});
  }
  switch (callee.k) {
  case Val::K::Block: {
    if (scope.memberPath.empty() || scope.forward) {
      diags.error(e.getLoc())
          << "block '" << callee.block->name.name
          << "' is constructed as a member, as in 'x = "
          << callee.block->name.name << "(...)' before 'forward'";
      return Val::none();
    }
    Instance *inst = instantiate(*callee.block, *callee.module, std::move(args),
                                 scope.memberPath, e.getLoc());
    if (!inst)
      return Val::none();
    Val v;
    v.k = Val::K::Instance;
    v.inst = inst;
    return v;
  }
  case Val::K::Instance:
    if (!scope.forward) {
      diags.error(e.getLoc())
          << describe(callee) << " can only be called inside 'forward'";
      return Val::none();
    }
    return callForward(*callee.inst, std::move(args), e.getLoc());
  case Val::K::Repeat: {
    if (!scope.forward) {
      diags.error(e.getLoc())
          << describe(callee) << " can only be called inside 'forward'";
      return Val::none();
    }
    if (args.empty() || !args[0].name.empty()) {
      diags.error(e.getLoc())
          << describe(callee) << " needs its input as the first argument";
      return Val::none();
    }
    // The first argument flows through the layers; the others go to each.
    Val x = args[0].v;
    for (Instance *layer : callee.inst->layers) {
      std::vector<EvArg> layerArgs = args;
      layerArgs[0].v = x;
      x = callForward(*layer, std::move(layerArgs), e.getLoc());
      if (!x.ok())
        return x;
    }
    return x;
  }
  default:
    diags.error(e.getLoc()) << describe(callee) << " is not callable";
    return Val::none();
  }
}

//===----------------------------------------------------------------------===//
// Builtin functions
//===----------------------------------------------------------------------===//

Val Elaborator::callBuiltin(const std::string &name, const CallExpr &call,
                            Scope &scope) {
  SMLoc loc = call.getLoc();
  // Parameter names of each builtin; `?` marks optional ones.
  static const std::map<std::string, std::vector<std::string>> signatures = {
      {"matmul", {"a", "b"}},
      {"linear", {"x", "weight", "bias?"}},
      {"embedding", {"table", "ids"}},
      {"transpose", {"x", "perm?"}},
      {"reshape", {"x", "shape"}},
      {"split", {"x", "sections", "axis?"}},
      {"concat", {"xs", "axis?"}},
      {"softmax", {"x", "axis?"}},
      {"layer_norm", {"x", "scale", "bias?", "eps?"}},
      {"rms_norm", {"x", "scale", "eps?"}},
      {"gelu", {"x", "approximate?"}},
      {"relu", {"x"}},
      {"silu", {"x"}},
      {"tanh", {"x"}},
      {"exp", {"x"}},
      {"log", {"x"}},
      {"sqrt", {"x"}},
      {"rsqrt", {"x"}},
      {"sigmoid", {"x"}},
      {"sum", {"x", "axis?", "keepdim?"}},
      {"mean", {"x", "axis?", "keepdim?"}},
      {"max", {"x", "axis?", "keepdim?"}},
      {"min", {"a", "b"}},
      {"maximum", {"a", "b"}},
      {"attention", {"q", "k", "v", "heads", "kv_heads?", "causal?", "scale?"}},
      {"rope", {"x", "heads", "theta?"}},
      {"cross_entropy", {"logits", "targets"}},
  };
  const std::vector<std::string> &params = signatures.at(name);
  std::vector<std::optional<EvArg>> slots(params.size());
  auto paramName = [&](size_t i) {
    llvm::StringRef p = params[i];
    return p.rtrim('?');
  };
  size_t positional = 0;
  for (const Argument &a : call.args) {
    size_t slot;
    if (a.name.empty()) {
      slot = positional++;
      if (slot >= params.size()) {
        diags.error(a.loc) << "too many arguments to '" << name
                           << "' (it takes " << params.size() << ")";
        return Val::none();
      }
    } else {
      slot = params.size();
      for (size_t i = 0; i < params.size(); ++i)
        if (paramName(i) == a.name)
          slot = i;
      if (slot == params.size()) {
        auto diag = diags.error(a.loc);
        diag << "'" << name << "' has no argument named '" << a.name
             << "'; it takes";
        for (size_t i = 0; i < params.size(); ++i)
          diag << (i ? ", " : " ") << paramName(i);
        return Val::none();
      }
      if (slots[slot]) {
        diags.error(a.loc) << "argument '" << a.name << "' of '" << name
                           << "' is given twice";
        return Val::none();
      }
    }
    Val v;
    // `gelu(x, approximate = none)`: a bare word names an option.
    if (auto *n = dyn_cast<NameExpr>(a.value.get());
        n && paramName(slot) == "approximate")
      v = Val::ofStr(n->name);
    else
      v = eval(*a.value, scope);
    if (!v.ok())
      return v;
    slots[slot] = EvArg{a.name, a.loc, std::move(v)};
  }
  for (size_t i = 0; i < params.size(); ++i)
    if (!slots[i] && !llvm::StringRef(params[i]).ends_with("?")) {
      diags.error(loc) << "'" << name << "' is missing argument '"
                       << paramName(i) << "'";
      return Val::none();
    }

  auto has = [&](size_t i) { return slots[i].has_value(); };
  auto val = [&](size_t i) -> const Val & { return slots[i]->v; };
  auto argLoc = [&](size_t i) { return slots[i] ? slots[i]->loc : loc; };
  auto tensor = [&](size_t i) -> std::optional<unsigned> {
    return asTensor(val(i), argLoc(i),
                    ("'" + paramName(i) + "' of '" + name + "'").str());
  };
  auto integer = [&](size_t i, int64_t dflt) -> std::optional<int64_t> {
    if (!has(i))
      return dflt;
    if (val(i).k != Val::K::Int) {
      diags.error(argLoc(i))
          << "'" << paramName(i) << "' of '" << name
          << "' must be an integer, got " << describe(val(i));
      return std::nullopt;
    }
    return val(i).i;
  };
  auto number = [&](size_t i, double dflt) -> std::optional<double> {
    if (!has(i))
      return dflt;
    if (!val(i).isNumber()) {
      diags.error(argLoc(i)) << "'" << paramName(i) << "' of '" << name
                             << "' must be a number, got " << describe(val(i));
      return std::nullopt;
    }
    return val(i).number();
  };
  auto boolean = [&](size_t i, bool dflt) -> std::optional<bool> {
    if (!has(i))
      return dflt;
    if (val(i).k != Val::K::Bool) {
      diags.error(argLoc(i))
          << "'" << paramName(i) << "' of '" << name
          << "' must be true or false, got " << describe(val(i));
      return std::nullopt;
    }
    return bool(val(i).i);
  };
  auto intList = [&](size_t i) -> std::optional<shape::Shape> {
    const Val &v = val(i);
    shape::Shape out;
    if (v.k == Val::K::Int)
      return shape::Shape{v.i};
    if (v.k == Val::K::Tuple) {
      for (const Val &x : v.elems) {
        if (x.k != Val::K::Int)
          break;
        out.push_back(x.i);
      }
      if (out.size() == v.elems.size())
        return out;
    }
    diags.error(argLoc(i)) << "'" << paramName(i) << "' of '" << name
                           << "' must be a list of integers, got "
                           << describe(v);
    return std::nullopt;
  };
  auto fail = [&](const std::string &error) {
    diags.error(loc) << error;
    return Val::none();
  };
  auto needForward = [&]() {
    if (scope.forward)
      return true;
    diags.error(loc) << "'" << name << "' is only allowed inside 'forward'";
    return false;
  };
  auto sameDtype = [&](unsigned a, unsigned b, llvm::StringRef what) {
    if (typeOf(a).dtype == typeOf(b).dtype)
      return true;
    diags.error(loc) << "'" << name << "' " << what
                     << " have different element types: " << typeOf(a).str()
                     << " and " << typeOf(b).str();
    return false;
  };
  std::string error;

  // Unary math works on numbers too.
  static const std::map<std::string, OpKind> unary = {
      {"relu", OpKind::Relu},   {"silu", OpKind::Silu},
      {"tanh", OpKind::Tanh},   {"exp", OpKind::Exp},
      {"log", OpKind::Log},     {"sqrt", OpKind::Sqrt},
      {"rsqrt", OpKind::Rsqrt}, {"sigmoid", OpKind::Sigmoid}};
  if (auto it = unary.find(name); it != unary.end()) {
    if (val(0).isNumber() &&
        (it->second == OpKind::Relu || it->second == OpKind::Silu ||
         it->second == OpKind::Sigmoid)) {
      double x = val(0).number();
      double r = it->second == OpKind::Relu   ? std::max(x, 0.0)
                 : it->second == OpKind::Silu ? x / (1 + std::exp(-x))
                                              : 1 / (1 + std::exp(-x));
      return Val::ofFloat(r);
    }
    if (!val(0).isNumber() && val(0).k != Val::K::Tensor &&
        val(0).k != Val::K::Param) {
      diags.error(argLoc(0)) << "'" << name << "' needs a number or a tensor, "
                             << "got " << describe(val(0));
      return Val::none();
    }
    return unaryOp(it->second, name, val(0), loc);
  }
  if (name == "min") {
    if (!val(0).isNumber() || !val(1).isNumber())
      return fail("'min' needs two numbers, got " + describe(val(0)) + " and " +
                  describe(val(1)));
    if (val(0).k == Val::K::Int && val(1).k == Val::K::Int)
      return Val::ofInt(std::min(val(0).i, val(1).i));
    return Val::ofFloat(std::min(val(0).number(), val(1).number()));
  }
  if (name == "max" && val(0).isNumber()) {
    // max(a, b) with a number first is elementwise; max(x, axis) of a
    // tensor is a reduction.
    if (!has(1))
      return fail("'max' of a number needs a second value");
    if (has(2))
      return fail("'keepdim' applies only to the reduction 'max'");
    return elementwise(OpKind::Maximum, 'm', val(0), val(1), loc);
  }
  if (name == "maximum")
    return elementwise(OpKind::Maximum, 'm', val(0), val(1), loc);

  if (!needForward())
    return Val::none();

  if (name == "gelu") {
    bool tanhApprox = true;
    if (has(1)) {
      if (val(1).k != Val::K::Str ||
          (val(1).s != "tanh" && val(1).s != "none")) {
        diags.error(argLoc(1)) << "'approximate' of 'gelu' must be tanh or "
                                  "none, got "
                               << describe(val(1));
        return Val::none();
      }
      tanhApprox = val(1).s == "tanh";
    }
    auto x = tensor(0);
    if (!x || !requireFloat(*x, name, loc))
      return Val::none();
    TensorType type = typeOf(*x);
    return Val::ofTensor(emit(OpKind::Gelu, {*x}, {type}, loc,
                              [&](Node &n) { n.flag = tanhApprox; }));
  }
  if (name == "matmul") {
    auto a = tensor(0), b = a ? tensor(1) : std::nullopt;
    if (!a || !b || !sameDtype(*a, *b, "operands") ||
        !requireFloat(*a, name, loc))
      return Val::none();
    auto r = shape::matmul(typeOf(*a).shape, typeOf(*b).shape, error);
    if (!r)
      return fail(error);
    return Val::ofTensor(
        emit(OpKind::Matmul, {*a, *b}, {{typeOf(*a).dtype, *r}}, loc));
  }
  if (name == "linear") {
    auto x = tensor(0), w = x ? tensor(1) : std::nullopt;
    std::optional<unsigned> b;
    if (x && w && has(2) && !(b = tensor(2)))
      return Val::none();
    if (!x || !w || !sameDtype(*x, *w, "input and weight") ||
        (b && !sameDtype(*x, *b, "input and bias")) ||
        !requireFloat(*x, name, loc))
      return Val::none();
    std::optional<llvm::ArrayRef<int64_t>> biasShape;
    if (b)
      biasShape = llvm::ArrayRef<int64_t>(typeOf(*b).shape);
    auto r =
        shape::linear(typeOf(*x).shape, typeOf(*w).shape, biasShape, error);
    if (!r)
      return fail(error);
    llvm::SmallVector<unsigned, 3> ops{*x, *w};
    if (b)
      ops.push_back(*b);
    return Val::ofTensor(
        emit(OpKind::Linear, ops, {{typeOf(*x).dtype, *r}}, loc));
  }
  if (name == "embedding") {
    auto table = tensor(0), ids = table ? tensor(1) : std::nullopt;
    if (!table || !ids)
      return Val::none();
    if (!requireFloat(*table, name, loc))
      return Val::none();
    if (isFloat(typeOf(*ids).dtype))
      return fail("'embedding' ids must be integers, got " +
                  typeOf(*ids).str());
    auto r = shape::embedding(typeOf(*table).shape, typeOf(*ids).shape, error);
    if (!r)
      return fail(error);
    return Val::ofTensor(emit(OpKind::Embedding, {*table, *ids},
                              {{typeOf(*table).dtype, *r}}, loc));
  }
  if (name == "transpose") {
    auto x = tensor(0);
    if (!x)
      return Val::none();
    const TensorType &t = typeOf(*x);
    shape::Shape perm;
    if (has(1)) {
      auto p = intList(1);
      if (!p)
        return Val::none();
      perm = *p;
    } else {
      if (t.shape.size() < 2)
        return fail("'transpose' without a permutation needs rank 2 or "
                    "more, got " +
                    t.str());
      for (size_t i = 0; i < t.shape.size(); ++i)
        perm.push_back(i);
      std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    }
    auto r = shape::transpose(t.shape, perm, error);
    if (!r)
      return fail(error);
    DType dtype = t.dtype;
    return Val::ofTensor(emit(OpKind::Transpose, {*x}, {{dtype, *r}}, loc,
                              [&](Node &n) { n.ints = perm; }));
  }
  if (name == "reshape") {
    auto x = tensor(0);
    auto to = x ? intList(1) : std::nullopt;
    if (!x || !to)
      return Val::none();
    auto r = shape::reshape(typeOf(*x).shape, *to, error);
    if (!r)
      return fail(error);
    DType dtype = typeOf(*x).dtype;
    return Val::ofTensor(emit(OpKind::Reshape, {*x}, {{dtype, *r}}, loc));
  }
  if (name == "split") {
    auto x = tensor(0);
    auto axis = integer(2, -1);
    if (!x || !axis)
      return Val::none();
    const TensorType t = typeOf(*x);
    shape::Shape sizes;
    if (val(1).k == Val::K::Int) {
      // split(x, n): n equal pieces.
      int64_t n = val(1).i;
      auto a = shape::normalizeAxis(*axis, t.shape.size());
      if (n <= 0 || !a || t.shape[*a] % n != 0)
        return fail("cannot 'split' " + t.str() + " into " + std::to_string(n) +
                    " equal pieces along axis " + std::to_string(*axis));
      sizes.assign(n, t.shape[*a] / n);
    } else {
      auto s = intList(1);
      if (!s)
        return Val::none();
      sizes = *s;
    }
    auto r = shape::split(t.shape, *axis, sizes, error);
    if (!r)
      return fail(error);
    std::vector<TensorType> results;
    for (const shape::Shape &s : *r)
      results.push_back({t.dtype, s});
    unsigned first = emit(OpKind::Split, {*x}, results, loc,
                          [&](Node &n) { n.axis = *axis; });
    Val tuple;
    tuple.k = Val::K::Tuple;
    for (size_t i = 0; i < results.size(); ++i)
      tuple.elems.push_back(Val::ofTensor(first + i));
    return tuple;
  }
  if (name == "concat") {
    auto axis = integer(1, -1);
    if (!axis)
      return Val::none();
    if (val(0).k != Val::K::Tuple || val(0).elems.empty())
      return fail("'concat' needs a list of tensors such as '[a, b]', got " +
                  describe(val(0)));
    llvm::SmallVector<unsigned> xs;
    llvm::SmallVector<shape::Shape> shapes;
    for (const Val &v : val(0).elems) {
      auto t = asTensor(v, argLoc(0), "an element of 'concat'");
      if (!t)
        return Val::none();
      if (!xs.empty() && !sameDtype(xs[0], *t, "operands"))
        return Val::none();
      xs.push_back(*t);
      shapes.push_back(typeOf(*t).shape);
    }
    auto r = shape::concat(shapes, *axis, error);
    if (!r)
      return fail(error);
    DType dtype = typeOf(xs[0]).dtype;
    return Val::ofTensor(emit(OpKind::Concat, xs, {{dtype, *r}}, loc,
                              [&](Node &n) { n.axis = *axis; }));
  }
  if (name == "softmax") {
    auto x = tensor(0);
    auto axis = integer(1, -1);
    if (!x || !axis || !requireFloat(*x, name, loc))
      return Val::none();
    auto r = shape::softmax(typeOf(*x).shape, *axis, error);
    if (!r)
      return fail(error);
    TensorType type = typeOf(*x);
    return Val::ofTensor(emit(OpKind::Softmax, {*x}, {type}, loc,
                              [&](Node &n) { n.axis = *axis; }));
  }
  if (name == "layer_norm" || name == "rms_norm") {
    bool layer = name == "layer_norm";
    auto x = tensor(0), scale = x ? tensor(1) : std::nullopt;
    std::optional<unsigned> bias;
    if (layer && x && scale && has(2) && !(bias = tensor(2)))
      return Val::none();
    auto eps = number(layer ? 3 : 2, layer ? 1e-5 : 1e-6);
    if (!x || !scale || !eps || !requireFloat(*x, name, loc) ||
        !sameDtype(*x, *scale, "input and scale") ||
        (bias && !sameDtype(*x, *bias, "input and bias")))
      return Val::none();
    if (*eps <= 0)
      return fail("'eps' of '" + name + "' must be positive");
    std::optional<llvm::ArrayRef<int64_t>> biasShape;
    if (bias)
      biasShape = llvm::ArrayRef<int64_t>(typeOf(*bias).shape);
    auto r = shape::norm(name, typeOf(*x).shape, typeOf(*scale).shape,
                         biasShape, error);
    if (!r)
      return fail(error);
    llvm::SmallVector<unsigned, 3> ops{*x, *scale};
    if (bias)
      ops.push_back(*bias);
    TensorType type = typeOf(*x);
    return Val::ofTensor(emit(layer ? OpKind::LayerNorm : OpKind::RmsNorm, ops,
                              {type}, loc, [&](Node &n) { n.f = *eps; }));
  }
  if (name == "sum" || name == "mean" || name == "max") {
    auto x = tensor(0);
    auto keep = boolean(2, false);
    if (!x || !keep || !requireFloat(*x, name, loc))
      return Val::none();
    shape::Shape axes;
    if (has(1)) {
      auto a = intList(1);
      if (!a)
        return Val::none();
      axes = *a;
    }
    auto r = shape::reduce(name, typeOf(*x).shape, axes, *keep, error);
    if (!r)
      return fail(error);
    OpKind kind = name == "sum"    ? OpKind::ReduceSum
                  : name == "mean" ? OpKind::ReduceMean
                                   : OpKind::ReduceMax;
    DType dtype = typeOf(*x).dtype;
    return Val::ofTensor(emit(kind, {*x}, {{dtype, *r}}, loc, [&](Node &n) {
      n.ints = axes;
      n.flag = *keep;
    }));
  }
  if (name == "attention") {
    auto q = tensor(0), k = q ? tensor(1) : std::nullopt,
         v = k ? tensor(2) : std::nullopt;
    auto heads = integer(3, 0);
    auto kvHeads = heads ? integer(4, *heads) : std::nullopt;
    auto causal = boolean(5, true);
    auto scale = number(6, 0.0);
    if (!q || !k || !v || !heads || !kvHeads || !causal || !scale ||
        !requireFloat(*q, name, loc) || !sameDtype(*q, *k, "q and k") ||
        !sameDtype(*q, *v, "q and v"))
      return Val::none();
    auto r = shape::attention(typeOf(*q).shape, typeOf(*k).shape,
                              typeOf(*v).shape, *heads, *kvHeads, error);
    if (!r)
      return fail(error);
    TensorType type = typeOf(*q);
    return Val::ofTensor(
        emit(OpKind::Attention, {*q, *k, *v}, {type}, loc, [&](Node &n) {
          n.heads = *heads;
          n.kvHeads = *kvHeads;
          n.flag = *causal;
          n.f = *scale;
        }));
  }
  if (name == "rope") {
    auto x = tensor(0);
    auto heads = integer(1, 0);
    auto theta = number(2, 10000.0);
    if (!x || !heads || !theta || !requireFloat(*x, name, loc))
      return Val::none();
    if (*theta <= 0)
      return fail("'theta' of 'rope' must be positive");
    auto r = shape::rope(typeOf(*x).shape, *heads, error);
    if (!r)
      return fail(error);
    TensorType type = typeOf(*x);
    return Val::ofTensor(emit(OpKind::Rope, {*x}, {type}, loc, [&](Node &n) {
      n.heads = *heads;
      n.f = *theta;
    }));
  }
  if (name == "cross_entropy") {
    auto logits = tensor(0), targets = logits ? tensor(1) : std::nullopt;
    if (!logits || !targets || !requireFloat(*logits, name, loc))
      return Val::none();
    if (isFloat(typeOf(*targets).dtype))
      return fail("'cross_entropy' targets must be integers, got " +
                  typeOf(*targets).str());
    auto r = shape::crossEntropy(typeOf(*logits).shape, typeOf(*targets).shape,
                                 error);
    if (!r)
      return fail(error);
    return Val::ofTensor(emit(OpKind::CrossEntropy, {*logits, *targets},
                              {{DType::F32, {}}}, loc));
  }
  return fail("'" + name + "' cannot be used here");
}

//===----------------------------------------------------------------------===//
// Blocks
//===----------------------------------------------------------------------===//

static std::string joinPath(const std::string &prefix, llvm::StringRef name) {
  return prefix.empty() ? name.str() : prefix + "." + name.str();
}

Instance *Elaborator::instantiate(const BlockDecl &decl, Module &module,
                                  std::vector<EvArg> args,
                                  const std::string &path, SMLoc loc) {
  if (decl.isModel && !path.empty()) {
    diags.error(loc) << "model '" << decl.name.name
                     << "' cannot be used as a block";
    return nullptr;
  }
  if (llvm::is_contained(constructing, &decl)) {
    diags.error(loc) << "block '" << decl.name.name << "' contains itself";
    diags.note(decl.name.loc) << "'" << decl.name.name << "' is declared here";
    return nullptr;
  }
  if (constructing.size() >= kMaxInstanceDepth) {
    diags.error(loc) << "blocks are nested more than " << kMaxInstanceDepth
                     << " deep";
    return nullptr;
  }
  if (instances.size() >= kMaxInstances) {
    diags.error(loc) << "the model has more than " << kMaxInstances
                     << " block instances; it is too large to compile";
    return nullptr;
  }
  constructing.push_back(&decl);
  llvm::scope_exit pop([&] { constructing.pop_back(); });

  instances.push_back(std::make_unique<Instance>());
  Instance &inst = *instances.back();
  inst.decl = &decl;
  inst.module = &module;
  inst.path = path;

  // Constructor arguments.
  std::vector<std::optional<EvArg>> bound(decl.params.size());
  size_t positional = 0;
  for (EvArg &a : args) {
    size_t slot = decl.params.size();
    if (a.name.empty()) {
      slot = positional++;
      if (slot >= decl.params.size()) {
        diags.error(a.loc) << "too many arguments to block '" << decl.name.name
                           << "' (it takes " << decl.params.size() << ")";
        diags.note(decl.name.loc)
            << "'" << decl.name.name << "' is declared here";
        return nullptr;
      }
    } else {
      for (size_t i = 0; i < decl.params.size(); ++i)
        if (decl.params[i].name.name == a.name)
          slot = i;
      if (slot == decl.params.size()) {
        diags.error(a.loc) << "block '" << decl.name.name
                           << "' has no parameter '" << a.name << "'";
        diags.note(decl.name.loc)
            << "'" << decl.name.name << "' is declared here";
        return nullptr;
      }
      if (bound[slot]) {
        diags.error(a.loc) << "parameter '" << a.name << "' of '"
                           << decl.name.name << "' is given twice";
        return nullptr;
      }
    }
    if (a.v.k == Val::K::Tensor) {
      diags.error(a.loc) << "a tensor cannot be passed to a block's "
                            "constructor; pass it to 'forward'";
      return nullptr;
    }
    bound[slot] = std::move(a);
  }
  Scope scope;
  scope.module = &module;
  scope.inst = &inst;
  for (size_t i = 0; i < decl.params.size(); ++i) {
    const BlockParam &p = decl.params[i];
    Val v;
    if (bound[i]) {
      v = bound[i]->v;
    } else if (p.defaultValue) {
      v = eval(*p.defaultValue, scope);
      if (!v.ok())
        return nullptr;
    } else {
      diags.error(loc) << "block '" << decl.name.name
                       << "' is missing parameter '" << p.name.name << "'";
      diags.note(p.name.loc) << "declared here";
      return nullptr;
    }
    inst.env[p.name.name] = v;
  }
  for (const MemberDecl &member : decl.members)
    if (!constructMember(inst, member, scope))
      return nullptr;
  return &inst;
}

bool Elaborator::evalInit(const Expr *init, Scope &scope, Param &param) {
  if (!init) {
    param.init = InitKind::Zeros;
    return true;
  }
  const Expr *callee = init;
  const CallExpr *call = dyn_cast<CallExpr>(init);
  if (call)
    callee = call->callee.get();
  auto *name = dyn_cast<NameExpr>(callee);
  if (!name || !initializerNames().count(name->name)) {
    diags.error(init->getLoc())
        << "expected an initializer: zeros, ones, constant(v), normal(std), "
           "normal(mean, std) or uniform(low, high)";
    return false;
  }
  std::vector<double> values;
  std::map<std::string, double> named;
  if (call) {
    for (const Argument &a : call->args) {
      Val v = eval(*a.value, scope);
      if (!v.ok())
        return false;
      if (!v.isNumber()) {
        diags.error(a.loc) << "initializer arguments must be numbers, got "
                           << describe(v);
        return false;
      }
      if (a.name.empty())
        values.push_back(v.number());
      else
        named[a.name] = v.number();
    }
  }
  const std::string &kind = name->name;
  if (!values.empty() && !named.empty()) {
    diags.error(init->getLoc()) << "'" << kind
                                << "' takes either positional or named "
                                   "arguments, not both";
    return false;
  }
  auto arity = [&](size_t lo, size_t hi, const char *form) {
    size_t n = values.size() + named.size();
    if (n >= lo && n <= hi)
      return true;
    diags.error(init->getLoc()) << "'" << kind << "' takes " << form;
    return false;
  };
  auto take = [&](const char *key, size_t position, double dflt) {
    auto it = named.find(key);
    if (it != named.end()) {
      double v = it->second;
      named.erase(it);
      return v;
    }
    return position < values.size() ? values[position] : dflt;
  };
  if (kind == "zeros" || kind == "ones") {
    if (!arity(0, 0, "no arguments"))
      return false;
    param.init = kind == "zeros" ? InitKind::Zeros : InitKind::Ones;
  } else if (kind == "constant") {
    if (!arity(1, 1, "one argument, the value"))
      return false;
    param.init = InitKind::Constant;
    param.a = take("value", 0, 0);
  } else if (kind == "normal") {
    if (!arity(1, 2, "'normal(std)' or 'normal(mean, std)'"))
      return false;
    param.init = InitKind::Normal;
    if (values.size() == 2) {
      param.a = values[0];
      param.b = values[1];
    } else {
      param.b = take("std", 0, 0);
      param.a = take("mean", 99, 0);
    }
    if (!(param.b > 0)) {
      diags.error(init->getLoc())
          << "standard deviation of 'normal' must be positive, got "
          << formatNumber(param.b);
      return false;
    }
  } else {
    if (!arity(2, 2, "'uniform(low, high)'"))
      return false;
    param.init = InitKind::Uniform;
    param.a = take("low", 0, 0);
    param.b = take("high", 1, 0);
    if (!(param.a < param.b)) {
      diags.error(init->getLoc())
          << "'uniform' needs low < high, got " << formatNumber(param.a)
          << " and " << formatNumber(param.b);
      return false;
    }
  }
  if (!named.empty()) {
    diags.error(init->getLoc()) << "'" << kind << "' has no argument named '"
                                << named.begin()->first << "'";
    return false;
  }
  return true;
}

bool Elaborator::constructMember(Instance &inst, const MemberDecl &member,
                                 Scope &scope) {
  const std::string &name = member.name.name;
  std::string path = joinPath(inst.path, name);
  switch (member.kind) {
  case MemberDecl::Kind::Param: {
    Param param;
    param.path = path;
    param.loc = member.name.loc;
    for (const ExprPtr &d : member.dims) {
      auto v = evalInt(*d, scope, "a parameter dimension");
      if (!v)
        return false;
      if (*v <= 0) {
        diags.error(d->getLoc()) << "dimension of parameter '" << path
                                 << "' must be positive, got " << *v;
        return false;
      }
      param.type.shape.push_back(*v);
    }
    if (!shape::numElements(param.type.shape) ||
        *shape::numElements(param.type.shape) > (int64_t(1) << 40)) {
      diags.error(member.loc) << "parameter '" << path << "' "
                              << param.type.str() << " is too large";
      return false;
    }
    if (!evalInit(member.init.get(), scope, param))
      return false;
    Val v;
    v.k = Val::K::Param;
    v.id = program.params.size();
    program.params.push_back(std::move(param));
    inst.env[name] = v;
    return true;
  }
  case MemberDecl::Kind::Repeat: {
    auto count = evalInt(*member.count, scope, "the repeat count");
    if (!count)
      return false;
    if (*count <= 0 || *count > kMaxRepeat) {
      diags.error(member.count->getLoc())
          << "repeat count must be between 1 and " << kMaxRepeat << ", got "
          << *count;
      return false;
    }
    auto *call = dyn_cast<CallExpr>(member.value.get());
    Val ctor = call ? eval(*call->callee, scope) : Val::none();
    if (call && !ctor.ok())
      return false;
    if (!call || ctor.k != Val::K::Block) {
      diags.error(member.value->getLoc())
          << "'repeat' needs a block constructor such as 'Block(dim)'";
      return false;
    }
    std::vector<EvArg> args;
    for (const Argument &a : call->args) {
      Val v = eval(*a.value, scope);
      if (!v.ok())
        return false;
      args.push_back({a.name, a.loc, std::move(v)});
    }
    instances.push_back(std::make_unique<Instance>());
    Instance *stack = instances.back().get();
    stack->decl = ctor.block;
    stack->module = ctor.module;
    stack->path = path;
    for (int64_t i = 0; i < *count; ++i) {
      Instance *layer =
          instantiate(*ctor.block, *ctor.module, args,
                      joinPath(path, std::to_string(i)), call->getLoc());
      if (!layer)
        return false;
      stack->layers.push_back(layer);
    }
    Val v;
    v.k = Val::K::Repeat;
    v.inst = stack;
    inst.env[name] = v;
    return true;
  }
  case MemberDecl::Kind::Value: {
    Scope memberScope = scope;
    memberScope.memberPath = path;
    Val v = eval(*member.value, memberScope);
    if (!v.ok())
      return false;
    inst.env[name] = v;
    return true;
  }
  }
  return false;
}

std::string Elaborator::describeType(const TypeExpr &type) {
  std::string out;
  llvm::raw_string_ostream os(out);
  printType(type, os);
  return out;
}

/// Matches an actual tensor type against a declared one, binding symbolic
/// dimensions (names that resolve to nothing) in `locals`.
bool Elaborator::matchType(const TypeExpr &type, const TensorType &actual,
                           std::map<std::string, Val> &locals, Scope &scope,
                           SMLoc useLoc, llvm::StringRef what) {
  auto mismatch = [&]() {
    diags.error(useLoc) << what << " expects " << describeType(type) << ", got "
                        << actual.str();
    diags.note(type.loc) << "declared here";
    return false;
  };
  auto dtype = parseDType(type.dtype);
  if (!dtype)
    return false; // reported by the resolver
  if (*dtype != actual.dtype || type.dims.size() != actual.shape.size())
    return mismatch();
  for (size_t d = 0; d < type.dims.size(); ++d) {
    const Expr &dim = *type.dims[d];
    if (auto *n = dyn_cast<NameExpr>(&dim)) {
      bool known = locals.count(n->name) ||
                   (scope.inst && scope.inst->env.count(n->name)) ||
                   isModuleName(*scope.module, n->name);
      if (!known) {
        locals[n->name] = Val::ofInt(actual.shape[d]);
        continue;
      }
    }
    Scope dimScope = scope;
    dimScope.locals = &locals;
    dimScope.forward = false;
    auto v = evalInt(dim, dimScope, "a dimension");
    if (!v)
      return false;
    if (*v != actual.shape[d])
      return mismatch();
  }
  return true;
}

Val Elaborator::callForward(Instance &inst, std::vector<EvArg> args,
                            SMLoc loc) {
  const BlockDecl &decl = *inst.decl;
  if (!decl.forward) {
    diags.error(loc) << "block '" << decl.name.name << "' has no 'forward'";
    diags.note(decl.name.loc) << "'" << decl.name.name << "' is declared here";
    return Val::none();
  }
  const ForwardDecl &fwd = *decl.forward;
  if (args.size() != fwd.args.size()) {
    diags.error(loc) << "'" << decl.name.name << "' takes " << fwd.args.size()
                     << " input" << (fwd.args.size() == 1 ? "" : "s")
                     << ", got " << args.size();
    diags.note(fwd.loc) << "'forward' is declared here";
    return Val::none();
  }
  std::map<std::string, Val> locals;
  Scope scope;
  scope.module = inst.module;
  scope.inst = &inst;
  scope.locals = &locals;
  scope.forward = true;
  Scope *saved = currentScope;
  currentScope = &scope;
  llvm::scope_exit restore([&] { currentScope = saved; });

  for (size_t i = 0; i < args.size(); ++i) {
    const ForwardDecl::Arg &decl_arg = fwd.args[i];
    if (!args[i].name.empty() && args[i].name != decl_arg.name.name) {
      diags.error(args[i].loc)
          << "input " << i + 1 << " of '" << decl.name.name << "' is named '"
          << decl_arg.name.name << "', not '" << args[i].name << "'";
      return Val::none();
    }
    auto t = asTensor(args[i].v, args[i].loc,
                      "input '" + decl_arg.name.name + "' of '" +
                          decl.name.name + "'");
    if (!t)
      return Val::none();
    if (!matchType(decl_arg.type, typeOf(*t), locals, scope, args[i].loc,
                   "input '" + decl_arg.name.name + "' of '" + decl.name.name +
                       "'"))
      return Val::none();
    locals[decl_arg.name.name] = Val::ofTensor(*t);
  }
  for (const Stmt &stmt : fwd.body) {
    Val v = eval(*stmt.value, scope);
    if (!v.ok())
      return v;
    if (stmt.kind == Stmt::Kind::Return) {
      if (fwd.result) {
        auto t = asTensor(v, stmt.value->getLoc(), "the result");
        if (!t || !matchType(*fwd.result, typeOf(*t), locals, scope,
                             stmt.value->getLoc(),
                             "the result of '" + decl.name.name + "'"))
          return Val::none();
        return Val::ofTensor(*t);
      }
      return v;
    }
    if (stmt.targets.size() == 1) {
      locals[stmt.targets[0].name] = v;
      continue;
    }
    if (v.k != Val::K::Tuple || v.elems.size() != stmt.targets.size()) {
      diags.error(stmt.loc) << "cannot unpack " << describe(v) << " into "
                            << stmt.targets.size() << " names";
      return Val::none();
    }
    for (size_t i = 0; i < stmt.targets.size(); ++i)
      locals[stmt.targets[i].name] = v.elems[i];
  }
  return Val::none(); // the resolver reported the missing return
}

//===----------------------------------------------------------------------===//
// The train section
//===----------------------------------------------------------------------===//

namespace {
struct TrainSchema {
  const char *name;
  TrainField::Kind kind;
  double dflt;
  const char *dfltName;
  std::vector<const char *> choices; // for names
};
} // namespace

static const std::vector<TrainSchema> &trainSchema() {
  using K = TrainField::Kind;
  static const std::vector<TrainSchema> schema = {
      {"batch", K::Int, 8, nullptr, {}},
      {"seq", K::Int, 64, nullptr, {}},
      {"microbatches", K::Int, 1, nullptr, {}},
      {"dp", K::Int, 1, nullptr, {}},
      {"precision", K::Name, 0, "fp32", {"fp32", "bf16"}},
      {"optimizer", K::Name, 0, "adamw", {"adamw", "sgd"}},
      {"lr", K::Float, 3e-4, nullptr, {}},
      {"beta1", K::Float, 0.9, nullptr, {}},
      {"beta2", K::Float, 0.999, nullptr, {}},
      {"eps", K::Float, 1e-8, nullptr, {}},
      {"weight_decay", K::Float, 0.0, nullptr, {}},
      {"momentum", K::Float, 0.0, nullptr, {}},
      {"lr_schedule", K::Name, 0, "constant", {"constant", "cosine", "linear"}},
      {"warmup", K::Int, 0, nullptr, {}},
      {"min_lr", K::Float, 0.0, nullptr, {}},
      {"clip_grad_norm", K::Float, 0.0, nullptr, {}},
      {"stages", K::Int, 1, nullptr, {}},
      {"schedule",
       K::Name,
       0,
       "1f1b",
       {"gpipe", "1f1b", "interleaved_1f1b", "zb_h1", "zb_v", "dualpipe_v"}},
      {"virtual_stages", K::Int, 1, nullptr, {}},
      // A manual pipeline cut, `Et*3|t*4|...` (compiler/partition).
      {"layout", K::Name, 0, "none", {}},
      // A block member name (checked against the model's instances).
      {"recompute", K::Name, 0, "none", {}},
  };
  return schema;
}

void Elaborator::setTrainValue(TrainField &field, const Val &v, SMLoc loc) {
  if (!v.ok())
    return;
  const TrainSchema *schema = nullptr;
  for (const TrainSchema &s : trainSchema())
    if (field.name == s.name)
      schema = &s;
  switch (field.kind) {
  case TrainField::Kind::Int:
    if (v.k != Val::K::Int) {
      diags.error(loc) << "train field '" << field.name
                       << "' must be an integer, got " << describe(v);
      return;
    }
    field.i = v.i;
    break;
  case TrainField::Kind::Float:
    if (!v.isNumber()) {
      diags.error(loc) << "train field '" << field.name
                       << "' must be a number, got " << describe(v);
      return;
    }
    field.f = v.number();
    break;
  case TrainField::Kind::Name: {
    if (v.k != Val::K::Str) {
      diags.error(loc) << "train field '" << field.name
                       << "' must be a name, got " << describe(v);
      return;
    }
    if (!schema->choices.empty() &&
        !llvm::is_contained(schema->choices, llvm::StringRef(v.s))) {
      auto diag = diags.error(loc);
      diag << "unknown " << field.name << " '" << v.s << "'; expected";
      for (size_t i = 0; i < schema->choices.size(); ++i)
        diag << (i ? ", " : " ") << schema->choices[i];
      return;
    }
    field.s = v.s;
    break;
  }
  }
  field.isSet = true;
  trainSetAt[field.name] = loc;
}

void Elaborator::setTrainField(const std::string &name, const Expr &value,
                               Scope &scope, SMLoc loc) {
  TrainField *field = program.trainField(name);
  if (!field) {
    diags.error(loc) << "unknown train field '" << name << "'";
    return;
  }
  auto previous = trainSetAt.find(name);
  if (previous != trainSetAt.end()) {
    diags.error(loc) << "train field '" << name << "' is set twice";
    diags.note(previous->second) << "first set here";
    return;
  }
  // Names (`precision = bf16`) are words, not constants to look up.
  if (field->kind == TrainField::Kind::Name) {
    if (auto *n = dyn_cast<NameExpr>(&value)) {
      setTrainValue(*field, Val::ofStr(n->name), loc);
      return;
    }
  }
  setTrainValue(*field, eval(value, scope), loc);
}

void Elaborator::evalTrain(Module &module) {
  for (const TrainSchema &s : trainSchema()) {
    TrainField f;
    f.name = s.name;
    f.kind = s.kind;
    if (s.kind == TrainField::Kind::Int)
      f.i = int64_t(s.dflt);
    else if (s.kind == TrainField::Kind::Float)
      f.f = s.dflt;
    else
      f.s = s.dfltName;
    program.train.push_back(f);
  }
  Scope scope;
  scope.module = &module;
  // Groups: `optimizer = adamw(lr = ...)`, `lr_schedule = cosine(...)`,
  // `pipeline = (stages = ...)`, `betas = (b1, b2)`.
  static const std::map<std::string, std::vector<std::string>> options = {
      {"adamw", {"lr", "betas", "weight_decay", "eps"}},
      {"sgd", {"lr", "momentum", "weight_decay"}},
      {"cosine", {"warmup", "min_lr"}},
      {"linear", {"warmup", "min_lr"}},
      {"constant", {"warmup"}},
  };
  std::function<void(const std::string &, const Expr &, SMLoc)> set =
      [&](const std::string &name, const Expr &value, SMLoc loc) {
        if (name == "betas") {
          auto *tuple = dyn_cast<TupleExpr>(&value);
          if (!tuple || tuple->elements.size() != 2) {
            diags.error(value.getLoc()) << "'betas' must be a pair such as "
                                           "'(0.9, 0.95)'";
            return;
          }
          setTrainField("beta1", *tuple->elements[0], scope, loc);
          setTrainField("beta2", *tuple->elements[1], scope, loc);
          return;
        }
        if (name == "pipeline") {
          auto *record = dyn_cast<RecordExpr>(&value);
          if (!record) {
            diags.error(value.getLoc())
                << "'pipeline' must be a record such as '(stages = 4, "
                   "schedule = 1f1b)'";
            return;
          }
          for (const Argument &f : record->fields) {
            if (f.name != "stages" && f.name != "schedule" &&
                f.name != "virtual_stages" && f.name != "layout") {
              diags.error(f.loc) << "'pipeline' has no field '" << f.name
                                 << "'; it has stages, schedule, "
                                    "virtual_stages and layout";
              continue;
            }
            set(f.name, *f.value, f.loc);
          }
          return;
        }
        if (name == "optimizer" || name == "lr_schedule") {
          auto *call = dyn_cast<CallExpr>(&value);
          const Expr *callee = call ? call->callee.get() : &value;
          auto *kind = dyn_cast<NameExpr>(callee);
          if (!kind) {
            diags.error(value.getLoc())
                << "'" << name << "' must name "
                << (name == "optimizer" ? "an optimizer such as 'adamw(lr = "
                                          "3e-4)'"
                                        : "a schedule such as 'cosine(warmup "
                                          "= 100)'");
            return;
          }
          setTrainField(name, *kind, scope, loc);
          if (!call)
            return;
          auto opts = options.find(kind->name);
          for (const Argument &a : call->args) {
            if (a.name.empty()) {
              diags.error(a.loc) << "options of '" << kind->name
                                 << "' are named, as in 'lr = 3e-4'";
              continue;
            }
            if (opts == options.end() ||
                !llvm::is_contained(opts->second, a.name)) {
              diags.error(a.loc)
                  << "'" << kind->name << "' has no option '" << a.name << "'";
              continue;
            }
            set(a.name, *a.value, a.loc);
          }
          return;
        }
        setTrainField(name, value, scope, loc);
      };
  for (const Definition &def : module.ast->train)
    set(def.name.name, *def.value, def.name.loc);

  // -D overrides of train fields, after the file's values.
  for (Override &o : overrides) {
    TrainField *field = program.trainField(o.name);
    if (!field || o.used)
      continue;
    if (module.constants.count(o.name))
      continue; // a constant of the same name takes the override
    trainSetAt.erase(o.name);
    if (o.name == "layout") {
      // A layout is not an expression: `-D layout=Et*3|t*4` as written.
      o.used = true;
      setTrainValue(*field, Val::ofStr(llvm::StringRef(o.value).trim().str()),
                    o.loc);
      continue;
    }
    setTrainValue(*field, evalOverride(o), o.loc);
  }
  // Interleaving defaults to two virtual stages per rank; the V schedules
  // have exactly two.
  llvm::StringRef kind = program.trainName("schedule");
  if ((kind == "interleaved_1f1b" || kind == "zb_v" || kind == "dualpipe_v") &&
      !program.trainField("virtual_stages")->isSet)
    program.trainField("virtual_stages")->i = 2;
  checkTrain();
}

void Elaborator::checkTrain() {
  auto at = [&](llvm::StringRef name) {
    auto it = trainSetAt.find(name.str());
    return it != trainSetAt.end() ? it->second : main.ast->trainLoc;
  };
  auto positive = [&](llvm::StringRef name) {
    const TrainField *f = program.trainField(name);
    bool ok = f->kind == TrainField::Kind::Int ? f->i > 0 : f->f > 0;
    if (!ok)
      diags.error(at(name)) << "train field '" << name << "' must be positive";
    return ok;
  };
  auto nonNegative = [&](llvm::StringRef name) {
    const TrainField *f = program.trainField(name);
    bool ok = f->kind == TrainField::Kind::Int ? f->i >= 0 : f->f >= 0;
    if (!ok)
      diags.error(at(name))
          << "train field '" << name << "' must not be negative";
  };
  bool sizes = true;
  for (const char *name : {"batch", "seq", "microbatches", "dp"})
    sizes = positive(name) && sizes;
  positive("stages");
  positive("virtual_stages");
  positive("lr");
  positive("eps");
  nonNegative("weight_decay");
  nonNegative("warmup");
  nonNegative("min_lr");
  nonNegative("clip_grad_norm");
  for (const char *beta : {"beta1", "beta2", "momentum"}) {
    double b = program.trainFloat(beta);
    if (b < 0 || b >= 1)
      diags.error(at(beta)) << "train field '" << beta
                            << "' must be in [0, 1), got " << formatNumber(b);
  }
  if (sizes) {
    int64_t batch = program.trainInt("batch");
    int64_t split = program.trainInt("microbatches") * program.trainInt("dp");
    if (batch % split != 0) {
      diags.error(at("batch"))
          << "batch " << batch << " does not split into "
          << program.trainInt("microbatches") << " microbatches x "
          << program.trainInt("dp") << " data-parallel replicas";
    }
  }
  int64_t virtualStages = program.trainInt("virtual_stages");
  llvm::StringRef schedule = program.trainName("schedule");
  if (virtualStages > 1 && schedule != "interleaved_1f1b" &&
      schedule != "zb_v" && schedule != "dualpipe_v")
    diags.error(at("virtual_stages"))
        << "virtual_stages = " << virtualStages << " needs schedule "
        << "interleaved_1f1b, zb_v or dualpipe_v, not " << schedule;
}

bool Elaborator::checkRecompute() {
  llvm::StringRef member = program.trainName("recompute");
  if (member == "none")
    return true;
  std::set<std::string> members;
  for (const auto &inst : instances) {
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(inst->path).split(parts, '.', -1, /*KeepEmpty=*/false);
    for (llvm::StringRef part : parts) {
      unsigned long long layer;
      if (part.getAsInteger(10, layer))
        members.insert(part.str());
    }
  }
  if (members.count(member.str()))
    return true;
  auto it = trainSetAt.find("recompute");
  auto diag =
      diags.error(it != trainSetAt.end() ? it->second : main.ast->trainLoc);
  diag << "recompute = " << member
       << " names no block of the model; expected none";
  for (const std::string &m : members)
    diag << ", " << m;
  return false;
}

//===----------------------------------------------------------------------===//
// The whole model
//===----------------------------------------------------------------------===//

std::optional<Program> Elaborator::run() {
  unsigned errorsBefore = diags.errorCount();
  parseDefines(defines);
  for (Module *m : allModules)
    resolveModule(*m);

  const BlockDecl *model = nullptr;
  for (const auto &block : main.ast->blocks) {
    if (!block->isModel)
      continue;
    if (model) {
      diags.error(block->name.loc) << "more than one model in a file";
      diags.note(model->name.loc) << "first model is here";
      continue;
    }
    model = block.get();
  }
  if (!model) {
    diags.error(SMLoc::getFromPointer(
        sm.getMemoryBuffer(main.ast->bufferId)->getBufferStart()))
        << "no 'model' in '" << main.ast->path << "'";
  }
  if (diags.errorCount() != errorsBefore || !model)
    return std::nullopt;

  program.modelName = model->name.name;
  program.modelLoc = model->name.loc;
  evalTrain(main);
  // Every constant of the model file is checked, used or not; this also
  // applies every `-D` override of one.
  for (const Definition &def : main.ast->constants)
    evalConstant(main, def);
  for (Override &o : overrides)
    if (!o.used)
      diags.error(o.nameLoc) << "-D " << o.name
                             << " names no constant or train field of this "
                                "model";
  if (diags.errorCount() != errorsBefore)
    return std::nullopt;

  Instance *root = instantiate(*model, main, {}, "", model->name.loc);
  if (!root || !checkRecompute())
    return std::nullopt;

  // The model's inputs: B and T come from the train section.
  const ForwardDecl &fwd = *model->forward;
  int64_t microbatch =
      program.trainInt("batch") /
      (program.trainInt("microbatches") * program.trainInt("dp"));
  std::map<std::string, Val> bound = {
      {"B", Val::ofInt(microbatch)},
      {"T", Val::ofInt(program.trainInt("seq"))}};
  Scope scope;
  scope.module = &main;
  scope.inst = root;
  scope.locals = &bound;
  std::vector<EvArg> args;
  for (const ForwardDecl::Arg &arg : fwd.args) {
    Input input;
    input.name = arg.name.name;
    input.loc = arg.name.loc;
    input.type.dtype = *parseDType(arg.type.dtype);
    for (const ExprPtr &dim : arg.type.dims) {
      if (auto *n = dyn_cast<NameExpr>(dim.get());
          n && !bound.count(n->name) && !root->env.count(n->name) &&
          !isModuleName(main, n->name)) {
        diags.error(dim->getLoc())
            << "dimension '" << n->name << "' of model input '" << input.name
            << "' is not bound; a model's inputs may use B (the microbatch "
               "size) and T (the sequence length)";
        return std::nullopt;
      }
      auto v = evalInt(*dim, scope, "a dimension");
      if (!v)
        return std::nullopt;
      if (*v <= 0) {
        diags.error(dim->getLoc()) << "dimension of model input '" << input.name
                                   << "' must be positive, got " << *v;
        return std::nullopt;
      }
      input.type.shape.push_back(*v);
    }
    program.values.push_back(input.type);
    args.push_back(
        {"", arg.name.loc, Val::ofTensor(program.values.size() - 1)});
    program.inputs.push_back(std::move(input));
  }
  Val loss = callForward(*root, std::move(args), model->name.loc);
  if (!loss.ok() || tooLarge)
    return std::nullopt;
  if (loss.k != Val::K::Tensor ||
      typeOf(loss.id) != TensorType{DType::F32, {}}) {
    diags.error(fwd.loc) << "the forward of model '" << model->name.name
                         << "' must return the scalar loss (f32), got "
                         << describe(loss);
    return std::nullopt;
  }
  program.output = loss.id;
  for (const Param &p : program.params)
    if (p.uses == 0)
      diags.warning(p.loc) << "parameter '" << p.path
                           << "' is not used by the forward pass";
  if (diags.errorCount() != errorsBefore)
    return std::nullopt;
  return std::move(program);
}

std::optional<Program> Frontend::elaborate() {
  if (!mainModule || !mainModule->ast)
    return std::nullopt;
  std::vector<Module *> all;
  for (auto &m : modules)
    all.push_back(m.get());
  Elaborator elaborator(sourceMgr, diags, *mainModule, all, options.defines);
  return elaborator.run();
}
