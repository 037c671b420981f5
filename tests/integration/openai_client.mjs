// openai_client.mjs - the official `openai` npm package against suggestd: completions, streamed and not.
// env: SUGGESTD_URL (http://127.0.0.1:PORT), GREEDY (the greedy 12-token completion of "def f(x):")
import OpenAI from 'openai';

const base = process.env.SUGGESTD_URL;
const want = process.env.GREEDY;
let failed = 0;
const check = (name, cond, detail) => {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${name}${cond ? '' : ' ' + JSON.stringify(detail)}`);
  if (!cond) failed++;
};

for (const path of ['/v1', '/v1/engines/codegen']) {
  const client = new OpenAI({ apiKey: 'dummy', baseURL: base + path, maxRetries: 0 });
  const r = await client.completions.create({ model: 'fastertransformer', prompt: 'def f(x):', max_tokens: 12, temperature: 0 });
  check(`${path}: non-stream text`, r.choices[0].text === want, r);
  check(`${path}: usage`, r.usage.total_tokens === r.usage.prompt_tokens + 12, r.usage);

  const stream = await client.completions.create({ model: 'codegen', prompt: 'def f(x):', max_tokens: 12, temperature: 0, stream: true });
  let text = '', chunks = 0, finish = null;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  check(`${path}: stream text equals non-stream`, text === want, { text, want });
  check(`${path}: token-by-token chunks`, chunks > 2, chunks);
  check(`${path}: finish_reason`, finish === 'length', finish);
}

const client = new OpenAI({ apiKey: 'dummy', baseURL: base + '/v1', maxRetries: 0 });
const lp = await client.completions.create({ model: 'x', prompt: 'def f(x):', max_tokens: 4, temperature: 0, logprobs: 2, stop: ['\n\n'] });
check('logprobs through the client', lp.choices[0].logprobs.tokens.length === lp.choices[0].logprobs.token_logprobs.length, lp.choices[0].logprobs);
try {
  await client.completions.create({ model: 'x', prompt: 'x', max_tokens: 100000 });
  check('client sees the 400', false, 'no error');
} catch (e) {
  check('client sees the 400 with its message', e.status === 400 && /maximum context length/.test(e.message), { status: e.status, message: e.message });
}
process.exit(failed ? 1 : 0);
