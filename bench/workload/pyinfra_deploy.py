"""The benchmark's workload for pyinfra: the same steps as poseidon.yaml."""

from pyinfra import host
from pyinfra.operations import apt, files, git, pip, server

files.directory(name="make a directory", path="site")
apt.packages(name="a package already present", packages=["git"])
git.repo(name="clone", src="https://github.com/bench/app.git", dest="site/app", branch="main")
pip.virtualenv(name="virtualenv", path="site/app/.venv", python="python3", venv=True)
pip.packages(
    name="requirements",
    requirements="site/app/requirements.txt",
    virtualenv="site/app/.venv",
    present=True,
)
server.shell(
    name="start the server in the background",
    commands=[
        'cd site/app && { [ -f web.pid ] && kill -0 "$(cat web.pid)" 2>/dev/null'
        f" || {{ setsid nohup .venv/bin/python -m http.server --bind {host.name} 8000"
        " > web.log 2>&1 < /dev/null & echo $! > web.pid; }; }"
    ],
)
server.shell(name="ps -Af", commands=["ps -Af"])
server.shell(name="top", commands=["ps -Ao %cpu,%mem,user,comm"])
