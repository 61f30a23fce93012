//===- hotstage.cpp - The Hotstage compiler driver -----------------------===//
//
//   hotstage build FILE.hot [-o OUT] [--emit=STAGE] [-D name=value ...]
//   hotstage info  FILE.hot [-D name=value ...]
//   hotstage plan  FILE.hot [--stages S] [--schedule NAME] [--trace F.json]
//   hotstage data  --bytes IN.txt -o OUT.bin
//
// The first positional argument picks the command; every option is shared,
// so MLIR's own flags (`--mlir-print-ir-after-all`, `--mlir-timing`) work
// with every command.
//
//===----------------------------------------------------------------------===//

#include "compiler/cuda/CudaKernels.h"
#include "compiler/driver/DataCommand.h"
#include "compiler/driver/Pipelining.h"
#include "compiler/driver/PlanCommand.h"
#include "compiler/host/HostLowering.h"
#include "compiler/host/HostObject.h"
#include "compiler/passes/Passes.h"
#include "lang/Frontend.h"
#include "lang/MLIRGen.h"
#include "lang/Parser.h"

#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace hotstage;
namespace cl = llvm::cl;

static cl::OptionCategory category("Hotstage options");

static cl::opt<std::string> command(cl::Positional, cl::desc("<command>"),
                                    cl::cat(category));
static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<model.hot | text file>"),
                                      cl::cat(category));

static cl::opt<bool>
    bytesTokenizer("bytes",
                   cl::desc("data: one token per byte (vocabulary 256)"),
                   cl::cat(category));

enum class Emit {
  None,
  AST,
  NN,
  Train,
  Fused,
  Pipe,
  Plan,
  Kernels,
  PTX,
  LLVM,
  Obj
};
static cl::opt<Emit> emit(
    "emit", cl::desc("Stage to print instead of building an executable"),
    cl::init(Emit::None),
    cl::values(clEnumValN(Emit::AST, "ast", "the syntax tree"),
               clEnumValN(Emit::NN, "nn", "the nn dialect (forward graph)"),
               clEnumValN(Emit::Train, "train",
                          "forward, backward (B and W) and optimizer step"),
               clEnumValN(Emit::Fused, "fused",
                          "the training step after fusion (nn.fused groups, "
                          "GEMM epilogues)"),
               clEnumValN(Emit::Pipe, "pipe",
                          "each pipeline rank's step in the pipe dialect"),
               clEnumValN(Emit::Plan, "plan",
                          "the plan: buffers, offsets and actions"),
               clEnumValN(Emit::Kernels, "kernels", "the kernels in MLIR"),
               clEnumValN(Emit::PTX, "ptx",
                          "the kernels as PTX (with --target cuda)"),
               clEnumValN(Emit::LLVM, "llvm", "the optimized LLVM IR"),
               clEnumValN(Emit::Obj, "obj", "the object file")),
    cl::cat(category));

static cl::opt<std::string>
    targetFlag("target",
               cl::desc("Where the model trains: host (this CPU; the "
                        "default), cuda (NVIDIA H100/H200: sm_90a) or "
                        "cuda:sm_XY"),
               cl::value_desc("target"), cl::init("host"), cl::cat(category));

// What the CUDA target does to kernels, on the host: lit compares the two.
static cl::opt<bool> kernelsOverElements(
    "kernels-over-elements",
    cl::desc("Split elementwise kernels and reductions over their elements "
             "(as --target cuda does) on the host too"),
    cl::Hidden, cl::cat(category));

enum class EpilogueFlag { Default, None, Bias, Gelu };
static cl::opt<EpilogueFlag> gemmEpilogues(
    "gemm-epilogues",
    cl::desc("What GEMMs compute in their epilogue (cuBLASLt's). Default: "
             "bias with --target cuda, none on the host"),
    cl::init(EpilogueFlag::Default),
    cl::values(
        clEnumValN(EpilogueFlag::None, "none", "nothing"),
        clEnumValN(EpilogueFlag::Bias, "bias",
                   "a linear's bias and a residual add after the GEMM"),
        clEnumValN(EpilogueFlag::Gelu, "gelu",
                   "also the tanh GELU after it (keeping its input for the "
                   "backward), the GELU's gradient and a linear's bias "
                   "gradient beside its weight's")),
    cl::cat(category));

