//===- Metrics.h - Training metrics: JSON lines and progress ----*- C++ -*-===//
//
// One JSON object per step in a .jsonl file (flushed line by line so a
// crashed or running job can be read), and a human progress line on the
// console.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_METRICS_METRICS_H
#define HOTSTAGE_RUNTIME_METRICS_METRICS_H

#include <cstdint>
#include <cstdio>
#include <string>

namespace hotstage::rt {

struct StepMetrics {
  int64_t step = 0; // 1-based: the step just finished
  float loss = 0;
  float lr = 0;
  float gradNorm = 0;
  double tokensPerSecond = 0;
  double milliseconds = 0; // wall time of this step
};

/// "%.9g": enough digits that the float reads back bit for bit.
std::string formatFloat(float value);

/// A number as JSON: "%.9g" for finite values; NaN and infinities as
/// NaN, Infinity and -Infinity, which Python's json module reads back.
std::string jsonNumber(double value);

/// One metrics line, without the newline:
/// {"step": 1, "loss": 5.54517746, "lr": 0.000300000014, "grad_norm": ...,
///  "tokens_per_s": ..., "ms": ...}
std::string metricsJson(const StepMetrics &m);

class MetricsWriter {
public:
  MetricsWriter() = default;
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter &) = delete;
  MetricsWriter &operator=(const MetricsWriter &) = delete;

  /// Creates (or truncates) the file; `append` keeps what is there, for a
  /// resumed run.
  bool open(const std::string &path, std::string &error, bool append = false);
  bool isOpen() const { return file_ != nullptr; }
  /// Writes and flushes one line; does nothing if not open.
  void write(const StepMetrics &m);
  /// True once a write or flush has failed (a full disk, say).
  bool hadError() const { return failed_; }
  void close();

private:
  FILE *file_ = nullptr;
  bool failed_ = false;
};

/// `step 12/60 | loss 4.1234 | 81.2k tok/s | 35.1 ms/step | ETA 0:01:42`.
/// On a terminal each update rewrites the line in place; elsewhere (a log
/// file) each update prints a line of its own.
class ProgressLine {
public:
  ProgressLine(int64_t totalSteps, FILE *out, bool isTerminal);
  /// Feeds one step's time to the ETA's moving average. Call it every
  /// step: updates come every --log-every steps only, and a slow first
  /// step would otherwise weigh on the ETA for thousands of steps.
  void observe(double milliseconds);
  /// Prints `m`; a line without observed steps averages m's own time.
  void update(const StepMetrics &m);
  /// Ends the rewritten line so later output starts on a fresh one.
  void finish();

  /// The text of one update (no \r or newline); `avgMs` drives the ETA.
  static std::string format(const StepMetrics &m, int64_t totalSteps,
                            double avgMs);

private:
  int64_t totalSteps_;
  FILE *out_;
  bool terminal_;
  bool pending_ = false;  // a rewritten line has no newline yet
  double avgMs_ = -1;     // moving average of step time; < 0 until seen
  bool observed_ = false; // observe() ran since the last update
};

/// Whether `f` is a terminal.
bool isTerminal(FILE *f);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_METRICS_METRICS_H
