//===- hotstage.cpp - The Hotstage compiler driver
//-------------------------===//
//
//   hotstage build FILE.hot --emit=ast|nn [-o OUT] [-D name=value ...]
//   hotstage info  FILE.hot [-D name=value ...]
//
// The first positional argument picks the command; every option is shared,
// so MLIR's own flags (`--mlir-print-ir-after-all`, `--mlir-timing`) work
// with every command.
//
//===----------------------------------------------------------------------===//

#include "lang/Frontend.h"
#include "lang/MLIRGen.h"
#include "lang/Parser.h"

#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace hotstage;
namespace cl = llvm::cl;

static cl::OptionCategory category("Hotstage options");

static cl::opt<std::string> command(cl::Positional, cl::desc("<command>"),
                                    cl::cat(category));
static cl::opt<std::string> inputFile(cl::Positional, cl::desc("<model.hot>"),
                                      cl::cat(category));

enum class Emit { None, AST, NN };
static cl::opt<Emit> emit(
    "emit", cl::desc("Stage to print instead of building an executable"),
    cl::init(Emit::None),
    cl::values(clEnumValN(Emit::AST, "ast", "the syntax tree"),
               clEnumValN(Emit::NN, "nn", "the nn dialect (forward graph)")),
    cl::cat(category));

static cl::opt<std::string> outputFile("o", cl::desc("Output file"),
                                       cl::value_desc("file"), cl::init("-"),
                                       cl::cat(category));

static cl::list<std::string>
    defines("D", cl::desc("Override a constant or train field"),
            cl::value_desc("name=value"), cl::Prefix, cl::cat(category));

static cl::list<std::string> includeDirs("I",
                                         cl::desc("Add a folder to search "
                                                  "for imported modules"),
                                         cl::value_desc("dir"), cl::Prefix,
                                         cl::cat(category));

static cl::opt<std::string>
    stdlibDir("stdlib", cl::desc("Folder of the standard library modules"),
              cl::value_desc("dir"), cl::init(HOTSTAGE_STDLIB_DIR),
              cl::cat(category));

static cl::opt<unsigned>
    errorLimit("error-limit",
               cl::desc("Stop after this many errors (0: no limit)"),
               cl::init(20), cl::cat(category));

static const char *overview =
    R"(Hotstage: compiles a model file into a program that trains it

Commands:
  build FILE.hot --emit=ast|nn [-o OUT]
                  Check the model and print one stage of the compiler:
                  `ast` (the syntax tree) or `nn` (the forward graph in the
                  nn dialect, which `hotstage-opt` reads back).
  info FILE.hot   Check the model and print its parameter table, the total
                  parameter count and the train configuration.

Every constant of the model file and every field of its `train` section can
be overridden: -D layers=2 -D batch=8 -D seq=64 -D stages=4 -D schedule=1f1b

Exit status: 0 on success, 1 when the model has errors (each printed as
file:line:col: error: message, with the source line and a caret).
)";

/// Formats 124439808 as 124,439,808.
static std::string withCommas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

