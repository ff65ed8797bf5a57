// Independent check of squeeze's structured output: parses each output with JSON.parse and
// validates it with ajv (JSON Schema 2020-12). Called once per test with a file holding
// [{"schema": <schema or null>, "output": "<text>"}, ...]; prints one JSON array with
// {"parsed": bool, "valid": bool, "error": string} per entry, in order. A null schema means
// response_format json_object: any JSON object.
"use strict";
const fs = require("fs");
const path = require("path");

const root = process.argv[3] || path.join(__dirname, "..", "..");
const Ajv2020 = require(path.join(root, "node_modules", "ajv", "dist", "2020")).default;

const cases = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
// strictTuples is a lint for schema authors (a tuple without maxItems), not a validation rule.
const ajv = new Ajv2020({ allErrors: true, strict: true, strictTuples: false });
const compiled = new Map();
const results = [];
for (const c of cases) {
  const schema = c.schema === null ? { type: "object" } : c.schema;
  const key = JSON.stringify(schema);
  let validate = compiled.get(key);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(key, validate);
  }
  let value;
  try {
    value = JSON.parse(c.output);
  } catch (e) {
    results.push({ parsed: false, valid: false, error: String(e.message) });
    continue;
  }
  const valid = validate(value);
  results.push({ parsed: true, valid, error: valid ? "" : ajv.errorsText(validate.errors) });
}
process.stdout.write(JSON.stringify(results));