static cl::opt<cl::boolOrDefault> sdpa(
    "sdpa",
    cl::desc("Run attention and its gradient as one fused library call each "
             "(cuDNN's flash attention on a GPU; a reference loop on the "
             "host) on bf16 copies of their inputs. Default: on with "
             "--target cuda when the model trains in bf16"),
    cl::cat(category));

static cl::opt<bool> packedQkv(
    "packed-qkv",
    cl::desc("With --sdpa, let attention read q, k and v from the QKV "
             "projection's rows and write their gradients into one buffer "
             "(no split or concatenation kernels); =false splits them"),
    cl::init(true), cl::cat(category));

static cl::opt<bool> padRows(
    "pad-rows",
    cl::desc("Pad the rows of GEMM outputs that are no multiple of 8 "
             "elements (GPT-2's 50,257 logits a token, stored 50,304 apart) "
             "so that cuBLASLt's tensor-core kernels can read them; =false "
             "keeps them packed"),
    cl::init(true), cl::cat(category));

static cl::opt<bool> lossGradientInForward(
    "loss-gradient-in-forward",
    cl::desc("Over elements (--target cuda), let cross entropy write the "
             "loss gradient over the logits as it reads them (llm.c's fused "
             "classifier) rather than in the backward; =false keeps two "
             "passes"),
    cl::init(true), cl::cat(category));

static cl::opt<bool> bf16Residual(
    "bf16-residual",
    cl::desc("precision = bf16: keep the residual stream and its gradient in "
             "bf16, as llm.c does, rather than in f32 as PyTorch's autocast "
             "does (half their bytes; each add rounds)"),
    cl::init(false), cl::cat(category));

static cl::opt<std::string> outputFile("o", cl::desc("Output file"),
                                       cl::value_desc("file"), cl::init(""),
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

static cl::opt<std::string>
    traceFile("trace",
              cl::desc("plan: write the schedule's timeline as a Chrome "
                       "trace (JSON, opens in Perfetto)"),
              cl::value_desc("file.json"), cl::init(""), cl::cat(category));
static cl::opt<std::string> memoryBudget(
    "memory-budget",
    cl::desc("plan and build: the bytes one rank's arena may use (suffixes "
             "K, M, G); a rank over it is an error"),
    cl::value_desc("bytes"), cl::init(""), cl::cat(category));
// Shortcuts for the train fields `hotstage plan` is most often asked about.
static cl::opt<std::string> stagesFlag("stages", cl::desc("plan: -D stages=S"),
                                       cl::value_desc("S"), cl::init(""),
                                       cl::cat(category));
static cl::opt<std::string> scheduleFlag("schedule",
                                         cl::desc("plan: -D schedule=NAME"),
                                         cl::value_desc("name"), cl::init(""),
                                         cl::cat(category));
static cl::opt<std::string>
    microbatchesFlag("microbatches", cl::desc("plan: -D microbatches=M"),
                     cl::value_desc("M"), cl::init(""), cl::cat(category));
static cl::opt<std::string>
    virtualStagesFlag("virtual-stages", cl::desc("plan: -D virtual_stages=V"),
                      cl::value_desc("V"), cl::init(""), cl::cat(category));

static const char *overview =
    R"(Hotstage: compiles a model file into a program that trains it

Commands:
  build FILE.hot [-o OUT] [--target cuda[:sm_XY]]
                  Compile the model into an executable that trains it on
                  this machine's CPU, or with --target cuda on an NVIDIA
                  GPU (OUT defaults to the file's name without .hot). Run
                  `OUT --help` for its options.
  build FILE.hot --emit=STAGE [-o OUT]
                  Print one stage instead: `ast` (the syntax tree), `nn`
                  (the forward graph, which `hotstage-opt` reads back),
                  `train` (forward, backward B and W, optimizer step),
                  `fused` (the same after fusion: nn.fused groups and
                  GEMM epilogue marks), `pipe` (a pipeline's ranks and
                  their steps with transfers), `plan` (buffers, arena
                  offsets, actions; one per rank), `kernels`, `ptx`
                  (--target cuda: what ptxas assembles), `llvm` or `obj`.
  info FILE.hot   Check the model and print its parameter table, the total
                  parameter count, the train configuration and the memory
                  plan of one training step (exact arena bytes).
  plan FILE.hot [--stages S] [--schedule NAME] [--microbatches M]
                [--virtual-stages V] [--trace FILE.json] [--memory-budget B]
                  Partition the model into pipeline stages and schedule
                  them: the stage table (units, parameters, FLOPs, times),
                  each rank's peak memory, the predicted step time and
                  bubble next to the textbook value, and a timeline of the
                  schedule (--trace writes it for Perfetto). The flags are
                  shortcuts for -D; -D layout=Et*3|t*4|... cuts by hand.
  data --bytes IN.txt -o OUT.bin
                  Write the bytes of a text file as an llm.c token shard
                  (uint16, one token per byte), for models with vocab=256.

Every constant of the model file and every field of its `train` section can
be overridden: -D layers=2 -D batch=8 -D seq=64 -D stages=4 -D schedule=1f1b

MLIR's options work with every command (--mlir-print-ir-after-all,
--mlir-timing, ...); --help-hidden lists them.

Exit status: 0 on success, 1 when the model has errors (each printed as
file:line:col: error: message, with the source line and a caret).
)";

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

