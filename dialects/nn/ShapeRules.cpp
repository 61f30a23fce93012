//===- ShapeRules.cpp - Shape rules of the nn operations ------------------===//

#include "dialects/nn/ShapeRules.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/raw_ostream.h"

using namespace hotstage::nn;
using llvm::ArrayRef;

namespace {
/// Builds an error message with `<<` and returns nullopt, so a rule can say
/// `return fail(error) << "...";`.
class Failure {
public:
  explicit Failure(std::string &error) : os(error) { error.clear(); }
  template <typename T> Failure &operator<<(const T &value) {
    os << value;
    return *this;
  }
  template <typename T> operator std::optional<T>() { return std::nullopt; }

private:
  llvm::raw_string_ostream os;
};

Failure fail(std::string &error) { return Failure(error); }
} // namespace

std::string shape::str(ArrayRef<int64_t> shape) {
  std::string out = "[";
  for (auto [i, d] : llvm::enumerate(shape)) {
    if (i)
      out += ", ";
    out += std::to_string(d);
  }
  return out + "]";
}

std::optional<int64_t> shape::numElements(ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d != 0 && n > INT64_MAX / d))
      return std::nullopt;
    n *= d;
  }
  return n;
}

std::optional<int64_t> shape::normalizeAxis(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    return std::nullopt;
  return axis < 0 ? axis + rank : axis;
}

std::optional<shape::Shape> shape::broadcast(llvm::StringRef op,
                                             ArrayRef<int64_t> a,
                                             ArrayRef<int64_t> b,
                                             std::string &error) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1)
      return fail(error) << "shapes " << str(a) << " and " << str(b) << " of '"
                         << op << "' cannot be broadcast together";
    out[rank - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

std::optional<shape::Shape>
shape::matmul(ArrayRef<int64_t> a, ArrayRef<int64_t> b, std::string &error) {
  if (a.empty() || b.empty())
    return fail(error) << "'matmul' needs operands of rank at least 1, got "
                       << str(a) << " and " << str(b);
  Shape sa(a.begin(), a.end()), sb(b.begin(), b.end());
  bool rowVector = sa.size() == 1, columnVector = sb.size() == 1;
  if (rowVector)
    sa.insert(sa.begin(), 1);
  if (columnVector)
    sb.push_back(1);
  int64_t m = sa[sa.size() - 2], k = sa.back();
  int64_t k2 = sb[sb.size() - 2], n = sb.back();
  if (k != k2)
    return fail(error) << "inner dimensions of 'matmul' differ: " << str(a)
                       << " @ " << str(b) << " (" << k << " vs " << k2 << ")";
  std::string batchError;
  auto batch = broadcast("matmul", ArrayRef(sa).drop_back(2),
                         ArrayRef(sb).drop_back(2), batchError);
  if (!batch)
    return fail(error) << "batch dimensions of 'matmul' cannot be broadcast: "
                       << str(a) << " @ " << str(b);
  Shape out = *batch;
  if (!rowVector)
    out.push_back(m);
  if (!columnVector)
    out.push_back(n);
  return out;
}

std::optional<shape::Shape> shape::linear(ArrayRef<int64_t> x,
                                          ArrayRef<int64_t> weight,
                                          std::optional<ArrayRef<int64_t>> bias,
                                          std::string &error) {
  if (weight.size() != 2)
    return fail(error) << "'linear' weight must be [out, in], got "
                       << str(weight);
  if (x.empty() || x.back() != weight[1])
    return fail(error) << "'linear' input " << str(x)
                       << " does not match weight " << str(weight)
                       << ": last dimension must be " << weight[1];
  if (bias && (bias->size() != 1 || (*bias)[0] != weight[0]))
    return fail(error) << "'linear' bias " << str(*bias) << " must be ["
                       << weight[0] << "] for weight " << str(weight);
  Shape out(x.begin(), x.end());
  out.back() = weight[0];
  return out;
}

std::optional<shape::Shape> shape::reduce(llvm::StringRef op,
                                          ArrayRef<int64_t> x,
                                          ArrayRef<int64_t> axes, bool keepDim,
                                          std::string &error) {
  int64_t rank = x.size();
  llvm::SmallVector<bool> reduced(rank, axes.empty());
  for (int64_t axis : axes) {
    auto a = normalizeAxis(axis, rank);
    if (!a)
      return fail(error) << "axis " << axis << " of '" << op
                         << "' is out of range for shape " << str(x);
    if (reduced[*a])
      return fail(error) << "axis " << axis << " of '" << op << "' is repeated";
    reduced[*a] = true;
  }
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    if (!reduced[i])
      out.push_back(x[i]);
    else if (keepDim)
      out.push_back(1);
  }
  return out;
}

