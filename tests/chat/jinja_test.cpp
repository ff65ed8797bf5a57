// The template language, construct by construct. Expected texts are what Jinja prints for these
// templates; where Python's Jinja and @huggingface/jinja (the reference the conformance test uses)
// disagree, the reference's choice is expected and the comment says so.
#include <thread>

#include <gtest/gtest.h>

#include "base/error.h"
#include "chat/jinja.h"
#include "chat/template.h"

namespace sq {
namespace {

std::string render(const std::string& source, const nlohmann::json& vars = nlohmann::json::object(),
                   jinja::RenderLimits limits = {}) {
  auto program = jinja::parse(source);
  jinja::RenderInput input;
  for (auto it = vars.begin(); it != vars.end(); ++it) {
    input.globals.emplace_back(it.key(), jinja::from_json(it.value()));
  }
  input.date[0] = 2024;
  input.date[1] = 7;
  input.date[2] = 26;
  input.limits = limits;
  return jinja::render(*program, input);
}

std::string error_of(const std::string& source, const nlohmann::json& vars = nlohmann::json::object(),
                     jinja::RenderLimits limits = {}) {
  try {
    render(source, vars, limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Jinja, PrintsValuesAsTheReferenceDoes) {
  // Python would print True and None; the reference prints true and nothing.
  EXPECT_EQ(render("{{ 1 }}|{{ 1.5 }}|{{ 2.0 }}|{{ 'a' }}|{{ true }}|{{ none }}|{{ nothing }}"),
            "1|1.5|2.0|a|true||");
  EXPECT_EQ(render("{{ [1, 'a', none, false] }}|{{ {'k': [1.5]} }}"),
            "[1, \"a\", null, false]|{\"k\": [1.5]}");
  EXPECT_EQ(render("{{ 0.1 + 0.2 }}|{{ 10.0 ** 301 }}|{{ 3 / 2 }}"), "0.30000000000000004|1e+301|1.5");
}

TEST(Jinja, Arithmetic) {
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ 1 + 2 * 3 }}"),
            "3 -4 3.5 1024 1 7");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ 'b' }}|{{ 'x' + 'y' }}|{{ [1] + [2] }}|{{ -(3) }}"), "a1b|xy|[1, 2]|-3");
  EXPECT_NE(error_of("{{ 1 // 0 }}").find("division by zero"), std::string::npos);
}

TEST(Jinja, ComparisonsMembershipAndLogic) {
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}"),
            "true true true true");
  EXPECT_EQ(render("{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' == 'a' }} {{ 1 == 1.0 }} {{ 1 != 2 }}"),
            "true false true true true");
  EXPECT_EQ(render("{{ 'y' if 0 else 'n' }} {{ 0 or 'b' }} {{ 1 and 'c' }} {{ not [] }}"),
            "n b c true");
  // Anything in an undefined value is false (the reference's rule).
  EXPECT_EQ(render("{{ 'x' in tools }}|{{ 'x' not in tools }}"), "false|true");
}

TEST(Jinja, ForLoopVariablesElseAndFilter) {
  EXPECT_EQ(render("{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ x }}{{ '|' if not loop.last }}"
                   "{% endfor %}"),
            "1a|2b|3c");
  EXPECT_EQ(render("{% for x in 'ab' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.length }}"
                   "{{ loop.first }}{% endfor %}"),
            "022true112false");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{% else %}none{% endfor %}"), "24");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"),
            "a=1;b=2;");
  EXPECT_EQ(render("{% for k in {'a': 1, 'b': 2} %}{{ k }}{% endfor %}"), "ab");
  EXPECT_EQ(render("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}"
                   "{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}"),
            "02");
  EXPECT_EQ(render("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}"), "3,7,");
}

TEST(Jinja, SetScopesAndNamespaces) {
  // An assignment inside a loop stays in the loop; a namespace carries it out.
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
                   "{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(render("{% set block %}x{{ 1 + 1 }}y{% endset %}[{{ block }}]"), "[x2y]");
  EXPECT_NE(error_of("{% set d = {} %}{% set d.x = 1 %}").find("namespace"), std::string::npos);
}

