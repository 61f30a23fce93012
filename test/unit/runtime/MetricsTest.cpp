//===- MetricsTest.cpp - JSON lines and the progress line -----------------===//

#include "runtime/metrics/Metrics.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>

using namespace hotstage::rt;
using namespace hotstage::rt::test;

namespace {

std::string captured(FILE *f) {
  std::fflush(f);
  long size = std::ftell(f);
  std::string s(size_t(size), '\0');
  std::rewind(f);
  size_t n = std::fread(s.data(), 1, s.size(), f);
  s.resize(n);
  return s;
}

TEST(Metrics, FormatFloat) {
  EXPECT_EQ(formatFloat(5.54517746f), "5.54517746");
  EXPECT_EQ(formatFloat(3e-4f), "0.000300000014");
  EXPECT_EQ(formatFloat(1.0f), "1");
  EXPECT_EQ(formatFloat(0.0f), "0");
  EXPECT_EQ(formatFloat(-2.5f), "-2.5");
  EXPECT_EQ(formatFloat(1e20f), "1.00000002e+20");
  // Nine significant digits read back to the same float, bit for bit.
  for (float f : {0.1f, 1.0f / 3, 6.02214076e23f, 1.17549435e-38f, 1e-45f,
                  3.40282347e38f, -123.456f}) {
    float back = std::strtof(formatFloat(f).c_str(), nullptr);
    EXPECT_EQ(back, f) << formatFloat(f);
  }
}

TEST(Metrics, JsonLine) {
  StepMetrics m;
  m.step = 1;
  m.loss = 5.54517746f;
  m.lr = 3e-4f;
  m.gradNorm = 1.25f;
  m.tokensPerSecond = 81234.5;
  m.milliseconds = 35.125;
  EXPECT_EQ(metricsJson(m),
            "{\"step\": 1, \"loss\": 5.54517746, \"lr\": 0.000300000014, "
            "\"grad_norm\": 1.25, \"tokens_per_s\": 81234.5, \"ms\": 35.125}");
  m.loss = std::numeric_limits<float>::quiet_NaN();
  m.gradNorm = std::numeric_limits<float>::infinity();
  m.lr = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(metricsJson(m),
            "{\"step\": 1, \"loss\": NaN, \"lr\": -Infinity, \"grad_norm\": "
            "Infinity, \"tokens_per_s\": 81234.5, \"ms\": 35.125}");
}

TEST(Metrics, WriterWritesAndFlushesLines) {
  TempDir dir;
  std::string path = dir.file("m.jsonl");
  MetricsWriter w;
  std::string error;
  ASSERT_TRUE(w.open(path, error)) << error;
  EXPECT_TRUE(w.isOpen());
  StepMetrics m;
  m.step = 1;
  m.loss = 2;
  w.write(m);
  // Flushed: readable while the writer is still open.
  std::vector<uint8_t> bytes = readBytes(path);
  std::string text(bytes.begin(), bytes.end());
  EXPECT_EQ(text, "{\"step\": 1, \"loss\": 2, \"lr\": 0, \"grad_norm\": 0, "
                  "\"tokens_per_s\": 0, \"ms\": 0}\n");
  m.step = 2;
  w.write(m);
  w.close();
  EXPECT_FALSE(w.hadError());
  bytes = readBytes(path);
  EXPECT_EQ(std::count(bytes.begin(), bytes.end(), '\n'), 2);

  // Truncates by default; appends on request.
  ASSERT_TRUE(w.open(path, error, /*append=*/true));
  w.write(m);
  w.close();
  bytes = readBytes(path);
  EXPECT_EQ(std::count(bytes.begin(), bytes.end(), '\n'), 3);
  ASSERT_TRUE(w.open(path, error));
  w.close();
  EXPECT_TRUE(readBytes(path).empty());
}

TEST(Metrics, WriterOpenError) {
  MetricsWriter w;
  std::string error;
  EXPECT_FALSE(w.open("/nonexistent-dir/m.jsonl", error));
  EXPECT_EQ(error, "/nonexistent-dir/m.jsonl: cannot open for writing: No "
                   "such file or directory");
  w.write(StepMetrics()); // harmless when not open
}

TEST(Metrics, ProgressFormat) {
  StepMetrics m;
  m.step = 12;
  m.loss = 4.12341f;
  m.tokensPerSecond = 81234;
  m.milliseconds = 35.14;
  // 48 steps left at 2125 ms each: 102 s.
  EXPECT_EQ(ProgressLine::format(m, 60, 2125.0),
            "step 12/60 | loss 4.1234 | 81.2k tok/s | 35.1 ms/step | ETA "
            "0:01:42");
  m.tokensPerSecond = 950;
  EXPECT_NE(ProgressLine::format(m, 60, 1).find("| 950 tok/s |"),
            std::string::npos);
  m.tokensPerSecond = 2.5e6;
  EXPECT_NE(ProgressLine::format(m, 60, 1).find("| 2.5M tok/s |"),
            std::string::npos);
  m.tokensPerSecond = 999990;
  EXPECT_NE(ProgressLine::format(m, 60, 1).find("| 1.0M tok/s |"),
            std::string::npos);
  m.step = 60;
  EXPECT_NE(ProgressLine::format(m, 60, 1000).find("ETA 0:00:00"),
            std::string::npos);
  m.step = 1;
  EXPECT_NE(ProgressLine::format(m, 100001, 1000).find("ETA 27:46:40"),
            std::string::npos);
  EXPECT_NE(ProgressLine::format(m, 60, NAN).find("ETA -"), std::string::npos);
  m.loss = NAN;
  EXPECT_NE(ProgressLine::format(m, 60, 1).find("loss nan"), std::string::npos);
}

TEST(Metrics, ProgressOnTerminalRewritesOneLine) {
  FILE *f = std::tmpfile();
  ASSERT_TRUE(f);
  ProgressLine p(3, f, /*isTerminal=*/true);
  StepMetrics m;
  m.milliseconds = 1000;
  for (int i = 1; i <= 3; ++i) {
    m.step = i;
    p.update(m);
  }
  p.finish();
  std::string s = captured(f);
  std::fclose(f);
  EXPECT_EQ(std::count(s.begin(), s.end(), '\r'), 3);
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1);
  EXPECT_EQ(s.back(), '\n');
  EXPECT_EQ(s.rfind("\r", 0), 0u);
  EXPECT_NE(s.find("step 1/3 | loss 0.0000 | 0 tok/s | 1000.0 ms/step | ETA "
                   "0:00:02\x1b[K"),
            std::string::npos);
  EXPECT_NE(s.find("step 3/3"), std::string::npos);
}

