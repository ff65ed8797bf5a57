#include "codec/baselines.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "base/error.h"

namespace sq::codec {

namespace {

constexpr std::array<Baseline, 5> kAll = {Baseline::Gzip, Baseline::Bzip2, Baseline::Xz,
                                          Baseline::Zstd, Baseline::Brotli};

// The streaming APIs take 32-bit counts (zlib, libbz2); feed them at most this much per call.
constexpr size_t kStep = size_t{1} << 30;

// Makes room for at least `want` more bytes after out[used] and returns the room given.
size_t grow(std::string& out, size_t used, size_t want) {
  if (out.size() - used < want) out.resize(used + std::max(want, out.size() / 2));
  return out.size() - used;
}

// ---- gzip (zlib) ----------------------------------------------------------------------------

std::string gzip_compress(std::string_view in) {
  z_stream s{};
  // 15 + 16: a 32 kB window in the gzip wrapper (header, CRC-32, length), memLevel 8: gzip's.
  if (deflateInit2(&s, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    fail<Error>("gzip: deflateInit2 failed (out of memory?)");
  }
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&s, deflateEnd);
  std::string out(deflateBound(&s, static_cast<uLong>(std::min(in.size(), kStep))) + 64, '\0');
  size_t used = 0, pos = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (s.avail_in == 0 && pos < in.size()) {
      const size_t n = std::min(in.size() - pos, kStep);
      s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + pos));
      s.avail_in = static_cast<uInt>(n);
      pos += n;
    }
    const size_t room = std::min(grow(out, used, size_t{1} << 16), kStep);
    s.next_out = reinterpret_cast<Bytef*>(out.data() + used);
    s.avail_out = static_cast<uInt>(room);
    rc = deflate(&s, pos == in.size() ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) fail<Error>("gzip: deflate failed ({})", rc);
    used += room - s.avail_out;
  }
  out.resize(used);
  return out;
}

std::string gzip_decompress(std::string_view in, size_t expected) {
  z_stream s{};
  if (inflateInit2(&s, 15 + 16) != Z_OK) fail<Error>("gzip: inflateInit2 failed (out of memory?)");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&s, inflateEnd);
  std::string out(expected + 1, '\0');
  size_t used = 0, pos = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (s.avail_in == 0) {
      if (pos == in.size()) fail<FormatError>("gzip: the stream ends early");
      const size_t n = std::min(in.size() - pos, kStep);
      s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + pos));
      s.avail_in = static_cast<uInt>(n);
      pos += n;
    }
    const size_t room = std::min(grow(out, used, size_t{1} << 16), kStep);
    s.next_out = reinterpret_cast<Bytef*>(out.data() + used);
    s.avail_out = static_cast<uInt>(room);
    rc = inflate(&s, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      fail<FormatError>("gzip: inflate failed ({})", s.msg != nullptr ? s.msg : std::to_string(rc));
    }
    used += room - s.avail_out;
  }
  if (s.avail_in != 0 || pos != in.size()) fail<FormatError>("gzip: bytes after the end of the stream");
  out.resize(used);
  return out;
}

// ---- bzip2 (libbz2) -------------------------------------------------------------------------

std::string bzip2_compress(std::string_view in) {
  bz_stream s{};
  // 9: 900 kB blocks; work factor 0: the library's default (30), as the tool uses.
  if (BZ2_bzCompressInit(&s, 9, 0, 0) != BZ_OK) fail<Error>("bzip2: BZ2_bzCompressInit failed");
  std::unique_ptr<bz_stream, int (*)(bz_stream*)> guard(&s, BZ2_bzCompressEnd);
  std::string out(in.size() / 2 + 1024, '\0');
  size_t used = 0, pos = 0;
  int rc = BZ_RUN_OK;
  while (rc != BZ_STREAM_END) {
    if (s.avail_in == 0 && pos < in.size()) {
      const size_t n = std::min(in.size() - pos, kStep);
      s.next_in = const_cast<char*>(in.data() + pos);
      s.avail_in = static_cast<unsigned>(n);
      pos += n;
    }
    const size_t room = std::min(grow(out, used, size_t{1} << 16), kStep);
    s.next_out = out.data() + used;
    s.avail_out = static_cast<unsigned>(room);
    rc = BZ2_bzCompress(&s, pos == in.size() ? BZ_FINISH : BZ_RUN);
    if (rc != BZ_RUN_OK && rc != BZ_FINISH_OK && rc != BZ_STREAM_END) {
      fail<Error>("bzip2: BZ2_bzCompress failed ({})", rc);
    }
    used += room - s.avail_out;
  }
  out.resize(used);
  return out;
}