TEST(Jinja, MacrosCallerAndFilterBlocks) {
  EXPECT_EQ(render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!"
                   "{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }}"),
            "Hello, Ann! Hi, Bob!");
  EXPECT_EQ(render("{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}in{% endcall %}"),
            "[in]");
  EXPECT_EQ(render("{% macro row(x) %}<{{ caller(x * 2) }}>{% endmacro %}"
                   "{% call(v) row(4) %}{{ v }}{% endcall %}"),
            "<8>");
  EXPECT_EQ(render("{% filter upper %}abc{{ 'd' }}{% endfilter %}"), "ABCD");
}

TEST(Jinja, WhitespaceControlTrimAndLstripBlocks) {
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a {{- 'b' -}} c"), "abc");
  // The reference renders with trim_blocks and lstrip_blocks, as transformers does.
  EXPECT_EQ(render("  {% if true %}\nyes\n  {% endif %}\nafter"), "yes\nafter");
  EXPECT_EQ(render("a{# note #}b{#- note -#} c"), "abc");
  EXPECT_EQ(render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
  // One trailing newline of the template is dropped.
  EXPECT_EQ(render("x\n"), "x");
  // transformers' {% generation %} marker renders nothing.
  EXPECT_EQ(render("a{% generation %}b{% endgeneration %}c"), "abc");
}

TEST(Jinja, SubscriptsAndSlices) {
  EXPECT_EQ(render("{{ [1, 2, 3, 4][::-1] }}|{{ 'hello'[1:3] }}|{{ [1, 2, 3][-1] }}|{{ 'abc'[-2:] }}"),
            "[4, 3, 2, 1]|el|3|bc");
  EXPECT_EQ(render("{{ m['role'] }}{{ m.role }}{{ m.missing is defined }}{{ m.missing.deeper }}",
                   {{"m", {{"role", "user"}}}}),
            "useruserfalse");
  EXPECT_EQ(render("{{ [10, 20].1 }}|{{ 'héllo'[1] }}|{{ 'héllo'|length }}"), "20|é|5");
}

TEST(Jinja, StringMethods) {
  EXPECT_EQ(render("{{ '  a b  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '\\n\\n hi'.lstrip('\\n') }}|"
                   "{{ 'a,b,,c'.split(',') }}|{{ ' a b  c '.split() }}|{{ 'a-b-c'.split('-', 1) }}"),
            "a b|hi| hi|[\"a\", \"b\", \"\", \"c\"]|[\"a\", \"b\", \"c\"]|[\"a\", \"b-c\"]");
  EXPECT_EQ(render("{{ 'Hello'.startswith('He') }}|{{ 'Hello'.endswith(('x', 'lo')) }}|"
                   "{{ 'abcb'.replace('b', 'X') }}|{{ 'abcb'.replace('b', 'X', 1) }}|"
                   "{{ '{} is {}'.format('x', 1) }}|{{ '{0}{name}'.format('a', name='b') }}|"
                   "{{ 'hello world'.title() }}|{{ 'aBc'.upper() }}{{ 'aBc'.lower() }}|"
                   "{{ 'abcabc'.find('c') }}{{ 'abcabc'.count('bc') }}|{{ ', '.join(['a', 'b']) }}"),
            "true|true|aXcX|aXcb|x is 1|ab|Hello World|ABCabc|22|a, b");
}

TEST(Jinja, ListAndDictMethods) {
  EXPECT_EQ(render("{% set l = [1] %}{% do l.append(2) %}{% set _ = l.append(3) %}{{ l }}|"
                   "{{ l.pop(0) }}{{ l }}|{{ l|length }}"),
            "[1, 2, 3]|1[2, 3]|2");
  // Number keys, as ByteDance Seed-OSS's template writes them (Python allows them).
  EXPECT_EQ(render("{% set d = {0: 'a', 512: 'b'} %}{{ d[512] }}{{ d['512'] is defined }}"
                   "{% for k, v in d|dictsort(reverse=true) %}|{{ k + 1 }}{{ v }}{% endfor %}"),
            "bfalse|513b|1a");
  EXPECT_EQ(render("{{ d.get('a') }}|{{ d.get('z', 'no') }}|{{ d.get('z') is none }}|{{ d.keys() }}|"
                   "{{ d.values() }}|{{ d|items|list|length }}",
                   {{"d", {{"a", 1}, {"b", 2}}}}),
            "1|no|true|[\"a\", \"b\"]|[1, 2]|2");
}

TEST(Jinja, Filters) {
  EXPECT_EQ(render("{{ [3, 1, 2]|sort|join(',') }} {{ ['a', 'b']|length }} {{ 'abc'|upper }} "
                   "{{ missing|default('d') }} {{ ''|default('e', true) }} {{ [1, 2, 2, 3]|unique|list|length }} "
                   "{{ (-3)|abs }} {{ '  t  '|trim }} {{ [1, 2]|first }}{{ [1, 2]|last }} {{ 'ab'|reverse }}"),
            "1,2,3 2 ABC d e 3 3 t 12 ba");
  EXPECT_EQ(render("{{ '12'|int + 1 }} {{ 'x'|int }} {{ 2|float }} {{ 3.7|int }} {{ 2.5|round }} "
                   "{{ 'one two  three'|wordcount }} {{ '<a>'|escape }} {{ 5|string ~ 'x' }}"),
            "13 0 2.0 3 3.0 3 &lt;a&gt; 5x");
  EXPECT_EQ(render("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}"), "a\n  b\n\n  c|  a\n  b");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2}|dictsort }}|{{ [4, 1, 9]|max }}{{ [4, 1, 9]|min }}"),
            "[[\"a\", 2], [\"b\", 1]]|91");
  const nlohmann::json msgs = {{"messages",
                                {{{"role", "user"}, {"content", "a"}},
                                 {{"role", "assistant"}, {"content", "b"}},
                                 {{"role", "user"}, {"content", "c"}}}}};
  EXPECT_EQ(render("{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(' ') }}|"
                   "{{ messages|rejectattr('role', 'equalto', 'user')|list|length }}|"
                   "{{ messages|map(attribute='role')|unique|list }}|{{ [1, 2, 3, 4]|select('odd')|list }}",
                   msgs),
            "a c|1|[\"user\", \"assistant\"]|[1, 3]");
}

