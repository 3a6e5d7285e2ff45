"""A small web app for poseidon's examples: says hello from the droplet it runs on."""

import argparse

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return f"hello from {request.host}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port)
