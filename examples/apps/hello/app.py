"""A small web app for poseidon's examples: says hello from the droplet it runs on.

``--config FILE`` reads the greeting from an INI file (``[hello]`` ``greeting = ...``),
as examples/service.yaml writes one with a ``file:`` step.
"""

import argparse
import configparser

from flask import Flask, request

app = Flask(__name__)
GREETING = "hello"


@app.get("/")
def hello() -> str:
    return f"{GREETING} from {request.host}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--config", help="an INI file whose [hello] greeting replaces 'hello'")
    args = parser.parse_args()
    if args.config:
        config = configparser.ConfigParser()
        if not config.read(args.config):
            parser.error(f"cannot read {args.config}")
        GREETING = config.get("hello", "greeting", fallback=GREETING)
    app.run(host=args.host, port=args.port)
