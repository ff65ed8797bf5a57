// Renders every chat template of a folder over the conversations of a cases file with the
// reference renderer (@huggingface/jinja), and prints {template: {case: {"text"} | {"error"}}} as
// JSON on stdout. The C++ conformance test (template_conformance_test.cpp) runs it once and holds
// squeeze's renderer to its output byte for byte.
//
//   node render_reference.mjs CASES.json TEMPLATE_DIR...
//
// The module is resolved from node_modules at the repository root (NODE_PATH is not used by ES
// modules, so the path is built from this file's location).
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const { Template, Environment } = await import(
  pathToFileURL(join(root, "node_modules", "@huggingface", "jinja", "dist", "index.js")).href
);

// The renderer declares its own strftime_now (the machine's clock) before the caller's variables
// and refuses to declare a name twice; let the caller's fixed-date version replace it, as the
// documentation's "pass strftime_now as a function" intends. Nothing else is changed.
const declare = Environment.prototype.set;
Environment.prototype.set = function (name, value) {
  if (name === "strftime_now" && typeof value === "function") this.variables.delete(name);
  return declare.call(this, name, value);
};

const [casesPath, ...templateDirs] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(casesPath, "utf8"));

// strftime_now for a fixed day (midnight): Python's directives that templates use, English names.
const [year, month, day] = spec.date.split("-").map(Number);
const monthNames = ["January", "February", "March", "April", "May", "June", "July", "August",
  "September", "October", "November", "December"];
const dayNames = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const weekday = new Date(Date.UTC(year, month - 1, day)).getUTCDay();
const pad = (n) => String(n).padStart(2, "0");
function strftimeNow(fmt) {
  const table = {
    Y: String(year), m: pad(month), d: pad(day), y: pad(year % 100), B: monthNames[month - 1],
    b: monthNames[month - 1].slice(0, 3), A: dayNames[weekday], a: dayNames[weekday].slice(0, 3),
    H: "00", M: "00", S: "00", "%": "%",
  };
  return fmt.replace(/%(-?)([A-Za-z%])/g, (whole, dash, c) => {
    if (!(c in table)) return whole;
    return dash && /^\d+$/.test(table[c]) ? String(Number(table[c])) : table[c];
  });
}

const out = {};
const files = [];
for (const dir of templateDirs) {
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".jinja")).sort()) files.push([dir, f]);
}
for (const [templateDir, file] of files) {
  const name = file.slice(0, -".jinja".length);
  const source = readFileSync(join(templateDir, file), "utf8");
  out[name] = {};
  let template = null;
  let parseError = null;
  try {
    template = new Template(source);
  } catch (e) {
    parseError = String(e && e.message ? e.message : e);
  }
  for (const c of spec.cases) {
    if (template === null) {
      out[name][c.name] = { error: "parse: " + parseError };
      continue;
    }
    try {
      const vars = {
        messages: structuredClone(c.messages),
        add_generation_prompt: c.add_generation_prompt,
        bos_token: spec.bos_token,
        eos_token: spec.eos_token,
        strftime_now: strftimeNow,
      };
      // As transformers renders: `tools` is always defined, none when the request has no tools.
      vars.tools = c.tools !== undefined ? structuredClone(c.tools) : null;
      for (const [k, v] of Object.entries(c.vars ?? {})) vars[k] = structuredClone(v);
      const text = template.render(vars);
      out[name][c.name] = { text };
    } catch (e) {
      out[name][c.name] = { error: String(e && e.message ? e.message : e) };
    }
  }
}
process.stdout.write(JSON.stringify(out));