TEST(Metrics, ProgressElsewherePrintsLines) {
  FILE *f = std::tmpfile();
  ASSERT_TRUE(f);
  ProgressLine p(10, f, /*isTerminal=*/false);
  StepMetrics m;
  m.milliseconds = 10;
  m.step = 5;
  p.update(m);
  m.step = 10;
  p.update(m);
  p.finish();
  std::string s = captured(f);
  std::fclose(f);
  EXPECT_EQ(s, "step 5/10 | loss 0.0000 | 0 tok/s | 10.0 ms/step | ETA "
               "0:00:00\n"
               "step 10/10 | loss 0.0000 | 0 tok/s | 10.0 ms/step | ETA "
               "0:00:00\n");
}

TEST(Metrics, ProgressEtaFollowsAverage) {
  FILE *f = std::tmpfile();
  ASSERT_TRUE(f);
  ProgressLine p(1000, f, false);
  StepMetrics m;
  m.step = 1;
  m.milliseconds = 100;
  p.update(m); // average 100 ms: 999 steps left -> 99.9 s
  m.step = 2;
  m.milliseconds = 200;
  p.update(m); // average 120 ms: 998 left -> 119.76 s
  std::string s = captured(f);
  std::fclose(f);
  EXPECT_NE(s.find("ETA 0:01:40\n"), std::string::npos) << s;
  EXPECT_NE(s.find("ETA 0:02:00\n"), std::string::npos) << s;
}

// Updates come every --log-every steps; the steps between them, observed,
// are what the ETA follows, not a slow first step.
TEST(Metrics, ProgressEtaFollowsObservedSteps) {
  FILE *f = std::tmpfile();
  ASSERT_TRUE(f);
  ProgressLine p(1000, f, false);
  StepMetrics m;
  m.step = 1;
  m.milliseconds = 5000;
  p.observe(m.milliseconds);
  p.update(m);
  for (int i = 2; i <= 500; ++i)
    p.observe(10);
  m.step = 500;
  m.milliseconds = 10;
  p.update(m); // 500 steps left at 10 ms
  std::string s = captured(f);
  std::fclose(f);
  EXPECT_NE(s.find("step 500/1000 | loss 0.0000 | 0 tok/s | 10.0 ms/step | "
                   "ETA 0:00:05\n"),
            std::string::npos)
      << s;
}

TEST(Metrics, IsTerminal) {
  FILE *f = std::tmpfile();
  ASSERT_TRUE(f);
  EXPECT_FALSE(isTerminal(f));
  std::fclose(f);
  EXPECT_FALSE(isTerminal(nullptr));
}

} // namespace
