"""A stand-in long-running process for the tests: serves this folder over HTTP."""

import http.server
import sys

host, port = sys.argv[1], int(sys.argv[2])
http.server.ThreadingHTTPServer((host, port), http.server.SimpleHTTPRequestHandler).serve_forever()
