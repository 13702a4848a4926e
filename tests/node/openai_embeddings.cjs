// OpenAI's Node SDK against inferd (run by tests/python/test_openai.py): embeds the texts
// given as JSON on stdin with the SDK's defaults (it asks for base64 and decodes it) and
// prints the vectors as JSON. OPENAI_BASE_URL and OPENAI_API_KEY come from the environment,
// as the SDK reads them; the model from INFERD_MODEL.
const OpenAI = require("openai");

async function main() {
  const texts = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const client = new OpenAI({ maxRetries: 0 });
  const r = await client.embeddings.create({ model: process.env.INFERD_MODEL, input: texts });
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  let refused = null;
  try {
    await client.embeddings.create({ model: process.env.INFERD_MODEL, input: "x", dimensions: 7 });
  } catch (e) {
    refused = { status: e.status, message: e.message };
  }
  process.stdout.write(JSON.stringify({ embeddings: r.data.map((d) => d.embedding), models, refused }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
