#include "codec/range_coder.h"

#include <cassert>

namespace sq::codec {
namespace {

constexpr int kWindowBits = 56;
constexpr uint64_t kWindowMask = (uint64_t{1} << kWindowBits) - 1;
constexpr uint64_t kBottom = uint64_t{1} << 48;  // the range is renormalised to at least this
constexpr int kTopShift = kWindowBits - 8;        // the window's top byte

}  // namespace

void RangeEncoder::encode(uint64_t cum, uint64_t freq, uint64_t total) {
  assert(freq > 0 && cum + freq <= total && total <= kMaxRangeTotal);
  const uint64_t step = range_ / total;
  low_ += step * cum;
  range_ = step * freq;
  while (range_ < kBottom) {
    shift_low();
    range_ <<= 8;
  }
}

// Moves the window's top byte out. A byte of 0xFF cannot be written yet: a later carry would turn
// it into 0x00 and add one to the byte before it; such bytes are counted and written when the next
// byte shows whether a carry came.
void RangeEncoder::shift_low() {
  const uint64_t carry = low_ >> kWindowBits;
  const auto top = static_cast<uint8_t>(low_ >> kTopShift);
  if (top != 0xFF || carry != 0) {
    if (have_cache_) out_.push_back(static_cast<char>(static_cast<uint8_t>(cache_ + carry)));
    // The interval starts below 2^56 and never grows, so nothing can carry past the first byte.
    assert(have_cache_ || carry == 0);
    for (; pending_ff_ > 0; --pending_ff_) {
      out_.push_back(static_cast<char>(static_cast<uint8_t>(0xFF + carry)));
    }
    cache_ = top;
    have_cache_ = true;
  } else {
    ++pending_ff_;
  }
  low_ = (low_ << 8) & kWindowMask;
}

std::string RangeEncoder::finish() {
  // The value in [low, low + range) with the fewest significant bytes: the decoder reads zeros past
  // the end, so the trailing zero bytes need not be written.
  int keep_bits = 8;
  uint64_t value = low_;
  for (; keep_bits <= kWindowBits + 8; keep_bits += 8) {
    const int drop = kWindowBits - keep_bits;
    if (drop < 0) break;
    const uint64_t unit = uint64_t{1} << drop;
    const uint64_t rounded = (low_ + unit - 1) & ~(unit - 1);
    if (rounded >= low_ && rounded - low_ < range_) {
      value = rounded;
      break;
    }
  }
  low_ = value;
  for (int i = 0; i < kWindowBits / 8 + 1; ++i) shift_low();
  while (!out_.empty() && out_.back() == 0) out_.pop_back();
  return std::move(out_);
}

RangeDecoder::RangeDecoder(std::string_view bytes) : bytes_(bytes) {
  for (int i = 0; i < kWindowBits / 8; ++i) code_ = (code_ << 8) | next_byte();
}

bool RangeDecoder::peek(uint64_t total, uint64_t& value) {
  step_ = range_ / total;
  value = code_ / step_;
  return value < total;
}

void RangeDecoder::consume(uint64_t cum, uint64_t freq) {
  code_ -= step_ * cum;
  range_ = step_ * freq;
  while (range_ < kBottom) {
    code_ = ((code_ << 8) | next_byte()) & kWindowMask;
    range_ <<= 8;
  }
}

bool RangeDecoder::decode_bits(int bits, uint32_t& value) {
  uint64_t v = 0;
  if (!peek(uint64_t{1} << bits, v)) return false;
  consume(v, 1);
  value = static_cast<uint32_t>(v);
  return true;
}

}  // namespace sq::codec
