"""Example function for the opr Python runtime.

GET  /          -> plain text greeting
GET  /json?x=1  -> echoes the request as JSON
POST /echo      -> returns the request body unchanged (binary-safe)
anything else   -> 404
"""
import os


def main(context):
    req, res = context.req, context.res
    context.log("handling", req.method, req.path, {"query": req.query})

    if req.path == "/":
        return res.text("Hello from " + os.environ.get("GREETING_FROM", "opr") + "!")

    if req.path == "/json":
        return res.json({
            "method": req.method,
            "url": req.url,
            "query": req.query,
            "headers": req.headers,
            "body": req.body,  # parsed JSON when content-type is application/json
        })

    if req.path == "/echo":
        content_type = req.headers.get("content-type", "application/octet-stream")
        return res.binary(req.body_binary, 200, {"content-type": content_type})

    context.error("no route for", req.path)
    return res.text("Not found", 404)
