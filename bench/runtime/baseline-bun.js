// Baseline for bench/runtime/run.sh: the smallest Bun.serve hello-world server.
//   bun baseline-bun.js [PORT]       prints "listening on http://127.0.0.1:PORT"
const server = Bun.serve({
  hostname: '127.0.0.1',
  port: Number(process.argv[2] || 0),
  fetch: () =>
    new Response('Hello, World!', { headers: { 'content-type': 'text/plain; charset=utf-8' } }),
});
console.log(`listening on http://127.0.0.1:${server.port}`);
