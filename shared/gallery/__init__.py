"""The gallery: what was generated, for people. Server-rendered HTML (Jinja2), no build step, no script.

    reader   lists a day's prefix and the job records, reads the records a page shows
    tiles    what a tile says, read leniently from an archive record or a job record
    browse   the query (filters, paging) and one page of tiles, newest first
    pages    templates, the page's links (carrying ``?code=``), headers
    routes   ``GET /gallery`` and ``GET /gallery/{day|jobs}/{id}`` on an APIRouter

Mount it with ``app.include_router(shared.gallery.router)``; the routes read
``request.app.state.runtime``.
"""

from __future__ import annotations

from shared.gallery.routes import router, today

__all__ = ["router", "today"]
