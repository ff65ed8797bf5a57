// The classic compressors that `squeeze eval` sets beside the models, run through their libraries
// at the settings of their command-line tools' strongest usual level, so that every figure in an
// eval table is measured in the same run on the same bytes:
//
//   gzip -9     zlib, deflate level 9 in the gzip wrapper (window 2^15, memLevel 8)
//   bzip2 -9    libbz2, 900 kB blocks, default work factor
//   xz -9       liblzma preset 9 (64 MiB dictionary), CRC64 check, one block: `xz -9 -T1`
//   zstd -19    libzstd level 19 with the content checksum and size, as the zstd tool writes
//   brotli -11  libbrotlienc quality 11; the window is what the brotli tool (1.0.9 and later)
//               picks for an input of known size: the smallest 2^w - 16 >= size, 10 <= w <= 24
//
// A measured size only counts if it is real: measure() decompresses every output once and checks
// that it gives back the input byte for byte.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sq::codec {

enum class Baseline { Gzip, Bzip2, Xz, Zstd, Brotli };

// The five, in the order tables list them.
std::span<const Baseline> all_baselines();

// "gzip -9", "bzip2 -9", "xz -9", "zstd -19", "brotli -11": the tool and the level.
std::string_view baseline_name(Baseline b);

// Compresses `input` into the compressor's own file format (what the tool would write to stdout).
// Throws Error if the library fails (out of memory).
std::string baseline_compress(Baseline b, std::string_view input);

// Decompresses what baseline_compress wrote; `expected_size` is the original length (a bound for
// the output buffer). Throws FormatError when the data is not a complete, valid stream.
std::string baseline_decompress(Baseline b, std::string_view compressed, size_t expected_size);

struct BaselineResult {
  Baseline baseline = Baseline::Gzip;
  uint64_t input_bytes = 0;
  uint64_t compressed_bytes = 0;
  double compress_seconds = 0;
  double decompress_seconds = 0;

  // compressed_bytes * 8 / input_bytes; NaN for an empty input.
  double bits_per_byte() const;
};

// Compresses, decompresses and compares. Throws Error (naming the compressor) if the round trip
// does not give back the input, which would be a library fault: no size is reported then.
BaselineResult measure_baseline(Baseline b, std::string_view input);

}  // namespace sq::codec
