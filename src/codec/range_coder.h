// A range coder (arithmetic coding with carries, after Subbotin and Martin) with a 64-bit low end
// and a 56-bit window, so that frequency totals up to 2^32 code with a loss below 2^-16 of a bit
// per symbol. Big-endian bytes; the encoder drops the leading byte that can never carry and the
// trailing zero bytes, and the decoder reads zeros past the end of its input.
//
// Both sides are plain integer arithmetic: what they compute does not depend on the machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sq::codec {

// The largest frequency total a symbol may be coded with.
inline constexpr uint64_t kMaxRangeTotal = uint64_t{1} << 32;

class RangeEncoder {
 public:
  // Codes a symbol that owns [cum, cum + freq) of [0, total): 0 < freq, cum + freq <= total <=
  // kMaxRangeTotal (asserted).
  void encode(uint64_t cum, uint64_t freq, uint64_t total);
  // Codes `bits` (1..16) raw bits, each value equally likely.
  void encode_bits(uint32_t value, int bits) { encode(value, 1, uint64_t{1} << bits); }
  // Writes the shortest tail that identifies the final interval and returns the bytes. The encoder
  // is spent afterwards.
  std::string finish();
  // Bytes written so far (the final size is within 8 bytes of this).
  size_t size() const { return out_.size(); }

 private:
  void shift_low();

  uint64_t low_ = 0;
  uint64_t range_ = (uint64_t{1} << 56) - 1;
  uint8_t cache_ = 0;
  bool have_cache_ = false;
  uint64_t pending_ff_ = 0;
  std::string out_;
};

class RangeDecoder {
 public:
  explicit RangeDecoder(std::string_view bytes);
  // The first half of decoding a symbol: the position of the code in [0, total), from which the
  // caller finds the symbol. Returns false when the code lies outside [0, total): the data is not
  // what the encoder wrote.
  bool peek(uint64_t total, uint64_t& value);
  // The second half: consumes the symbol [cum, cum + freq) of the total given to peek().
  void consume(uint64_t cum, uint64_t freq);
  // Decodes `bits` raw bits; false on corrupt data.
  bool decode_bits(int bits, uint32_t& value);
  // True when the decoder has read past the end of its input by more than the encoder's tail could
  // explain: a sign of damage or of a mismatched model.
  bool overrun() const { return pos_ > bytes_.size() + 8; }

 private:
  uint8_t next_byte() { return pos_ < bytes_.size() ? static_cast<uint8_t>(bytes_[pos_++]) : (++pos_, 0); }

  std::string_view bytes_;
  size_t pos_ = 0;
  uint64_t code_ = 0;   // the code value minus the low end of the interval
  uint64_t range_ = (uint64_t{1} << 56) - 1;
  uint64_t step_ = 0;   // range / total of the last peek()
};

}  // namespace sq::codec
