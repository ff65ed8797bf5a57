// A grouped bar chart as a standalone SVG document: the picture `squeeze eval --svg` draws (bits per
// byte by compressor and model, one group per file). Plain SVG 1.1 with no script, no external
// style and no font beyond the generic families, so any browser or viewer opens it.
#pragma once

#include <string>
#include <vector>

namespace sq::eval {

struct BarGroup {
  std::string label;           // under the group (a file name)
  std::vector<double> values;  // one per series; NaN: no bar
};

struct BarChart {
  std::string title;
  std::string y_label;              // the value axis ("bits per byte")
  std::vector<std::string> series;  // one colour each, named in the legend
  std::vector<BarGroup> groups;
};

// Every bar is a <rect class="bar"> with its value written above it; the legend's swatches are
// <rect class="swatch">. Text is XML-escaped. Values must not be negative.
std::string render_svg(const BarChart& chart);

}  // namespace sq::eval
