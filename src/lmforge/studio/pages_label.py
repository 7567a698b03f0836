"""Label page: a queue from `lmforge suggest`, labelled from the keyboard (number keys choose, s skips,
u goes back to the last item you labelled), NER by selecting token spans over the pre-annotations.
Labels are stored as they are given (see labelling.py); two people get different items."""

from __future__ import annotations

import hashlib
import json

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from ..errors import UserError


def _shown(label, ner: bool) -> str:
    if label is None:
        return ""
    if ner:
        return f"{sum(1 for tag in label if str(tag).startswith('B-'))} entities"
    return ", ".join(label) if isinstance(label, list) else str(label)


def add_routes(app: FastAPI, studio) -> None:
    from .web import StudioError, checked_form

    def queue_or_404(qid: str):
        queue = studio.queues.get(qid)
        if queue is None:
            raise StudioError(404, "no such labelling queue; start the studio with --label FILE")
        return queue

    def labeller(request: Request) -> str:
        from .web import session_of

        nonce = session_of(request)
        if nonce is None:
            raise StudioError(403, "your session has expired; reload the page")
        return hashlib.sha256(nonce.encode()).hexdigest()[:12]

    @app.get("/label")
    async def queues_page(request: Request):
        rows = [{"queue": q, "done": done, "total": total} for q in studio.queues.values() for done, total in [q.progress()]]
        return studio.page(request, "label_queues.html", rows=rows)

    @app.get("/label/{qid}")
    async def next_item(request: Request, qid: str):
        queue = queue_or_404(qid)
        item = queue.next(labeller(request))
        if item is None:
            done, total = queue.progress()
            return studio.page(request, "label_done.html", queue=queue, done=done, total=total)
        return RedirectResponse(f"/label/{qid}/{item.key}", status_code=303)

    @app.get("/label/{qid}/{key}")
    async def item_page(request: Request, qid: str, key: str):
        queue = queue_or_404(qid)
        item = queue.item(key)
        if item is None:
            raise StudioError(404, "no such item in this queue")
        me = labeller(request)
        mine = queue.mine(me)
        previous = next((k for k in mine if k != key), None)
        current = queue.label_of(key)
        done, total = queue.progress()
        tags = current if queue.ner and isinstance(current, list) else item.suggested
        return studio.page(request, "label_item.html", queue=queue, item=item, current_text=_shown(current, queue.ner),
                           previous=previous, done=done, total=total, tags_json=json.dumps(tags), error="")

    @app.post("/label/{qid}/{key}")
    async def submit(request: Request, qid: str, key: str):
        queue = queue_or_404(qid)
        form = await checked_form(studio, request)
        me = labeller(request)
        if queue.item(key) is None:
            raise StudioError(404, "no such item in this queue")
        if form.get("action") == "skip":
            queue.skip(key, me)
            return RedirectResponse(f"/label/{qid}", status_code=303)
        try:
            if queue.ner:
                value = json.loads(form.get("tags", "null"))
            elif queue.multi_label:
                value = [x for x in form.get("labels", "").split("\n") if x.strip()]
            else:
                value = form.get("new_label", "").strip() or form.get("label", "")
            queue.submit(key, value, me)
        except (UserError, ValueError) as err:
            item = queue.item(key)
            done, total = queue.progress()
            return studio.page(request, "label_item.html", 422, queue=queue, item=item, current_text="", previous=None, done=done,
                               total=total, tags_json=json.dumps(item.suggested), error=str(err))
        return RedirectResponse(f"/label/{qid}", status_code=303)