/// Links `object` with the runtime library into `executable`, with the
/// system's C++ compiler driver (`$HOTSTAGE_CXX`, else c++ on PATH).
static int linkExecutable(const std::string &object,
                          const std::string &executable, const char *argv0,
                          bool cuda) {
  std::string self = llvm::sys::fs::getMainExecutable(
      argv0, reinterpret_cast<void *>(&linkExecutable));
  llvm::SmallString<256> lib(
      llvm::sys::path::parent_path(llvm::sys::path::parent_path(self)));
  llvm::sys::path::append(lib, "lib");
  std::string runtimeMain = (lib + "/libHotstageRuntimeMain.a").str();
  std::string runtime = (lib + "/libHotstageRuntime.a").str();
  // Where the kernels run: this CPU, or a GPU (runtime/host/Device.h).
  std::string device =
      (lib + (cuda ? "/libHotstageRuntimeCuda.a" : "/libHotstageRuntimeHost.a"))
          .str();
  for (const std::string &path : {runtimeMain, device, runtime})
    if (!llvm::sys::fs::exists(path)) {
      llvm::errs() << "hotstage: cannot find the runtime library " << path
                   << "\n";
      return 1;
    }
  std::string driver;
  if (const char *env = std::getenv("HOTSTAGE_CXX"))
    driver = env;
  for (const char *candidate : {"c++", "clang++-22", "g++", "clang++"}) {
    if (!driver.empty())
      break;
    if (auto found = llvm::sys::findProgramByName(candidate))
      driver = *found;
  }
  if (driver.empty()) {
    llvm::errs() << "hotstage: no C++ linker found (set HOTSTAGE_CXX)\n";
    return 1;
  }
  // The device library last: the runtime's executor calls into it.
  llvm::SmallVector<llvm::StringRef> args{
      driver,  "-o",   executable, object,      runtimeMain,
      runtime, device, "-lgomp",   "-lpthread", "-lm"};
  if (!cuda)
    args.push_back("-ldnnl"); // the host's GEMMs (HostGemm.cpp)
#ifdef HOTSTAGE_HAVE_CUDA
  // cuBLASLt from the toolkit the runtime was built against; the driver is
  // opened at run time (CudaDevice.cpp).
  std::string cudaLibs = "-L" HOTSTAGE_CUDA_LIB_DIR;
  std::string cudaRpath = "-Wl,-rpath," HOTSTAGE_CUDA_LIB_DIR;
  if (cuda)
    args.append({cudaLibs, cudaRpath, "-lcublasLt", "-ldl"});
#endif
  // The MPI libraries the runtime was built against (full paths).
  llvm::SmallVector<llvm::StringRef> mpi;
  llvm::StringRef(HOTSTAGE_MPI_LIBS).split(mpi, ',', -1, false);
  args.append(mpi.begin(), mpi.end());
  std::string message;
  int rc =
      llvm::sys::ExecuteAndWait(driver, args, std::nullopt, {}, 0, 0, &message);
  llvm::sys::fs::remove(object);
  if (rc != 0) {
    llvm::errs() << "hotstage: linking " << executable << " failed"
                 << (message.empty() ? "" : ": " + message) << "\n";
    return 1;
  }
  return 0;
}