std::optional<shape::Shape> shape::softmax(ArrayRef<int64_t> x, int64_t axis,
                                           std::string &error) {
  if (!normalizeAxis(axis, x.size()))
    return fail(error) << "axis " << axis
                       << " of 'softmax' is out of range for shape " << str(x);
  return Shape(x.begin(), x.end());
}

std::optional<shape::Shape> shape::norm(llvm::StringRef op, ArrayRef<int64_t> x,
                                        ArrayRef<int64_t> scale,
                                        std::optional<ArrayRef<int64_t>> bias,
                                        std::string &error) {
  if (x.empty())
    return fail(error) << "'" << op << "' needs an input of rank at least 1";
  Shape expected{x.back()};
  if (scale != ArrayRef<int64_t>(expected))
    return fail(error) << "'" << op << "' scale " << str(scale) << " must be "
                       << str(expected) << " for input " << str(x);
  if (bias && *bias != ArrayRef<int64_t>(expected))
    return fail(error) << "'" << op << "' bias " << str(*bias) << " must be "
                       << str(expected) << " for input " << str(x);
  return Shape(x.begin(), x.end());
}

std::optional<shape::Shape> shape::embedding(ArrayRef<int64_t> table,
                                             ArrayRef<int64_t> ids,
                                             std::string &error) {
  if (table.size() != 2)
    return fail(error) << "'embedding' table must be [rows, dim], got "
                       << str(table);
  Shape out(ids.begin(), ids.end());
  out.push_back(table[1]);
  return out;
}

std::optional<shape::Shape>
shape::attention(ArrayRef<int64_t> q, ArrayRef<int64_t> k, ArrayRef<int64_t> v,
                 int64_t heads, int64_t kvHeads, std::string &error) {
  if (q.size() != 3 || k.size() != 3 || v.size() != 3)
    return fail(error) << "'attention' needs q, k and v of rank 3 [B, T, C], "
                          "got "
                       << str(q) << ", " << str(k) << " and " << str(v);
  if (heads <= 0 || kvHeads <= 0)
    return fail(error) << "'attention' needs a positive head count, got "
                       << heads << " and " << kvHeads;
  if (heads % kvHeads != 0)
    return fail(error) << "'attention' query heads (" << heads
                       << ") must be a multiple of key/value heads (" << kvHeads
                       << ")";
  if (q[2] % heads != 0)
    return fail(error) << "'attention' channels " << q[2]
                       << " of q are not divisible by " << heads << " heads";
  int64_t headDim = q[2] / heads;
  if (k != v)
    return fail(error) << "'attention' k " << str(k) << " and v " << str(v)
                       << " must have the same shape";
  if (k[0] != q[0] || k[1] != q[1] || k[2] != kvHeads * headDim)
    return fail(error) << "'attention' k and v " << str(k) << " must be ["
                       << q[0] << ", " << q[1] << ", " << kvHeads * headDim
                       << "] for q " << str(q) << " with " << heads
                       << " heads and " << kvHeads << " key/value heads";
  return Shape(q.begin(), q.end());
}

std::optional<shape::Shape> shape::rope(ArrayRef<int64_t> x, int64_t heads,
                                        std::string &error) {
  if (x.size() != 3)
    return fail(error) << "'rope' needs an input of rank 3 [B, T, C], got "
                       << str(x);
  if (heads <= 0 || x[2] % heads != 0 || (x[2] / heads) % 2 != 0)
    return fail(error) << "'rope' channels " << x[2] << " must split into "
                       << heads << " heads of even size";
  return Shape(x.begin(), x.end());
}

std::optional<shape::Shape>
shape::reshape(ArrayRef<int64_t> x, ArrayRef<int64_t> to, std::string &error) {
  auto total = numElements(x);
  if (!total)
    return fail(error) << "'reshape' input " << str(x) << " is too large";
  Shape out(to.begin(), to.end());
  int64_t known = 1, inferred = -1;
  for (auto [i, d] : llvm::enumerate(out)) {
    if (d == -1) {
      if (inferred >= 0)
        return fail(error) << "'reshape' target " << str(to)
                           << " has more than one -1";
      inferred = i;
      continue;
    }
    if (d < 0)
      return fail(error) << "'reshape' target " << str(to)
                         << " has a negative dimension";
    if (d != 0 && known > INT64_MAX / d)
      return fail(error) << "'reshape' target " << str(to) << " is too large";
    known *= d;
  }
  if (inferred >= 0) {
    if (known == 0 || *total % known != 0)
      return fail(error) << "cannot 'reshape' " << str(x) << " into "
                         << str(to);
    out[inferred] = *total / known;
  } else if (known != *total) {
    return fail(error) << "cannot 'reshape' " << str(x) << " (" << *total
                       << " elements) into " << str(to) << " (" << known
                       << " elements)";
  }
  return out;
}

