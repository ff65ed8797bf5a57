// The official OpenAI JavaScript client (npm "openai", pinned in package-lock.json) against a
// running `squeeze serve`: if the client parses every answer and raises its own error classes,
// existing applications work unchanged. Structured output is checked with ajv, a validator squeeze
// did not write. Driven by openai_client_test.cpp, which starts the server.
//
//   SQUEEZE_URL=http://127.0.0.1:PORT/v1 SQUEEZE_KEY=KEY SQUEEZE_MODEL=NAME node openai_client.mjs
//
// Prints one line per check and exits 0 when all pass, 1 at the first failure.
import { dirname, join, resolve } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const require = createRequire(join(root, "package.json"));
const openai = require("openai");
const OpenAI = openai.OpenAI ?? openai.default;
const Ajv2020 = require("ajv/dist/2020").default;

const baseURL = process.env.SQUEEZE_URL;
const apiKey = process.env.SQUEEZE_KEY;
const model = process.env.SQUEEZE_MODEL;
if (!baseURL || !apiKey || !model) {
  console.error("set SQUEEZE_URL, SQUEEZE_KEY and SQUEEZE_MODEL");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });

function check(condition, what, detail) {
  if (!condition) {
    const extra = detail === undefined ? "" : `: ${JSON.stringify(detail)}`;
    throw new Error(`${what}${extra}`);
  }
}

const checks = [];
const test = (name, fn) => checks.push([name, fn]);

test("models list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  check(ids.includes(model), `models list holds ${model}`, ids);
  const one = await client.models.retrieve(model);
  check(one.id === model && one.object === "model", "models retrieve", one);
});

const messages = [{ role: "user", content: "Tell me a story about Lily." }];
let greedy = "";

test("chat completion", async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
  check(r.object === "chat.completion", "object", r.object);
  check(r.choices.length === 1 && r.choices[0].message.role === "assistant", "one assistant choice", r.choices);
  greedy = r.choices[0].message.content;
  check(typeof greedy === "string" && greedy.length > 0, "content", greedy);
  check(r.choices[0].finish_reason === "length", "finish_reason", r.choices[0].finish_reason);
  check(r.usage.completion_tokens === 16, "usage.completion_tokens", r.usage);
  check(r.usage.total_tokens === r.usage.prompt_tokens + 16, "usage.total_tokens", r.usage);
  check(typeof r.usage.prompt_tokens_details.cached_tokens === "number", "cached_tokens", r.usage);
  check(typeof r.squeeze.cpu_seconds === "number" && typeof r.squeeze.ttft_ms === "number", "squeeze figures", r.squeeze);
});

test("streaming chat completion with usage", async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let role = null;
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    check(chunk.object === "chat.completion.chunk", "chunk object", chunk.object);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  check(chunks > 2, "several chunks", chunks);
  check(role === "assistant", "role in the first delta", role);
  check(text === greedy, "streamed text equals the non-streamed one", { text, greedy });
  check(finish === "length", "finish_reason", finish);
  check(usage && usage.completion_tokens === 16, "usage in the last chunk", usage);
});

test("completion with logprobs", async () => {
  const r = await client.completions.create({
    model, prompt: "Once upon a time", max_tokens: 12, temperature: 0, logprobs: 2,
  });
  check(r.object === "text_completion", "object", r.object);
  const c = r.choices[0];
  const lp = c.logprobs;
  check(lp.tokens.length === 12 && lp.token_logprobs.length === 12, "one logprob per token", lp);
  check(lp.tokens.join("") === c.text, "tokens make the text", { tokens: lp.tokens, text: c.text });
  check(lp.text_offset[0] === "Once upon a time".length, "text_offset from the prompt's start", lp.text_offset);
  for (let i = 0; i < 12; i++) {
    const best = Math.max(...Object.values(lp.top_logprobs[i]));
    check(lp.token_logprobs[i] <= 0 && Math.abs(best - lp.token_logprobs[i]) < 1e-6,
      "greedy picks the most likely token", { i, best, chosen: lp.token_logprobs[i] });
  }
});

test("chat logprobs", async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const content = r.choices[0].logprobs.content;
  check(content.length === 6, "one entry per token", content);
  for (const t of content) {
    check(typeof t.token === "string" && Array.isArray(t.bytes) && t.top_logprobs.length === 3, "entry shape", t);
  }
  check(content.map((t) => t.token).join("") === r.choices[0].message.content, "tokens make the content");
});

test("embeddings (the client asks base64 by default)", async () => {
  const input = ["Lily found a ball.", "The cat slept."];
  const b = await client.embeddings.create({ model, input });
  const f = await client.embeddings.create({ model, input, encoding_format: "float" });
  check(b.data.length === 2 && f.data.length === 2, "two embeddings", b.data.length);
  for (let i = 0; i < 2; i++) {
    const v = b.data[i].embedding;
    check(Array.isArray(v) && v.length > 0, "decoded into numbers", typeof v);
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    check(Math.abs(norm - 1) < 1e-4, "unit length", norm);
    check(v.length === f.data[i].embedding.length && v.every((x, k) => x === f.data[i].embedding[k]),
      "base64 decodes to the float encoding's values");
  }
  check(b.usage.prompt_tokens > 0, "usage", b.usage);
});

test("json_schema output validates", async () => {
  const schema = {
    type: "object",
    properties: { name: { type: "string", maxLength: 12 }, age: { type: "integer", minimum: 0, maximum: 120 },
      pet: { enum: ["cat", "dog"] } },
    required: ["name", "age", "pet"],
    additionalProperties: false,
  };
  const r = await client.chat.completions.create({
    model, messages: [{ role: "user", content: "Describe Lily as JSON." }], max_tokens: 80, temperature: 0.7, seed: 3,
    response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
  });
  const c = r.choices[0];
  check(c.finish_reason === "stop", "the value completes within max_tokens", c);
  const value = JSON.parse(c.message.content);
  const validate = new Ajv2020({ strict: true }).compile(schema);
  check(validate(value), "ajv accepts the output", { value, errors: validate.errors });
});

test("wrong API key is an AuthenticationError", async () => {
  const bad = new OpenAI({ baseURL, apiKey: apiKey + "x", maxRetries: 0 });
  try {
    await bad.chat.completions.create({ model, messages, max_tokens: 2 });
  } catch (e) {
    check(e instanceof openai.AuthenticationError && e.status === 401, "AuthenticationError", String(e));
    return;
  }
  throw new Error("a wrong key was accepted");
});

test("bad parameter is a BadRequestError naming it", async () => {
  try {
    await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 7 });
  } catch (e) {
    check(e instanceof openai.BadRequestError && e.status === 400, "BadRequestError", String(e));
    check(e.param === "temperature" && e.type === "invalid_request_error", "param and type", { param: e.param, type: e.type });
    return;
  }
  throw new Error("temperature 7 was accepted");
});

test("unknown model is a NotFoundError", async () => {
  try {
    await client.chat.completions.create({ model: "gpt-4o", messages, max_tokens: 2 });
  } catch (e) {
    check(e instanceof openai.NotFoundError && e.status === 404, "NotFoundError", String(e));
    return;
  }
  throw new Error("an unknown model was accepted");
});

for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.stack || e}`);
    process.exit(1);
  }
}
console.log(`all ${checks.length} checks passed`);