std::string bzip2_decompress(std::string_view in, size_t expected) {
  bz_stream s{};
  if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) fail<Error>("bzip2: BZ2_bzDecompressInit failed");
  std::unique_ptr<bz_stream, int (*)(bz_stream*)> guard(&s, BZ2_bzDecompressEnd);
  std::string out(expected + 1, '\0');
  size_t used = 0, pos = 0;
  int rc = BZ_OK;
  while (rc != BZ_STREAM_END) {
    if (s.avail_in == 0) {
      if (pos == in.size()) fail<FormatError>("bzip2: the stream ends early");
      const size_t n = std::min(in.size() - pos, kStep);
      s.next_in = const_cast<char*>(in.data() + pos);
      s.avail_in = static_cast<unsigned>(n);
      pos += n;
    }
    const size_t room = std::min(grow(out, used, size_t{1} << 16), kStep);
    s.next_out = out.data() + used;
    s.avail_out = static_cast<unsigned>(room);
    rc = BZ2_bzDecompress(&s);
    if (rc != BZ_OK && rc != BZ_STREAM_END) fail<FormatError>("bzip2: BZ2_bzDecompress failed ({})", rc);
    used += room - s.avail_out;
  }
  if (s.avail_in != 0 || pos != in.size()) fail<FormatError>("bzip2: bytes after the end of the stream");
  out.resize(used);
  return out;
}

// ---- xz (liblzma) ---------------------------------------------------------------------------

std::string lzma_run(lzma_stream& s, std::string_view in, size_t initial, bool decoding) {
  std::unique_ptr<lzma_stream, void (*)(lzma_stream*)> guard(&s, lzma_end);
  std::string out(initial, '\0');
  size_t used = 0;
  s.next_in = reinterpret_cast<const uint8_t*>(in.data());
  s.avail_in = in.size();
  lzma_ret rc = LZMA_OK;
  while (rc != LZMA_STREAM_END) {
    const size_t room = grow(out, used, size_t{1} << 16);
    s.next_out = reinterpret_cast<uint8_t*>(out.data() + used);
    s.avail_out = room;
    rc = lzma_code(&s, LZMA_FINISH);
    used += room - s.avail_out;
    if (rc == LZMA_BUF_ERROR && decoding) fail<FormatError>("xz: the stream ends early");
    if (rc != LZMA_OK && rc != LZMA_STREAM_END) {
      if (decoding) fail<FormatError>("xz: lzma_code failed ({})", static_cast<int>(rc));
      fail<Error>("xz: lzma_code failed ({})", static_cast<int>(rc));
    }
  }
  if (decoding && s.avail_in != 0) fail<FormatError>("xz: bytes after the end of the stream");
  out.resize(used);
  return out;
}

std::string xz_compress(std::string_view in) {
  lzma_stream s = LZMA_STREAM_INIT;
  // What `xz -9` writes single-threaded: one stream, one block, CRC64.
  if (lzma_easy_encoder(&s, 9, LZMA_CHECK_CRC64) != LZMA_OK) {
    fail<Error>("xz: lzma_easy_encoder failed (out of memory?)");
  }
  return lzma_run(s, in, in.size() / 2 + 1024, false);
}

std::string xz_decompress(std::string_view in, size_t expected) {
  lzma_stream s = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&s, std::numeric_limits<uint64_t>::max(), 0) != LZMA_OK) {
    fail<Error>("xz: lzma_stream_decoder failed (out of memory?)");
  }
  return lzma_run(s, in, expected + 1, true);
}

// ---- zstd -----------------------------------------------------------------------------------

