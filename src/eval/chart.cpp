#include "eval/chart.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "tokenizer/unicode.h"

namespace sq::eval {

namespace {

// Enough colours to tell a dozen series apart (the five baselines in greys and browns, models in
// brighter hues, since they come after).
constexpr const char* kPalette[] = {"#9e9e9e", "#795548", "#607d8b", "#bcaaa4", "#78909c",
                                    "#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa",
                                    "#00acc1", "#d81b60", "#3949ab", "#c0ca33"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

// XML text: the five special characters escaped, malformed UTF-8 replaced (file names can hold any
// bytes), control characters turned into spaces (XML 1.0 does not allow them).
std::string escape(const std::string& raw) {
  std::string out;
  for (char c : utf8::sanitize(raw)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

// A tick step of 1, 2 or 5 times a power of ten that gives about five ticks up to `top`.
double tick_step(double top) {
  const double raw = top / 5.0;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10.0 * p;
}

}  // namespace

std::string render_svg(const BarChart& chart) {
  const size_t n_series = std::max<size_t>(chart.series.size(), 1);
  double vmax = 0;
  for (const BarGroup& g : chart.groups) {
    for (double v : g.values) {
      if (std::isfinite(v)) vmax = std::max(vmax, v);
    }
  }
  if (vmax <= 0) vmax = 1;
  const double step = tick_step(vmax * 1.15);
  const double top = std::ceil(vmax * 1.15 / step) * step;  // room for the values above the bars

  // Geometry, in pixels.
  const double bar_w = 22, bar_gap = 4, group_gap = 36;
  const double left = 70, right_legend = 190, top_margin = 56, plot_h = 340, bottom = 70;
  const double group_w = static_cast<double>(n_series) * (bar_w + bar_gap) - bar_gap;
  const double plot_w =
      std::max(200.0, static_cast<double>(chart.groups.size()) * (group_w + group_gap) + group_gap);
  const double legend_h = 24.0 + 20.0 * static_cast<double>(chart.series.size());
  const double width = left + plot_w + right_legend;
  const double height = top_margin + std::max(plot_h, legend_h) + bottom;
  const double y0 = top_margin + plot_h;  // the baseline of the bars
  auto y_of = [&](double v) { return y0 - v / top * plot_h; };

  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{:.0f}\" height=\"{:.0f}\" "
      "viewBox=\"0 0 {:.0f} {:.0f}\" font-family=\"sans-serif\" font-size=\"12\">\n",
      width, height, width, height);
  s += fmt::format("<title>{}</title>\n", escape(chart.title));
  s += fmt::format("<text x=\"{:.1f}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
                   left, escape(chart.title));

  // Value axis: grid lines with their labels, and the axis title turned on its side.
  s += "<g class=\"axis\">\n";
  for (double v = 0; v <= top + step / 2; v += step) {
    const double y = y_of(v);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n",
                     left, y, left + plot_w, y);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}</text>\n", left - 6,
                     y + 4, std::round(v * 1000) / 1000);
  }
  s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#333\"/>\n",
                   left, top_margin, y0);
  s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#333\"/>\n",
                   left, y0, left + plot_w, y0);
  s += fmt::format(
      "<text transform=\"translate(18 {:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
      top_margin + plot_h / 2, escape(chart.y_label));
  s += "</g>\n";

  // Bars, group by group, each with its value above it (turned, so that narrow bars stay legible).
  s += "<g class=\"bars\">\n";
  for (size_t gi = 0; gi < chart.groups.size(); ++gi) {
    const BarGroup& g = chart.groups[gi];
    const double gx = left + group_gap + static_cast<double>(gi) * (group_w + group_gap);
    for (size_t si = 0; si < g.values.size() && si < n_series; ++si) {
      const double v = g.values[si];
      if (!std::isfinite(v)) continue;
      const double x = gx + static_cast<double>(si) * (bar_w + bar_gap);
      const double y = y_of(std::max(v, 0.0));
      const std::string name = si < chart.series.size() ? chart.series[si] : std::string();
      s += fmt::format(
          "<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
          "fill=\"{}\"><title>{}: {}: {:.3f}</title></rect>\n",
          x, y, bar_w, y0 - y, kPalette[si % kPaletteSize], escape(g.label), escape(name), v);
      s += fmt::format(
          "<text transform=\"translate({:.1f} {:.1f}) rotate(-90)\" font-size=\"10\">{:.3f}</text>\n",
          x + bar_w / 2 + 3.5, y - 4, v);
    }
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                     gx + group_w / 2, y0 + 20, escape(g.label));
  }
  s += "</g>\n";

  // Legend.
  s += "<g class=\"legend\">\n";
  const double lx = left + plot_w + 20;
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const double ly = top_margin + 8 + 20.0 * static_cast<double>(si);
    s += fmt::format(
        "<rect class=\"swatch\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"14\" fill=\"{}\"/>\n",
        lx, ly, kPalette[si % kPaletteSize]);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", lx + 20, ly + 11,
                     escape(chart.series[si]));
  }
  s += "</g>\n</svg>\n";
  return s;
}

}  // namespace sq::eval