TEST(Jinja, ToJsonAsTheReferenceWritesIt) {
  EXPECT_EQ(render("{{ {'a': [1, 'x', none, true], 'b': 1.5, 'c': 2.0}|tojson }}"),
            "{\"a\": [1, \"x\", null, true], \"b\": 1.5, \"c\": 2}");
  EXPECT_EQ(render("{{ {'a': [1, 2], 'e': []}|tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": []\n}");
  EXPECT_EQ(render("{{ {'b': 1, 'a': {'d': 1, 'c': 2}}|tojson(sort_keys=true) }}"),
            "{\"a\": {\"c\": 2, \"d\": 1}, \"b\": 1}");
  // No ASCII escaping unless asked (json.dumps would write \u00e9 by default; the reference and
  // transformers' tojson do not).
  EXPECT_EQ(render("{{ 'é\"\\n'|tojson }}|{{ 'é'|tojson(ensure_ascii=true) }}"), "\"é\\\"\\n\"|\"\\u00e9\"");
  EXPECT_EQ(render("{{ [1, 2]|tojson(separators=(',', ':')) }}"), "[1,2]");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(render("{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} "
                   "{{ 1 is number }} {{ {} is mapping }} {{ [] is iterable }} {{ 3 is odd }} "
                   "{{ 9 is divisibleby(3) }} {{ 1 is not string }} {{ true is boolean }} "
                   "{{ 'AB' is upper }} {{ 2 is equalto 2 }}",
                   {{"x", 1}}),
            "true true true true true true true true true true true true true");
}

TEST(Jinja, GlobalsRaiseExceptionAndDate) {
  try {
    render("{{ raise_exception('Conversation roles must alternate') }}");
    FAIL() << "expected an exception";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "Conversation roles must alternate");
  }
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%B %-d, %Y (%A)') }}|"
                   "{{ strftime_now('%Y-%m-%d') }}"),
            "26 Jul 2024|July 26, 2024 (Friday)|2024-07-26");
  EXPECT_EQ(render("{{ range(3) }}{{ range(1, 7, 2) }}{{ range(3, 0, -1) }}"), "[0, 1, 2][1, 3, 5][3, 2, 1]");
  EXPECT_EQ(render("{{ dict(a=1) }}{{ namespace(x=1).x }}"), "{\"a\": 1}1");
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  auto syntax_error = [](const std::string& source) -> std::string {
    try {
      jinja::parse(source);
    } catch (const FormatError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(syntax_error("line one\n{{ foo( }}").find("line 2, column 9"), std::string::npos)
      << syntax_error("line one\n{{ foo( }}");
  EXPECT_NE(syntax_error("{% if x %}abc").find("not closed"), std::string::npos);
  EXPECT_NE(syntax_error("ab\n  {% endfor %}").find("line 2"), std::string::npos);
  EXPECT_NE(syntax_error("{{ 'abc }}").find("not closed"), std::string::npos);
  EXPECT_NE(syntax_error("{% frobnicate %}").find("unknown statement 'frobnicate'"), std::string::npos);
  EXPECT_NE(syntax_error("{{ 1 + }}").find("expected an expression"), std::string::npos);
  EXPECT_NE(syntax_error("{# open").find("comment"), std::string::npos);
  EXPECT_NE(syntax_error("{{ a $ b }}").find("unexpected character"), std::string::npos);
}

TEST(Jinja, RuntimeErrorsNameLineAndColumn) {
  const std::string e = error_of("a\nb\n  {{ 1 + none }}");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(error_of("{% for m in tools %}{% endfor %}").find("cannot loop over an undefined value ('tools')"),
            std::string::npos);
  EXPECT_NE(error_of("{{ x|length }}").find("filter 'length'"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a'.nope() }}").find("cannot call"), std::string::npos);
  EXPECT_NE(error_of("{{ [1]|frob }}").find("unknown filter 'frob'"), std::string::npos);
}

TEST(Jinja, LimitsStopRunawayTemplates) {
  jinja::RenderLimits small;
  small.max_loop_iterations = 10000;
  small.max_output = 1 << 16;
  EXPECT_NE(error_of("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                     {}, small)
                .find("loop iterations"),
            std::string::npos);
  EXPECT_NE(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("recursed"),
            std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                     "{% endfor %}",
                     {}, small)
                .find("grew past"),
            std::string::npos);
  EXPECT_NE(error_of("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", {}, small).find("grew past"),
            std::string::npos);
  EXPECT_NE(error_of("{% set l = [] %}{% do l.append(l) %}{{ l|tojson }}").find("nests deeper"),
            std::string::npos);
  EXPECT_NE(error_of("{{ range(100000000) }}").find("list grew past"), std::string::npos);
  EXPECT_NE(error_of("{{ 'ab' * 100000000000 }}").find("grew past"), std::string::npos);
  jinja::RenderLimits few_steps;
  few_steps.max_steps = 100000;
  EXPECT_NE(error_of("{% set a = range(50000) %}{% set b = range(50000) %}{% for i in range(10) %}"
                     "{{ a == b }}{% endfor %}",
                     {}, few_steps)
                .find("steps"),
            std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace() %}{% macro m() %}{% set ns.f = caller %}{% endmacro %}"
                     "{% call m() %}x{% endcall %}{{ ns.f() }}")
                .find("outside its {% call %} block"),
            std::string::npos);
  EXPECT_EQ(render("{{ -(-9223372036854775807 - 1) }}"), "9223372036854775808.0");
  EXPECT_NE(error_of("{{ (10.0 ** 300)|int }}").find("no integer value"), std::string::npos);
  EXPECT_EQ(render("{{ '«x»'.strip('«»') }}|{{ 'é\n'.rstrip('\n') }}"), "x|é");
  // A chain of lists 100,000 deep is freed without recursion; a list that contains itself is
  // emptied at the end of the render instead of leaking (ASan checks both in the debug preset).
  EXPECT_EQ(render("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}"
                   "{% endfor %}{% for i in range(1) %}{% set local = [ns.x, ns.x] %}{% endfor %}ok"),
            "ok");
  EXPECT_EQ(render("{% set l = [1] %}{% do l.append(l) %}{% set d = {} %}{% do d.update({'d': d}) %}"
                   "{{ l|length }}{{ d|length }}"),
            "21");
  // Nesting in the source is bounded before any recursion can exhaust the stack.
  EXPECT_THROW(jinja::parse("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}"),
               FormatError);
  EXPECT_THROW(jinja::parse("{{ " + std::string(50000, '[')), FormatError);
  std::string ifs;
  for (int k = 0; k < 5000; ++k) ifs += "{% if true %}";
  EXPECT_THROW(jinja::parse(ifs), FormatError);
}

TEST(ChatTemplate, BuiltinsFollowTheDocumentedFormats) {
  const nlohmann::json conv = {{{"role", "system"}, {"content", "S"}},
                               {{"role", "user"}, {"content", "U"}},
                               {{"role", "assistant"}, {"content", "A"}},
                               {{"role", "user"}, {"content", "V"}}};
  ChatRenderOptions o;
  o.bos_token = "<s>";
  o.eos_token = "</s>";
  EXPECT_EQ(ChatTemplate::builtin("chatml").render(conv, o),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA"
            "<|im_end|>\n<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::builtin("llama2").render(conv, o),
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] V [/INST]");
  EXPECT_EQ(ChatTemplate::builtin("mistral").render(conv, o),
            "<s>[INST] S\n\nU [/INST]A</s>[INST] V [/INST]");
  EXPECT_EQ(ChatTemplate::builtin("zephyr").render(conv, o),
            "<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\nA</s>\n<|user|>\nV</s>\n<|assistant|>\n");
  ChatRenderOptions l3 = o;
  l3.bos_token = "<|begin_of_text|>";
  EXPECT_EQ(ChatTemplate::builtin("llama3").render(conv, l3),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nV<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  ChatRenderOptions g = o;
  g.bos_token = "<bos>";
  g.add_generation_prompt = false;
  EXPECT_EQ(ChatTemplate::builtin("gemma").render(conv, g),
            "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
            "<start_of_turn>user\nV<end_of_turn>\n");
  // Content given as OpenAI-style parts.
  const nlohmann::json parts = {{{"role", "user"},
                                 {"content", {{{"type", "text"}, {"text", "hi "}},
                                              {{"type", "image_url"}, {"image_url", "x"}},
                                              {{"type", "text"}, {"text", "there"}}}}}};
  EXPECT_EQ(ChatTemplate::builtin("chatml").render(parts, o),
            "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::builtin_names().size(), 6u);
  bool fallback = false;
  EXPECT_EQ(ChatTemplate::for_model("", &fallback).source(), ChatTemplate::builtin("chatml").source());
  EXPECT_TRUE(fallback);
  EXPECT_EQ(ChatTemplate::for_model("x{{ 1 }}", &fallback).render(nlohmann::json::array(), o), "x1");
  EXPECT_FALSE(fallback);
  try {
    ChatTemplate::builtin("vicuna");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("chatml, llama2, llama3, mistral, gemma, zephyr"),
              std::string::npos);
  }
}

TEST(ChatTemplate, RejectsMalformedMessages) {
  const ChatTemplate t = ChatTemplate::builtin("chatml");
  EXPECT_THROW(t.render(nlohmann::json::object(), {}), InvalidArgument);
  EXPECT_THROW(t.render(nlohmann::json::array({1}), {}), InvalidArgument);
  EXPECT_THROW(t.render(nlohmann::json::array({{{"content", "x"}}}), {}), InvalidArgument);
  ChatRenderOptions bad_date;
  bad_date.now = "2024-13-01";
  EXPECT_THROW(t.render(nlohmann::json::array(), bad_date), InvalidArgument);
  // Tools and extra variables reach the template, key order kept.
  const ChatTemplate v = ChatTemplate::parse("{{ tools|tojson }}|{{ enable_thinking }}");
  ChatRenderOptions o;
  o.tools = nlohmann::ordered_json::parse(R"([{"z": 1, "a": 2}])");
  o.extra_context = nlohmann::ordered_json::parse(R"({"enable_thinking": false})");
  EXPECT_EQ(v.render(nlohmann::json::array(), o), "[{\"z\": 1, \"a\": 2}]|false");
}

TEST(ChatTemplate, RendersFromSeveralThreadsAtOnce) {
  // A server renders one parsed template for many requests at once.
  const ChatTemplate t = ChatTemplate::parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
      "{{ m.role }}:{{ m.content|upper }};{% endfor %}{{ ns.n }}");
  std::vector<std::string> out(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      nlohmann::json conv = nlohmann::json::array();
      for (int j = 0; j <= k; ++j) {
        std::string content = "m";
        content += static_cast<char>('0' + j);
        conv.push_back({{"role", "user"}, {"content", content}});
      }
      for (int rep = 0; rep < 200; ++rep) out[static_cast<size_t>(k)] = t.render(conv, {});
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(out[0], "user:M0;1");
  EXPECT_EQ(out[3], "user:M0;user:M1;user:M2;user:M3;4");
}

}  // namespace
}  // namespace sq
