//===- TrainOptionsTest.cpp - The model executable's command line ---------===//

#include "runtime/support/TrainOptions.h"

#include <gtest/gtest.h>

#include <sstream>
#include <vector>

using namespace hotstage::rt;

namespace {

/// Parses a command line written as one string (no quoting needed here).
bool parse(const std::string &line, TrainOptions &options, std::string &error) {
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string w; in >> w;)
    words.push_back(w);
  std::vector<char *> argv;
  for (std::string &w : words)
    argv.push_back(w.data());
  argv.push_back(nullptr);
  return parseTrainOptions(int(words.size()), argv.data(), options, error);
}

std::string parseError(const std::string &line) {
  TrainOptions options;
  std::string error;
  EXPECT_FALSE(parse(line, options, error)) << line;
  return error;
}

TEST(TrainOptions, Minimal) {
  TrainOptions o;
  std::string error;
  ASSERT_TRUE(parse("./model train --data d/*.bin --steps 60", o, error))
      << error;
  EXPECT_FALSE(o.help);
  EXPECT_EQ(o.data, "d/*.bin");
  EXPECT_EQ(o.steps, 60);
  EXPECT_EQ(o.seed, 1337u);
  EXPECT_EQ(o.logEvery, 1);
  EXPECT_EQ(o.ckptEvery, 0);
  EXPECT_EQ(o.threads, 0);
  EXPECT_TRUE(o.metrics.empty());
  EXPECT_TRUE(o.ckptDir.empty());
  EXPECT_TRUE(o.resumeDir.empty());
}

TEST(TrainOptions, Everything) {
  TrainOptions o;
  std::string error;
  ASSERT_TRUE(parse("./model train --data=a.bin --steps=5 --seed 0 "
                    "--metrics m.jsonl --ckpt=out --ckpt-every 2 "
                    "--resume=prev --log-every=10 --threads 3",
                    o, error))
      << error;
  EXPECT_EQ(o.data, "a.bin");
  EXPECT_EQ(o.steps, 5);
  EXPECT_EQ(o.seed, 0u);
  EXPECT_EQ(o.metrics, "m.jsonl");
  EXPECT_EQ(o.ckptDir, "out");
  EXPECT_EQ(o.ckptEvery, 2);
  EXPECT_EQ(o.resumeDir, "prev");
  EXPECT_EQ(o.logEvery, 10);
  EXPECT_EQ(o.threads, 3);
}

TEST(TrainOptions, LargeSeedAndRepeats) {
  TrainOptions o;
  std::string error;
  ASSERT_TRUE(parse("m train --data a --steps 1 --seed 18446744073709551615 "
                    "--steps 7 --data=b",
                    o, error))
      << error;
  EXPECT_EQ(o.seed, UINT64_MAX);
  EXPECT_EQ(o.steps, 7); // the last one wins
  EXPECT_EQ(o.data, "b");
  // '=' inside a value is kept.
  ASSERT_TRUE(parse("m train --data=x=y --steps 1", o, error));
  EXPECT_EQ(o.data, "x=y");
}

TEST(TrainOptions, Help) {
  TrainOptions o;
  std::string error;
  ASSERT_TRUE(parse("./model --help", o, error));
  EXPECT_TRUE(o.help);
  ASSERT_TRUE(parse("./model -h", o, error));
  EXPECT_TRUE(o.help);
  ASSERT_TRUE(parse("./model train --help", o, error));
  EXPECT_TRUE(o.help);
  // Help wins over anything else on the line.
  ASSERT_TRUE(parse("./model train --steps x --bogus --help", o, error));
  EXPECT_TRUE(o.help);
}

TEST(TrainOptions, GradCheckAndWeights) {
  TrainOptions o;
  std::string error;
  ASSERT_TRUE(parse("./model gradcheck --data a.bin --seed 3 --init-from "
                    "w.safetensors --threads 1",
                    o, error))
      << error;
  EXPECT_EQ(o.command, "gradcheck");
  EXPECT_EQ(o.data, "a.bin");
  EXPECT_EQ(o.seed, 3u);
  EXPECT_EQ(o.initFrom, "w.safetensors");
  ASSERT_TRUE(parse("./model train --data a.bin --steps 2 --trace t.st "
                    "--init-from=w.st",
                    o, error))
      << error;
  EXPECT_EQ(o.command, "train");
  EXPECT_EQ(o.trace, "t.st");
  EXPECT_EQ(o.initFrom, "w.st");
  EXPECT_EQ(parseError("./model gradcheck"),
            "missing --data GLOB (the token shards to train on)");
}

