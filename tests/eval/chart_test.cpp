// The SVG bar chart of `squeeze eval --svg`: well-formed XML, one rect per bar, text escaped.
#include "eval/chart.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sq::eval {
namespace {

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

// A small check of XML well-formedness: the prolog, then elements properly nested and closed,
// attribute values quoted, no raw '<' or '&' in text except as entity starts.
::testing::AssertionResult well_formed(const std::string& xml) {
  size_t pos = 0;
  if (xml.rfind("<?xml", 0) == 0) pos = xml.find("?>") + 2;
  std::vector<std::string> stack;
  bool root_seen = false;
  while (pos < xml.size()) {
    const size_t lt = xml.find('<', pos);
    const std::string text = xml.substr(pos, (lt == std::string::npos ? xml.size() : lt) - pos);
    for (size_t i = text.find('&'); i != std::string::npos; i = text.find('&', i + 1)) {
      const size_t semi = text.find(';', i);
      if (semi == std::string::npos || semi - i > 6) {
        return ::testing::AssertionFailure() << "bare & in text: " << text;
      }
    }
    if (lt == std::string::npos) break;
    const size_t gt = xml.find('>', lt);
    if (gt == std::string::npos) return ::testing::AssertionFailure() << "unclosed tag at " << lt;
    std::string tag = xml.substr(lt + 1, gt - lt - 1);
    if (tag.find('<') != std::string::npos) return ::testing::AssertionFailure() << "'<' in tag " << tag;
    if (count(tag, "\"") % 2 != 0) return ::testing::AssertionFailure() << "unbalanced quotes: " << tag;
    if (!tag.empty() && tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) {
        return ::testing::AssertionFailure() << "</" << name << "> closes "
                                             << (stack.empty() ? "nothing" : stack.back());
      }
      stack.pop_back();
    } else {
      const bool self_closing = !tag.empty() && tag.back() == '/';
      const std::string name = tag.substr(0, tag.find_first_of(" \n/"));
      if (stack.empty()) {
        if (root_seen) return ::testing::AssertionFailure() << "second root element " << name;
        root_seen = true;
      }
      if (!self_closing) stack.push_back(name);
    }
    pos = gt + 1;
  }
  if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> not closed";
  if (!root_seen) return ::testing::AssertionFailure() << "no root element";
  return ::testing::AssertionSuccess();
}

TEST(EvalChart, OneRectPerBarAndWellFormed) {
  BarChart c;
  c.title = "Bits per byte";
  c.y_label = "bits per byte";
  c.series = {"gzip -9", "xz -9", "stories260K"};
  c.groups.push_back({"valid.txt", {3.1, 2.6, 1.2}});
  c.groups.push_back({"alice29.txt", {2.9, std::nan(""), 4.5}});
  const std::string svg = render_svg(c);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_EQ(count(svg, "<rect class=\"bar\""), 5u) << "the NaN value has no bar";
  EXPECT_EQ(count(svg, "<rect class=\"swatch\""), 3u);
  EXPECT_EQ(count(svg, "<rect"), 8u);
  for (const char* label : {"valid.txt", "alice29.txt", "gzip -9", "stories260K", "bits per byte",
                            "1.200", "4.500"}) {
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  }
}

TEST(EvalChart, TextIsEscaped) {
  BarChart c;
  c.title = "a < b & c";
  c.series = {"\"quoted\" 'model'"};
  c.groups.push_back({"<file>&\x01\xff", {1.0}});
  const std::string svg = render_svg(c);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_NE(svg.find("a &lt; b &amp; c"), std::string::npos);
  EXPECT_NE(svg.find("&lt;file&gt;&amp;"), std::string::npos);
  EXPECT_EQ(svg.find('\x01'), std::string::npos);
  EXPECT_EQ(svg.find("\xff"), std::string::npos) << "malformed UTF-8 is replaced";
}

TEST(EvalChart, EmptyAndZeroChartsStillDraw) {
  BarChart c;
  c.title = "nothing";
  EXPECT_TRUE(well_formed(render_svg(c)));
  c.series = {"a"};
  c.groups.push_back({"f", {0.0}});
  const std::string svg = render_svg(c);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, "<rect class=\"bar\""), 1u);
}

}  // namespace
}  // namespace sq::eval