static void printInfo(const lang::Program &program, llvm::raw_ostream &os) {
  size_t width = 9;
  for (const lang::Param &p : program.params)
    width = std::max(width, p.path.size());
  os << "model " << program.modelName << "\n\n";
  os << llvm::left_justify("parameter", width) << "  "
     << llvm::left_justify("shape", 16) << "  "
     << llvm::right_justify("count", 13) << "  init\n";
  for (const lang::Param &p : program.params) {
    std::string init = lang::initKindName(p.init).str();
    if (p.init == lang::InitKind::Normal || p.init == lang::InitKind::Uniform)
      init +=
          "(" + lang::formatNumber(p.a) + ", " + lang::formatNumber(p.b) + ")";
    else if (p.init == lang::InitKind::Constant)
      init += "(" + lang::formatNumber(p.a) + ")";
    if (p.uses > 1)
      init += "  [used " + std::to_string(p.uses) + " times: tied]";
    os << llvm::left_justify(p.path, width) << "  "
       << llvm::left_justify(nn::shape::str(p.type.shape), 16) << "  "
       << llvm::right_justify(withCommas(*nn::shape::numElements(p.type.shape)),
                              13)
       << "  " << init << "\n";
  }
  int64_t total = program.numParameters();
  os << "\ntotal: " << withCommas(total) << " parameters in "
     << program.params.size() << " tensors ("
     << llvm::format("%.1f", total * 4.0 / (1 << 20)) << " MiB in f32)\n";
  os << "\ninputs:";
  for (const lang::Input &input : program.inputs)
    os << " " << input.name << ": " << input.type.str();
  os << "\ntrain:";
  for (const lang::TrainField &f : program.train) {
    os << " " << f.name << "=";
    switch (f.kind) {
    case lang::TrainField::Kind::Int:
      os << f.i;
      break;
    case lang::TrainField::Kind::Float:
      os << lang::formatNumber(f.f);
      break;
    case lang::TrainField::Kind::Name:
      os << f.s;
      break;
    }
  }
  os << "\n";
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
  cl::ParseCommandLineOptions(argc, argv, overview);

  if (command.empty()) {
    llvm::errs() << "hotstage: missing command; try 'hotstage --help'\n";
    return 1;
  }
  if (command != "build" && command != "info") {
    llvm::errs() << "hotstage: unknown command '" << command
                 << "'; expected 'build' or 'info' (see --help)\n";
    return 1;
  }
  if (inputFile.empty()) {
    llvm::errs() << "hotstage " << command << ": missing model file\n";
    return 1;
  }
  if (command == "build" && emit == Emit::None) {
    llvm::errs() << "hotstage build: code generation is not implemented "
                    "yet; use --emit=ast or --emit=nn\n";
    return 1;
  }

  mlir::DefaultTimingManager timing;
  mlir::applyDefaultTimingManagerCLOptions(timing);
  mlir::TimingScope rootTiming = timing.getRootScope();

  llvm::SourceMgr sourceMgr;
  lang::DiagnosticEngine diags(sourceMgr);
  diags.setErrorLimit(errorLimit ? errorLimit : ~0u);
  lang::FrontendOptions options;
  options.includeDirs = includeDirs;
  options.stdlibDir = stdlibDir;
  options.defines = defines;
  lang::Frontend frontend(sourceMgr, diags, options);

  std::string error;
  auto output = mlir::openOutputFile(outputFile, &error);
  if (!output) {
    llvm::errs() << "hotstage: " << error << "\n";
    return 1;
  }

  mlir::TimingScope parseTiming = rootTiming.nest("parse");
  bool loaded = frontend.load(inputFile);
  parseTiming.stop();
  if (emit == Emit::AST) {
    if (!loaded)
      return 1;
    lang::dump(*frontend.mainAST(), output->os(), sourceMgr);
    output->keep();
    return 0;
  }
  if (!loaded)
    return 1;

  mlir::TimingScope checkTiming = rootTiming.nest("check and elaborate");
  std::optional<lang::Program> program = frontend.elaborate();
  checkTiming.stop();
  if (!program)
    return 1;

  if (command == "info") {
    printInfo(*program, output->os());
    output->keep();
    return 0;
  }

  mlir::MLIRContext context;
  mlir::TimingScope genTiming = rootTiming.nest("mlirgen");
  mlir::OwningOpRef<mlir::ModuleOp> module =
      lang::mlirGen(context, *program, sourceMgr);
  genTiming.stop();
  if (!module) {
    llvm::errs() << "hotstage: internal error: the generated IR does not "
                    "verify\n";
    return 1;
  }

  // The passes of the `nn` stage; later stages append theirs.
  mlir::PassManager pm(&context, mlir::ModuleOp::getOperationName());
  if (mlir::failed(mlir::applyPassManagerCLOptions(pm)))
    return 1;
  mlir::TimingScope passTiming = rootTiming.nest("passes");
  pm.enableTiming(passTiming);
  pm.addNestedPass<mlir::func::FuncOp>(mlir::createCanonicalizerPass());
  pm.addNestedPass<mlir::func::FuncOp>(mlir::createCSEPass());
  if (mlir::failed(pm.run(*module)))
    return 1;

  mlir::TimingScope printTiming = rootTiming.nest("print");
  module->print(output->os());
  output->os() << "\n";
  output->keep();
  return 0;
}