std::optional<shape::Shape> shape::transpose(ArrayRef<int64_t> x,
                                             ArrayRef<int64_t> perm,
                                             std::string &error) {
  if (perm.size() != x.size())
    return fail(error) << "'transpose' permutation " << str(perm)
                       << " does not match rank " << x.size() << " of "
                       << str(x);
  llvm::SmallVector<bool> seen(x.size(), false);
  Shape out;
  for (int64_t p : perm) {
    if (p < 0 || p >= (int64_t)x.size() || seen[p])
      return fail(error) << "'transpose' permutation " << str(perm)
                         << " is not a permutation of " << x.size()
                         << " dimensions";
    seen[p] = true;
    out.push_back(x[p]);
  }
  return out;
}

std::optional<llvm::SmallVector<shape::Shape>>
shape::split(ArrayRef<int64_t> x, int64_t axis, ArrayRef<int64_t> sizes,
             std::string &error) {
  auto a = normalizeAxis(axis, x.size());
  if (!a)
    return fail(error) << "axis " << axis
                       << " of 'split' is out of range for shape " << str(x);
  int64_t sum = 0;
  for (int64_t s : sizes) {
    if (s <= 0)
      return fail(error) << "'split' sizes " << str(sizes)
                         << " must be positive";
    sum += s;
  }
  if (sizes.empty() || sum != x[*a])
    return fail(error) << "'split' sizes " << str(sizes) << " do not add up to "
                       << x[*a] << ", dimension " << axis << " of " << str(x);
  llvm::SmallVector<Shape> out;
  for (int64_t s : sizes) {
    Shape piece(x.begin(), x.end());
    piece[*a] = s;
    out.push_back(piece);
  }
  return out;
}

std::optional<shape::Shape> shape::concat(ArrayRef<Shape> xs, int64_t axis,
                                          std::string &error) {
  if (xs.empty())
    return fail(error) << "'concat' needs at least one operand";
  auto a = normalizeAxis(axis, xs[0].size());
  if (!a)
    return fail(error) << "axis " << axis
                       << " of 'concat' is out of range for shape "
                       << str(xs[0]);
  Shape out = xs[0];
  for (const Shape &x : xs.drop_front()) {
    bool compatible = x.size() == out.size();
    for (size_t i = 0; compatible && i < x.size(); ++i)
      compatible = i == (size_t)*a || x[i] == out[i];
    if (!compatible)
      return fail(error) << "'concat' operands " << str(xs[0]) << " and "
                         << str(x) << " differ outside axis " << axis;
    out[*a] += x[*a];
  }
  return out;
}

std::optional<shape::Shape> shape::slice(ArrayRef<int64_t> x,
                                         ArrayRef<int64_t> offsets,
                                         ArrayRef<int64_t> sizes,
                                         std::string &error) {
  if (offsets.size() != x.size() || sizes.size() != x.size())
    return fail(error) << "'slice' offsets " << str(offsets) << " and sizes "
                       << str(sizes) << " must have rank " << x.size()
                       << " like " << str(x);
  for (size_t i = 0; i < x.size(); ++i)
    if (offsets[i] < 0 || sizes[i] < 0 || offsets[i] > x[i] ||
        sizes[i] > x[i] - offsets[i])
      return fail(error) << "'slice' [" << offsets[i] << ":"
                         << offsets[i] + sizes[i] << "] is out of bounds for "
                         << "dimension " << i << " of " << str(x);
  return Shape(sizes.begin(), sizes.end());
}

std::optional<shape::Shape> shape::crossEntropy(ArrayRef<int64_t> logits,
                                                ArrayRef<int64_t> targets,
                                                std::string &error) {
  if (logits.empty() ||
      ArrayRef<int64_t>(logits).drop_back() != ArrayRef<int64_t>(targets))
    return fail(error) << "'cross_entropy' targets " << str(targets)
                       << " must match logits " << str(logits)
                       << " without the last dimension";
  return Shape{};
}