TEST(TrainOptions, Errors) {
  EXPECT_EQ(parseError("./model"), "missing command; try './model --help'");
  EXPECT_EQ(parseError("./model run"),
            "unknown command 'run' (expected 'train' or 'gradcheck'); try "
            "'./model --help'");
  EXPECT_EQ(parseError("./model train --data a --steps 1 --bogus 3"),
            "unknown option '--bogus' for train; try './model train --help'");
  EXPECT_EQ(parseError("./model gradcheck --data a --steps 1"),
            "unknown option '--steps' for gradcheck; try './model gradcheck "
            "--help'");
  EXPECT_EQ(parseError("./model gradcheck --steps 1"),
            "unknown option '--steps' for gradcheck; try './model gradcheck "
            "--help'");
  EXPECT_EQ(parseError("./model train --data a --steps 1 --init-from w "
                       "--resume r"),
            "--init-from and --resume exclude each other (a resumed run takes "
            "its weights from the checkpoint)");
  EXPECT_EQ(parseError("./model train --data a --steps 1 extra"),
            "unexpected argument 'extra'");
  EXPECT_EQ(parseError("./model train --data a --steps 1 -s"),
            "unexpected argument '-s'");
  EXPECT_EQ(parseError("./model train --data a --steps"),
            "missing value for --steps");
  EXPECT_EQ(parseError("./model train --data --steps 5"),
            "missing value for --data");
  EXPECT_EQ(parseError("./model train --data= --steps 5"),
            "missing value for --data");
  EXPECT_EQ(parseError("./model train --data a --steps abc"),
            "--steps expects a non-negative integer, not 'abc'");
  EXPECT_EQ(parseError("./model train --data a --steps 12x"),
            "--steps expects a non-negative integer, not '12x'");
  EXPECT_EQ(parseError("./model train --data a --steps 1.5"),
            "--steps expects a non-negative integer, not '1.5'");
  EXPECT_EQ(parseError("./model train --data a --steps -5"),
            "--steps must not be negative (got '-5')");
  EXPECT_EQ(parseError("./model train --data a --steps=-5"),
            "--steps must not be negative (got '-5')");
  EXPECT_EQ(parseError("./model train --data a --steps 1 --seed -1"),
            "--seed must not be negative (got '-1')");
  EXPECT_EQ(parseError("./model train --data a --steps 0"),
            "--steps must be at least 1");
  EXPECT_EQ(parseError("./model train --data a --steps 1 --log-every 0"),
            "--log-every must be at least 1");
  EXPECT_EQ(parseError("./model train --data a --steps 99999999999999999999"),
            "--steps value '99999999999999999999' is too large (at most "
            "9223372036854775807)");
  EXPECT_EQ(parseError("./model train --data a --steps 1 --seed "
                       "18446744073709551616"),
            "--seed value '18446744073709551616' is too large (at most "
            "18446744073709551615)");
  EXPECT_EQ(parseError("./model train --data a --steps 1 --threads 5000"),
            "--threads value '5000' is too large (at most 4096)");
  EXPECT_EQ(parseError("./model train --steps 1"),
            "missing --data GLOB (the token shards to train on)");
  EXPECT_EQ(parseError("./model train --data a"),
            "missing --steps N (how many steps to train)");
  EXPECT_EQ(parseError("./model train --data a --steps 4 --ckpt-every 2"),
            "--ckpt-every needs --ckpt DIR");
}

TEST(TrainOptions, UsageMentionsEveryOption) {
  std::string usage = trainUsage("./gpt2", "gpt2");
  EXPECT_EQ(usage.rfind("Usage: ./gpt2 train --data GLOB --steps N", 0), 0u);
  EXPECT_NE(usage.find("Trains gpt2"), std::string::npos);
  for (const char *opt :
       {"--data GLOB", "--steps N", "--seed S", "--metrics FILE", "--ckpt DIR",
        "--ckpt-every K", "--resume DIR", "--log-every K", "--threads N",
        "--help", "default 1337", "HOTSTAGE_NUM_THREADS"})
    EXPECT_NE(usage.find(opt), std::string::npos) << opt;
  // One line per option, none wider than 100 columns.
  std::istringstream in(usage);
  for (std::string line; std::getline(in, line);)
    EXPECT_LE(line.size(), 100u) << line;
}

} // namespace