static int runDataCommand() {
  if (!bytesTokenizer) {
    llvm::errs() << "hotstage data: give the tokenizer: --bytes (one token "
                    "per byte) is the only one\n";
    return 1;
  }
  if (outputFile.empty()) {
    llvm::errs() << "hotstage data: missing -o OUT.bin\n";
    return 1;
  }
  std::string error;
  int64_t count = writeByteShard(inputFile, outputFile, error);
  if (count < 0) {
    llvm::errs() << "hotstage data: " << error << "\n";
    return 1;
  }
  llvm::outs() << "wrote " << outputFile << ": " << withCommas(count)
               << " tokens (bytes of " << inputFile << ", vocab 256)\n";
  return 0;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
  // --help shows Hotstage's options; LLVM's and MLIR's still work and are
  // listed by --help-hidden.
  for (auto &[name, option] : cl::getRegisteredOptions())
    if (!llvm::is_contained(option->Categories, &category) &&
        option->getOptionHiddenFlag() == cl::NotHidden && name != "help" &&
        name != "version")
      option->setHiddenFlag(cl::Hidden);
  cl::ParseCommandLineOptions(argc, argv, overview);

  if (command.empty()) {
    llvm::errs() << "hotstage: missing command; try 'hotstage --help'\n";
    return 1;
  }
  if (command != "build" && command != "info" && command != "plan" &&
      command != "data") {
    llvm::errs() << "hotstage: unknown command '" << command
                 << "'; expected 'build', 'info', 'plan' or 'data' (see "
                    "--help)\n";
    return 1;
  }
  if (inputFile.empty()) {
    llvm::errs() << "hotstage " << command << ": missing "
                 << (command == "data" ? "text" : "model") << " file\n";
    return 1;
  }
  if (command == "data")
    return runDataCommand();
  std::optional<cuda::Target> target;
  if (targetFlag != "host") {
    std::string problem;
    cuda::Target parsed;
    if (!cuda::parseTarget(targetFlag, parsed, problem)) {
      llvm::errs() << "hotstage: " << problem << "\n";
      return 1;
    }
#ifndef HOTSTAGE_HAVE_CUDA
    if (command == "build" && emit == Emit::None) {
      llvm::errs() << "hotstage: this hotstage was built without the CUDA "
                      "toolkit, so it cannot link a --target cuda executable; "
                      "install CUDA and rebuild it\n";
      return 1;
    }
#endif
    target = parsed;
  }
  if (emit == Emit::PTX && !target) {
    llvm::errs() << "hotstage: --emit=ptx needs --target cuda\n";
    return 1;
  }
  // Text goes to stdout by default; an executable next to the model's
  // name.
  std::string executable;
  if (command == "build" && emit == Emit::None) {
    executable = outputFile.empty() ? llvm::sys::path::stem(inputFile).str()
                                    : outputFile.getValue();
    outputFile = executable + ".o";
  } else if (outputFile.empty()) {
    outputFile = "-";
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
  PlanCommandOptions planOptions;
  if (!memoryBudget.empty() &&
      !parseByteCount(memoryBudget, planOptions.memoryBudget)) {
    llvm::errs() << "hotstage " << command
                 << ": --memory-budget takes bytes, with an optional K, M or "
                    "G suffix, not '"
                 << memoryBudget << "'\n";
    return 1;
  }
  if (command == "plan") {
    for (auto [flag, field] : {std::pair{&stagesFlag, "stages"},
                               {&scheduleFlag, "schedule"},
                               {&microbatchesFlag, "microbatches"},
                               {&virtualStagesFlag, "virtual_stages"}})
      if (!flag->empty())
        options.defines.push_back(std::string(field) + "=" + flag->getValue());
    planOptions.traceFile = traceFile;
  }
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
    output->os() << "\n";
  }

  mlir::MLIRContext context;
  // Errors of the passes (a schedule that cannot run, a bad layout) point
  // into the model file like the front end's, with the line and a caret.
  mlir::SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  context.printOpOnDiagnostic(false);
  mlir::TimingScope genTiming = rootTiming.nest("mlirgen");
  mlir::OwningOpRef<mlir::ModuleOp> module =
      lang::mlirGen(context, *program, sourceMgr);
  genTiming.stop();
  if (!module) {
    llvm::errs() << "hotstage: internal error: the generated IR does not "
                    "verify\n";
    return 1;
  }

  // The passes of the `nn` stage.
  mlir::PassManager pm(&context, mlir::ModuleOp::getOperationName());
  if (mlir::failed(mlir::applyPassManagerCLOptions(pm)))
    return 1;
  mlir::TimingScope passTiming = rootTiming.nest("passes");
  pm.enableTiming(passTiming);
  pm.addNestedPass<mlir::func::FuncOp>(mlir::createCanonicalizerPass());
  pm.addNestedPass<mlir::func::FuncOp>(mlir::createCSEPass());
  if (mlir::failed(pm.run(*module)))
    return 1;
  if (command == "build" && emit == Emit::NN) {
    module->print(output->os());
    output->os() << "\n";
    output->keep();
    return 0;
  }

  // A pipeline: the cut and the schedule first, then each chunk is its own
  // set of functions.
  // (`hotstage plan` partitions and schedules one stage too.)
  std::optional<PipelineSetup> pipeline;
  bool pipelined =
      program->trainInt("stages") * program->trainInt("virtual_stages") > 1;
  if (pipelined || command == "plan") {
    mlir::FailureOr<PipelineSetup> setup = setUpPipeline(*module);
    if (mlir::failed(setup))
      return 1;
    pipeline = std::move(*setup);
  }
  if (pipelined) {
    llvm::SmallVector<int64_t> starts, ranks;
    for (const partition::Chunk &c : pipeline->cut.chunks)
      starts.push_back(c.first);
    for (int r : pipeline->schedule.chunkRank)
      ranks.push_back(r);
    (*module)->setAttr("nn.chunks",
                       mlir::DenseI64ArrayAttr::get(&context, starts));
    (*module)->setAttr("nn.chunk_ranks",
                       mlir::DenseI64ArrayAttr::get(&context, ranks));
  }

  mlir::PassManager train(&context, mlir::ModuleOp::getOperationName());
  if (mlir::failed(mlir::applyPassManagerCLOptions(train)))
    return 1;
  train.enableTiming(passTiming);
  if (pipelined)
    train.addPass(createSplitChunks());
  // Only the zero-bubble schedules of a pipeline run W apart from B;
  // everything else wants them interleaved (what W reads dies early).
  AutodiffOptions autodiff;
  autodiff.splitBackward = pipelined && pipeline->schedule.splitBackward;
  train.addPass(createAutodiff(autodiff));
  train.addPass(createOptimizer());
  train.addNestedPass<mlir::func::FuncOp>(mlir::createCanonicalizerPass());
  train.addNestedPass<mlir::func::FuncOp>(mlir::createCSEPass());
  using Epilogues = host::KernelOptions::Epilogues;
  Epilogues epilogues = Epilogues::None;
  if (gemmEpilogues == EpilogueFlag::Gelu)
    epilogues = Epilogues::Gelu;
  else if (gemmEpilogues == EpilogueFlag::Bias ||
           (gemmEpilogues == EpilogueFlag::Default && target))
    epilogues = Epilogues::BiasResidual;
  if (emit != Emit::Train) {
    FusionOptions fusion;
    if (epilogues != Epilogues::None)
      fusion.epilogues.push_back("residual");
    if (epilogues == Epilogues::Gelu) {
      fusion.epilogues.push_back("gelu_tanh");
      fusion.epilogues.push_back("dgelu_tanh");
    }
    train.addNestedPass<mlir::func::FuncOp>(createFusion(fusion));
  }
  if (mlir::failed(train.run(*module)))
    return 1;
  passTiming.stop();
  if (command == "build" && (emit == Emit::Train || emit == Emit::Fused)) {
    mlir::TimingScope printTiming = rootTiming.nest("print");
    module->print(output->os());
    output->os() << "\n";
    output->keep();
    return 0;
  }

  mlir::TimingScope lowerTiming = rootTiming.nest("host lowering");
  host::KernelOptions kernelOptions;
  kernelOptions.parallelOverElements = target || kernelsOverElements;
  kernelOptions.warpShuffles = target.has_value();
  kernelOptions.gemmEpilogues = epilogues;
  using Attention = host::KernelOptions::Attention;
  kernelOptions.attention = sdpa == cl::BOU_TRUE    ? Attention::Library
                            : sdpa == cl::BOU_FALSE ? Attention::Kernels
                            : target                ? Attention::LibraryIfBf16
                                                    : Attention::Kernels;
  kernelOptions.packedAttention = packedQkv;
  kernelOptions.padRows = padRows;
  kernelOptions.lossGradientInForward = lossGradientInForward;
  kernelOptions.bf16Residual = bf16Residual;
  mlir::FailureOr<host::HostProgram> lowered = mlir::failure();
  if (pipelined) {
    std::vector<plan::Pipeline> ranks;
    for (int r = 0; r < pipeline->schedule.numRanks(); ++r)
      ranks.push_back(pipeline->rankPipeline(r));
    lowered = host::lowerPipelineToHost(*module, ranks, kernelOptions);
  } else {
    lowered = host::lowerToHost(*module, kernelOptions);
  }
  if (mlir::failed(lowered))
    return 1;
  lowerTiming.stop();
  if (command == "plan") {
    int rc = runPlanCommand(*module, *pipeline, lowered->plans, planOptions,
                            output->os());
    output->keep();
    return rc;
  }
  if (emit == Emit::Pipe) {
    if (!pipeline) {
      llvm::errs() << "hotstage: --emit=pipe needs a pipeline (-D stages=S "
                      "with S > 1, or virtual_stages > 1)\n";
      return 1;
    }
    mlir::OwningOpRef<mlir::ModuleOp> pipe =
        emitPipe(context, *pipeline, lowered->plans);
    if (mlir::failed(mlir::verify(*pipe))) {
      llvm::errs() << "hotstage: internal error: the pipe IR does not "
                      "verify\n";
      return 1;
    }
    pipe->print(output->os());
    output->os() << "\n";
    output->keep();
    return 0;
  }
  // Each rank's exact arena against the budget.
  if (planOptions.memoryBudget > 0)
    for (const plan::Plan &plan : lowered->plans)
      if (std::string over = plan::overBudget(plan, planOptions.memoryBudget);
          !over.empty()) {
        mlir::emitError((*module).getLoc()) << over;
        return 1;
      }
  if (command == "info") {
    for (const plan::Plan &plan : lowered->plans) {
      if (plan.pipeline)
        output->os() << "pipeline rank " << plan.pipeline->rank << " of "
                     << plan.pipeline->stages << ": ";
      plan::printMemorySummary(plan, output->os());
    }
    output->keep();
    return 0;
  }
  // One plan per pipeline rank, one after the other.
  std::string planText;
  llvm::raw_string_ostream planStream(planText);
  for (const plan::Plan &plan : lowered->plans)
    plan::print(plan, planStream);
  if (emit == Emit::Plan) {
    output->os() << planText;
    output->keep();
    return 0;
  }
  if (emit == Emit::Kernels) {
    lowered->kernels->print(output->os());
    output->os() << "\n";
    output->keep();
    return 0;
  }
  const std::vector<std::string> &table = lowered->plans.front().kernels;
  if (target) {
    // The kernels run on the GPU: PTX, then a cubin per architecture; the
    // host object holds the plan and the image.
    mlir::TimingScope gpuTiming = rootTiming.nest("gpu kernels");
    mlir::FailureOr<std::string> ptx =
        cuda::lowerKernelsToPTX(*lowered->kernels, table, *target, error);
    if (mlir::failed(ptx)) {
      llvm::errs() << "hotstage: " << error << "\n";
      return 1;
    }
    if (emit == Emit::PTX) {
      output->os() << *ptx;
      output->keep();
      return 0;
    }
    mlir::FailureOr<std::string> image = cuda::buildImage(*ptx, *target, error);
    if (mlir::failed(image)) {
      llvm::errs() << "hotstage: " << error << "\n";
      return 1;
    }
    gpuTiming.stop();
    mlir::OwningOpRef<mlir::ModuleOp> none =
        mlir::ModuleOp::create(mlir::UnknownLoc::get(&context));
    if (mlir::failed(host::emitHostObject(*none, table, planText, output->os(),
                                          emit != Emit::LLVM, error,
                                          &*image))) {
      llvm::errs() << "hotstage: " << error << "\n";
      return 1;
    }
  } else {
    mlir::TimingScope llvmTiming = rootTiming.nest("llvm");
    if (mlir::failed(host::lowerKernelsToLLVM(*lowered->kernels)))
      return 1;
    if (mlir::failed(host::emitHostObject(*lowered->kernels, table, planText,
                                          output->os(), emit != Emit::LLVM,
                                          error))) {
      llvm::errs() << "hotstage: " << error << "\n";
      return 1;
    }
  }
  output->keep();
  if (!executable.empty()) {
    output.reset();
    mlir::TimingScope linkTiming = rootTiming.nest("link");
    return linkExecutable(outputFile, executable, argv[0], target.has_value());
  }
  return 0;
}
