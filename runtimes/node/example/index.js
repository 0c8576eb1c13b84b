// Example Open Runtimes function for the Node runtime.
//   GET  /        -> plain-text greeting
//   GET  /json    -> request details as JSON
//   POST /echo    -> the request body, byte for byte
//   GET  /old     -> redirect to /
module.exports = async (context) => {
  const { req, res, log, error } = context;

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
      return res.text(`Hello from Node ${process.versions.node}!`);
    default:
      error('Unknown path', req.path);
      return res.text('Not found', 404);
  }
};
