"""The matches API the frontend reads: list, stats, detail, reanalyze, delete, URL intake."""

from __future__ import annotations

import re

import tornado.web

from handlers import views
from handlers.base import APIHandler, JsonBodyHandler
from handlers.uploads import UploadHandler
from store import matches as store_matches

UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

LIST_LIMIT_MAX = 1000


class MatchListHandler(UploadHandler):
    """GET lists the matches; POST is the upload route's alias (`POST /matches`)."""

    async def get(self) -> None:
        limit = self._limit()
        before = self.get_query_argument("before", None)
        if before is not None and not re.fullmatch(UUID, before):
            raise tornado.web.HTTPError(400, "before: expected a match id")
        try:
            async with self.db.connection() as conn:
                rows = await store_matches.list_matches(conn, limit=limit, before=before)
        except LookupError:
            raise tornado.web.HTTPError(400, "before: no match with id %s", before) from None
        self.write_json([views.list_item(row) for row in rows])

    def _limit(self) -> int | None:
        text = self.get_query_argument("limit", None)
        if text is None:
            return None
        if not re.fullmatch("[0-9]{1,4}", text) or not 1 <= int(text) <= LIST_LIMIT_MAX:
            raise tornado.web.HTTPError(400, "limit: expected a whole number 1..%d", LIST_LIMIT_MAX)
        return int(text)


class StatsHandler(APIHandler):
    async def get(self) -> None:
        async with self.db.connection() as conn:
            totals = await store_matches.totals(conn)
        self.write_json(views.document(totals))


class MatchHandler(APIHandler):
    async def get(self, match_id: str) -> None:
        async with self.db.connection() as conn:
            match = await store_matches.get_match_detail(conn, match_id)
            if match is None:
                raise self.not_found()
            results = await store_matches.get_results(conn, match_id)
        self.write_json(views.detail(match, results))

    async def delete(self, match_id: str) -> None:
        if not await self.settings["matches"].delete(match_id):
            raise self.not_found()
        self.write_json({"ok": True})


class ReanalyzeHandler(APIHandler):
    async def post(self, match_id: str) -> None:
        if await self.settings["matches"].reanalyze(match_id) is None:
            raise self.not_found()
        self.write_json({"ok": True})


class UrlIntakeHandler(JsonBodyHandler):
    async def post(self) -> None:
        body = self.json_body("url_intake")
        start, end = body.get("start_time"), body.get("end_time")
        if start is not None and end is not None and end <= start:
            raise tornado.web.HTTPError(400, "end_time: must be after start_time")
        match = await self.settings["matches"].create_from_url(
            body["url"], start, end, body.get("title")
        )
        self.write_json(views.match(match), status=201)


routes = [
    (r"/matches", MatchListHandler),
    (r"/matches/stats", StatsHandler),
    (r"/matches/youtube", UrlIntakeHandler),
    (rf"/matches/({UUID})", MatchHandler),
    (rf"/matches/({UUID})/reanalyze", ReanalyzeHandler),
]
