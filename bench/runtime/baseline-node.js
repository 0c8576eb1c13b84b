// Baseline for bench/runtime/run.sh: the smallest node:http hello-world server.
//   node baseline-node.js [PORT]     prints "listening on http://127.0.0.1:PORT"
'use strict';
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  res.end('Hello, World!');
});
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
