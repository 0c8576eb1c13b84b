// Example Open Runtimes function for the Bun runtime. Bun runs TypeScript
// as it is: no build step, and no type check either (types are erased).
//   GET  /        -> plain-text greeting
//   GET  /json    -> request details as JSON
//   POST /echo    -> the request body, byte for byte
//   GET  /old     -> redirect to /

// The part of the context (runtime-protocol §4) this example uses.
type Output = { body: unknown; statusCode: number; headers: Record<string, string> };
interface Context {
  req: {
    method: string;
    path: string;
    url: string;
    query: Record<string, string>;
    headers: Record<string, string>;
    body: unknown;
    bodyBinary: Uint8Array;
  };
  res: {
    text(body: string, status?: number, headers?: Record<string, string>): Output;
    json(value: unknown, status?: number, headers?: Record<string, string>): Output;
    binary(bytes: Uint8Array, status?: number, headers?: Record<string, string>): Output;
    redirect(url: string, status?: number, headers?: Record<string, string>): Output;
  };
  log(...values: unknown[]): void;
  error(...values: unknown[]): void;
}

export default async ({ req, res, log, error }: Context): Promise<Output> => {
  log('Request:', req.method, req.path, { query: req.query });

  switch (req.path) {
    case '/json':
      return res.json({
        method: req.method,
        url: req.url,
        query: req.query,
        userAgent: req.headers['user-agent'] ?? null,
        body: req.body, // parsed JSON when content-type is application/json
      });
    case '/echo':
      return res.binary(req.bodyBinary, 200, {
        'content-type': req.headers['content-type'] ?? 'application/octet-stream',
      });
    case '/old':
      return res.redirect('/');
    case '/':
      return res.text(`Hello from Bun ${Bun.version}!`);
    default:
      error('Unknown path', req.path);
      return res.text('Not found', 404);
  }
};
