"""A match's life: created from an upload or a URL, analysed again, deleted.

Each change that needs the inference engine writes its dispatch job in the same
transaction (`store.jobs.start_run`), so no accepted match is ever left without one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services import faults, media
from services.live import LiveUpdates
from store import jobs, live_updates
from store import matches as store_matches
from store.db import Connection, Database, Row


class Matches:
    def __init__(self, db: Database, live: LiveUpdates, upload_dir: str) -> None:
        self.db = db
        self.live = live
        self.upload_dir = upload_dir

    async def create_from_upload(
        self, stored_name: str, original_name: str | None, title: str | None
    ) -> Row:
        """Records an uploaded video (already in place in UPLOAD_DIR) and queues its analysis."""
        return await self._create(
            stored_name=stored_name,
            original_name=original_name,
            title=title,
            upload_url=media.upload_url(stored_name),
        )

    async def create_from_url(
        self, url: str, start_time: float | None, end_time: float | None, title: str | None
    ) -> Row:
        return await self._create(
            source_url=url, upload_url=url, start_time=start_time, end_time=end_time, title=title
        )

    async def stored_names(self, names: list[str]) -> set[str]:
        """Which of these file names in UPLOAD_DIR are videos of matches."""
        async with self.db.connection() as conn:
            return await store_matches.stored_names(conn, names)

    async def reanalyze(self, match_id: str) -> Row | None:
        """Drops the previous results (and the files the engine wrote for them) and hands the
        same video over again as a new run."""
        async with self.db.transaction() as conn:
            if await store_matches.get_run_state(conn, match_id, lock=True) is None:
                return None
            outputs = await store_matches.output_urls(conn, match_id)
            await store_matches.delete_results(conn, match_id)
            await live_updates.clear(conn, match_id)
            match = await store_matches.update_match(
                conn,
                match_id,
                status="PROCESSING",
                progress=0,
                **store_matches.CLEARED_RESULTS,
            )
            match["analysis_id"] = await jobs.start_run(conn, match_id, self._job(match))
            unused = await self._unused_files(conn, outputs)
        await self.live.publish(match_id, "progress", {"matchId": match_id, "progress": 0})
        await self._remove_files(unused)
        return match

    async def delete(self, match_id: str) -> bool:
        """Deletes the match, its results and its files in UPLOAD_DIR: the stored video (also
        when `complete` named another `videoUrl`) and what the engine wrote."""
        async with self.db.transaction() as conn:
            outputs = await store_matches.output_urls(conn, match_id)
            match = await store_matches.delete_match(conn, match_id)
            if match is None:
                return False
            videos = [match["upload_url"]]
            if match["stored_name"]:
                videos.append(media.upload_url(match["stored_name"]))
            unused = await self._unused_files(conn, [*videos, *outputs])
        await self._remove_files(unused)
        return True

    @staticmethod
    async def _unused_files(conn: Connection, urls: list[str]) -> list[str]:
        """The files behind these `/uploads/` URLs that no match refers to any more.

        Callbacks name files freely, so a match may name another's video or outputs: those
        stay as long as a match still refers to them.
        """
        names = {name for url in urls if (name := media.upload_name(url))}
        if not names:
            return []
        canonical = [media.upload_url(name) for name in names]
        in_use = await store_matches.files_in_use(conn, [*urls, *canonical], list(names))
        return [
            name for name in names if name not in in_use and media.upload_url(name) not in in_use
        ]

    async def _remove_files(self, names: list[str]) -> None:
        # In the executor: unlinking a multi-GB video takes long enough to stall the loop.
        if names:
            await asyncio.get_running_loop().run_in_executor(
                None, media.remove_files, self.upload_dir, names
            )

    async def _create(self, **values: Any) -> Row:
        """Inserts a match and its dispatch job in one transaction."""
        async with self.db.transaction() as conn:
            match = await store_matches.insert_match(conn, **values)
            match["analysis_id"] = await jobs.start_run(conn, match["id"], self._job(match))
        faults.crash_point("after-match-commit")
        return match

    def _job(self, match: Row) -> dict[str, Any]:
        """What the inference engine is sent: the file's absolute path, or the remote URL."""
        if match["stored_name"]:
            video = media.path_in_uploads(self.upload_dir, match["stored_name"])
            return {"video_url": str(video)}
        job: dict[str, Any] = {"video_url": match["source_url"]}
        for key in ("start_time", "end_time"):
            if match[key] is not None:
                job[key] = match[key]
        return job
