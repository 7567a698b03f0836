"""Registry page: models and versions with lineage, stage, metrics and gate; promote, roll back and
archive through a confirmation page that shows what will change. A failed gate is shown and needs an
explicit force, recorded in the history exactly as `lmforge registry promote --force` records it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from ..errors import UserError
from ..lifecycle.gate import failing_checks, gate_failed
from ..lifecycle.registry import default_actor
from ..lifecycle.versions import MAX_VERSION, NAME_RE
from .catalog import headline

ACTIONS = ("promote", "archive")
DONE = {"promote": "promoted to production", "archive": "archived", "rollback": "rolled back"}


def add_routes(app: FastAPI, studio) -> None:
    from .web import StudioError, checked_form

    def registry_or_error():
        registry = studio.registry()
        if registry is None:
            raise StudioError(404, f"no registry at {studio.registry_root}; `lmforge registry add NAME RUN` creates it "
                                   "(or start the studio with --registry FOLDER)")
        return registry

    def checked(name: str, version: int | None = None) -> None:
        if not NAME_RE.fullmatch(name):
            raise StudioError(404, "no such model")
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise StudioError(404, "no such version")

    def user_errors(call):
        try:
            return call()
        except UserError as err:
            raise StudioError(409, str(err)) from None

    @app.get("/registry")
    async def registry_page(request: Request, done: str = "", name: str = "", version: int = 0):
        registry = studio.registry()
        models = []
        if registry is not None:
            versions = registry.list()
            for model in dict.fromkeys(v.name for v in versions):
                mine = [v for v in versions if v.name == model]
                models.append({"name": model, "versions": sorted(mine, key=lambda v: -v.version),
                               "production": next((v.version for v in mine if v.stage == "production"), None)})
        message = ""
        if done in DONE and NAME_RE.fullmatch(name):
            message = f"{name}" + (f" v{version}" if version else "") + f" {DONE[done]}"
        return studio.page(request, "registry.html", models=models, root=str(studio.registry_root), exists=registry is not None,
                           message=message, headline=headline, gate_failed=gate_failed)

    @app.get("/registry/{name}/history")
    async def history_page(request: Request, name: str):
        checked(name)
        registry = registry_or_error()
        events = user_errors(lambda: registry.history(name))
        if not events:
            raise StudioError(404, "no such model")
        return studio.page(request, "history.html", name=name, events=events)

    @app.get("/registry/{name}/{version}/{action}")
    async def confirm_page(request: Request, name: str, version: int, action: str):
        checked(name, version)
        if action not in ACTIONS:
            raise StudioError(404, "no such action")
        registry = registry_or_error()
        target = user_errors(lambda: registry.get(name, version))
        production = registry.production(name)
        if action == "promote":
            changes = [f"v{version} ({target.stage}) becomes production"]
            if production is not None and production.version != version:
                changes.append(f"v{production.version} (production now) is archived")
        else:
            changes = [f"v{version} ({target.stage}) is archived"]
        blocked = ""
        if action == "promote" and target.stage == "production":
            blocked = f"v{version} is already in production"
        if action == "archive" and target.stage != "candidate":
            blocked = f"v{version} is {target.stage}; only a candidate can be archived"
        diff = registry.diff(name, production.version, version) if production is not None and production.version != version else []
        failed = gate_failed(target.gate)
        return studio.page(request, "confirm.html", name=name, version=version, action=action, target=target, changes=changes,
                           blocked=blocked, failed=failed, failing=failing_checks(target.gate) if failed else [],
                           production=production, diff=[d for d in diff if not d["metric"].startswith("gate.")][:30])

    @app.get("/registry/{name}/rollback")
    async def rollback_confirm(request: Request, name: str):
        checked(name)
        registry = registry_or_error()
        current, target = user_errors(lambda: registry.rollback_plan(name))
        changes = [f"v{current} (production now) is archived", f"v{target} becomes production again"]
        diff = [d for d in registry.diff(name, current, target) if not d["metric"].startswith("gate.")][:30]
        return studio.page(request, "confirm.html", name=name, version=target, action="rollback", target=registry.get(name, target),
                           changes=changes, blocked="", failed=False, failing=[], production=registry.get(name, current), diff=diff)

    @app.post("/registry/{name}/{version}/{action}")
    async def act(request: Request, name: str, version: int, action: str):
        checked(name, version)
        if action not in (*ACTIONS, "rollback"):
            raise StudioError(404, "no such action")
        form = await checked_form(studio, request)
        registry = registry_or_error()
        actor = f"{default_actor()} (studio)"
        if action == "promote":
            force = form.get("force") == "on"
            done = user_errors(lambda: registry.promote(name, version, force=force, actor=actor))
        elif action == "archive":
            done = user_errors(lambda: registry.archive(name, version, actor=actor))
        else:
            current, target = user_errors(lambda: registry.rollback_plan(name))
            if target != version:  # the page was confirmed for another state of the registry
                raise StudioError(409, f"the registry changed since the page was shown: a rollback now makes v{target} "
                                       f"production, not v{version}; look again")
            done = user_errors(lambda: registry.rollback(name, actor=actor))
        return RedirectResponse(f"/registry?done={action}&name={name}&version={done.version}", status_code=303)
