// `npm run demo`: a local mock upstream, the real proxy in front of it, and one
// streamed response printed as it arrives. No key and no network needed.

import { ProxyProcess } from './helpers/proxyProcess.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { encodeSse, responseEvents } from './helpers/responsesApi.js';

const DEMO_KEY = 'sk-demo-not-a-real-key';

const upstream = await MockUpstream.start((req, res) => {
  const authorized = req.headers.authorization === `Bearer ${DEMO_KEY}`;
  res.writeHead(authorized ? 200 : 401, { 'content-type': 'text/event-stream' });
  const events = responseEvents(
    'Hello from the mock upstream, streamed through responses-api-proxy, one event at a time.',
  );
  let i = 0;
  const timer = setInterval(() => {
    res.write(encodeSse(events[i++] as never));
    if (i === events.length) {
      clearInterval(timer);
      res.end();
    }
  }, 150);
});

const proxy = await ProxyProcess.start({
  stdin: `${DEMO_KEY}\n`,
  args: ['--upstream-url', upstream.url(), '--log-level', 'warn'],
});
process.stdout.write(
  `proxy (pid ${proxy.pid}) listening on 127.0.0.1:${proxy.port}, upstream mock on 127.0.0.1:${upstream.port}\n`,
);
process.stdout.write(`POST ${proxy.url()} (no Authorization header: the proxy adds it)\n\n`);

try {
  const response = await fetch(proxy.url(), {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ model: 'mock-model', input: 'Say hello', stream: true }),
  });
  process.stdout.write(`HTTP ${response.status} ${response.headers.get('content-type')}\n`);
  const decoder = new TextDecoder();
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    for (const line of decoder.decode(chunk, { stream: true }).split('\n')) {
      if (!line.startsWith('data: ')) continue;
      const event = JSON.parse(line.slice(6)) as { type: string; delta?: string };
      process.stdout.write(
        event.type === 'response.output_text.delta'
          ? `  ${event.type}: ${JSON.stringify(event.delta)}\n`
          : `  ${event.type}\n`,
      );
    }
  }
} finally {
  const status = await proxy.stop('SIGTERM');
  await upstream.close();
  process.stdout.write(`\nproxy stopped (exit code ${status.code})\n`);
}
