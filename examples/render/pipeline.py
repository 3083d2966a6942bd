"""The render pipeline itself: plain business code, no telemetry (the funnel spec names its calls)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

PRESETS = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
STAGES = ("transcode", "render", "upload")


class RenderError(RuntimeError):
    """A stage of the pipeline failed."""


@dataclass(frozen=True)
class Media:
    path: str
    codec: str
    duration_s: float
    width: int
    height: int


@dataclass(frozen=True)
class Job:
    preset: str
    fps: int = 24
    fail_at: str | None = None
    delay_s: float = 0.0


class Pipeline:
    def __init__(self, job: Job) -> None:
        self.job = job

    @staticmethod
    def probe(path: str) -> Media:
        """Read the source's format (simulated, deterministic per name)."""
        digest = int(hashlib.sha256(path.encode()).hexdigest()[:4], 16)
        codec = "prores" if path.endswith(".mov") else "h264"
        return Media(path, codec, duration_s=2 + digest % 100 / 10, width=3840, height=2160)

    @classmethod
    def frame_count(cls, media: Media, fps: int) -> int:
        return round(media.duration_s * fps)

    def transcode(self, media: Media) -> Media:
        self._work("transcode")
        width, height = PRESETS[self.job.preset]
        return Media(media.path, "h264", media.duration_s, width, height)

    def render_frames(self, media: Media, frames: int) -> int:
        self._work("render")
        return frames

    async def upload(self, media: Media, frames: int) -> str:
        await asyncio.sleep(self.job.delay_s)
        if self.job.fail_at == "upload":
            raise RenderError("upload failed: 503 from the CDN")
        name = hashlib.sha256(f"{media.path}:{self.job.preset}:{frames}".encode()).hexdigest()[:12]
        return f"https://cdn.example.com/renders/{name}.mp4"

    def _work(self, stage: str) -> None:
        time.sleep(self.job.delay_s)
        if self.job.fail_at == stage:
            raise RenderError(f"{stage} failed: encoder exited with status 1")


def render(path: str, preset: str = "1080p", *, fail_at: str | None = None, delay_s: float = 0.0) -> str:
    """Render `path` with `preset`; returns the uploaded file's URL. Raises RenderError."""
    if preset not in PRESETS:
        raise RenderError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    pipeline = Pipeline(Job(preset, fail_at=fail_at, delay_s=delay_s))
    media = Pipeline.probe(path)
    frames = Pipeline.frame_count(media, pipeline.job.fps)
    output = pipeline.transcode(media)
    pipeline.render_frames(output, frames)
    return asyncio.run(pipeline.upload(output, frames))
