#include "engine/stop.h"

#include <algorithm>
#include <utility>

namespace sq {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (s.empty()) continue;
    max_len_ = std::max(max_len_, s.size());
    stops_.push_back(std::move(s));
  }
}

StopMatcher::Result StopMatcher::push(std::string_view text) {
  Result result;
  if (stopped_) {
    result.stopped = true;
    return result;
  }
  const size_t old_size = buffer_.size();
  buffer_.append(text);

  // The held text had no complete stop, so a match must end inside the new bytes. Pick the one
  // that ends first (as if fed a byte at a time), the longest on a tie.
  size_t best_start = std::string::npos;
  size_t best_end = std::string::npos;
  for (const std::string& s : stops_) {
    if (s.size() > buffer_.size()) continue;
    const size_t from = old_size >= s.size() ? old_size - s.size() + 1 : 0;
    const size_t at = buffer_.find(s, from);
    if (at == std::string::npos) continue;
    const size_t end = at + s.size();
    if (end < best_end || (end == best_end && at < best_start)) {
      best_start = at;
      best_end = end;
    }
  }
  if (best_start != std::string::npos) {
    buffer_.resize(best_start);
    result.emit = std::move(buffer_);
    buffer_.clear();
    result.stopped = stopped_ = true;
    return result;
  }

  // Hold back the longest tail that is a proper prefix of some stop string. Any stop that could
  // still complete starts inside that tail, so everything before it is safe. Cost: O(max_len^2)
  // per stop string per push; stop strings are short.
  size_t hold = 0;
  const size_t longest = std::min(buffer_.size(), max_len_ == 0 ? 0 : max_len_ - 1);
  for (size_t k = longest; k > 0 && hold == 0; --k) {
    const std::string_view tail = std::string_view(buffer_).substr(buffer_.size() - k);
    for (const std::string& s : stops_) {
      if (s.size() > k && std::string_view(s).substr(0, k) == tail) {
        hold = k;
        break;
      }
    }
  }
  result.emit = buffer_.substr(0, buffer_.size() - hold);
  buffer_.erase(0, buffer_.size() - hold);
  return result;
}

std::string StopMatcher::finish() {
  std::string out = std::move(buffer_);
  buffer_.clear();
  return out;
}

void StopMatcher::reset() {
  buffer_.clear();
  stopped_ = false;
}

}  // namespace sq
