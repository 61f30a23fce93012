//===- Metrics.cpp - Training metrics: JSON lines and progress ------------===//

#include "runtime/metrics/Metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <unistd.h>

namespace hotstage::rt {

std::string formatFloat(float value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(value));
  return buf;
}

std::string jsonNumber(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", value);
  return buf;
}

std::string metricsJson(const StepMetrics &m) {
  return "{\"step\": " + std::to_string(m.step) +
         ", \"loss\": " + jsonNumber(m.loss) + ", \"lr\": " + jsonNumber(m.lr) +
         ", \"grad_norm\": " + jsonNumber(m.gradNorm) +
         ", \"tokens_per_s\": " + jsonNumber(m.tokensPerSecond) +
         ", \"ms\": " + jsonNumber(m.milliseconds) + "}";
}

MetricsWriter::~MetricsWriter() { close(); }

bool MetricsWriter::open(const std::string &path, std::string &error,
                         bool append) {
  close();
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_) {
    error = path + ": cannot open for writing: " + std::strerror(errno);
    return false;
  }
  failed_ = false;
  return true;
}

void MetricsWriter::write(const StepMetrics &m) {
  if (!file_)
    return;
  std::string line = metricsJson(m) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fflush(file_) != 0)
    failed_ = true;
}

void MetricsWriter::close() {
  if (file_ && std::fclose(file_) != 0)
    failed_ = true;
  file_ = nullptr;
}

ProgressLine::ProgressLine(int64_t totalSteps, FILE *out, bool isTerminal)
    : totalSteps_(totalSteps), out_(out), terminal_(isTerminal) {}

std::string ProgressLine::format(const StepMetrics &m, int64_t totalSteps,
                                 double avgMs) {
  char buf[64];
  std::string s =
      "step " + std::to_string(m.step) + "/" + std::to_string(totalSteps);
  std::snprintf(buf, sizeof buf, " | loss %.4f", double(m.loss));
  s += buf;
  double tps = m.tokensPerSecond;
  if (!(tps >= 0) || std::isinf(tps))
    std::snprintf(buf, sizeof buf, " | - tok/s");
  else if (tps < 1e3)
    std::snprintf(buf, sizeof buf, " | %.0f tok/s", tps);
  else if (tps < 999.95e3)
    std::snprintf(buf, sizeof buf, " | %.1fk tok/s", tps / 1e3);
  else if (tps < 999.95e6)
    std::snprintf(buf, sizeof buf, " | %.1fM tok/s", tps / 1e6);
  else
    std::snprintf(buf, sizeof buf, " | %.1fG tok/s", tps / 1e9);
  s += buf;
  std::snprintf(buf, sizeof buf, " | %.1f ms/step", m.milliseconds);
  s += buf;
  int64_t left = totalSteps > m.step ? totalSteps - m.step : 0;
  double seconds = double(left) * avgMs / 1e3;
  if (!(seconds >= 0) || seconds > 1e9) {
    s += " | ETA -";
  } else {
    int64_t t = int64_t(std::llround(seconds));
    std::snprintf(buf, sizeof buf, " | ETA %lld:%02lld:%02lld",
                  (long long)(t / 3600), (long long)(t / 60 % 60),
                  (long long)(t % 60));
    s += buf;
  }
  return s;
}

void ProgressLine::observe(double milliseconds) {
  // A moving average keeps the ETA from jumping with every step, while
  // still following a change of pace.
  if (milliseconds >= 0 && std::isfinite(milliseconds))
    avgMs_ = avgMs_ < 0 ? milliseconds : 0.8 * avgMs_ + 0.2 * milliseconds;
  observed_ = true;
}

void ProgressLine::update(const StepMetrics &m) {
  if (!observed_)
    observe(m.milliseconds);
  observed_ = false;
  std::string line = format(m, totalSteps_, avgMs_ < 0 ? NAN : avgMs_);
  if (terminal_) {
    // \x1b[K clears what a longer previous line left behind.
    std::fprintf(out_, "\r%s\x1b[K", line.c_str());
    pending_ = true;
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::finish() {
  if (pending_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
  pending_ = false;
}

bool isTerminal(FILE *f) { return f && ::isatty(::fileno(f)) == 1; }

} // namespace hotstage::rt
