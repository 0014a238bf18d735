"""Prints the requirements of servo and of the extras named in argv[1] ("onnx,tflite"), one a
line, from pyproject.toml (argv[2]): the image's dependency layer, installed before servo."""

import sys
import tomllib

with open(sys.argv[2], "rb") as f:
    project = tomllib.load(f)["project"]
extras = [e for e in sys.argv[1].split(",") if e]
unknown = sorted(set(extras) - set(project["optional-dependencies"]))
if unknown:
    sys.exit(f"unknown extras: {', '.join(unknown)}")
requirements = list(project["dependencies"])
for extra in extras:
    # An extra naming the project itself (`all`) is not expanded: name the extras it holds.
    requirements += [
        r for r in project["optional-dependencies"][extra] if not r.startswith(project["name"])
    ]
print("\n".join(requirements))
