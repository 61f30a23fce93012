//===- FrontendTest.cpp - The front end on in-memory models ---------------===//

#include "lang/Frontend.h"

#include <gtest/gtest.h>

using namespace hotstage::lang;

namespace {
/// Runs the front end on `source` and keeps what it printed.
struct FrontendRun {
  explicit FrontendRun(llvm::StringRef source,
                       std::vector<std::string> defines = {})
      : os(printed), diags(sourceMgr, os) {
    FrontendOptions options;
    options.stdlibDir = HOTSTAGE_STDLIB_DIR;
    options.defines = std::move(defines);
    Frontend frontend(sourceMgr, diags, options);
    if (frontend.loadSource("test.hot", source))
      program = frontend.elaborate();
  }
  llvm::SourceMgr sourceMgr;
  std::string printed;
  llvm::raw_string_ostream os;
  DiagnosticEngine diags;
  std::optional<Program> program;
};

const char *kTiny = R"(import nn
config { vocab = 32; dim = 16; layers = 2 }
model Tiny {
  wte = param[vocab, dim] init normal(0.02)
  blocks = repeat(layers) nn.TransformerBlock(dim, 2, layers)
  forward(tokens: i32[B, T], targets: i32[B, T]) -> f32 {
    return cross_entropy(blocks(embedding(wte, tokens)) @ transpose(wte), targets)
  }
}
train { batch = 4; seq = 8; microbatches = 2 }
)";
} // namespace

TEST(Frontend, ElaboratesATinyGPT) {
  FrontendRun run(kTiny);
  ASSERT_TRUE(run.program) << run.printed;
  const Program &p = *run.program;
  EXPECT_EQ(p.modelName, "Tiny");
  // B is the microbatch: batch 4 over 2 microbatches.
  ASSERT_EQ(p.inputs.size(), 2u);
  EXPECT_EQ(p.inputs[0].type.str(), "i32[2, 8]");
  EXPECT_EQ(p.params.front().path, "wte");
  EXPECT_EQ(p.params.front().uses, 2u); // tied to the head
  EXPECT_EQ(p.params.back().path, "blocks.1.mlp.proj.bias");
  // 32*16 + 2 * (4*16 + 16*48 + 48 + 16*16 + 16 + 16*64 + 64 + 64*16 + 16)
  EXPECT_EQ(p.numParameters(), 512 + 2 * 3280);
  EXPECT_EQ(p.values[p.output].str(), "f32");
}

TEST(Frontend, OverridesChangeConstantsAndTrainFields) {
  FrontendRun run(kTiny, {"layers=3", "batch=8", "schedule=interleaved_1f1b"});
  ASSERT_TRUE(run.program) << run.printed;
  EXPECT_EQ(run.program->params.back().path, "blocks.2.mlp.proj.bias");
  EXPECT_EQ(run.program->inputs[0].type.str(), "i32[4, 8]");
  EXPECT_EQ(run.program->trainName("schedule"), "interleaved_1f1b");
  EXPECT_EQ(run.program->trainInt("virtual_stages"), 2);
}

TEST(Frontend, ReportsSeveralErrorsWithLocations) {
  FrontendRun run("const a = $\nconst b = 1 +\nconst c = )\n");
  EXPECT_FALSE(run.program);
  EXPECT_EQ(run.diags.errorCount(), 3u);
  EXPECT_NE(run.printed.find("test.hot:1:11: error: unexpected character '$'"),
            std::string::npos)
      << run.printed;
  // The trailing '+' continues the expression onto the next line.
  EXPECT_NE(run.printed.find("test.hot:3:1: error: expected an expression, "
                             "found 'const'"),
            std::string::npos)
      << run.printed;
  EXPECT_NE(run.printed.find("test.hot:3:11: error: expected an expression, "
                             "found ')'"),
            std::string::npos)
      << run.printed;
}

TEST(Frontend, PrintsTheSourceLineAndACaret) {
  FrontendRun run("model M {\n  w = param[4, -1] init zeros\n"
                  "  forward(t: i32[B, T], y: i32[B, T]) -> f32 {\n"
                  "    return cross_entropy(embedding(w, t), y)\n  }\n}\n");
  EXPECT_FALSE(run.program);
  EXPECT_NE(run.printed.find(
                "test.hot:2:16: error: dimension of parameter 'w' must be "
                "positive, got -1\n"
                "  w = param[4, -1] init zeros\n"
                "               ^\n"),
            std::string::npos)
      << run.printed;
}

TEST(Frontend, StopsAfterTheErrorLimit) {
  std::string source;
  for (int i = 0; i < 100; ++i)
    source += "const c" + std::to_string(i) + " = $\n";
  std::string printed;
  {
    llvm::SourceMgr sourceMgr;
    llvm::raw_string_ostream os(printed);
    DiagnosticEngine diags(sourceMgr, os);
    Frontend frontend(sourceMgr, diags, FrontendOptions());
    EXPECT_FALSE(frontend.loadSource("test.hot", source));
    EXPECT_EQ(diags.errorCount(), 20u);
  }
  EXPECT_NE(printed.find("test.hot:20:13: error: unexpected character '$'"),
            std::string::npos);
  EXPECT_EQ(printed.find("test.hot:21:"), std::string::npos);
  EXPECT_NE(printed.find("error: too many errors, stopping now"),
            std::string::npos);
}
