"""Loads charmcraft.yaml with charmcraft's own project code (no LXD, no
network), as `charmcraft pack` does before it starts a build instance, and
prints one line per platform it would pack.

usage: python charmcraft_check.py PROJECT_DIR
"""
import pathlib
import sys

from charmcraft import models
from charmcraft.application.main import create_app
from craft_cli import EmitterMode, emit

emit.init(EmitterMode.QUIET, "charmcraft", "check charmcraft.yaml")
project_dir = pathlib.Path(sys.argv[1]).resolve()
project = models.CharmcraftProject.from_yaml_file(project_dir / "charmcraft.yaml")
print("project", project.name, "parts", ",".join(sorted(project.parts)))
app = create_app()
app.services.update_kwargs("project", project_dir=project_dir)
service = app.services.get("project")
service.configure(platform=None, build_for=None)
for name, platform in service.get_platforms().items():
    build_on = platform["build-on"][0].split(":")[-1]
    service.render_for(build_for=platform["build-for"][0], build_on=build_on, platform=name)
    print("platform", name, "on", platform["build-on"][0], "for", platform["build-for"][0])
emit.ended_ok()