std::string zstd_compress(std::string_view in) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> c(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!c) fail<Error>("zstd: ZSTD_createCCtx failed (out of memory?)");
  // The zstd tool writes the content size and a checksum by default; so do we.
  ZSTD_CCtx_setParameter(c.get(), ZSTD_c_compressionLevel, 19);
  ZSTD_CCtx_setParameter(c.get(), ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(c.get(), ZSTD_c_contentSizeFlag, 1);
  std::string out(ZSTD_compressBound(in.size()), '\0');
  const size_t n = ZSTD_compress2(c.get(), out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n)) fail<Error>("zstd: {}", ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::string zstd_decompress(std::string_view in, size_t expected) {
  std::string out(expected + 1, '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n)) fail<FormatError>("zstd: {}", ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

// ---- brotli ---------------------------------------------------------------------------------

// The brotli tool's window for an input of known size: the smallest that covers it.
uint32_t brotli_window(size_t size) {
  uint32_t w = BROTLI_MIN_WINDOW_BITS;
  while (w < BROTLI_MAX_WINDOW_BITS && ((size_t{1} << w) - 16) < size) ++w;
  return w;
}

std::string brotli_compress(std::string_view in) {
  std::unique_ptr<BrotliEncoderState, void (*)(BrotliEncoderState*)> s(
      BrotliEncoderCreateInstance(nullptr, nullptr, nullptr), BrotliEncoderDestroyInstance);
  if (!s) fail<Error>("brotli: BrotliEncoderCreateInstance failed (out of memory?)");
  BrotliEncoderSetParameter(s.get(), BROTLI_PARAM_QUALITY, 11);
  BrotliEncoderSetParameter(s.get(), BROTLI_PARAM_LGWIN, brotli_window(in.size()));
  if (!in.empty()) {
    const size_t hint = std::min(in.size(), size_t{1} << 30);
    BrotliEncoderSetParameter(s.get(), BROTLI_PARAM_SIZE_HINT, static_cast<uint32_t>(hint));
  }
  std::string out(in.size() / 2 + 1024, '\0');
  size_t used = 0;
  size_t avail_in = in.size();
  const auto* next_in = reinterpret_cast<const uint8_t*>(in.data());
  while (!BrotliEncoderIsFinished(s.get())) {
    size_t room = grow(out, used, size_t{1} << 16);
    const size_t given = room;
    auto* next_out = reinterpret_cast<uint8_t*>(out.data() + used);
    if (!BrotliEncoderCompressStream(s.get(), BROTLI_OPERATION_FINISH, &avail_in, &next_in, &room,
                                     &next_out, nullptr)) {
      fail<Error>("brotli: BrotliEncoderCompressStream failed");
    }
    used += given - room;
  }
  out.resize(used);
  return out;
}

std::string brotli_decompress(std::string_view in, size_t expected) {
  std::unique_ptr<BrotliDecoderState, void (*)(BrotliDecoderState*)> s(
      BrotliDecoderCreateInstance(nullptr, nullptr, nullptr), BrotliDecoderDestroyInstance);
  if (!s) fail<Error>("brotli: BrotliDecoderCreateInstance failed (out of memory?)");
  std::string out(expected + 1, '\0');
  size_t used = 0;
  size_t avail_in = in.size();
  const auto* next_in = reinterpret_cast<const uint8_t*>(in.data());
  for (;;) {
    size_t room = grow(out, used, size_t{1} << 16);
    const size_t given = room;
    auto* next_out = reinterpret_cast<uint8_t*>(out.data() + used);
    const BrotliDecoderResult rc =
        BrotliDecoderDecompressStream(s.get(), &avail_in, &next_in, &room, &next_out, nullptr);
    used += given - room;
    if (rc == BROTLI_DECODER_RESULT_SUCCESS) break;
    if (rc == BROTLI_DECODER_RESULT_ERROR) {
      fail<FormatError>("brotli: {}", BrotliDecoderErrorString(BrotliDecoderGetErrorCode(s.get())));
    }
    if (rc == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) fail<FormatError>("brotli: the stream ends early");
  }
  if (avail_in != 0) fail<FormatError>("brotli: bytes after the end of the stream");
  out.resize(used);
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::span<const Baseline> all_baselines() { return kAll; }

std::string_view baseline_name(Baseline b) {
  switch (b) {
    case Baseline::Gzip: return "gzip -9";
    case Baseline::Bzip2: return "bzip2 -9";
    case Baseline::Xz: return "xz -9";
    case Baseline::Zstd: return "zstd -19";
    case Baseline::Brotli: return "brotli -11";
  }
  return "?";
}

std::string baseline_compress(Baseline b, std::string_view input) {
  switch (b) {
    case Baseline::Gzip: return gzip_compress(input);
    case Baseline::Bzip2: return bzip2_compress(input);
    case Baseline::Xz: return xz_compress(input);
    case Baseline::Zstd: return zstd_compress(input);
    case Baseline::Brotli: return brotli_compress(input);
  }
  fail<InvalidArgument>("unknown baseline compressor {}", static_cast<int>(b));
}

std::string baseline_decompress(Baseline b, std::string_view compressed, size_t expected_size) {
  switch (b) {
    case Baseline::Gzip: return gzip_decompress(compressed, expected_size);
    case Baseline::Bzip2: return bzip2_decompress(compressed, expected_size);
    case Baseline::Xz: return xz_decompress(compressed, expected_size);
    case Baseline::Zstd: return zstd_decompress(compressed, expected_size);
    case Baseline::Brotli: return brotli_decompress(compressed, expected_size);
  }
  fail<InvalidArgument>("unknown baseline compressor {}", static_cast<int>(b));
}

double BaselineResult::bits_per_byte() const {
  if (input_bytes == 0) return std::numeric_limits<double>::quiet_NaN();
  return 8.0 * static_cast<double>(compressed_bytes) / static_cast<double>(input_bytes);
}

BaselineResult measure_baseline(Baseline b, std::string_view input) {
  BaselineResult r;
  r.baseline = b;
  r.input_bytes = input.size();
  auto t0 = std::chrono::steady_clock::now();
  const std::string packed = baseline_compress(b, input);
  r.compress_seconds = seconds_since(t0);
  r.compressed_bytes = packed.size();
  t0 = std::chrono::steady_clock::now();
  const std::string back = baseline_decompress(b, packed, input.size());
  r.decompress_seconds = seconds_since(t0);
  if (back != input) {
    fail<Error>("{}: decompressing its own output gave {} bytes that differ from the {} input bytes",
                baseline_name(b), back.size(), input.size());
  }
  return r;
}

}  // namespace sq::codec
